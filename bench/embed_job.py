"""Benchmark `embedserve embed` against what a user would otherwise run over the same corpus, in
one run: a script around `SentenceTransformer.encode(docs, batch_size=32)`, and Qdrant's FastEmbed
(`TextEmbedding.embed`, pointed at the same model's ONNX file) if bench/setup_fastembed.sh made its
venv. Beside them, the bare engine's length-sorted rate, and embed's peak RSS at two corpus sizes.

    python bench/embed_job.py [--documents 100000] [--small 10000] [--only default,fp32,...]

Every runner is a process of its own, timed from its start to its exit (model load included),
its RSS sampled every half second; its peak is the largest sample (the kernel's peak for a child
forked from this process counts this process's own memory at the fork). The corpus is real
English prose of mixed length (bench/corpus.py), written as JSON Lines. Prints a markdown table
and writes it to bench/results/embed_job.md. Nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.dataset as ds

sys.path.insert(0, str(Path(__file__).resolve().parent))
from corpus import documents
from embedserve.models.source import resolve
from embedserve.models.tokenizer import ModelTokenizer
from run import bare_engine, machine

HERE = Path(__file__).resolve().parent
ST_ROW = "SentenceTransformer.encode(batch_size=32)"
FASTEMBED_ROW = "FastEmbed TextEmbedding.embed (ONNX Runtime)"
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


@dataclass
class Run:
    seconds: float
    peak_mib: float  # the largest sample, start-up included
    samples: list[float]  # RSS in MiB, every SAMPLE_S while it ran
    err: str

    def along(self) -> str:
        """RSS at a quarter, half, three quarters and the end of the run: growth shows here."""
        if not self.samples:
            return ""
        n = len(self.samples)
        picks = [self.samples[min(n - 1, n * k // 4)] for k in (1, 2, 3)] + [self.samples[-1]]
        return " / ".join(f"{mib:,.0f}" for mib in picks)


SAMPLE_S = 0.5


def timed(command: list[str], env: dict[str, str] | None = None) -> Run:
    """Seconds from start to exit, peak and sampled RSS, and stderr of `command`, which must
    succeed."""
    started = time.perf_counter()
    process = subprocess.Popen(command, env={**os.environ, **(env or {})}, stderr=subprocess.PIPE)
    samples: list[float] = []
    stderr: list[bytes] = []
    waited: list[tuple[int, int, resource.struct_rusage]] = []
    reader = threading.Thread(target=lambda: stderr.append(process.stderr.read()))  # type: ignore[union-attr]
    waiter = threading.Thread(target=lambda: waited.append(os.wait4(process.pid, 0)))
    reader.start()
    waiter.start()
    while waiter.is_alive():
        try:
            status = Path(f"/proc/{process.pid}/status").read_text()
            samples.append(int(re.search(r"VmRSS:\s+(\d+)", status).group(1)) / 1024)  # type: ignore[union-attr]
        except (OSError, AttributeError):  # it exited between the check and the read
            pass
        waiter.join(SAMPLE_S)
    seconds = time.perf_counter() - started
    reader.join()
    _, status_code, usage = waited[0]
    err = b"".join(stderr).decode(errors="replace")
    if os.waitstatus_to_exitcode(status_code) != 0:
        raise SystemExit(f"{command[:4]} failed:\n{err[-3000:]}")
    return Run(seconds, max(samples, default=usage.ru_maxrss / 1024), samples, err)


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
    parser.add_argument(
        "--bare-sample", type=int, default=20_000, help="documents for the bare engines' rate"
    )
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
        rows: list[tuple[str, str, Run]] = []  # key, label, run
        notes: list[str] = []
        vectors: dict[str, np.ndarray] = {}
        embed = [sys.executable, "-m", "embedserve", "embed", "--log-level", "warning"]
        default_engine = None
        for name, (precision, backend) in MODES.items():
            if not wanted(name):
                continue
            if name == "fp32" and default_engine == {"precision": "fp32", "backend": "onnx"}:
                notes.append("- fp32 on ONNX Runtime is the default on this CPU: one row for both.")
                continue
            # a first run on a few documents builds the model, as a user's first start does
            warm = [*embed, str(small), "-o", str(work / f"warm-{name}"), "--precision", precision]
            timed(warm, env)
            out = work / f"out-{name}"
            command = [*embed, str(corpus), "-o", str(out), "--precision", precision]
            run = timed([*command, "--backend", backend], env)
            vectors[name] = embed_vectors(out)
            engine = json.loads((out / "_manifest.json").read_text())["engine"]
            if name == "default":
                default_engine = engine
            label = f"embedserve embed {name}"
            rows.append((name, f"{label} ({engine['precision']}, {engine['backend']})", run))
            print(f"{label}: {run.seconds:.1f} s, RSS along the run {run.along()}", flush=True)
        if wanted("default"):
            run = timed([*embed, str(small), "-o", str(work / "small-default")], env)
            rows.append(("small", f"embedserve embed default, {args.small:,} docs", run))
            print(f"default on {args.small:,}: RSS along the run {run.along()}", flush=True)
        if wanted("ray"):
            ray_files = Path(tempfile.mkdtemp(prefix="ray-", dir="/tmp"))  # short socket paths
            out = work / "out-ray"
            command = [*embed, str(corpus), "-o", str(out), "--ray-address", "local"]
            run = timed([*command, "--ray-actors", "2"], {**env, "RAY_TMPDIR": str(ray_files)})
            shutil.rmtree(ray_files, ignore_errors=True)
            vectors["ray"] = embed_vectors(out)
            job = float(re.search(r"tokens in ([0-9.,]+) s", run.err).group(1).replace(",", ""))  # type: ignore[union-attr]
            rows.append(("ray", RAY_ROW, run))
            print(f"embed on Ray: {run.seconds:.1f} s, of which the job {job:.1f} s", flush=True)
            notes.append(
                f"- On Ray, the job's own seconds (its summary, from the parts' planning to the "
                f"last part) were {job:,.1f} of {run.seconds:,.1f}: the other "
                f"{run.seconds - job:,.1f} s started the local cluster and stopped it."
            )
        if wanted("st"):
            out = work / "st.npy"
            run = timed([sys.executable, "-c", ST_SCRIPT, str(model), str(corpus), str(out)], env)
            vectors["st"] = np.load(out)
            rows.append(("st", ST_ROW, run))
            print(f"sentence-transformers: {run.seconds:.1f} s", flush=True)
        folder = fastembed_folder(work, cache, model)
        if wanted("fastembed") and folder and (FASTEMBED_VENV / "bin" / "python").exists():
            out = work / "fastembed.npy"
            python = str(FASTEMBED_VENV / "bin" / "python")
            run = timed([python, "-c", FASTEMBED_SCRIPT, str(folder), str(corpus), str(out)])
            vectors["fastembed"] = np.load(out)
            rows.append(("fastembed", FASTEMBED_ROW, run))
            print(f"fastembed: {run.seconds:.1f} s", flush=True)
        ceilings = {}
        sample = docs[: args.bare_sample]
        for name, mode in MODES.items():
            if name in {key for key, _, _ in rows}:
                ceilings[name] = bare_engine(sample, *mode)[:2]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(render(rows, vectors, ceilings, tokens, args, notes))


def render(
    rows: list[tuple[str, str, Run]],
    vectors: dict[str, np.ndarray],
    ceilings: dict[str, tuple[str, float]],
    tokens: int,
    args: argparse.Namespace,
    notes: list[str],
) -> str:
    reference = vectors.get("st")
    runs = {key: run for key, _, run in rows}
    st_seconds = runs["st"].seconds if "st" in runs else None
    lines = [
        f"Machine: {machine()}. {args.documents:,} documents of mixed length ({tokens:,} tokens "
        "after truncation to 256), JSON Lines; each runner a process, timed start to exit.",
        "",
        "| runner | seconds | documents/s | tokens/s | peak RSS MiB | RSS at 1/4, 1/2, 3/4, end "
        "of the run, MiB | vs sentence-transformers | min cosine to sentence-transformers |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for key, label, run in rows:
        count = args.small if key == "small" else args.documents
        ratio = f"{st_seconds / run.seconds:.2f}x" if st_seconds and key != "small" else ""
        cosine = ""
        if reference is not None and key in vectors and key != "st":
            cosine = f"{min_cosine(vectors[key], reference):.6f}"
        doc_tokens = tokens * count / args.documents
        lines.append(
            f"| {label} | {run.seconds:,.1f} | {count / run.seconds:,.0f} | "
            f"{doc_tokens / run.seconds:,.0f} | {run.peak_mib:,.0f} | {run.along()} | {ratio} | "
            f"{cosine} |"
        )
    lines.append("")
    for name, (engine, rate) in ceilings.items():
        seconds = runs[name].seconds if name in runs else None
        share = (
            f"; embed ran at {tokens / seconds / rate:.0%} of it, model load included"
            if seconds
            else ""
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
