"""Benchmark `embedserve embed` against what a user would otherwise run over the same corpus, in
one run: a script around `SentenceTransformer.encode(docs, batch_size=32)`, and Qdrant's FastEmbed
(`TextEmbedding.embed`, pointed at the same model's ONNX file) if bench/setup_fastembed.sh made its
venv. Beside them, the bare engine's length-sorted rate, and embed's peak RSS at two corpus sizes.

    python bench/embed_job.py [--documents 100000] [--small 10000] [--only default,fp32,...]

Every runner is a process of its own, timed from its start to its exit (model load included),
its peak RSS read from the kernel when it exits. The corpus is real English prose of mixed length
(bench/corpus.py), written as JSON Lines. Prints a markdown table and writes it to
bench/results/embed_job.md. Nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np
import pyarrow.dataset as ds

sys.path.insert(0, str(Path(__file__).resolve().parent))
from corpus import documents
from embedserve.models.source import resolve
from embedserve.models.tokenizer import ModelTokenizer
from run import bare_engine, machine

HERE = Path(__file__).resolve().parent
RAY_ROW = "embedserve embed default on Ray Data (a local cluster, 2 actors of 1 CPU; driver RSS)"
FASTEMBED_VENV = Path(os.environ.get("FASTEMBED_VENV", HERE / ".venv-fastembed"))
MODES = {"default": ("auto", "auto"), "fp32": ("fp32", "auto"), "int8": ("int8", "auto")}

ST_SCRIPT = """
import json, sys, numpy as np
from sentence_transformers import SentenceTransformer
docs = [json.loads(line)["text"] for line in open(sys.argv[2])]
model = SentenceTransformer(sys.argv[1], device="cpu")
np.save(sys.argv[3], model.encode(docs, batch_size=32, normalize_embeddings=True))
"""

# embedserve's ONNX graph pools inside (mean over the mask): FastEmbed runs it as a model that
# outputs sentence vectors, and normalizes them.
FASTEMBED_SCRIPT = """
import json, sys, numpy as np
from fastembed import TextEmbedding
from fastembed.common.model_description import ModelSource, PoolingType
TextEmbedding.add_custom_model(
    model="local/all-MiniLM-L6-v2", pooling=PoolingType.DISABLED, normalization=True,
    sources=ModelSource(hf="local/all-MiniLM-L6-v2"), dim=384, model_file="model.onnx",
)
docs = [json.loads(line)["text"] for line in open(sys.argv[2])]
model = TextEmbedding("local/all-MiniLM-L6-v2", specific_model_path=sys.argv[1], threads=None)
np.save(sys.argv[3], np.array(list(model.embed(docs, batch_size=256, parallel=None))))
"""


def timed(command: list[str], env: dict[str, str] | None = None) -> tuple[float, float]:
    """Seconds from start to exit and peak RSS in MiB of `command`, which must succeed."""
    seconds, rss, _ = timed_with_log(command, env)
    return seconds, rss


def timed_with_log(
    command: list[str], env: dict[str, str] | None = None
) -> tuple[float, float, str]:
    """`timed`, and what the command printed on stderr."""
    started = time.perf_counter()
    process = subprocess.Popen(command, env={**os.environ, **(env or {})}, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - started
    assert process.stderr is not None
    err = process.stderr.read().decode(errors="replace")
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{command[:4]} failed:\n{err[-3000:]}")
    return seconds, usage.ru_maxrss / 1024, err


def embed_vectors(folder: Path) -> np.ndarray:
    table = ds.dataset(folder, format="parquet").to_table()
    order = np.argsort([int(i.rsplit(":", 1)[1]) for i in table.column("id").to_pylist()])
    column = table.column("embedding").combine_chunks()
    flat = np.asarray(column.flatten().to_numpy()).reshape(len(table), column.type.list_size)
    return flat[order]


def min_cosine(a: np.ndarray, b: np.ndarray) -> float:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return float((a * b).sum(axis=1).min())


def fastembed_folder(work: Path, cache: Path, model: Path) -> Path | None:
    """The fp32 ONNX file embedserve serves, with the model's tokenizer files, for FastEmbed."""
    built = sorted(cache.glob("onnx/fp32-*/model.onnx"))
    if not built:
        return None
    folder = work / "fastembed-model"
    folder.mkdir(exist_ok=True)
    shutil.copy(built[0], folder / "model.onnx")
    for name in ("tokenizer.json", "config.json", "special_tokens_map.json"):
        shutil.copy(model / name, folder / name)
    config = json.loads((model / "tokenizer_config.json").read_text())
    config["model_max_length"] = 256  # what sentence-transformers and embedserve read
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--documents", type=int, default=100_000)
    parser.add_argument("--small", type=int, default=10_000, help="the smaller corpus, for RSS")
    parser.add_argument("--only", default="", help="runners to run, comma-separated")
    args = parser.parse_args()
    only = {name.strip() for name in args.only.split(",") if name.strip()}

    def wanted(name: str) -> bool:
        return not only or name in only

    model = resolve(None).files
    tokenizer = ModelTokenizer(model / "tokenizer.json", 256)
    work = Path(tempfile.mkdtemp(prefix="embed-bench-"))
    cache = work / "cache"
    env = {"EMBEDSERVE_CACHE_DIR": str(cache), "HF_HUB_OFFLINE": "1"}
    try:
        docs = documents(args.documents)
        corpus = work / "corpus.jsonl"
        corpus.write_text("".join(json.dumps({"text": d}) + "\n" for d in docs))
        small = work / "small.jsonl"
        small.write_text("".join(json.dumps({"text": d}) + "\n" for d in docs[: args.small]))
        tokens = sum(min(len(c) + 2, 256) for c in tokenizer.content_ids(docs))
        rows: list[tuple[str, float, float, float | None]] = []  # name, seconds, RSS, cosine
        notes: list[str] = []
        vectors: dict[str, np.ndarray] = {}
        embed = [sys.executable, "-m", "embedserve", "embed", "--log-level", "warning"]
        for name, (precision, backend) in MODES.items():
            if not wanted(name):
                continue
            # a first run on a few documents builds the model, as a user's first start does
            warm = [*embed, str(small), "-o", str(work / f"warm-{name}"), "--precision", precision]
            timed(warm, env)
            out = work / f"out-{name}"
            command = [*embed, str(corpus), "-o", str(out), "--precision", precision]
            seconds, rss = timed([*command, "--backend", backend], env)
            vectors[name] = embed_vectors(out)
            rows.append((f"embedserve embed {name}", seconds, rss, None))
            print(f"embed {name}: {seconds:.1f} s, {rss:.0f} MiB", flush=True)
        if wanted("default"):
            seconds, rss_small = timed([*embed, str(small), "-o", str(work / "small-default")], env)
            rows.append(
                (f"embedserve embed default, {args.small:,} docs", seconds, rss_small, None)
            )
        if wanted("ray"):
            ray_files = Path(tempfile.mkdtemp(prefix="ray-", dir="/tmp"))  # short socket paths
            out = work / "out-ray"
            command = [*embed, str(corpus), "-o", str(out), "--ray-address", "local"]
            seconds, rss, err = timed_with_log(
                [*command, "--ray-actors", "2"], {**env, "RAY_TMPDIR": str(ray_files)}
            )
            shutil.rmtree(ray_files, ignore_errors=True)
            vectors["ray"] = embed_vectors(out)
            job = float(re.search(r"tokens in ([0-9.,]+) s", err).group(1).replace(",", ""))  # type: ignore[union-attr]
            rows.append((RAY_ROW, seconds, rss, None))
            print(f"embed on Ray: {seconds:.1f} s, of which the job {job:.1f} s", flush=True)
            notes.append(
                f"- On Ray, the job's own seconds (its summary, from the parts' planning to the "
                f"last part) were {job:,.1f} of {seconds:,.1f}: the other {seconds - job:,.1f} s "
                "started the local cluster and stopped it."
            )
        if wanted("st"):
            out = work / "st.npy"
            seconds, rss = timed(
                [sys.executable, "-c", ST_SCRIPT, str(model), str(corpus), str(out)], env
            )
            vectors["st"] = np.load(out)
            rows.append(("SentenceTransformer.encode(batch_size=32)", seconds, rss, None))
            print(f"sentence-transformers: {seconds:.1f} s", flush=True)
        folder = fastembed_folder(work, cache, model)
        if wanted("fastembed") and folder and (FASTEMBED_VENV / "bin" / "python").exists():
            out = work / "fastembed.npy"
            python = str(FASTEMBED_VENV / "bin" / "python")
            seconds, rss = timed(
                [python, "-c", FASTEMBED_SCRIPT, str(folder), str(corpus), str(out)]
            )
            vectors["fastembed"] = np.load(out)
            rows.append(("FastEmbed TextEmbedding.embed (ONNX Runtime)", seconds, rss, None))
            print(f"fastembed: {seconds:.1f} s", flush=True)
        ceilings = {}
        sample = docs[: min(len(docs), 20_000)]
        for name, mode in MODES.items():
            if wanted(name):
                ceilings[name] = bare_engine(sample, *mode)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(render(rows, vectors, ceilings, tokens, args, notes))


def render(
    rows: list[tuple[str, float, float, float | None]],
    vectors: dict[str, np.ndarray],
    ceilings: dict[str, tuple[str, float]],
    tokens: int,
    args: argparse.Namespace,
    notes: list[str],
) -> str:
    reference = vectors.get("st")
    st_seconds = next((s for n, s, _, _ in rows if n.startswith("SentenceTransformer")), None)
    lines = [
        f"Machine: {machine()}. {args.documents:,} documents of mixed length ({tokens:,} tokens "
        "after truncation to 256), JSON Lines; each runner a process, timed start to exit.",
        "",
        "| runner | seconds | documents/s | tokens/s | peak RSS MiB | vs sentence-transformers "
        "| min cosine to sentence-transformers |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    keys = {"embedserve embed default": "default", "embedserve embed fp32": "fp32"}
    keys |= {"embedserve embed int8": "int8", "SentenceTransformer.encode(batch_size=32)": "st"}
    keys["FastEmbed TextEmbedding.embed (ONNX Runtime)"] = "fastembed"
    keys[RAY_ROW] = "ray"
    for name, seconds, rss, _ in rows:
        count = args.small if name.endswith("docs") else args.documents
        ratio = f"{st_seconds / seconds:.2f}x" if st_seconds and count == args.documents else ""
        key = keys.get(name)
        cosine = ""
        if reference is not None and key in vectors and key != "st":
            cosine = f"{min_cosine(vectors[key], reference):.6f}"
        doc_tokens = tokens if count == args.documents else tokens * count / args.documents
        lines.append(
            f"| {name} | {seconds:,.1f} | {count / seconds:,.0f} | {doc_tokens / seconds:,.0f} | "
            f"{rss:,.0f} | {ratio} | {cosine} |"
        )
    lines.append("")
    for name, (engine, rate) in ceilings.items():
        run = next((s for n, s, _, _ in rows if n == f"embedserve embed {name}"), None)
        share = (
            f"; embed ran at {tokens / run / rate:.0%} of it, model load included" if run else ""
        )
        lines.append(
            f"- Bare engine of {name} ({engine}), length-sorted: {rate:,.0f} tokens/s{share}."
        )
    text = "\n".join([*lines, *notes])
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "embed_job.md").write_text(text + "\n")
    return textwrap.dedent(text)


if __name__ == "__main__":
    main()
