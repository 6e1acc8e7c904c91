"""A bounded closed-loop load generator: N clients, each sends its next request when the last
one answered, until a deadline or a request count is reached."""

from __future__ import annotations

import asyncio
import http.client
import json
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import aiohttp
import numpy as np
import orjson


@dataclass
class Result:
    requests: int = 0
    inputs: int = 0
    tokens: int = 0
    errors: int = 0
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)

    def add(self, other: Result) -> None:
        """Fold another measurement of the same load into this one."""
        self.requests += other.requests
        self.inputs += other.inputs
        self.tokens += other.tokens
        self.errors += other.errors
        self.seconds += other.seconds
        self.latencies += other.latencies

    @property
    def rate(self) -> float:
        """Inputs answered per second."""
        return self.inputs / self.seconds if self.seconds else 0.0

    def percentile(self, q: float) -> float:
        return float(np.percentile(self.latencies, q) * 1000) if self.latencies else float("nan")


async def drive(
    url: str,
    batches: list[list[str]],
    tokens: list[int],
    *,
    clients: int,
    seconds: float,
    max_requests: int,
    extra: dict[str, object] | None = None,
) -> Result:
    """POST `batches` (cycled) to `url` from `clients` concurrent clients; `tokens[i]` is the
    model-token count of batch i, so every server is credited the same work; `extra`: more
    body fields (an encoding_format). The clients share
    the server's cores, so they use aiohttp (a sixth of httpx's CPU per request here); one
    client uses a plain blocking connection, so latency carries as little overhead as can be."""
    if clients == 1:
        return await asyncio.to_thread(
            _drive_one, url, batches, tokens, seconds, max_requests, extra or {}
        )
    result = Result()
    deadline = time.perf_counter() + seconds
    counter = iter(range(max_requests))
    timeout = aiohttp.ClientTimeout(total=60)
    connector = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def one_client() -> None:
            for n in counter:
                if time.perf_counter() >= deadline:
                    return
                i = n % len(batches)
                body = json.dumps({"input": batches[i], "model": "bench", **(extra or {})})
                started = time.perf_counter()
                try:
                    async with session.post(url, data=body, headers=_JSON) as response:
                        payload = await response.read()
                    ok = response.status == 200 and _rows(payload) == len(batches[i])
                except (aiohttp.ClientError, TimeoutError, ValueError):
                    ok = False
                result.latencies.append(time.perf_counter() - started)
                result.requests += 1
                if ok:
                    result.inputs += len(batches[i])
                    result.tokens += tokens[i]
                else:
                    result.errors += 1

        started = time.perf_counter()
        await asyncio.gather(*(one_client() for _ in range(clients)))
        result.seconds = time.perf_counter() - started
    return result


_JSON = {"Content-Type": "application/json"}


def _rows(payload: bytes) -> int:
    return len(orjson.loads(payload)["data"])  # stdlib json spends ~0.5 ms on 8 vectors


def _drive_one(
    url: str,
    batches: list[list[str]],
    tokens: list[int],
    seconds: float,
    max_requests: int,
    extra: dict[str, object],
) -> Result:
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=60)
    result = Result()
    started = time.perf_counter()
    for n in range(max_requests):
        if time.perf_counter() - started >= seconds:
            break
        i = n % len(batches)
        body = json.dumps({"input": batches[i], "model": "bench", **extra})
        sent = time.perf_counter()
        try:
            connection.request("POST", parts.path, body, _JSON)
            response = connection.getresponse()
            payload = response.read()
            ok = response.status == 200 and _rows(payload) == len(batches[i])
        except (OSError, http.client.HTTPException, ValueError):
            ok = False
            connection.close()
        result.latencies.append(time.perf_counter() - sent)
        result.requests += 1
        result.inputs += len(batches[i]) if ok else 0
        result.tokens += tokens[i] if ok else 0
        result.errors += 0 if ok else 1
    result.seconds = time.perf_counter() - started
    return result
