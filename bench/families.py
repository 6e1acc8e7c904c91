"""The 2026 model families against what users run them on today, side by side, in one run.

    python bench/families.py [--shapes qwen3-0.6b,bge-m3] [--seconds 30] [--documents 2000]

For each full-size shape (bench/shapes.py: real configurations, random weights):
- the first start of `embedserve serve --model <folder>` on an empty cache (builds, probe) and
  a warm one, to /ready;
- served inputs/s at 4 clients x 8 mixed-length texts and the p50 of 1 client x 1 short query,
  embedserve's default against the h2oGPT-style server (sentence-transformers, torch fp32, one
  encode per request) and Infinity where bench/setup_infinity.sh made its venv (Infinity 0.0.77
  pins a transformers that may not know the family: then its row says it did not start);
- `embedserve embed` over mixed documents against `SentenceTransformer.encode(batch_size=32)`,
  each a process timed from its start to its exit, and the min cosine between their vectors.
Then the static model (static-retrieval-mrl-en-v1's shape) against the packaged MiniLM in
`embedserve embed` on the same documents, and both served at 16 clients x 8 short texts.
Prints a markdown table and writes it to bench/results/families.md. Nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from corpus import documents, mixed_corpus, short_texts
from embed_job import ST_SCRIPT, embed_vectors, min_cosine, timed
from embedserve.models.source import resolve
from embedserve.models.tokenizer import ModelTokenizer
from load import Result
from run import (
    HERE,
    INFINITY,
    INFINITY_VENV,
    Scenario,
    Server,
    free_port,
    machine,
    phase,
)
from shapes import shape

OURS = [sys.executable, "-m", "embedserve", "serve", "--no-access-log", "--log-level", "warning"]


def first_and_warm_start(folder: Path, cache: Path) -> tuple[float, float]:
    """Seconds from `embedserve serve` to /ready 200: on the empty cache `cache`, then again."""
    took = []
    for _ in range(2):
        port = free_port()
        command = [*OURS, "--model", str(folder), "--port", str(port)]
        env = {**os.environ, "EMBEDSERVE_CACHE_DIR": str(cache), "HF_HUB_OFFLINE": "1"}
        started = time.monotonic()
        process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL)
        try:
            while True:
                if process.poll() is not None:
                    raise SystemExit(f"embedserve serve --model {folder} exited")
                try:
                    ready = httpx.get(f"http://127.0.0.1:{port}/ready", timeout=2)
                    if ready.status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                time.sleep(0.5)
            took.append(time.monotonic() - started)
        finally:
            process.terminate()
            process.wait(60)
    return took[0], took[1]


def servers_of(folder: Path, cache: Path) -> list[Server]:
    """Our default on the warm cache, and the peers on the same folder."""
    os.environ["EMBEDSERVE_CACHE_DIR"] = str(cache)  # start() passes the environment on
    found = [
        Server(
            "embedserve default",
            [*OURS, "--model", str(folder), "--port", "{port}"],
            "/v1/embeddings",
        ),
        Server(
            "h2oGPT-style",
            [sys.executable, str(HERE / "h2ogpt_style.py"), str(folder), "{port}"],
            "/v1/embeddings",
        ),
    ]
    if (INFINITY_VENV / "bin" / "infinity_emb").exists():
        found.append(
            Server(
                INFINITY,
                [
                    str(INFINITY_VENV / "bin" / "infinity_emb"),
                    "v2",
                    "--model-id",
                    str(folder),
                    "--port",
                    "{port}",
                    "--engine",
                    "torch",
                    "--device",
                    "cpu",
                    "--no-bettertransformer",
                ],
                "/embeddings",
            )
        )
    return found


def embed_against_st(folder: Path, docs: Path, work: Path, cache: Path) -> dict[str, float]:
    env = {"EMBEDSERVE_CACHE_DIR": str(cache), "HF_HUB_OFFLINE": "1"}
    embed = [sys.executable, "-m", "embedserve", "embed", "--log-level", "warning"]
    ours = timed([*embed, str(docs), "--model", str(folder), "-o", str(work / "ours")], env)
    out = work / "st.npy"
    theirs = timed([sys.executable, "-c", ST_SCRIPT, str(folder), str(docs), str(out)], env)
    return {
        "ours_s": ours.seconds,
        "st_s": theirs.seconds,
        "ours_mib": ours.peak_mib,
        "st_mib": theirs.peak_mib,
        "cosine": min_cosine(embed_vectors(work / "ours"), np.load(out)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--shapes", default="qwen3-0.6b,bge-m3")
    parser.add_argument("--seconds", type=float, default=30, help="measured time per scenario")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--documents", type=int, default=2000)
    parser.add_argument("--static-documents", type=int, default=20_000)
    parser.add_argument("--into", type=Path, default=Path.home() / ".cache" / "embedserve-bench")
    parser.add_argument(
        "--serving-only", action="store_true", help="only the served figures (no starts, no embed)"
    )
    parser.add_argument(
        "--no-embed", action="store_true", help="starts and served figures, no embed job"
    )
    args = parser.parse_args()
    (HERE / "results").mkdir(exist_ok=True)
    minilm = resolve(None).files
    tokenizer = ModelTokenizer(minilm / "tokenizer.json", 512)

    def counts(batch: list[str]) -> int:
        return sum(min(len(c) + 2, 512) for c in tokenizer.content_ids(batch))

    mixed, short = mixed_corpus(512), short_texts(400)
    plan = [
        Scenario(
            "4 clients x 8 mixed-length texts", [mixed[i : i + 8] for i in range(0, 512, 8)], 4
        ),
        Scenario("1 client x 1 short query", [[t] for t in short], 1),
    ]
    work = Path(tempfile.mkdtemp(prefix="families-bench-"))
    lines = [f"Machine: {machine()}", ""]
    try:
        docs = work / "docs.jsonl"
        docs.write_text("".join(json.dumps({"text": d}) + "\n" for d in documents(args.documents)))
        for name in [s.strip() for s in args.shapes.split(",") if s.strip()]:
            folder = shape(name, args.into)
            cache = work / f"cache-{name}"
            first, warm = (0.0, 0.0) if args.serving_only else first_and_warm_start(folder, cache)
            print(f"{name}: first start {first:.0f} s, warm {warm:.1f} s", flush=True)
            table: dict[str, list[tuple[str, Result]]] = {}
            peaks: dict[str, int] = {}
            phase(plan, servers_of(folder, cache), counts, args, table, {}, peaks)
            skip_job = args.serving_only or args.no_embed
            job = {} if skip_job else embed_against_st(folder, docs, work / name, cache)
            lines += render_shape(name, first, warm, table, peaks, job, args.documents)
        if not (args.serving_only or args.no_embed):
            lines += static_rows(args, work, short)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    text = "\n".join(lines)
    (HERE / "results" / "families.md").write_text(text + "\n")
    print(text)


def render_shape(
    name: str,
    first: float,
    warm: float,
    table: dict[str, list[tuple[str, Result]]],
    peaks: dict[str, int],
    job: dict[str, float],
    count: int,
) -> list[str]:
    ours = dict(table.get("embedserve default", []))
    torch = dict(table.get("h2oGPT-style", []))
    out = [
        f"### {name}: first start {first:.0f} s, warm start {warm:.1f} s",
        "",
        "| server | 4 x 8 mixed: inputs/s | vs h2oGPT-style | 1 x 1 query: p50 ms | p99 ms | "
        "vs h2oGPT-style | peak RSS MiB |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for server, results in table.items():
        got = dict(results)
        mixed, lone = (
            got.get("4 clients x 8 mixed-length texts"),
            got.get("1 client x 1 short query"),
        )
        if mixed is None or lone is None:
            continue
        base_mixed = torch.get("4 clients x 8 mixed-length texts")
        base_lone = torch.get("1 client x 1 short query")
        throughput = mixed.rate / base_mixed.rate if base_mixed and base_mixed.rate else 0.0
        latency = lone.percentile(50) / base_lone.percentile(50) if base_lone else 0.0
        out.append(
            f"| {server} | {mixed.rate:,.1f} | {throughput:.2f}x | {lone.percentile(50):,.1f} | "
            f"{lone.percentile(99):,.1f} | {latency:.2f}x | {peaks.get(server, 0):,} |"
        )
    if not ours:
        out.append("| embedserve default | did not start | | | | | |")
    if not job:
        return [*out, ""]
    out += [
        "",
        f"`embedserve embed` over {count:,} mixed documents: {count / job['ours_s']:,.1f} docs/s "
        f"({job['ours_s']:.0f} s, peak {job['ours_mib']:,.0f} MiB) against "
        f"SentenceTransformer.encode's {count / job['st_s']:,.1f} docs/s ({job['st_s']:.0f} s, "
        f"peak {job['st_mib']:,.0f} MiB): {job['st_s'] / job['ours_s']:.2f}x; min cosine "
        f"{job['cosine']:.5f}.",
        "",
    ]
    return out


def static_rows(args: argparse.Namespace, work: Path, short: list[str]) -> list[str]:
    """The static model's embed rate against MiniLM's on the same documents, and both served."""
    static = shape("static-mrl", args.into)
    docs = work / "static-docs.jsonl"
    docs.write_text(
        "".join(json.dumps({"text": d}) + "\n" for d in documents(args.static_documents))
    )
    env = {"EMBEDSERVE_CACHE_DIR": str(work / "cache-static"), "HF_HUB_OFFLINE": "1"}
    embed = [sys.executable, "-m", "embedserve", "embed", "--log-level", "warning"]
    few = work / "few.jsonl"
    few.write_text("".join(json.dumps({"text": d}) + "\n" for d in documents(100)))
    timed([*embed, str(few), "-o", str(work / "warm")], env)  # MiniLM's build, as a first start
    minilm = timed([*embed, str(docs), "-o", str(work / "minilm")], env)
    ours = timed([*embed, str(docs), "--model", str(static), "-o", str(work / "static")], env)
    n = args.static_documents
    tokenizer = ModelTokenizer(resolve(None).files / "tokenizer.json", 512)
    plan = [
        Scenario("16 clients x 8 short texts", [short[i : i + 8] for i in range(0, 400, 8)], 16)
    ]
    os.environ["EMBEDSERVE_CACHE_DIR"] = env["EMBEDSERVE_CACHE_DIR"]
    served = [
        Server("MiniLM (default)", [*OURS, "--port", "{port}"], "/v1/embeddings"),
        Server("static", [*OURS, "--model", str(static), "--port", "{port}"], "/v1/embeddings"),
    ]
    table: dict[str, list[tuple[str, Result]]] = {}
    peaks: dict[str, int] = {}
    phase(
        plan,
        served,
        lambda b: sum(len(c) for c in tokenizer.content_ids(b)),
        args,
        table,
        {},
        peaks,
    )
    rates = {name: dict(rows)[plan[0].name].rate for name, rows in table.items()}
    return [
        "### static-retrieval-mrl-en-v1's shape (1024 dims over 30,522 tokens) against MiniLM",
        "",
        f"`embedserve embed` over {n:,} documents, each a process from start to exit: static "
        f"{n / ours.seconds:,.0f} docs/s ({ours.seconds:.1f} s, peak {ours.peak_mib:,.0f} MiB), "
        f"MiniLM {n / minilm.seconds:,.0f} docs/s ({minilm.seconds:.1f} s): "
        f"{minilm.seconds / ours.seconds:.1f}x.",
        "",
        f"Served at 16 clients x 8 short texts: static {rates.get('static', 0):,.0f} inputs/s "
        f"(peak {peaks.get('static', 0):,} MiB), MiniLM {rates.get('MiniLM (default)', 0):,.0f} "
        f"inputs/s (peak {peaks.get('MiniLM (default)', 0):,} MiB).",
    ]


if __name__ == "__main__":
    main()
