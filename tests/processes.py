"""Real server processes for tests: start one on a free port, wait for it, stop it."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start(tmp_path: Path, *args: str) -> tuple[subprocess.Popen[bytes], str, Path]:
    """`embedserve serve` with `args` on a free port."""
    return start_command(tmp_path, ["-m", "embedserve", "serve", *args])


def start_command(
    tmp_path: Path, args: list[str], env: dict[str, str] | None = None
) -> tuple[subprocess.Popen[bytes], str, Path]:
    """`python <args> --port <a free port>`, its output in a log file."""
    port = free_port()
    log = tmp_path / f"server-{port}.log"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})}
    command = [sys.executable, *args, "--port", str(port)]
    with log.open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)
    return process, f"http://127.0.0.1:{port}", log


def wait_until_listening(process: subprocess.Popen[bytes], base: str, log: Path) -> None:
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"server exited early:\n{log.read_text()}")
        try:
            httpx.get(f"{base}/health", timeout=1)
            return
        except httpx.TransportError:
            time.sleep(0.2)
    pytest.fail(f"server did not start in time:\n{log.read_text()}")


def wait_for_compute(base: str) -> None:
    """Until the server has run a batch from the queue: the request is in flight."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        metrics = httpx.get(f"{base}/metrics", timeout=5).text
        if any(
            line.startswith("embedserve_batch_size_count") and float(line.split()[-1]) >= 1
            for line in metrics.splitlines()
        ):
            return
        time.sleep(0.05)
    raise AssertionError("the request never reached the model")


def stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()


def ray_processes(folder: Path) -> list[psutil.Process]:
    """The processes of a Ray cluster whose files are under `folder`."""
    found = []
    for process in psutil.process_iter(["cmdline"]):
        if any(str(folder) in part for part in process.info["cmdline"] or []):
            found.append(process)
    return found
