"""Running it in production: keys, CORS, request ids, JSON logs, metrics, per-request limits
and readiness while draining. In-process, on the real tokenizer with a fake backend."""

from __future__ import annotations

import asyncio
import json
import logging

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from embedserve.api.app import create_app
from embedserve.config import Settings
from embedserve.models.source import ModelSource
from tests.fakes import (
    BlockingBackend,
    EchoBackend,
    SlowBackend,
    batch_limits,
    fake_embedder,
    registry_with,
    state_of,
    until,
    until_equal,
)

KEY = "sk-embedserve-test-key-0123456789"
ROUTES = [
    ("POST", "/v1/embeddings"),
    ("GET", "/v1/models"),
    ("GET", "/v1/models/sentence-transformers/all-MiniLM-L6-v2"),
    ("GET", "/docs"),
    ("GET", "/openapi.json"),
    ("GET", "/no/such/route"),
]
PROBES = [("GET", "/health"), ("GET", "/ready"), ("GET", "/metrics")]


def app_client(minilm: ModelSource, backend: EchoBackend | None = None, **settings: object):  # type: ignore[no-untyped-def]
    embedder = fake_embedder(minilm, backend or EchoBackend(), **settings.pop("embedder", {}))  # type: ignore[arg-type]
    app = create_app(Settings(**settings), registry_with(minilm, embedder))  # type: ignore[arg-type]
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    return app, httpx.AsyncClient(transport=transport, base_url="http://test")


async def call(client: httpx.AsyncClient, method: str, path: str, key: str | None = None):  # type: ignore[no-untyped-def]
    headers = {"Authorization": f"Bearer {key}"} if key is not None else {}
    body = {"input": "hello"} if method == "POST" else None
    return await client.request(method, path, json=body, headers=headers)


def one_char_off(key: str) -> str:
    return key[:-1] + ("x" if key[-1] != "x" else "y")


@pytest.mark.parametrize(("method", "path"), ROUTES + PROBES)
async def test_with_keys_every_route_refuses_a_missing_wrong_or_near_key(  # type: ignore[no-untyped-def]
    minilm, method, path
) -> None:
    _, client = app_client(minilm, api_keys=(KEY,), public_probes=False)
    async with client:
        for key in (None, "wrong", one_char_off(KEY), "", KEY[:-1]):
            response = await call(client, method, path, key)
            assert response.status_code == 401, (key, response.text)
            error = response.json()["error"]
            assert error["code"] == "invalid_api_key"
            assert error["type"] == "invalid_request_error"
            assert response.headers["www-authenticate"] == "Bearer"
            if key:
                assert key not in response.text
        accepted = await call(client, method, path, KEY)
        assert accepted.status_code != 401


@pytest.mark.parametrize(("method", "path"), PROBES)
async def test_probes_are_open_by_default_even_with_keys(minilm, method, path) -> None:  # type: ignore[no-untyped-def]
    _, client = app_client(minilm, api_keys=(KEY,))
    async with client:
        assert (await call(client, method, path)).status_code == 200
        assert (await call(client, "POST", "/v1/embeddings")).status_code == 401


async def test_without_keys_no_key_is_asked_for(minilm) -> None:  # type: ignore[no-untyped-def]
    _, client = app_client(minilm)
    async with client:
        assert (await call(client, "POST", "/v1/embeddings")).status_code == 200
        assert (await call(client, "POST", "/v1/embeddings", "anything")).status_code == 200


async def test_every_configured_key_is_compared_in_constant_time(minilm, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import hmac

    calls: list[tuple[int, int]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((len(a), len(b)))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)  # what auth calls, at call time
    _, client = app_client(minilm, api_keys=(KEY, "second-key", "third"))
    async with client:
        assert (await call(client, "POST", "/v1/embeddings", KEY)).status_code == 200
        assert (await call(client, "POST", "/v1/embeddings", "x" * 500)).status_code == 401
    # Every key is compared for every request, always as 32-byte digests (lengths do not leak).
    assert calls == [(32, 32)] * 6


async def test_cors_is_closed_by_default_and_opens_for_configured_origins(minilm) -> None:  # type: ignore[no-untyped-def]
    preflight = {
        "Origin": "https://app.example.com",
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization,content-type",
    }
    _, closed = app_client(minilm)
    async with closed:
        response = await closed.options("/v1/embeddings", headers=preflight)
        assert "access-control-allow-origin" not in response.headers
        plain = await closed.post(
            "/v1/embeddings", json={"input": "x"}, headers={"Origin": preflight["Origin"]}
        )
        assert "access-control-allow-origin" not in plain.headers
    _, opened = app_client(minilm, cors_origins=("https://app.example.com",), api_keys=(KEY,))
    async with opened:
        response = await opened.options("/v1/embeddings", headers=preflight)  # no key needed
        assert response.status_code == 200
        assert response.headers["access-control-allow-origin"] == "https://app.example.com"
        other = await opened.options(
            "/v1/embeddings", headers={**preflight, "Origin": "https://evil.example"}
        )
        assert other.headers.get("access-control-allow-origin") != "https://evil.example"
        assert other.status_code == 400
        assert other.headers["content-type"] == "application/json"
        assert other.json()["error"]["message"] == "CORS preflight refused: Disallowed CORS origin"
        real = await opened.post(
            "/v1/embeddings",
            json={"input": "x"},
            headers={"Origin": preflight["Origin"], "Authorization": f"Bearer {KEY}"},
        )
        assert real.status_code == 200
        assert real.headers["access-control-allow-origin"] == "https://app.example.com"
        assert "x-request-id" in real.headers["access-control-expose-headers"].lower()


async def test_request_ids_are_echoed_or_made_on_every_response(minilm) -> None:  # type: ignore[no-untyped-def]
    _, client = app_client(minilm)
    async with client:
        given = await client.post(
            "/v1/embeddings", json={"input": "x"}, headers={"X-Request-ID": "job-42.a:b"}
        )
        assert given.headers["x-request-id"] == "job-42.a:b"
        made = await client.post("/v1/embeddings", json={"input": 5})  # a 400 carries one too
        assert made.status_code == 400
        assert len(made.headers["x-request-id"]) == 32
        hostile = await client.get("/health", headers={"X-Request-ID": "a b\tc" + "z" * 200})
        assert hostile.headers["x-request-id"] != "a b\tc" + "z" * 200
        assert len({given.headers["x-request-id"], made.headers["x-request-id"]}) == 2


async def test_json_logs_carry_the_request_id(minilm, capsys) -> None:  # type: ignore[no-untyped-def]
    from embedserve.logs import configure

    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        configure("info", "json")
        _, client = app_client(minilm)
        async with client:
            await client.post(
                "/v1/embeddings", json={"input": "x"}, headers={"X-Request-ID": "trace-7"}
            )
    finally:
        root.handlers[:], level = saved
        root.setLevel(level)
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines() if line]
    access = [r for r in lines if r.get("logger") == "embedserve.access"]
    assert access, lines
    assert access[-1]["request_id"] == "trace-7"
    assert access[-1]["level"] == "INFO"
    assert '"POST /v1/embeddings" 200' in access[-1]["message"]


async def test_the_access_log_can_be_turned_off(minilm, caplog) -> None:  # type: ignore[no-untyped-def]
    _, client = app_client(minilm, access_log=False)
    with caplog.at_level(logging.INFO, logger="embedserve.access"):
        async with client:
            await client.post("/v1/embeddings", json={"input": "x"})
    assert not [r for r in caplog.records if r.name == "embedserve.access"]


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


async def test_metrics_count_requests_tokens_batches_queue_load_and_rejections(minilm) -> None:  # type: ignore[no-untyped-def]
    model = "sentence-transformers/all-MiniLM-L6-v2"
    backend = BlockingBackend()
    limits = batch_limits(max_batch_size=1, max_queued=1)
    app, client = app_client(minilm, backend, api_keys=(KEY,), embedder={"limits": limits})
    headers = {"Authorization": f"Bearer {KEY}"}
    async with client:
        backend.release.set()
        usage = 0
        for texts in (["one"], ["two words", "three more words"]):
            response = await client.post("/v1/embeddings", json={"input": texts}, headers=headers)
            usage += response.json()["usage"]["prompt_tokens"]
        await client.post("/v1/embeddings", json={"input": 3}, headers=headers)  # a 400
        await client.get("/v1/models")  # a 401
        backend.release.clear()
        backend.entered.clear()
        batcher = app.state.embedserve.serving.registry.models[0].loaded.batcher
        held = []
        # One computes, one waits in the hand-off, one in the former's hand, one queues; the
        # last two are refused (each step waits for the engine to take the previous one).
        states = [(0, 0, 1), (0, 1, 1), (0, 2, 1), (1, 2, 1), (1, 2, 1), (1, 2, 1)]
        for i, (queued, formed, computing) in enumerate(states):
            held.append(
                asyncio.create_task(
                    client.post("/v1/embeddings", json={"input": f"t{i}"}, headers=headers)
                )
            )
            if i >= 4:  # refused: it never reaches the engine
                await until(held[-1].done)
            await until_equal(lambda: state_of(batcher), (computing, formed, queued))
        depth = samples((await client.get("/metrics")).text)[
            ("embedserve_queue_depth", (("model", model),))
        ]
        backend.release.set()
        statuses = [r.status_code for r in await asyncio.gather(*held)]
        text = (await client.get("/metrics")).text
    got = samples(text)
    embeddings = "/v1/embeddings"
    assert got[
        ("embedserve_requests_total", (("route", embeddings), ("status", "200")))
    ] == 2 + statuses.count(200)
    assert got[("embedserve_requests_total", (("route", embeddings), ("status", "400")))] == 1
    assert got[("embedserve_requests_total", (("route", "/v1/models"), ("status", "401")))] == 1
    assert got[("embedserve_request_seconds_count", (("route", embeddings),))] >= 4
    assert got[("embedserve_tokens_total", (("model", model),))] >= usage
    assert got[("embedserve_inputs_total", (("model", model),))] == 3 + statuses.count(200)
    assert got[("embedserve_batch_size_count", (("model", model),))] >= 3
    assert got[("embedserve_batch_tokens_sum", (("model", model),))] > 0
    assert got[("embedserve_model_ready", (("model", model),))] == 1
    assert got[("embedserve_model_load_seconds", (("model", model),))] >= 0
    assert depth == 1
    assert statuses.count(429) == 2
    rejected = ("embedserve_rejected_requests_total", (("model", model), ("reason", "queue_full")))
    assert got[rejected] == statuses.count(429)
    assert KEY not in text


async def test_a_request_queued_past_its_deadline_is_a_503_and_never_computed(minilm) -> None:  # type: ignore[no-untyped-def]
    backend = BlockingBackend()
    limits = batch_limits(max_batch_size=1, timeout_s=0.3)
    _, client = app_client(minilm, backend, embedder={"limits": limits, "token_ids": "native"})
    async with client:
        busy = asyncio.create_task(client.post("/v1/embeddings", json={"input": [[7001]]}))
        await asyncio.to_thread(backend.entered.wait, 5)
        ahead = asyncio.create_task(client.post("/v1/embeddings", json={"input": [[7002]]}))
        late = await client.post("/v1/embeddings", json={"input": [[7003]]})
        backend.release.set()
        assert (await busy).status_code == 200
        ahead_status = (await ahead).status_code
        assert ahead_status in (200, 503)
        got = samples((await client.get("/metrics")).text)
    assert late.status_code == 503
    model = "sentence-transformers/all-MiniLM-L6-v2"
    timeouts = ("embedserve_rejected_requests_total", (("model", model), ("reason", "timeout")))
    assert got[timeouts] == 1 + (ahead_status == 503)
    assert late.headers["retry-after"] == "1"
    assert late.json()["error"]["type"] == "service_unavailable"
    assert "waited more than 0.3s" in late.json()["error"]["message"]
    assert 7003 not in backend.seen  # dropped before it cost compute


async def test_a_request_over_the_token_limit_is_a_400(minilm) -> None:  # type: ignore[no-untyped-def]
    _, client = app_client(minilm, max_request_tokens=20)
    async with client:
        small = await client.post("/v1/embeddings", json={"input": ["a few words"] * 2})
        big = await client.post("/v1/embeddings", json={"input": ["a few words"] * 5})
    assert small.status_code == 200
    assert big.status_code == 400
    assert big.json()["error"]["code"] == "too_many_tokens"
    assert "limit of 20" in big.json()["error"]["message"]


BIG_REQUEST = [f"{n} " + " ".join(["word"] * 300) for n in range(2048)]
"""2,048 inputs of 300 words: about 524,000 tokens after truncation, under every other limit."""


async def test_a_request_over_openais_token_limit_is_refused_at_once_by_default(minilm) -> None:  # type: ignore[no-untyped-def]
    backend = EchoBackend()
    _, client = app_client(minilm, backend)
    async with client:
        big = await client.post("/v1/embeddings", json={"input": BIG_REQUEST})
    assert big.status_code == 400
    assert big.json()["error"]["code"] == "too_many_tokens"
    assert "limit of 300000" in big.json()["error"]["message"]
    assert "--max-request-tokens" in big.json()["error"]["message"]
    assert not backend.batches  # refused before any compute


async def test_a_big_request_computing_past_the_timeout_is_not_a_timeout(minilm) -> None:  # type: ignore[no-untyped-def]
    """Its passes take far longer than the request timeout in all, but it never waits: 200."""
    backend = SlowBackend(0.03)
    limits = batch_limits(max_batch_size=64, timeout_s=0.3)
    _, client = app_client(minilm, backend, embedder={"limits": limits}, max_request_tokens=None)
    async with client:
        big = await client.post("/v1/embeddings", json={"input": BIG_REQUEST})
    assert big.status_code == 200, big.text
    assert len(big.json()["data"]) == len(BIG_REQUEST)
    assert len(backend.batches) >= 2048 // 64  # over a second of compute, past the 0.3 s


async def test_readiness_is_503_while_draining(minilm) -> None:  # type: ignore[no-untyped-def]
    app, client = app_client(minilm)
    async with client:
        assert (await client.get("/ready")).status_code == 200
        app.state.embedserve.draining = True
        response = await client.get("/ready")
        assert response.status_code == 503
        assert response.json()["status"] == "draining"
        assert (await client.post("/v1/embeddings", json={"input": "x"})).status_code == 200


def test_binding_all_interfaces_without_a_key_warns(caplog) -> None:  # type: ignore[no-untyped-def]
    from embedserve.server import warn_if_open as _warn_if_open

    with caplog.at_level(logging.WARNING, logger="embedserve"):
        _warn_if_open(Settings(host="0.0.0.0"))
        _warn_if_open(Settings(host="0.0.0.0", api_keys=(KEY,)))
        _warn_if_open(Settings())
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "without an API key" in warnings[0]


async def test_a_batch_that_fails_fails_only_its_requests_and_serving_goes_on(minilm) -> None:  # type: ignore[no-untyped-def]
    from tests.fakes import FailingBackend

    backend = FailingBackend(poison=7777)
    limits = batch_limits(max_batch_size=1)
    _, client = app_client(minilm, backend, embedder={"limits": limits, "token_ids": "native"})
    async with client:
        ids = [[1234], [7777], [2345], [3456]]
        responses = await asyncio.gather(
            *(client.post("/v1/embeddings", json={"input": [i]}) for i in ids)
        )
        after = await client.post("/v1/embeddings", json={"input": [[4567]]})
    statuses = [r.status_code for r in responses]
    assert statuses == [200, 500, 200, 200]
    assert responses[1].json()["error"]["type"] == "server_error"
    assert after.status_code == 200


async def test_a_model_that_fails_to_load_keeps_readiness_503_with_the_reason(minilm) -> None:  # type: ignore[no-untyped-def]
    from embedserve.engine.registry import ModelRegistry, ServedModel
    from embedserve.errors import ModelUnavailable
    from tests.fakes import client_for

    def broken(_source: ModelSource) -> None:
        raise ModelUnavailable("model.safetensors is truncated")

    async with client_for(ModelRegistry([ServedModel(minilm, broken)])) as client:  # type: ignore[arg-type]
        for _ in range(2):  # the failure is kept, not retried on every request
            response = await client.post("/v1/embeddings", json={"input": "x"})
            assert response.status_code == 503
            assert "model.safetensors is truncated" in response.json()["error"]["message"]
            ready = await client.get("/ready")
            assert ready.status_code == 503
            assert ready.json()["status"] == "failed"
            assert "truncated" in ready.json()["models"][0]["error"]
        assert (await client.get("/health")).status_code == 200


async def test_keys_never_reach_the_logs(minilm, caplog) -> None:  # type: ignore[no-untyped-def]
    with caplog.at_level(logging.DEBUG):
        _, client = app_client(minilm, api_keys=(KEY,))
        async with client:
            for key in (KEY, one_char_off(KEY), "sk-wrong-secret-key"):
                headers = {"Authorization": f"Bearer {key}"}
                await client.post("/v1/embeddings", json={"input": "x"}, headers=headers)
                await client.post("/v1/embeddings", json={"input": 5}, headers=headers)
    text = caplog.text + "".join(str(r.__dict__) for r in caplog.records)
    assert caplog.records  # the access log did write
    for secret in (KEY, one_char_off(KEY), "sk-wrong-secret-key"):
        assert secret not in text


async def test_a_lazy_load_that_builds_leaves_the_other_models_logs_alone(  # type: ignore[no-untyped-def]
    minilm, caplog
) -> None:
    """A build silences the libraries it runs (some log on the root logger), on its own thread
    only: a request to another model meanwhile is logged, and so is anything else."""
    import threading

    from embedserve.backends.build_steps import step
    from embedserve.config import ModelSpec
    from embedserve.engine.registry import ModelRegistry, ServedModel

    building, release = threading.Event(), threading.Event()

    def build() -> None:
        logging.getLogger().info("exporter: node 1 of 900")  # a library's chatter, on root
        logging.getLogger("onnxruntime.transformers").warning("fusion skipped")
        building.set()
        assert release.wait(10)

    def slow_loader(source: ModelSource):  # type: ignore[no-untyped-def]
        step(1, 1, "building the lazy model", build)
        return fake_embedder(source, EchoBackend())

    ready = ServedModel(minilm, lambda s: fake_embedder(s, EchoBackend()), ModelSpec(name="ready"))
    ready.load()
    lazy = ServedModel(minilm, slow_loader, ModelSpec(name="lazy"))
    app = create_app(Settings(), ModelRegistry([ready, lazy], default="ready"))
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    caplog.set_level(logging.INFO)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        first = asyncio.create_task(
            client.post("/v1/embeddings", json={"input": "x", "model": "lazy"})
        )
        assert await asyncio.to_thread(building.wait, 10)
        other = await client.post("/v1/embeddings", json={"input": "y", "model": "ready"})
        logging.getLogger("somelib").info("a library on another thread")
        during = list(caplog.messages)
        release.set()
        assert (await first).status_code == 200
    assert other.status_code == 200
    assert any('"POST /v1/embeddings" 200' in m for m in during)  # logged while it built
    assert "a library on another thread" in during
    assert "exporter: node 1 of 900" not in caplog.messages
    assert "fusion skipped" not in caplog.messages
    assert any("[1/1] building the lazy model: done" in m for m in caplog.messages)
