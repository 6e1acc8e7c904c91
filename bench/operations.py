"""Benchmark issue 38's operations, each part in one run on this machine:

- budget: three big models whose sizes add up past --memory-budget, requests rotating among
  them: each step's latency (a load, an eviction), the server's resident memory after each and
  at its peak (sampled every 50 ms) against the budget plus the process's base, and after
  every model is unloaded;
- cache: a corpus where half the texts repeat (a pool of popular ones), 16 clients x 8 texts,
  with --embedding-cache and without, rounds alternating: inputs/s, hit rate, and whether a
  repeat is answered with the very same vector;
- tracing: 16 clients x 8 short texts with traces exported to a local collector and without,
  rounds alternating: inputs/s.

    python bench/operations.py [budget] [cache] [tracing]

Prints markdown tables and writes them to bench/results/operations.md. Nothing here asserts a
time.
"""

from __future__ import annotations

import asyncio
import http.server
import os
import random
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from corpus import short_texts
from load import Result, drive
from run import free_port, machine, wait_ready

HERE = Path(__file__).resolve().parent
SHAPES = Path("/tmp/shapes")
"""Full-size folders of the 2026 families with random weights (bench/shapes.py builds them)."""

BIG = [("bge-m3", "embed"), ("qwen3-0.6b", "embed"), ("bge-reranker-v2-m3", "rerank")]
ROTATION = [0, 1, 2, 0, 1, 2, 1, 0]


@contextmanager
def server(args: list[str], log_name: str) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """`embedserve serve` with `args` (an "ENV=value" among them is set in its environment)."""
    env = {**os.environ, **dict(a.split("=", 1) for a in args if "=" in a and a[0].isupper())}
    args = [a for a in args if not ("=" in a and a[0].isupper())]
    port = free_port()
    log = HERE / "results" / log_name
    log.parent.mkdir(exist_ok=True)
    command = [sys.executable, "-m", "embedserve", "serve", "--port", str(port), "--no-access-log"]
    with log.open("wb") as out:
        process = subprocess.Popen([*command, *args], stdout=out, stderr=subprocess.STDOUT, env=env)
    try:
        base = f"http://127.0.0.1:{port}"
        wait_ready(process, base)
        yield base, process
    finally:
        process.terminate()
        process.wait(60)


class Sampler:
    """The process's resident memory every 50 ms: its peak."""

    def __init__(self, pid: int) -> None:
        self.process = psutil.Process(pid)
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def now(self) -> int:
        return int(self.process.memory_info().rss)

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            self.peak = max(self.peak, self.now())

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def mib(size: float) -> str:
    return f"{size / 2**20:,.0f}"


def metric(base: str, name: str, model: str) -> float:
    for line in httpx.get(f"{base}/metrics").text.splitlines():
        if line.startswith(f'{name}{{model="{model}"}}'):
            return float(line.split()[-1])
    return 0.0


def budget_part(budget_gib: float) -> list[str]:
    folders = [str(SHAPES / name) for name, _ in BIG]
    args = ["--memory-budget", f"{budget_gib}GiB", "--request-timeout", "600"]
    for folder in folders:
        args += ["--model", folder]
    lines = [
        f"Budget {budget_gib} GiB; models: {', '.join(n for n, _ in BIG)} (full-size, random "
        f"weights, their builds already in the cache folder). Each step asks one model.",
        "",
        "| step | model | answered | ms | loaded it | evicted | RSS after (MiB) |",
        "| --- | --- | --- | ---: | --- | --- | ---: |",
    ]
    with server(args, "operations-budget.log") as (base, process):
        sampler = Sampler(process.pid)
        rest = sampler.now()
        ids = [card["id"] for card in httpx.get(f"{base}/v1/models").json()["data"]]
        for step, index in enumerate(ROTATION, 1):
            name, task = BIG[index]
            before = {m: metric(base, "embedserve_model_evictions_total", m) for m in ids}
            loads = metric(base, "embedserve_model_loads_total", ids[index])
            started = time.perf_counter()
            if task == "rerank":
                body = {"model": ids[index], "query": "what is it", "documents": ["a", "b"]}
                answer = httpx.post(f"{base}/v1/rerank", json=body, timeout=900)
            else:
                body = {"model": ids[index], "input": ["a question", "a document"]}
                answer = httpx.post(f"{base}/v1/embeddings", json=body, timeout=900)
            elapsed = (time.perf_counter() - started) * 1000
            evicted = [
                BIG[ids.index(m)][0]
                for m in ids
                if metric(base, "embedserve_model_evictions_total", m) > before[m]
            ]
            loaded = metric(base, "embedserve_model_loads_total", ids[index]) > loads
            lines.append(
                f"| {step} | {name} | {answer.status_code} | {elapsed:,.0f} | "
                f"{'yes' if loaded else ''} | {', '.join(evicted)} | {mib(sampler.now())} |"
            )
        cards = httpx.get(f"{base}/v1/models").json()["data"]
        sizes = ", ".join(f"{BIG[ids.index(c['id'])][0]} {mib(c['memory_bytes'])}" for c in cards)
        for model in ids:
            httpx.post(f"{base}/api/embed", json={"model": model, "input": [], "keep_alive": 0})
        time.sleep(1)
        after = sampler.now()
        sampler.stop()
    budget = budget_gib * 2**30
    lines += [
        "",
        f"- measured sizes (MiB): {sizes}",
        f"- resident before any load: {mib(rest)} MiB; after every model is unloaded (the "
        f"process's base with its runtime loaded): {mib(after)} MiB",
        f"- peak {mib(sampler.peak)} MiB; budget + base {mib(budget + after)} MiB",
    ]
    return lines


def cold_load_part() -> list[str]:
    """The packaged model's first request on an empty cache folder, then on the warm one."""
    lines = ["| cache folder | first request (s) |", "| --- | ---: |"]
    folder = HERE / "results" / "cold-cache"
    subprocess.run(["rm", "-rf", str(folder)], check=True)
    for label in ("empty (build, probe, compile)", "warm (the same folder again)"):
        with server(
            ["--memory-budget", "1GiB", "--cache-dir", str(folder)], "operations-cold.log"
        ) as (base, _):
            started = time.perf_counter()
            httpx.post(f"{base}/v1/embeddings", json={"input": "hello"}, timeout=900)
            lines.append(f"| {label} | {time.perf_counter() - started:,.1f} |")
    return lines


def repeated_corpus(batches: int, seed: int = 0) -> list[list[str]]:
    """Batches of 8 where each text is, by a coin's toss, one of 200 popular texts or a text
    seen nowhere else."""
    rng = random.Random(seed)
    popular = short_texts(200, seed=seed + 1)
    fresh = iter(short_texts(batches * 8, seed=seed + 2))
    return [
        [rng.choice(popular) if rng.random() < 0.5 else next(fresh) for _ in range(8)]
        for _ in range(batches)
    ]


def alternate(
    configurations: dict[str, list[str]], batches: list[list[str]], rounds: int, seconds: float
) -> dict[str, Result]:
    """Each configuration's server in turn, `rounds` times, 16 clients each time."""
    results = {name: Result() for name in configurations}
    for round_ in range(rounds):
        order = list(configurations) if round_ % 2 == 0 else list(reversed(configurations))
        for name in order:
            slug = "".join(c if c.isalnum() else "-" for c in name)
            with server(configurations[name], f"operations-{slug}.log") as (base, _):
                url = f"{base}/v1/embeddings"
                asyncio.run(
                    drive(url, batches[:64], [8] * 64, clients=16, seconds=3, max_requests=64)
                )
                tokens = [8] * len(batches)
                results[name].add(
                    asyncio.run(
                        drive(url, batches, tokens, clients=16, seconds=seconds, max_requests=10**6)
                    )
                )
    return results


def cache_part(rounds: int, seconds: float) -> list[str]:
    batches = repeated_corpus(4000)
    configurations = {"cache off": [], "cache 64 MiB": ["--embedding-cache", "64MiB"]}
    results = alternate(configurations, batches, rounds, seconds)
    with server(configurations["cache 64 MiB"], "operations-cache-check.log") as (base, _):
        url = f"{base}/v1/embeddings"
        texts = batches[0]
        first = httpx.post(url, json={"input": texts}).json()["data"]
        again = httpx.post(url, json={"input": texts}).json()["data"]
        same = all(a["embedding"] == b["embedding"] for a, b in zip(first, again, strict=True))
        asyncio.run(drive(url, batches[:500], [8] * 500, clients=16, seconds=60, max_requests=500))
        text = httpx.get(f"{base}/metrics").text
        counts = {
            line.split()[0]: float(line.split()[1])
            for line in text.splitlines()
            if line.startswith("embedserve_embedding_cache_")
        }
    hits = counts["embedserve_embedding_cache_hits_total"]
    rate = hits / (hits + counts["embedserve_embedding_cache_misses_total"])
    lines = rate_table("16 clients x 8 texts, half of them repeats", results, "cache off")
    lines += [
        "",
        f"- hit rate over 500 requests on a fresh server: {rate:.0%}; cache held "
        f"{mib(counts['embedserve_embedding_cache_bytes'])} MiB for "
        f"{counts['embedserve_embedding_cache_entries']:,.0f} vectors",
        f"- a repeated request answered with the very same floats: {'yes' if same else 'NO'}",
    ]
    return lines


class Collector(http.server.BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def tracing_part(rounds: int, seconds: float) -> list[str]:
    """Traces on and off, exported to a collector that reads and drops them."""
    collector = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Collector)
    threading.Thread(target=collector.serve_forever, daemon=True).start()
    endpoint = f"http://127.0.0.1:{collector.server_address[1]}"
    batches = [short_texts(8, seed=i) for i in range(512)]
    sampled = ["OTEL_TRACES_SAMPLER=traceidratio", "OTEL_TRACES_SAMPLER_ARG=0.1"]
    configurations = {
        "traces off": [],
        "traces on, every request": ["--otlp-endpoint", endpoint],
        "traces on, 1 request in 10": ["--otlp-endpoint", endpoint, *sampled],
    }
    results = alternate(configurations, batches, rounds, seconds)
    collector.shutdown()
    return rate_table("16 clients x 8 short texts", results, "traces off")


def rate_table(title: str, results: dict[str, Result], baseline: str) -> list[str]:
    """Inputs/s and p50 of each configuration, and its ratio to `baseline`'s inputs/s."""
    lines = [f"| {title} | inputs/s | p50 ms | vs off |", "| --- | ---: | ---: | ---: |"]
    for name, result in results.items():
        p50 = sorted(result.latencies)[len(result.latencies) // 2] * 1000
        ratio = result.rate / results[baseline].rate
        lines.append(f"| {name} | {result.rate:,.0f} | {p50:.1f} | {ratio:.3f}x |")
    return lines


def main() -> None:
    parts = sys.argv[1:] or ["budget", "cache", "tracing"]
    out = [f"Machine: {machine()}; {time.strftime('%Y-%m-%d %H:%M')}", ""]
    if "budget" in parts:
        out += ["## Models under a memory budget", "", *budget_part(4.0), ""]
        out += ["## A first request that loads", "", *cold_load_part(), ""]
    if "cache" in parts:
        out += ["## The embedding cache", "", *cache_part(rounds=2, seconds=20), ""]
    if "tracing" in parts:
        out += ["## Traces on and off", "", *tracing_part(rounds=5, seconds=20), ""]
    text = "\n".join(out)
    print(text)
    (HERE / "results" / "operations.md").write_text(text + "\n")


if __name__ == "__main__":
    main()
