"""Benchmark the output encodings of /v1/embeddings on the default command, in one run:

- inputs/s and p50 at 16 clients x 8 short texts for each encoding (float, base64, int8,
  binary, ubinary), the rounds interleaved so that they share the machine's state alike;
- the bytes on the wire per vector, and the bytes a vector database stores per vector;
- retrieval quality on real text: recall@10 of int8 (integer dot product), binary (Hamming
  distance) and binary rescored (Hamming top 40, rescored by the float query against the bits)
  against the float ranking, over a corpus of real documentation paragraphs and queries drawn
  from their first sentences.

    python bench/encodings.py [--documents 3000] [--seconds 30]

Prints a markdown table and writes it to bench/results/encodings.md. Nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
from pathlib import Path

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from corpus import documents, short_texts
from load import Result, drive
from run import default_server, machine

HERE = Path(__file__).resolve().parent
ENCODINGS = ["float", "base64", "int8", "binary", "ubinary"]
STORED = {"float": 4.0, "base64": 4.0, "int8": 1.0, "binary": 1 / 8, "ubinary": 1 / 8}
"""Bytes per dimension each encoding stores."""


def embed(base: str, texts: list[str], encoding: str) -> np.ndarray:
    rows = []
    with httpx.Client(base_url=base, timeout=120) as http:
        for at in range(0, len(texts), 64):
            body = {"input": texts[at : at + 64], "encoding_format": encoding}
            response = http.post("/v1/embeddings", json=body)
            response.raise_for_status()
            rows += [d["embedding"] for d in response.json()["data"]]
    return np.array(rows)


def wire_bytes(base: str, texts: list[str], encoding: str) -> float:
    body = {"input": texts, "encoding_format": encoding}
    response = httpx.post(f"{base}/v1/embeddings", json=body, timeout=60)
    return len(response.content) / len(texts)


def recall(truth: np.ndarray, found: np.ndarray) -> float:
    """The share of each query's true top 10 among its found top 10, averaged."""
    return float(np.mean([len(set(t) & set(f)) / 10 for t, f in zip(truth, found, strict=True)]))


def top(scores: np.ndarray, k: int) -> np.ndarray:
    return np.argsort(-scores, axis=1, kind="stable")[:, :k]


def hamming_scores(queries: np.ndarray, corpus: np.ndarray) -> np.ndarray:
    """Minus the Hamming distance between packed bit rows (ubinary)."""
    bits_q = np.unpackbits(queries.astype(np.uint8), axis=1).astype(np.int32)
    bits_c = np.unpackbits(corpus.astype(np.uint8), axis=1).astype(np.int32)
    agree: np.ndarray = bits_q @ bits_c.T + (1 - bits_q) @ (1 - bits_c).T
    return np.asarray(agree - bits_q.shape[1])


def retrieval(base: str, count: int) -> dict[str, float]:
    corpus = documents(count)
    rng = random.Random(1)
    queries = [p.split(". ")[0] for p in rng.sample(corpus, 300)]
    floats = {name: embed(base, texts, "float") for name, texts in (("q", queries), ("c", corpus))}
    truth = top(floats["q"] @ floats["c"].T, 10)
    int8 = {name: embed(base, t, "int8") for name, t in (("q", queries), ("c", corpus))}
    ubinary = {name: embed(base, t, "ubinary") for name, t in (("q", queries), ("c", corpus))}
    int8_scores = int8["q"].astype(np.int64) @ int8["c"].astype(np.int64).T
    hamming = hamming_scores(ubinary["q"], ubinary["c"])
    candidates = top(hamming, 40)
    signs = np.unpackbits(ubinary["c"].astype(np.uint8), axis=1).astype(np.float32) * 2 - 1
    rescored = np.stack(
        [
            cands[np.argsort(-(signs[cands] @ q), kind="stable")][:10]
            for q, cands in zip(floats["q"], candidates, strict=True)
        ]
    )
    return {
        "int8": recall(truth, top(int8_scores, 10)),
        "binary": recall(truth, top(hamming, 10)),
        "binary, rescored": recall(truth, rescored),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--documents", type=int, default=3000)
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with default_server("encodings-server.log") as base:
        texts = short_texts(4096)
        batches = [texts[i : i + 8] for i in range(0, len(texts), 8)]
        tokens = [0] * len(batches)
        url = f"{base}/v1/embeddings"

        def load(encoding: str, seconds: float) -> Result:
            return asyncio.run(
                drive(
                    url,
                    batches,
                    tokens,
                    clients=16,
                    seconds=seconds,
                    max_requests=100_000,
                    extra={"encoding_format": encoding},
                )
            )

        for encoding in ENCODINGS:  # warm-up
            load(encoding, 2)
        totals = {e: Result() for e in ENCODINGS}
        for k in range(args.rounds):
            for encoding in ENCODINGS[k % 5 :] + ENCODINGS[: k % 5]:
                totals[encoding].add(load(encoding, args.seconds / args.rounds))
        wire = {e: wire_bytes(base, texts[:64], e) for e in ENCODINGS}
        quality = retrieval(base, args.documents)
    float_rate = totals["float"].rate
    lines = [
        f"Machine: {machine()}. Default command, all-MiniLM-L6-v2 (384 dimensions).",
        "",
        "| encoding | inputs/s (16 clients x 8 short texts) | vs float | p50 ms | errors "
        "| bytes on the wire per vector | bytes stored per vector |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for e in ENCODINGS:
        r = totals[e]
        lines.append(
            f"| {e} | {r.rate:.0f} | {r.rate / float_rate:.2f}x | {r.percentile(50):.1f} "
            f"| {r.errors} | {wire[e]:.0f} | {384 * STORED[e]:.0f} |"
        )
    lines += [
        "",
        f"Retrieval on {args.documents} real documentation paragraphs, 300 queries (their "
        "first sentences), against the float ranking:",
        "",
        "| search | recall@10 |",
        "| --- | --- |",
        *(f"| {name} | {value:.3f} |" for name, value in quality.items()),
    ]
    table = "\n".join(lines)
    print(table)
    (HERE / "results" / "encodings.md").write_text(table + "\n")


if __name__ == "__main__":
    main()
