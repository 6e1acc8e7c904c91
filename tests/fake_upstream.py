"""A scriptable OpenAI-compatible embeddings server on 127.0.0.1, for pass-through tests."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse


def vector_for(item: Any) -> np.ndarray:
    """A deterministic 8-dim vector per input, so tests know what the upstream answered."""
    digest = hashlib.sha256(repr(item).encode()).digest()
    return np.frombuffer(digest, dtype=np.uint8)[:8].astype(np.float32) - 127.5


@dataclass
class Script:
    failures: list[tuple[int, dict[str, str]]] = field(default_factory=list)  # before success
    always: tuple[int, dict[str, Any]] | None = None
    delay_s: float = 0.0
    max_inputs: int = 2048
    requests: list[dict[str, Any]] = field(default_factory=list)
    keys: list[str] = field(default_factory=list)


def make_app(script: Script) -> FastAPI:
    app = FastAPI()

    @app.post("/v1/embeddings")
    async def embeddings(request: Request) -> JSONResponse:
        body = await request.json()
        script.requests.append(body)
        script.keys.append(request.headers.get("authorization", ""))
        if script.delay_s:
            await asyncio.sleep(script.delay_s)
        if script.always:
            return JSONResponse(script.always[1], status_code=script.always[0])
        if script.failures:
            status, headers = script.failures.pop(0)
            return JSONResponse({"error": {"message": "try later"}}, status, headers=headers)
        inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
        if len(inputs) > script.max_inputs:
            return JSONResponse({"error": {"message": "too many inputs"}}, status_code=400)
        data = []
        for i, item in enumerate(inputs):
            vector = vector_for(item)
            encoded = base64.b64encode(vector.astype("<f4").tobytes()).decode()
            embedding = encoded if body.get("encoding_format") == "base64" else vector.tolist()
            data.append({"object": "embedding", "index": i, "embedding": embedding})
        tokens = sum(len(x) if isinstance(x, list) else len(x.split()) for x in inputs)
        usage = {"prompt_tokens": tokens, "total_tokens": tokens}
        return JSONResponse(
            {"object": "list", "data": data, "model": body["model"], "usage": usage}
        )

    return app


class FakeUpstream:
    def __init__(self, script: Script) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}/v1"
        config = uvicorn.Config(
            make_app(script), host="127.0.0.1", port=self.port, log_level="error"
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)

    def __enter__(self) -> FakeUpstream:
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started and time.monotonic() < deadline:
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.should_exit = True
        self._thread.join(10)
