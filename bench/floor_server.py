"""The least a Python server can do for one short text, as the floor under embedserve's lone
request: uvicorn (httptools, uvloop, as `embedserve serve` runs it) calling a bare ASGI
function that parses the body with orjson, tokenizes the text with the model's tokenizer,
runs the very pass embedserve serves (the same backend, built by the same code) on a worker
thread, mean-pools and normalizes, and writes the answer with orjson. No framework, no
validation, no batcher, no metrics: what is left of a request's time is the HTTP server, one
thread hop and the pass.

    python bench/floor_server.py PORT [--model ID] [--precision auto]

Never a test, never served: a reference point for bench/stages.py."""

from __future__ import annotations

import argparse
import asyncio
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import orjson
import uvicorn

from embedserve.backends.packing import lay_out
from embedserve.config import ModelSpec, Settings
from embedserve.engine.batcher import coarse_width, pad
from embedserve.engine.loading import build_registry

NUMPY = orjson.OPT_SERIALIZE_NUMPY


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("port", type=int)
    parser.add_argument("--model", default=None)
    parser.add_argument("--precision", default="auto")
    args = parser.parse_args()
    settings = Settings(precision=args.precision)
    if args.model:
        settings = Settings(models=(ModelSpec(ref=args.model),), precision=args.precision)
    embedder: Any = build_registry(settings).models[0].load()
    backend, tokenizer = embedder.backend, embedder.tokenizer
    coarse = embedder.batcher.limits.coarse_widths
    pool = ThreadPoolExecutor(1)

    def vector(text: str) -> np.ndarray:
        (ids,) = embedder.tokenize([text], True)
        width = coarse_width(len(ids)) if coarse else len(ids)
        if getattr(backend, "packs", False):  # on every core where offered, as served alone
            run = backend.every_core_packed if backend.every_core_pass else backend.embed_packed
            pooled = run(lay_out([[ids]], width))[0]
        else:
            run = backend.every_core_pass or backend.embed
            pooled = run(*pad([ids], tokenizer.pad_id, width=width))[0]
        return np.asarray(pooled / np.linalg.norm(pooled))

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = b""
        more = True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        if scope["method"] == "GET":  # readiness
            answer = b"{}"
        else:
            text = orjson.loads(body)["input"]
            pooled = await asyncio.get_running_loop().run_in_executor(pool, vector, text)
            data = [{"object": "embedding", "index": 0, "embedding": pooled}]
            answer = orjson.dumps({"object": "list", "data": data}, option=NUMPY)
        headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(answer))]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": answer})

    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
