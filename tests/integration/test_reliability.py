"""The real server process under hostile input, a soak, overload and shutdown. Bounded in time;
only 127.0.0.1. What they measure (throughput, latency, memory) is reported, never asserted:
printed, and written to $EMBEDSERVE_RELIABILITY_REPORT when set (docs/operations.md quotes
it). What they assert is that nothing is lost, mixed or left unanswered."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.conftest import REAL_SENTENCES, VARIED_TEXTS, cosines
from tests.processes import start, stop, wait_for_compute, wait_until_listening

pytestmark = pytest.mark.process

SOAK_SECONDS = 12.0
CLIENTS = 32
POOL = [
    *REAL_SENTENCES,
    *VARIED_TEXTS,
    *(f"note {i}: the meeting moved to room {i}" for i in range(24)),
]

# (what, body bytes, content type, status, error code or None)
HOSTILE: list[tuple[str, bytes, str, int, str | None]] = [
    (
        "huge string, not truncated",
        json.dumps({"input": "word " * 400_000, "truncate": False}).encode(),
        "application/json",
        400,
        "context_length_exceeded",
    ),
    ("10 MB body", b'{"input": "' + b"a" * (10 << 20) + b'"}', "application/json", 413, None),
    ("deep JSON", b"[" * 100_000 + b"]" * 100_000, "application/json", 400, "invalid_json"),
    ("deep input", json.dumps({"input": [[[[["x"]]]]]}).encode(), "application/json", 400, None),
    ("text/plain", b'{"input": "x"}', "text/plain", 415, "unsupported_media_type"),
    ("form", b"input=x", "application/x-www-form-urlencoded", 415, "unsupported_media_type"),
    ("NaN", b'{"input": "x", "dimensions": NaN}', "application/json", 400, "invalid_value"),
    ("huge number", b'{"input": "x", "dimensions": 1e400}', "application/json", 400, None),
    (
        "huge int",
        b'{"input": "x", "dimensions": 100000000000000000000000000000}',
        "application/json",
        400,
        None,
    ),
    ("invalid UTF-8", b'{"input": "\xff\xfe\xfa"}', "application/json", 400, None),
    ("lone surrogate", b'{"input": "a\\ud800b"}', "application/json", 400, None),
    ("raw control character", b'{"input": "a\x01b"}', "application/json", 400, "invalid_json"),
    ("token id out of range", b'{"input": [[5, 99999999]]}', "application/json", 400, None),
    ("negative token id", b'{"input": [-1]}', "application/json", 400, None),
    ("token id 2**64", b'{"input": [18446744073709551616]}', "application/json", 400, None),
    ("empty body", b"", "application/json", 400, None),
    ("null body", b"null", "application/json", 400, None),
    ("array body", b"[]", "application/json", 400, None),
    ("empty input", b'{"input": []}', "application/json", 400, None),
    ("mixed input", b'{"input": ["a", 1]}', "application/json", 400, None),
    (
        "bad encoding",
        b'{"input": "a", "encoding_format": "float16"}',
        "application/json",
        400,
        None,
    ),
    (
        "too many inputs",
        json.dumps({"input": ["a"] * 2049}).encode(),
        "application/json",
        400,
        "too_many_inputs",
    ),
]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, int]]:
    process, base, log = start(tmp_path_factory.mktemp("soak"), "--max-inputs", "2048")
    wait_until_listening(process, base, log)
    yield base, process.pid
    stop(process)


@pytest.fixture(scope="module")
def expected(reference) -> dict[str, np.ndarray]:  # type: ignore[no-untyped-def]
    vectors = reference.encode(POOL, normalize_embeddings=True)
    return dict(zip(POOL, vectors, strict=True))


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def report(name: str, figures: dict[str, object]) -> None:
    print(f"\n{name}: {json.dumps(figures)}")
    target = os.environ.get("EMBEDSERVE_RELIABILITY_REPORT")
    if target:
        with open(target, "a", encoding="utf-8") as out:
            out.write(json.dumps({"test": name, **figures}) + "\n")


@pytest.mark.parametrize(
    ("what", "body", "content_type", "status", "code"), HOSTILE, ids=[h[0] for h in HOSTILE]
)
def test_hostile_input_gets_its_4xx_and_the_server_stays_healthy(
    server: tuple[str, int],
    what: str,
    body: bytes,
    content_type: str,
    status: int,
    code: str | None,
) -> None:
    base, _ = server
    response = httpx.post(
        f"{base}/v1/embeddings", content=body, headers={"Content-Type": content_type}, timeout=60
    )
    assert response.status_code == status, response.text[:300]
    error = response.json()["error"]
    assert error["message"]
    assert "Traceback" not in response.text
    if code:
        assert error["code"] == code
    assert httpx.get(f"{base}/health", timeout=5).status_code == 200
    ok = httpx.post(f"{base}/v1/embeddings", json={"input": "still fine"}, timeout=30)
    assert ok.status_code == 200


async def _soak_client(
    client: httpx.AsyncClient,
    rng: random.Random,
    until: float,
    expected: dict[str, np.ndarray],
    tally: dict[str, list[float]],
) -> None:
    while time.monotonic() < until:
        tally.setdefault("sent", []).append(0.0)
        started = time.perf_counter()
        if rng.random() < 0.2:  # an invalid request, with the answer it must get
            what, body, content_type, status, _ = rng.choice(
                [h for h in HOSTILE if len(h[1]) < 100_000]
            )
            response = await client.post(
                "/v1/embeddings", content=body, headers={"Content-Type": content_type}
            )
            outcome = (
                "invalid_ok"
                if response.status_code == status
                else f"unexpected {what} {response.status_code}"
            )
        else:
            texts = rng.sample(POOL, rng.randint(1, 8))
            fmt = rng.choice(["float", "base64"])
            response = await client.post(
                "/v1/embeddings", json={"input": texts, "encoding_format": fmt}
            )
            outcome = _check(response, texts, fmt, expected)
        tally.setdefault(outcome, []).append(time.perf_counter() - started)


def _check(
    response: httpx.Response, texts: list[str], fmt: str, expected: dict[str, np.ndarray]
) -> str:
    if response.status_code != 200:
        return f"unexpected status {response.status_code}"
    data = response.json()["data"]
    if [d["index"] for d in data] != list(range(len(texts))):
        return "wrong indexes"
    if fmt == "base64":
        import base64

        got = np.stack([np.frombuffer(base64.b64decode(d["embedding"]), dtype="<f4") for d in data])
    else:
        got = np.array([d["embedding"] for d in data], dtype=np.float32)
    want = np.stack([expected[t] for t in texts])
    return "valid_ok" if cosines(got, want).min() >= 0.9999 else "wrong vectors"


async def test_soak_32_clients_mixed_traffic_every_answer_is_its_own(server, expected) -> None:  # type: ignore[no-untyped-def]
    base, pid = server
    async with httpx.AsyncClient(
        base_url=base, timeout=60, limits=httpx.Limits(max_connections=CLIENTS)
    ) as client:
        warm: dict[str, list[float]] = {}
        await _soak_client(client, random.Random(0), time.monotonic() + 2, expected, warm)
        before = rss_mib(pid)
        tally: dict[str, list[float]] = {}
        until = time.monotonic() + SOAK_SECONDS
        await asyncio.gather(
            *(
                _soak_client(client, random.Random(i), until, expected, tally)
                for i in range(CLIENTS)
            )
        )
    after = rss_mib(pid)
    sent = len(tally.pop("sent"))
    unexpected = {k: len(v) for k, v in tally.items() if k not in ("valid_ok", "invalid_ok")}
    latencies = sorted(t for v in tally.values() for t in v)
    figures = {
        "seconds": SOAK_SECONDS,
        "clients": CLIENTS,
        "requests": len(latencies),
        "valid": len(tally.get("valid_ok", [])),
        "invalid": len(tally.get("invalid_ok", [])),
        "unexpected": unexpected,
        "requests_per_s": round(len(latencies) / SOAK_SECONDS, 1),
        "p50_ms": round(1000 * latencies[len(latencies) // 2], 1),
        "p99_ms": round(1000 * latencies[int(len(latencies) * 0.99)], 1),
        "rss_before_mib": round(before),
        "rss_after_mib": round(after),
    }
    report("soak", figures)
    assert not unexpected  # no wrong status, index or vector: nothing mixed up
    assert len(latencies) == sent  # every request sent was answered
    assert tally.get("valid_ok")
    assert tally.get("invalid_ok")


def test_overload_gives_429s_accepted_requests_succeed_and_it_recovers(tmp_path, expected) -> None:  # type: ignore[no-untyped-def]
    process, base, log = start(tmp_path, "--max-queued", "64")
    try:
        wait_until_listening(process, base, log)
        statuses = asyncio.run(_overload(base, expected))
        refused = statuses.count(429)
        report(
            "overload",
            {
                "requests": len(statuses),
                "ok": statuses.count(200),
                "refused_429": refused,
                "max_queued": 64,
                "clients": CLIENTS,
                "inputs_per_request": 32,
            },
        )
        assert refused > 0
        assert set(statuses) <= {200, 429}
        assert statuses.count(200) > 0
        after = httpx.post(f"{base}/v1/embeddings", json={"input": POOL[:4]}, timeout=30)
        assert after.status_code == 200  # recovered once the load stopped
        metrics = httpx.get(f"{base}/metrics", timeout=5).text
        assert (
            'embedserve_rejected_requests_total{model="sentence-transformers/all-MiniLM-L6-v2",reason="queue_full"}'
            in metrics
        )
    finally:
        stop(process)


async def _overload(base: str, expected: dict[str, np.ndarray]) -> list[int]:
    statuses: list[int] = []

    async def hammer(client: httpx.AsyncClient, rng: random.Random) -> None:
        for _ in range(6):
            texts = [rng.choice(POOL) for _ in range(32)]
            response = await client.post("/v1/embeddings", json={"input": texts})
            statuses.append(response.status_code)
            if response.status_code == 429:
                assert response.headers["retry-after"].isdigit()
                assert response.json()["error"]["type"] == "rate_limit_error"
            else:
                assert _check(response, texts, "float", expected) == "valid_ok"

    async with httpx.AsyncClient(
        base_url=base, timeout=120, limits=httpx.Limits(max_connections=CLIENTS)
    ) as client:
        await asyncio.gather(*(hammer(client, random.Random(i)) for i in range(CLIENTS)))
    return statuses


def test_sigterm_drains_in_flight_requests_and_exits_0(tmp_path) -> None:  # type: ignore[no-untyped-def]
    process, base, log = start(tmp_path)
    wait_until_listening(process, base, log)
    texts = [f"{i} " + "long words here " * 80 for i in range(96)]  # several seconds of compute
    result: dict[str, httpx.Response] = {}
    request = threading.Thread(
        target=lambda: result.setdefault(
            "r", httpx.post(f"{base}/v1/embeddings", json={"input": texts}, timeout=120)
        )
    )
    request.start()
    wait_for_compute(base)
    process.send_signal(signal.SIGTERM)
    refused_at = None
    for _ in range(50):  # new connections are refused while the request drains
        try:
            httpx.get(f"{base}/health", timeout=1)
        except httpx.TransportError:
            refused_at = time.monotonic()
            break
        time.sleep(0.1)
    request.join(120)
    code = process.wait(timeout=60)
    assert refused_at is not None
    assert result["r"].status_code == 200
    assert len(result["r"].json()["data"]) == len(texts)
    assert code == 0, log.read_text()[-2000:]
    assert "draining in-flight requests" in log.read_text()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_drain_is_bounded_by_the_drain_timeout(tmp_path, sig) -> None:  # type: ignore[no-untyped-def]
    # a request of ~366,000 tokens, past the default per-request limit: lifted here
    process, base, log = start(tmp_path, "--drain-timeout", "1", "--max-request-tokens", "none")
    wait_until_listening(process, base, log)
    texts = [f"{i} " + "long words here " * 80 for i in range(1500)]  # far longer than 1 s
    request = threading.Thread(
        target=lambda: _ignore_errors(
            lambda: httpx.post(f"{base}/v1/embeddings", json={"input": texts}, timeout=120)
        )
    )
    request.start()
    wait_for_compute(base)
    signalled = time.monotonic()
    process.send_signal(sig)
    code = process.wait(timeout=60)
    took = time.monotonic() - signalled
    request.join(120)
    assert code == 0, log.read_text()[-2000:]
    assert "draining in-flight requests" in log.read_text()
    assert took < 15, took  # 1 s of drain, then shutdown; not the minutes the request needs


def _ignore_errors(call) -> None:  # type: ignore[no-untyped-def]
    with contextlib.suppress(httpx.HTTPError):
        call()
