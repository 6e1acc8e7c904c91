"""What the web page costs the server, on the default command, in one run:

- inputs/s and p50 at 16 clients x 8 short texts, and the lone request's p50 (1 client x 1
  text), with no page open against with VIEWERS server views open (each polls /metrics,
  /v1/models, /ready and /v1/batches every 2 s, as the page does), rounds interleaved;
- the page's weight and its first contentful paint in headless chromium (median of 5 loads).

    python bench/page.py [--seconds 30] [--viewers 5]

Prints a markdown table and writes it to bench/results/page.md. Nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import sys
import threading
from importlib import resources
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from corpus import short_texts
from load import Result, drive
from run import default_server, machine
from tests.browser import ARGS

HERE = Path(__file__).resolve().parent
POLLED = ("/metrics", "/v1/models", "/ready", "/v1/batches?limit=20")


class Viewers:
    """`count` server views' polling, every 2 s each, spread over the interval."""

    def __init__(self, base: str, count: int) -> None:
        self.base, self.count = base, count
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._poll, args=(k,)) for k in range(count)]

    def _poll(self, k: int) -> None:
        with httpx.Client(base_url=self.base, timeout=30) as http:
            self.stop.wait(2 * k / self.count)
            while not self.stop.is_set():
                for path in POLLED:
                    http.get(path)
                self.stop.wait(2)

    def __enter__(self) -> Viewers:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join()


def first_paint(base: str, loads: int = 5) -> float:
    from playwright.sync_api import sync_playwright

    paints = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=shutil.which("chromium"), args=ARGS)
        for _ in range(loads):
            page = browser.new_page()
            page.goto(f"{base}/")
            page.wait_for_selector("#model-a option", state="attached")
            paints.append(
                page.evaluate("performance.getEntriesByName('first-contentful-paint')[0].startTime")
            )
            page.close()
        browser.close()
    return float(statistics.median(paints))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--viewers", type=int, default=5)
    args = parser.parse_args()
    with default_server("page-server.log") as base:
        texts = short_texts(4096)
        url = f"{base}/v1/embeddings"

        def load(clients: int, per: int, seconds: float) -> Result:
            batches = [texts[i : i + per] for i in range(0, len(texts), per)]
            tokens = [0] * len(batches)
            return asyncio.run(
                drive(url, batches, tokens, clients=clients, seconds=seconds, max_requests=100_000)
            )

        load(16, 8, 3)  # warm-up
        cases = ("no page", f"{args.viewers} server views open")
        busy = {c: Result() for c in cases}
        lone = {c: Result() for c in cases}
        each = args.seconds / args.rounds
        for k in range(args.rounds):
            for case in cases[k % 2 :] + cases[: k % 2]:
                viewers = Viewers(base, args.viewers if case != "no page" else 0)
                with viewers:
                    busy[case].add(load(16, 8, each))
                    lone[case].add(load(1, 1, each / 2))
        paint = first_paint(base)
    files = resources.files("embedserve.web")
    shipped = [f for f in files.iterdir() if f.name.endswith((".html", ".js", ".css"))]
    weight = sum(len(f.read_bytes()) for f in shipped)
    base_rate = busy["no page"].rate
    lines = [
        f"Machine: {machine()}. Default command, all-MiniLM-L6-v2.",
        "",
        "| case | inputs/s (16 x 8 short) | vs no page | p50 ms | errors | lone p50 ms |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for case in cases:
        b, one = busy[case], lone[case]
        lines.append(
            f"| {case} | {b.rate:.0f} | {b.rate / base_rate:.2f}x | {b.percentile(50):.1f} "
            f"| {b.errors + one.errors} | {one.percentile(50):.1f} |"
        )
    lines += [
        "",
        f"Page: {weight / 1024:.1f} KiB shipped; first contentful paint {paint:.0f} ms "
        "(headless chromium, same machine, median of 5 loads).",
    ]
    table = "\n".join(lines)
    print(table)
    (HERE / "results" / "page.md").write_text(table + "\n")


if __name__ == "__main__":
    main()
