"""Benchmark rerank, in one run: pairs/s of `CrossEncoder.predict(pairs, batch_size=32)`
(sentence-transformers, torch fp32, every core) against the default command's /v1/rerank on
the same (query, document) pairs, with the largest score difference between them.

The cross-encoder is the one the test suite makes (the packaged MiniLM's 6-layer encoder under
a one-label head: the shape of cross-encoder/ms-marco-MiniLM-L-6-v2; no model hub here). The
documents are real documentation paragraphs of every length; each request carries a query and
16 of them, from 8 clients at once.

    python bench/rerank.py [--pairs 2000]

Prints a markdown table and writes it to bench/results/rerank.md. Nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.generated
from corpus import documents
from embedserve.models.source import resolve
from run import free_port, machine, wait_ready
from tests.generated import minilm_cross_encoder

HERE = Path(__file__).resolve().parent
PER_REQUEST = 16


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=2000)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="rerank-bench-"))
    folder = minilm_cross_encoder(work, resolve(None).files)
    texts = documents(args.pairs)
    rng = random.Random(0)
    queries = [t.split(". ")[0][:80] for t in rng.sample(texts, args.pairs // PER_REQUEST)]
    requests = [(q, texts[i * PER_REQUEST : (i + 1) * PER_REQUEST]) for i, q in enumerate(queries)]
    pairs = [(q, d) for q, docs in requests for d in docs]

    from sentence_transformers import CrossEncoder

    model = CrossEncoder(str(folder), device="cpu")
    model.predict(pairs[:64], batch_size=32)  # warm-up
    started = time.perf_counter()
    reference = np.asarray(model.predict(pairs, batch_size=32, show_progress_bar=False))
    st_seconds = time.perf_counter() - started
    del model

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    command = [
        sys.executable, "-m", "embedserve", "serve", "--model", str(folder), "--port", str(port),
        "--no-access-log", "--cache-dir", str(work / "cache"),
    ]  # fmt: skip
    log = (HERE / "results" / "rerank-server.log").open("wb")
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_ready(process, base)
        with httpx.Client(base_url=base, timeout=120) as http:

            def one(request: tuple[str, list[str]]) -> list[float]:
                body = {"query": request[0], "documents": request[1]}
                results = http.post("/v1/rerank", json=body).json()["results"]
                by_index = {r["index"]: r["relevance_score"] for r in results}
                return [by_index[i] for i in range(len(request[1]))]

            with concurrent.futures.ThreadPoolExecutor(8) as pool:
                list(pool.map(one, requests[:8]))  # warm-up
                started = time.perf_counter()
                ours = np.array([s for scores in pool.map(one, requests) for s in scores])
                our_seconds = time.perf_counter() - started
    finally:
        process.terminate()
        process.wait(30)
    st_rate, our_rate = len(pairs) / st_seconds, len(pairs) / our_seconds
    table = "\n".join(
        [
            f"Machine: {machine()}. {len(pairs)} (query, document) pairs, real paragraphs.",
            "",
            "| reranker | pairs/s | vs sentence-transformers | max score difference |",
            "| --- | --- | --- | --- |",
            f"| CrossEncoder.predict(batch_size=32), torch fp32 | {st_rate:.0f} | 1.00x | - |",
            f"| embedserve /v1/rerank, 8 clients x 16 documents | {our_rate:.0f} "
            f"| {our_rate / st_rate:.2f}x | {np.abs(ours - reference).max():.1e} |",
        ]
    )
    print(table)
    (HERE / "results" / "rerank.md").write_text(table + "\n")


if __name__ == "__main__":
    main()
