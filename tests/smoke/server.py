"""`embedserve serve` as a new user starts it, for the install smoke checks: the standard
library only, so that it runs in a venv that has only what `pip install -e .` installed (or
only a client library)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

START_S = 600.0
"""The first start builds the default model's graph (a minute or two on two cores)."""


class SmokeFailure(AssertionError):
    """A route answered what a user would not expect: says which, and what it answered."""


@dataclass
class Answer:
    status: int
    body: bytes
    headers: dict[str, str]

    def json(self) -> Any:
        return json.loads(self.body)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """One `embedserve serve` process on a free port of 127.0.0.1, its output in a log file."""

    def __init__(self, embedserve: Path, folder: Path, *flags: str) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log = folder / f"server-{self.port}.log"
        command = [str(embedserve), "serve", "--port", str(self.port), *flags]
        env = {**os.environ, "HF_HUB_OFFLINE": "1"}
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(
                command, stdout=out, stderr=subprocess.STDOUT, env=env, stdin=subprocess.DEVNULL
            )

    def wait_ready(self) -> None:
        deadline = time.monotonic() + START_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise SmokeFailure(f"embedserve serve exited early:\n{self.tail()}")
            try:
                if self.call("GET", "/ready", check=None).status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.5)
        raise SmokeFailure(f"embedserve serve was not ready in {START_S:g} s:\n{self.tail()}")

    def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        raw: bytes | None = None,
        headers: dict[str, str] | None = None,
        check: int | None = 200,
    ) -> Answer:
        """One request; with `check`, a SmokeFailure naming the route unless that status came."""
        data = raw if raw is not None else None if body is None else json.dumps(body).encode()
        sent = {"Content-Type": "application/json"} if body is not None else {}
        request = urllib.request.Request(
            self.base + path, data=data, method=method, headers={**sent, **(headers or {})}
        )
        try:
            with urllib.request.urlopen(request, timeout=120) as response:
                answer = Answer(response.status, response.read(), dict(response.headers))
        except urllib.error.HTTPError as error:
            answer = Answer(error.code, error.read(), dict(error.headers))
        if check is not None and answer.status != check:
            raise SmokeFailure(
                f"{method} {path}: expected {check}, got {answer.status}: {answer.body[:600]!r}"
            )
        return answer

    def stop(self, sig: int = signal.SIGTERM) -> int:
        """Signal the server and wait for it; its exit status."""
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                return self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
                raise SmokeFailure(f"embedserve serve did not stop:\n{self.tail()}") from None
        return int(self.process.returncode)

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]


def multipart(fields: dict[str, str], file_name: str, content: bytes) -> tuple[bytes, str]:
    """A multipart/form-data body with `fields` and one file part named 'file', as curl -F
    sends it; and its Content-Type."""
    boundary = "----embedserve-smoke-boundary"
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
        for name, value in fields.items()
    ]
    parts.append(
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{file_name}"\r\n'
        f"Content-Type: application/octet-stream\r\n\r\n".encode()
        + content
        + b"\r\n"
    )
    body = b"".join(parts) + f"--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


def expect(condition: object, route: str, what: str, answer: Answer | None = None) -> None:
    """A SmokeFailure naming the route, what was expected and what came, unless `condition`."""
    if not condition:
        got = f": {answer.body[:600]!r}" if answer is not None else ""
        raise SmokeFailure(f"{route}: {what}{got}")
