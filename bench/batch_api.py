"""Benchmark the Batch API on the default command, in one run:

- a batch of N requests (1-8 short texts each) on an idle server, against `embedserve embed` over
  the same texts (its own job time, model load left out as the batch's is);
- a lone online request (1 short text) on the idle server, then while the same batch runs;
- the server's resident memory while idle, during a batch of N/10 requests and during N.

    python bench/batch_api.py [--requests 20000]

Prints a markdown table and writes it to bench/results/batch_api.md. Nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from corpus import short_texts
from embedserve.engine.batcher import ONLINE_RECENT_S
from run import PeakMemory, free_port, machine, wait_ready

HERE = Path(__file__).resolve().parent


def batch_file(requests: int, seed: int) -> tuple[bytes, list[str]]:
    rng = random.Random(seed)
    texts = short_texts(requests * 8, seed=seed)
    lines, used, at = [], [], 0
    for n in range(requests):
        count = rng.randint(1, 8)
        chunk = texts[at : at + count]
        at += count
        used += chunk
        body = {"input": chunk, "encoding_format": "base64"}
        line = {"custom_id": f"r{n}", "method": "POST", "url": "/v1/embeddings", "body": body}
        lines.append(json.dumps(line))
    return ("\n".join(lines) + "\n").encode(), used


def run_batch(base: str, content: bytes) -> tuple[float, dict[str, Any]]:
    """Seconds from creation to completion, and the finished batch."""
    with httpx.Client(base_url=base, timeout=120) as http:
        upload = http.post(
            "/v1/files", files={"file": ("in.jsonl", content)}, data={"purpose": "batch"}
        ).json()
        started = time.perf_counter()
        batch = http.post(
            "/v1/batches",
            json={
                "input_file_id": upload["id"],
                "endpoint": "/v1/embeddings",
                "completion_window": "24h",
            },
        ).json()
        while batch["status"] not in ("completed", "failed", "cancelled", "expired"):
            time.sleep(0.2)
            batch = http.get(f"/v1/batches/{batch['id']}").json()
        return time.perf_counter() - started, batch


def lone_latencies(base: str, seconds: float, stop: threading.Event | None = None) -> list[float]:
    """Milliseconds of sequential 1-text requests, for `seconds` (or until `stop`)."""
    texts = short_texts(2000, seed=7)
    out: list[float] = []
    deadline = time.monotonic() + seconds
    with httpx.Client(base_url=base, timeout=30) as http:
        for text in texts:
            if time.monotonic() > deadline or (stop is not None and stop.is_set()):
                break
            started = time.perf_counter()
            response = http.post("/v1/embeddings", json={"input": text})
            response.raise_for_status()
            out.append((time.perf_counter() - started) * 1000)
    return out


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=20_000)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="batch-bench-"))
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    content, texts = batch_file(args.requests, seed=1)
    small, _ = batch_file(max(1, args.requests // 10), seed=2)
    corpus = work / "texts.jsonl"
    corpus.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    embed = subprocess.run(
        [sys.executable, "-m", "embedserve", "embed", str(corpus), "-o", str(work / "out")],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    found = re.search(r"done: ([0-9,]+) documents, .* in ([0-9.,]+) s", embed.stderr)
    assert found, embed.stderr[-2000:]
    embed_rate = float(found.group(1).replace(",", "")) / float(found.group(2).replace(",", ""))
    print(f"embed: {embed_rate:,.0f} texts/s", flush=True)

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = (work / "server.log").open("wb")
    command = [sys.executable, "-m", "embedserve", "serve", "--port", str(port)]
    command += ["--data-dir", str(work / "data"), "--no-access-log"]
    command += ["--batch-max-inputs", str(len(texts))]  # 1-8 texts a request: past OpenAI's 50,000
    server = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_ready(server, base)
        lone_latencies(base, 5)  # warm
        idle_memory = PeakMemory(server.pid)
        idle = lone_latencies(base, 20)
        idle_rss = idle_memory.stop()
        time.sleep(ONLINE_RECENT_S + 1)  # idle: no online request in the batcher's window
        small_memory = PeakMemory(server.pid)
        run_batch(base, small)
        small_rss = small_memory.stop()
        memory = PeakMemory(server.pid)
        seconds, batch = run_batch(base, content)
        batch_rss = memory.stop()
        assert batch["status"] == "completed", batch
        batch_rate = len(texts) / seconds
        print(f"batch: {batch_rate:,.0f} texts/s ({seconds:.1f} s)", flush=True)
        stop = threading.Event()
        busy: list[float] = []
        prober = threading.Thread(target=lambda: busy.extend(lone_latencies(base, 3600, stop)))
        prober.start()
        busy_seconds, _ = run_batch(base, content)
        stop.set()
        prober.join()
    finally:
        server.terminate()
        server.wait(30)
    rows = [
        (f"batch of {args.requests:,} requests, idle server", f"{batch_rate:,.0f} texts/s"),
        ("`embedserve embed`, same texts", f"{embed_rate:,.0f} texts/s"),
        ("batch / embed", f"{batch_rate / embed_rate:.0%}"),
        (
            "lone request, idle: p50 / p99 ms",
            f"{statistics.median(idle):.1f} / {percentile(idle, 0.99):.1f} ({len(idle)} requests)",
        ),
        (
            "lone request while the batch runs: p50 / p99 ms",
            f"{statistics.median(busy):.1f} / {percentile(busy, 0.99):.1f} ({len(busy)} requests)",
        ),
        ("batch time with the lone client beside it", f"{busy_seconds:.1f} s"),
        (
            "server RSS MiB: idle / batch of N/10 / batch of N",
            f"{idle_rss:,} / {small_rss:,} / {batch_rss:,}",
        ),
    ]
    table = "\n".join(
        [
            f"Machine: {machine()}; default command (`embedserve serve`).",
            "",
            "| measure | figure |",
            "| --- | ---: |",
            *(f"| {name} | {value} |" for name, value in rows),
        ]
    )
    print(table)
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "batch_api.md").write_text(table + "\n")


if __name__ == "__main__":
    main()
