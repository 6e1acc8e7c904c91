"""OpenAI pass-through against a fake upstream: success, splitting, retries and every failure."""

from __future__ import annotations

import logging
import socket
import time

import numpy as np
import pytest

from embedserve.engine.registry import ModelRegistry, ServedModel
from embedserve.engine.upstream import UpstreamEmbedder
from embedserve.models.source import resolve
from tests.fake_upstream import FakeUpstream, Script, vector_for
from tests.fakes import client_for

KEY = "sk-test-secret-key-1234"


def upstream_registry(url: str, *, minilm=None, embedder=None, **options):  # type: ignore[no-untyped-def]
    options = {"backoff_s": 0.01, **options}
    upstream = ServedModel(
        resolve("openai:text-embedding-3-small"),
        lambda _s: UpstreamEmbedder(url, "text-embedding-3-small", KEY, **options),
    )
    upstream.load()
    models = [upstream]
    if minilm is not None:
        local = ServedModel(minilm, lambda _s: embedder)
        local.load()
        models.append(local)
    return ModelRegistry(models, default="text-embedding-3-small")


def unit(vectors: list[np.ndarray]) -> np.ndarray:
    stacked = np.stack(vectors)
    units: np.ndarray = stacked / np.linalg.norm(stacked, axis=1, keepdims=True)
    return units


async def test_pass_through_returns_the_upstream_vectors_and_usage() -> None:
    script = Script()
    with FakeUpstream(script) as upstream:
        async with client_for(upstream_registry(upstream.url)) as client:
            texts = ["hello world", "a b c"]
            response = await client.post(
                "/v1/embeddings", json={"input": texts, "model": "text-embedding-3-small"}
            )
            ids = await client.post(
                "/v1/embeddings", json={"input": [[1, 2, 3]], "encoding_format": "base64"}
            )
    assert response.status_code == 200
    body = response.json()
    got = np.array([d["embedding"] for d in body["data"]], dtype=np.float32)
    assert np.allclose(got, unit([vector_for(t) for t in texts]), atol=1e-6)
    assert body["usage"] == {"prompt_tokens": 5, "total_tokens": 5}  # as the upstream reported
    assert body["model"] == "text-embedding-3-small"
    assert ids.status_code == 200
    assert script.requests[1]["input"] == [[1, 2, 3]]  # token ids pass through untouched
    assert script.requests[0]["model"] == "text-embedding-3-small"
    assert script.requests[0]["encoding_format"] == "base64"
    assert script.keys[0] == f"Bearer {KEY}"


async def test_large_requests_are_split() -> None:
    script = Script(max_inputs=3)
    with FakeUpstream(script) as upstream:
        async with client_for(upstream_registry(upstream.url, max_inputs=3)) as client:
            texts = [f"text {i}" for i in range(8)]
            response = await client.post("/v1/embeddings", json={"input": texts})
    assert response.status_code == 200
    assert sorted(len(r["input"]) for r in script.requests) == [2, 3, 3]
    got = np.array([d["embedding"] for d in response.json()["data"]], dtype=np.float32)
    assert np.allclose(got, unit([vector_for(t) for t in texts]), atol=1e-6)
    assert response.json()["usage"]["prompt_tokens"] == 16


async def test_429_and_5xx_are_retried_honouring_retry_after() -> None:
    script = Script(failures=[(429, {"Retry-After": "0.2"}), (503, {}), (500, {})])
    with FakeUpstream(script) as upstream:
        async with client_for(upstream_registry(upstream.url)) as client:
            started = time.perf_counter()
            response = await client.post("/v1/embeddings", json={"input": "x"})
            elapsed = time.perf_counter() - started
    assert response.status_code == 200
    assert len(script.requests) == 4
    assert elapsed >= 0.2  # waited as the upstream asked


async def test_a_refused_key_is_a_502_that_never_shows_the_key(caplog) -> None:  # type: ignore[no-untyped-def]
    caplog.set_level(logging.DEBUG)
    script = Script(always=(401, {"error": {"message": f"Incorrect API key provided: {KEY}"}}))
    with FakeUpstream(script) as upstream:
        async with client_for(upstream_registry(upstream.url)) as client:
            response = await client.post("/v1/embeddings", json={"input": "x"})
    assert response.status_code == 502
    assert "refused this server's API key" in response.json()["error"]["message"]
    assert KEY not in response.text
    assert all(KEY not in r.getMessage() for r in caplog.records)
    assert len(script.requests) == 1  # an auth failure is not retried


async def test_an_upstream_that_is_down_is_a_502_in_bounded_time() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}/v1"  # nothing listens there
    async with client_for(upstream_registry(dead, attempts=2)) as client:
        started = time.perf_counter()
        response = await client.post("/v1/embeddings", json={"input": "x"})
    assert response.status_code == 502
    assert "unreachable" in response.json()["error"]["message"]
    assert time.perf_counter() - started < 5


async def test_a_slow_upstream_is_a_504_in_bounded_time() -> None:
    script = Script(delay_s=2.0)
    with FakeUpstream(script) as upstream:
        async with client_for(upstream_registry(upstream.url, timeout_s=0.3, attempts=2)) as client:
            started = time.perf_counter()
            response = await client.post("/v1/embeddings", json={"input": "x"})
            elapsed = time.perf_counter() - started
    assert response.status_code == 504
    assert response.json()["error"]["type"] == "upstream_timeout"
    assert elapsed < 1.5


async def test_errors_in_the_users_input_come_back_as_400() -> None:
    script = Script(always=(400, {"error": {"message": "dimensions must be at most 1536"}}))
    with FakeUpstream(script) as upstream:
        async with client_for(upstream_registry(upstream.url)) as client:
            response = await client.post("/v1/embeddings", json={"input": "x", "dimensions": 9999})
    assert response.status_code == 400
    assert "dimensions must be at most 1536" in response.json()["error"]["message"]
    assert script.requests[0]["dimensions"] == 9999


async def test_upstream_beside_a_local_model(minilm, embedder, reference) -> None:  # type: ignore[no-untyped-def]
    from tests.conftest import cosines, reference_vectors

    with FakeUpstream(Script()) as upstream:
        registry = upstream_registry(upstream.url, minilm=minilm, embedder=embedder)
        async with client_for(registry) as client:
            local = await client.post(
                "/v1/embeddings", json={"input": ["hi"], "model": "all-MiniLM-L6-v2"}
            )
            remote = await client.post(
                "/v1/embeddings", json={"input": ["hi"], "model": "whatever"}
            )
            cards = (await client.get("/v1/models")).json()["data"]
    got = np.array([local.json()["data"][0]["embedding"]], dtype=np.float32)
    assert cosines(got, reference_vectors(reference, ["hi"]))[0] >= 0.9999
    assert remote.json()["model"] == "text-embedding-3-small"  # the configured default
    assert {c["id"]: c["backend"] for c in cards}["text-embedding-3-small"] == "upstream"


def test_use_openai_embedding_flag_and_missing_key(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from embedserve.cli import parse_settings
    from embedserve.config import ModelSpec
    from embedserve.engine.loading import load_service
    from embedserve.errors import ModelUnavailable

    settings = parse_settings(
        ["serve", "--use_openai_embedding", "--openai_model", "text-embedding-3-large"]
    )
    assert settings.models == (ModelSpec(ref="openai:text-embedding-3-large"),)
    both = parse_settings(["serve", "--model", "all-MiniLM-L6-v2", "--use_openai_embedding=True"])
    assert [m.ref for m in both.models] == ["all-MiniLM-L6-v2", "openai:text-embedding-3-small"]
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(ModelUnavailable, match="needs the upstream's key in OPENAI_API_KEY"):
        load_service(resolve("openai:text-embedding-3-small"), settings)
    assert KEY not in repr(UpstreamEmbedder("http://x", "m", KEY))
