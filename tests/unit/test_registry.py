import asyncio
import gc
import mmap
import threading
import time

import numpy as np
import pytest

from embedserve.config import ModelSpec
from embedserve.engine.registry import ModelRegistry, ServedModel
from embedserve.errors import ConfigError, ModelNotFound, ModelNotReady
from embedserve.models.source import ModelSource
from tests.fakes import EchoBackend, client_for, fake_embedder


def test_one_model_answers_any_name_unless_strict(minilm: ModelSource) -> None:
    model = ServedModel(minilm, lambda s: fake_embedder(s, EchoBackend()))
    lenient = ModelRegistry([model])
    assert lenient.resolve("text-embedding-3-small") is model
    assert lenient.resolve(None) is model
    strict = ModelRegistry([model], strict=True)
    assert strict.resolve("all-MiniLM-L6-v2") is model
    assert strict.resolve("sentence-transformers/all-MiniLM-L6-v2") is model
    with pytest.raises(ModelNotFound, match="served models: sentence-transformers/all-MiniLM"):
        strict.resolve("text-embedding-3-small")


async def test_lazy_load_happens_once_under_16_concurrent_first_requests(
    minilm: ModelSource,
) -> None:
    calls = []
    lock = threading.Lock()

    def slow_loader(source: ModelSource):  # type: ignore[no-untyped-def]
        with lock:
            calls.append(source.id)
        time.sleep(0.3)  # concurrent requests arrive while the load is under way
        return fake_embedder(source, EchoBackend())

    model = ServedModel(minilm, slow_loader)
    assert model.loaded is None
    embedders = await asyncio.gather(*(model.service() for _ in range(16)))
    assert calls == [minilm.id]
    assert all(e is embedders[0] for e in embedders)


async def test_a_failed_load_is_reported_not_retried_silently(minilm: ModelSource) -> None:
    def broken(source: ModelSource):  # type: ignore[no-untyped-def]
        raise OSError("weights are corrupt")

    model = ServedModel(minilm, broken)
    with pytest.raises(ModelNotReady, match="weights are corrupt"):
        await model.service()
    assert model.error is not None
    assert "weights are corrupt" in model.error


def test_rerank_requests_reach_the_default_reranker_among_several(minilm: ModelSource) -> None:
    def served(name: str, task: str) -> ServedModel:
        model = ServedModel(minilm, lambda s: fake_embedder(s, EchoBackend()), ModelSpec(name=name))
        model.task = task
        return model

    embedder, first, second = (
        served("e", "embed"),
        served("ce-1", "rerank"),
        served("ce-2", "rerank"),
    )
    models = [embedder, first, second]
    # Two rerankers and no choice: a rerank request goes to the default embedding model.
    assert ModelRegistry(models, default="e").resolve(None, "rerank") is embedder
    chosen = ModelRegistry(models, default="e", default_reranker="ce-2")
    assert chosen.resolve(None, "rerank") is second
    assert chosen.resolve("unknown", "rerank") is second
    assert chosen.resolve("ce-1", "rerank") is first
    assert chosen.resolve(None) is embedder  # embedding requests keep their own default
    with pytest.raises(ConfigError, match="--default-reranker 'ce-9'"):
        ModelRegistry(models, default_reranker="ce-9")


async def test_a_models_memory_is_what_its_load_added_to_the_process(minilm: ModelSource) -> None:
    """Measured, not estimated: a loader that holds 96 MiB is reported at about that, one that
    holds nothing at far less; both in /v1/models."""
    held: list[object] = []

    def heavy(source: ModelSource):  # type: ignore[no-untyped-def]
        # fresh pages, every one touched: memory the process's heap cannot have held already
        # (after many tests, malloc hands out freed heap that is resident before and after)
        pages = mmap.mmap(-1, 96 * 2**20)
        np.frombuffer(pages, dtype=np.uint8)[:: mmap.PAGESIZE] = 1
        held.append(pages)
        return fake_embedder(source, EchoBackend())

    big = ServedModel(minilm, heavy, ModelSpec(name="big"))
    small = ServedModel(minilm, lambda s: fake_embedder(s, EchoBackend()), ModelSpec(name="small"))
    registry = ModelRegistry([big, small])
    assert big.memory_bytes is None  # not loaded yet
    gc.collect()  # no collection of earlier tests' garbage while the loads are measured
    gc.disable()
    try:
        big.load()
        small.load()
    finally:
        gc.enable()
    assert big.memory_bytes is not None
    assert small.memory_bytes is not None
    assert 90 * 2**20 <= big.memory_bytes <= 160 * 2**20
    assert small.memory_bytes < 40 * 2**20
    async with client_for(registry) as client:
        cards = {c["id"]: c for c in (await client.get("/v1/models")).json()["data"]}
    assert cards["big"]["memory_bytes"] == big.memory_bytes
    assert cards["small"]["memory_bytes"] == small.memory_bytes
