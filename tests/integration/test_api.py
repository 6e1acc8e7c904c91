"""The whole app in-process on the real packaged model, compared with sentence-transformers."""

from __future__ import annotations

import asyncio
import base64
import logging
from collections.abc import AsyncIterator

import httpx
import numpy as np
import pytest

from embedserve.config import Settings
from embedserve.engine.embedder import Embedder
from embedserve.engine.registry import ModelRegistry, ServedModel
from embedserve.models.source import ModelSource
from tests.conftest import VARIED_TEXTS, cosines, reference_vectors
from tests.fakes import (
    BlockingBackend,
    EchoBackend,
    FailingBackend,
    batch_limits,
    client_for,
    fake_embedder,
    registry_with,
    state_of,
    taken_or_refused,
    until,
    until_equal,
)


@pytest.fixture
def client(minilm: ModelSource, embedder: Embedder) -> httpx.AsyncClient:
    return client_for(registry_with(minilm, embedder))


def vectors(body: dict) -> np.ndarray:  # type: ignore[type-arg]
    rows = sorted(body["data"], key=lambda d: d["index"])
    return np.array([r["embedding"] for r in rows], dtype=np.float32)


async def test_embeddings_equal_sentence_transformers(client, reference) -> None:  # type: ignore[no-untyped-def]
    response = await client.post(
        "/v1/embeddings", json={"input": VARIED_TEXTS, "model": "text-embedding-3-small"}
    )
    assert response.status_code == 200
    body = response.json()
    assert body["object"] == "list"
    assert body["model"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert [d["index"] for d in body["data"]] == list(range(len(VARIED_TEXTS)))
    assert all(d["object"] == "embedding" for d in body["data"])
    got = vectors(body)
    assert got.shape == (len(VARIED_TEXTS), 384)
    assert cosines(got, reference_vectors(reference, VARIED_TEXTS)).min() >= 0.9999
    assert np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)


async def test_usage_counts_the_tokens_the_model_processed(client, reference) -> None:  # type: ignore[no-untyped-def]
    texts = ["hello world", "word " * 600]
    body = (await client.post("/v1/embeddings", json={"input": texts})).json()
    expected = sum(
        len(reference.tokenizer(t, truncation=True, max_length=256)["input_ids"]) for t in texts
    )
    assert body["usage"] == {"prompt_tokens": expected, "total_tokens": expected}
    assert expected == 4 + 256  # the over-long text counts after truncation


async def test_single_string_and_empty_string(client, reference) -> None:  # type: ignore[no-untyped-def]
    for text in ("hello", ""):
        body = (await client.post("/v1/embeddings", json={"input": text})).json()
        assert len(body["data"]) == 1
        assert cosines(vectors(body), reference_vectors(reference, [text]))[0] >= 0.9999
        assert body["usage"]["prompt_tokens"] > 0


async def test_base64_is_little_endian_float32_of_the_same_vector(client) -> None:  # type: ignore[no-untyped-def]
    texts = ["alpha", "beta gamma"]
    floats = vectors((await client.post("/v1/embeddings", json={"input": texts})).json())
    body = (
        await client.post("/v1/embeddings", json={"input": texts, "encoding_format": "base64"})
    ).json()
    decoded = np.array(
        [np.frombuffer(base64.b64decode(d["embedding"]), dtype="<f4") for d in body["data"]]
    )
    assert np.allclose(decoded, floats, atol=1e-7)


async def test_dimensions_truncate_and_renormalize(client) -> None:  # type: ignore[no-untyped-def]
    full = vectors((await client.post("/v1/embeddings", json={"input": ["x y z"]})).json())
    body = (await client.post("/v1/embeddings", json={"input": ["x y z"], "dimensions": 64})).json()
    cut = vectors(body)
    assert cut.shape == (1, 64)
    assert np.isclose(np.linalg.norm(cut), 1.0, atol=1e-5)
    assert cosines(cut, full[:, :64])[0] >= 0.9999


async def test_token_arrays_embed_like_their_text(client) -> None:  # type: ignore[no-untyped-def]
    import tiktoken

    encoding = tiktoken.get_encoding("cl100k_base")
    texts = ["hello world", "naïve café 東京"]
    by_text = vectors((await client.post("/v1/embeddings", json={"input": texts})).json())
    ids = [encoding.encode(t) for t in texts]
    by_ids = vectors((await client.post("/v1/embeddings", json={"input": ids})).json())
    assert cosines(by_ids, by_text).min() >= 0.99999
    one = vectors((await client.post("/v1/embeddings", json={"input": ids[0]})).json())
    assert cosines(one, by_text[:1])[0] >= 0.99999


async def test_truncate_false_refuses_over_long_input(client) -> None:  # type: ignore[no-untyped-def]
    response = await client.post(
        "/v1/embeddings", json={"input": ["ok", "word " * 600], "truncate": False}
    )
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "context_length_exceeded"
    assert "input[1]" in error["message"]
    short = await client.post("/v1/embeddings", json={"input": "ok", "truncate": False})
    assert short.status_code == 200


async def test_server_flag_refuses_over_long_input(minilm, embedder) -> None:  # type: ignore[no-untyped-def]
    async with client_for(registry_with(minilm, embedder), Settings(truncate=False)) as client:
        response = await client.post("/v1/embeddings", json={"input": "word " * 600})
        assert response.status_code == 400
        allowed = await client.post(
            "/v1/embeddings", json={"input": "word " * 600, "truncate": True}
        )
        assert allowed.status_code == 200


BAD_REQUESTS = [
    ({"input": 5}, "input", "must be a string"),
    ({"model": "m"}, "input", "'input' is required"),
    ({"input": []}, "input", "must not be an empty array"),
    ({"input": ["a", [1]]}, "input", "mixes strings"),
    ({"input": [[1, -4]]}, "input", "not a cl100k_base token id"),
    ({"input": [[1, 10**12]]}, "input", "not a cl100k_base token id"),
    ({"input": "a", "encoding_format": "float16"}, "encoding_format", "'binary' or 'ubinary'"),
    ({"input": "a", "dimensions": 0}, "dimensions", "between 1 and 384"),
    ({"input": "a", "dimensions": 385}, "dimensions", "between 1 and 384"),
    ({"input": "a", "dimensions": "many"}, "dimensions", "integer"),
    ({"input": "a", "dimensions": True}, "dimensions", "integer"),
    ({"input": "a", "dimensions": 5.0}, "dimensions", "integer"),
    ({"input": "a", "truncate": "maybe"}, "truncate", "boolean"),
    ({"input": "a", "truncate": 1}, "truncate", "boolean"),
    ([1, 2], None, "must be a JSON object"),
]


@pytest.mark.parametrize(("payload", "param", "fragment"), BAD_REQUESTS)
async def test_bad_input_is_a_400_envelope(client, payload, param, fragment) -> None:  # type: ignore[no-untyped-def]
    response = await client.post("/v1/embeddings", json=payload)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param
    assert fragment in error["message"]


async def test_too_many_inputs(minilm, embedder) -> None:  # type: ignore[no-untyped-def]
    async with client_for(registry_with(minilm, embedder), Settings(max_inputs=3)) as client:
        response = await client.post("/v1/embeddings", json={"input": ["a"] * 4})
        assert response.status_code == 400
        assert "limit of 3" in response.json()["error"]["message"]
    default = client_for(registry_with(minilm, embedder))
    response = await default.post("/v1/embeddings", json={"input": ["a"] * 2049})
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "too_many_inputs"


@pytest.mark.parametrize(
    ("content", "headers", "status", "fragment"),
    [
        (b'{"input": "a"', {"content-type": "application/json"}, 400, "not valid JSON"),
        (b"", {"content-type": "application/json"}, 400, "body"),
        (
            b'{"input": "a\\ud800b"}',
            {"content-type": "application/json"},
            400,
            "unpaired surrogate",
        ),
        (
            b'{"input": ["ok", "\\udfff"]}',
            {"content-type": "application/json"},
            400,
            "input[1] is not valid",
        ),
        (
            b'{"input": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
            {"content-type": "application/json"},
            400,
            "nested too deeply",
        ),
        (b'{"input": "a"}', {"content-type": "text/plain"}, 415, "Content-Type: application/json"),
        (
            b"input=a",
            {"content-type": "application/x-www-form-urlencoded"},
            415,
            "application/json",
        ),
    ],
)
async def test_malformed_bodies(client, content, headers, status, fragment) -> None:  # type: ignore[no-untyped-def]
    response = await client.post("/v1/embeddings", content=content, headers=headers)
    assert response.status_code == status, response.text
    assert fragment in response.json()["error"]["message"]


async def test_over_large_body_is_413(minilm, embedder) -> None:  # type: ignore[no-untyped-def]
    async with client_for(registry_with(minilm, embedder), Settings(max_body_bytes=1000)) as client:
        response = await client.post("/v1/embeddings", json={"input": "x" * 2000})
        assert response.status_code == 413
        assert response.json()["error"]["code"] == "request_too_large"

        async def chunks() -> AsyncIterator[bytes]:
            yield b'{"input": "'
            for _ in range(10):
                yield b"y" * 200  # no Content-Length: the limit is counted as it streams
            yield b'"}'

        streamed = await client.post("/v1/embeddings", content=chunks())
        assert streamed.status_code == 413


async def test_unknown_route_and_wrong_method(client) -> None:  # type: ignore[no-untyped-def]
    missing = await client.get("/v1/nothing")
    assert missing.status_code == 404
    assert missing.json()["error"]["type"] == "not_found_error"
    wrong = await client.get("/v1/embeddings")
    assert wrong.status_code == 405
    assert "GET is not allowed" in wrong.json()["error"]["message"]


async def test_strict_model_names(minilm, embedder) -> None:  # type: ignore[no-untyped-def]
    async with client_for(registry_with(minilm, embedder, strict=True)) as client:
        unknown = await client.post(
            "/v1/embeddings", json={"input": "a", "model": "text-embedding-3-small"}
        )
        assert unknown.status_code == 404
        assert unknown.json()["error"]["code"] == "model_not_found"
        known = await client.post(
            "/v1/embeddings", json={"input": "a", "model": "all-MiniLM-L6-v2"}
        )
        assert known.status_code == 200


async def test_server_fault_is_a_500_envelope_logged_once_with_its_request_id(minilm) -> None:  # type: ignore[no-untyped-def]
    from embedserve.api.app import create_app
    from embedserve.logs import REQUEST_ID

    logged: list[tuple[str, str]] = []

    class Spy(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            logged.append((record.getMessage(), REQUEST_ID.get()))

    spy = Spy()
    logging.getLogger("embedserve.api.errors").addHandler(spy)
    app = create_app(Settings(), registry_with(minilm, fake_embedder(minilm, FailingBackend())))
    # The fault must not leave the app: a server would log its traceback again.
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=True)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            headers = {"X-Request-ID": "fault-1"}
            response = await client.post("/v1/embeddings", json={"input": "boom"}, headers=headers)
            again = await client.get("/health")
    finally:
        logging.getLogger("embedserve.api.errors").removeHandler(spy)
    assert response.status_code == 500
    assert response.headers["X-Request-ID"] == "fault-1"
    assert response.json()["error"]["type"] == "server_error"
    assert "simulated" not in response.text
    assert "Traceback" not in response.text
    assert logged == [("internal error on POST /v1/embeddings: simulated backend fault", "fault-1")]
    assert again.status_code == 200


async def test_models_endpoints(client) -> None:  # type: ignore[no-untyped-def]
    listing = (await client.get("/v1/models")).json()
    assert listing["object"] == "list"
    (card,) = listing["data"]
    assert card["id"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert (card["object"], card["dimension"], card["max_tokens"]) == ("model", 384, 256)
    assert card["selection"].startswith(f"precision auto: {card['precision']} on ")
    one = await client.get("/v1/models/sentence-transformers/all-MiniLM-L6-v2")
    assert one.status_code == 200
    assert one.json()["id"] == card["id"]
    assert (await client.get("/v1/models/nope")).status_code == 404


async def test_docs_and_openapi(client) -> None:  # type: ignore[no-untyped-def]
    assert (await client.get("/docs")).status_code == 200
    schema = (await client.get("/openapi.json")).json()
    assert "/v1/embeddings" in schema["paths"]


async def test_readiness_is_503_until_the_model_loads(minilm) -> None:  # type: ignore[no-untyped-def]
    model = ServedModel(minilm, lambda s: fake_embedder(s, EchoBackend()))
    async with client_for(ModelRegistry([model])) as client:
        assert (await client.get("/health")).status_code == 200
        not_ready = await client.get("/ready")
        assert not_ready.status_code == 503
        assert not_ready.json()["status"] == "loading"
        assert (await client.post("/v1/embeddings", json={"input": "a"})).status_code == 200
        assert (await client.get("/ready")).status_code == 200


async def test_32_concurrent_requests_each_get_their_own_vectors(client, reference) -> None:  # type: ignore[no-untyped-def]
    requests = [
        [f"request {i} text {j} about topic {i * 7 % 5}" for j in range(i % 4 + 1)]
        for i in range(32)
    ]
    responses = await asyncio.gather(
        *(client.post("/v1/embeddings", json={"input": texts}) for texts in requests)
    )
    for texts, response in zip(requests, responses, strict=True):
        assert response.status_code == 200
        got = vectors(response.json())
        assert cosines(got, reference_vectors(reference, texts)).min() >= 0.9999


async def test_health_answers_while_a_batch_computes(minilm) -> None:  # type: ignore[no-untyped-def]
    backend = BlockingBackend()
    registry = registry_with(minilm, fake_embedder(minilm, backend))
    async with client_for(registry) as client:
        slow = asyncio.create_task(client.post("/v1/embeddings", json={"input": "slow"}))
        await asyncio.to_thread(backend.entered.wait, 10)
        health = await client.get("/health")  # would hang if inference held the event loop
        assert health.status_code == 200
        assert not slow.done()
        other = asyncio.create_task(client.post("/v1/embeddings", json={"input": "queued"}))
        batcher = registry.models[0].loaded.batcher  # type: ignore[union-attr]
        await until(lambda: state_of(batcher) == (1, 1, 0))  # it waits behind the held pass
        backend.release.set()
        assert (await slow).status_code == 200
        assert (await other).status_code == 200


async def test_overload_is_a_429_with_retry_after_and_recovers(minilm) -> None:  # type: ignore[no-untyped-def]

    backend = BlockingBackend()
    limits = batch_limits(max_batch_size=1, max_queued=2)
    embedder = fake_embedder(minilm, backend, limits=limits)
    async with client_for(registry_with(minilm, embedder)) as client:
        # The held backend takes at most 1 + 1 prepared + 1 in hand + 2 queued: 10 must overflow.
        tasks = []
        for i in range(10):
            tasks.append(
                asyncio.create_task(client.post("/v1/embeddings", json={"input": f"t {i}"}))
            )
            # each is taken (computing, formed or queued) or refused before the next comes
            await until_equal(lambda: taken_or_refused(embedder.batcher, tasks), i + 1)
        backend.release.set()
        responses = await asyncio.gather(*tasks)
        refused = [r for r in responses if r.status_code == 429]
        assert len(refused) >= 5
        assert all(r.status_code in (200, 429) for r in responses)
        assert all(r.headers["retry-after"] == "1" for r in refused)
        assert all(r.json()["error"]["type"] == "rate_limit_error" for r in refused)
        assert (await client.post("/v1/embeddings", json={"input": "after"})).status_code == 200


async def test_a_client_that_disconnects_frees_its_queued_work(minilm) -> None:  # type: ignore[no-untyped-def]
    import json

    from embedserve.api.app import create_app

    backend = BlockingBackend()
    embedder = fake_embedder(minilm, backend, token_ids="native")
    app = create_app(Settings(), registry_with(minilm, embedder))
    async with client_for(registry_with(minilm, embedder)) as client:
        busy = asyncio.create_task(client.post("/v1/embeddings", json={"input": [[7001]]}))
        await asyncio.to_thread(backend.entered.wait, 5)
        ahead = asyncio.create_task(client.post("/v1/embeddings", json={"input": [[7002]]}))
        await until(lambda: state_of(embedder.batcher) == (1, 1, 0))

        leave = asyncio.Event()
        body = json.dumps({"input": [[7003]]}).encode()
        messages = [{"type": "http.request", "body": body, "more_body": False}]

        async def receive():  # type: ignore[no-untyped-def]
            if messages:
                return messages.pop(0)
            await leave.wait()
            return {"type": "http.disconnect"}

        sent: list[dict] = []  # type: ignore[type-arg]

        async def send(message):  # type: ignore[no-untyped-def]
            sent.append(message)

        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "POST",
            "scheme": "http",
            "path": "/v1/embeddings",
            "raw_path": b"/v1/embeddings",
            "query_string": b"",
            "root_path": "",
            "client": ("127.0.0.1", 1),
            "server": ("t", 80),
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
        gone = asyncio.create_task(app(scope, receive, send))
        await until(lambda: state_of(embedder.batcher) == (1, 2, 0))  # 7003 in the former's hands
        leave.set()  # the client goes away while its request waits in the queue
        await gone
        backend.release.set()
        assert (await busy).status_code == 200
        assert (await ahead).status_code == 200
    assert 7003 not in backend.seen
    assert sent[0]["status"] == 499


async def test_large_responses_are_serialized_off_the_event_loop(client, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import threading

    from embedserve.api import calls
    from embedserve.api.encoding import render_json as render

    threads: list[int] = []

    def spy(content):  # type: ignore[no-untyped-def]
        threads.append(threading.get_ident())
        return render(content)

    monkeypatch.setattr(calls, "render_json", spy)
    response = await client.post("/v1/embeddings", json={"input": [f"t {i}" for i in range(100)]})
    assert response.status_code == 200
    assert len(response.json()["data"]) == 100
    assert threads
    assert threads[0] != threading.get_ident()


async def test_a_domain_error_missing_from_the_status_table_is_a_500_never_a_400(
    minilm: ModelSource, caplog: pytest.LogCaptureFixture
) -> None:
    from embedserve.errors import EmbedServeError

    class Unlisted(EmbedServeError):
        """A new error kind someone forgot to give a status."""

    class Raising(EchoBackend):
        def embed(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
            raise Unlisted("an error kind the table does not know")

    async with client_for(registry_with(minilm, fake_embedder(minilm, Raising()))) as client:
        response = await client.post("/v1/embeddings", json={"input": "x"})
    assert response.status_code == 500
    assert response.json()["error"]["type"] == "server_error"
    assert "does not know" not in response.text
    assert any("internal error on POST /v1/embeddings" in m for m in caplog.messages)
