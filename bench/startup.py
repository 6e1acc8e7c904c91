"""How long `embedserve serve` takes to answer /ready 200, warm (its builds and its probe
verdict cached) and cold (an empty cache), next to its resident memory once ready.

    python bench/startup.py [--runs 3] [--cold]

Prints a markdown table; nothing here asserts a time. The first warm run fills the cache, if
it is empty, and is not counted."""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import free_port

MODES = {"default": [], "fp32": ["--precision", "fp32"], "int8": ["--precision", "int8"]}


def ready_after(args: list[str], cache: str) -> tuple[float, int]:
    """Seconds from launch to /ready 200, and the server's resident MiB then."""
    port = free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "EMBEDSERVE_CACHE_DIR": cache}
    command = [sys.executable, "-m", "embedserve", "serve", "--port", str(port), *args]
    started = time.perf_counter()
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        while True:
            if process.poll() is not None:
                raise RuntimeError(process.stderr.read().decode()[-2000:] if process.stderr else "")
            try:
                if httpx.get(f"http://127.0.0.1:{port}/ready", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.01)
        seconds = time.perf_counter() - started
        return seconds, psutil.Process(process.pid).memory_info().rss >> 20
    finally:
        process.terminate()
        process.wait(30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--cold", action="store_true", help="also time a start on an empty cache")
    args = parser.parse_args()
    cache = os.environ.get("EMBEDSERVE_CACHE_DIR") or str(Path.home() / ".cache" / "embedserve")
    print("| mode | start | seconds to ready (median, range) | resident MiB when ready |")
    print("| --- | --- | ---: | ---: |")
    for name, flags in MODES.items():
        if args.cold:
            with tempfile.TemporaryDirectory() as empty:
                seconds, rss = ready_after(flags, empty)
            print(f"| {name} | cold (empty cache) | {seconds:.2f} | {rss} |", flush=True)
        ready_after(flags, cache)  # fills the cache if it is empty
        runs = [ready_after(flags, cache) for _ in range(args.runs)]
        times = [t for t, _ in runs]
        line = f"{statistics.median(times):.2f} ({min(times):.2f}-{max(times):.2f})"
        print(f"| {name} | warm | {line} | {runs[-1][1]} |", flush=True)


if __name__ == "__main__":
    main()
