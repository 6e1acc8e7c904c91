import asyncio
import threading
import time

import pytest

from embedserve.config import ModelSpec
from embedserve.engine.registry import ModelRegistry, ServedModel
from embedserve.errors import ConfigError, ModelNotFound, ModelNotReady
from embedserve.models.source import ModelSource
from tests.fakes import EchoBackend, fake_embedder


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
