"""The app's own lifecycle: its lifespan loads and warms the models (or leaves them to first
use), closes them when it stops (the upstream's HTTP client too), and says in one line why it
could not start. In-process, through the ASGI lifespan protocol."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import httpx
import pytest

from embedserve.api.app import create_app
from embedserve.config import Settings
from embedserve.engine.embedder import Embedder
from embedserve.engine.registry import ModelRegistry, ServedModel
from embedserve.engine.upstream import UpstreamEmbedder
from embedserve.errors import ModelUnavailable
from embedserve.models.source import ModelSource, resolve
from tests.fake_upstream import FakeUpstream, Script
from tests.fakes import EchoBackend, fake_embedder


class Counting:
    """A loader that makes a fresh fake embedder each time, and keeps them."""

    def __init__(self) -> None:
        self.loaded: list[Embedder] = []

    def __call__(self, source: ModelSource) -> Embedder:
        self.loaded.append(fake_embedder(source, EchoBackend()))
        return self.loaded[-1]


async def lifespan_messages(app: Any, *events: str) -> list[dict[str, Any]]:
    """Drive the app's lifespan as an ASGI server does: startup, then shutdown if it started."""
    inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    for event in events:
        inbox.put_nowait({"type": f"lifespan.{event}"})
    scope = {"type": "lifespan", "asgi": {"version": "3.0", "spec_version": "2.0"}, "state": {}}
    with contextlib.suppress(Exception):  # Starlette re-raises a failed startup once it said so
        await app(scope, inbox.get, send)
    return sent


async def test_the_lifespan_loads_before_it_reports_started_and_closes_at_shutdown(
    minilm: ModelSource,
) -> None:
    loader = Counting()
    app = create_app(Settings(), ModelRegistry([ServedModel(minilm, loader)]))
    async with app.router.lifespan_context(app):
        assert len(loader.loaded) == 1  # loaded before any request
        embedder = loader.loaded[0]
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            assert (await client.get("/ready")).status_code == 200
            response = await client.post("/v1/embeddings", json={"input": "hello"})
            assert response.status_code == 200
        threads = embedder.batcher._threads
        assert all(thread.is_alive() for thread in threads)
    assert not any(thread.is_alive() for thread in threads)  # closed at shutdown
    assert app.state.embedserve.serving.registry.models[0].loaded is None


async def test_without_preload_the_lifespan_loads_nothing_and_the_first_request_does(
    minilm: ModelSource,
) -> None:
    loader = Counting()
    app = create_app(Settings(preload=False), ModelRegistry([ServedModel(minilm, loader)]))
    async with app.router.lifespan_context(app):
        assert loader.loaded == []
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            assert (await client.get("/ready")).status_code == 503
            requests = [client.post("/v1/embeddings", json={"input": f"t{i}"}) for i in range(8)]
            assert {r.status_code for r in await asyncio.gather(*requests)} == {200}
        assert len(loader.loaded) == 1  # once, under eight concurrent first requests
    assert not any(t.is_alive() for t in loader.loaded[0].batcher._threads)


async def test_an_app_started_again_loads_its_models_again(minilm: ModelSource) -> None:
    loader = Counting()
    app = create_app(Settings(), ModelRegistry([ServedModel(minilm, loader)]))
    for _ in range(2):
        async with app.router.lifespan_context(app):
            pass
    assert len(loader.loaded) == 2


async def test_the_upstream_client_is_closed_on_the_loop_that_used_it() -> None:
    with FakeUpstream(Script()) as upstream:
        service = UpstreamEmbedder(upstream.url, "text-embedding-3-small", "sk-k")
        model = ServedModel(resolve("openai:text-embedding-3-small"), lambda _s: service)
        app = create_app(Settings(), ModelRegistry([model]))
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
                assert (await client.post("/v1/embeddings", json={"input": "x"})).status_code == 200
            client_used = service._client
            assert client_used is not None
            assert not client_used.is_closed
        assert client_used.is_closed
        assert service._client is None


async def test_a_model_that_cannot_be_served_fails_startup_in_one_line(
    minilm: ModelSource,
) -> None:
    def broken(_source: ModelSource) -> Embedder:
        raise ModelUnavailable("model.safetensors is truncated")

    app = create_app(Settings(), ModelRegistry([ServedModel(minilm, broken)]))
    sent = await lifespan_messages(app, "startup")
    (failed,) = [m for m in sent if m["type"] == "lifespan.startup.failed"]
    assert "model.safetensors is truncated" in failed["message"]
    assert "Traceback" not in failed["message"]
    assert "\n" not in failed["message"]
    assert app.state.embedserve.startup_error is not None


@pytest.mark.parametrize("preload", [True, False])
async def test_the_lifespan_protocol_completes_both_ways(
    minilm: ModelSource, preload: bool
) -> None:
    app = create_app(Settings(preload=preload), ModelRegistry([ServedModel(minilm, Counting())]))
    sent = await lifespan_messages(app, "startup", "shutdown")
    assert [m["type"] for m in sent] == [
        "lifespan.startup.complete",
        "lifespan.shutdown.complete",
    ]


async def test_a_stop_during_start_up_loads_no_more_models(minilm: ModelSource) -> None:
    from embedserve.config import ModelSpec

    loaded: list[str] = []
    app: Any = None

    def loader(name: str):  # type: ignore[no-untyped-def]
        def load(source: ModelSource) -> Embedder:
            loaded.append(name)
            app.state.embedserve.draining = True  # SIGTERM arrives while the first one loads
            return fake_embedder(source, EchoBackend())

        return load

    models = [ServedModel(minilm, loader(n), ModelSpec(name=n)) for n in ("first", "second")]
    app = create_app(Settings(), ModelRegistry(models, default="first"))
    sent = await lifespan_messages(app, "startup", "shutdown")
    assert loaded == ["first"]
    assert [m["type"] for m in sent] == ["lifespan.startup.complete", "lifespan.shutdown.complete"]


async def test_a_closed_model_is_not_loaded_again_by_a_late_request(minilm: ModelSource) -> None:
    from embedserve.errors import ModelNotReady

    loader = Counting()
    model = ServedModel(minilm, loader)
    app = create_app(Settings(), ModelRegistry([model]))
    async with app.router.lifespan_context(app):
        pass
    with pytest.raises(ModelNotReady, match="the server is stopping"):
        await model.service()
    assert len(loader.loaded) == 1  # nothing left running that no one will close
