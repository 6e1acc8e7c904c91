"""A served model is of one kind, chosen by its task at load: an embedding model or a reranker.
Each route asks for the kind it needs and refuses the other in its own shape; the model cards,
TEI's /info and the metrics describe either, with the limits as they were resolved."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from embedserve.config import Settings
from embedserve.engine.registry import ModelRegistry, ServedModel
from embedserve.engine.reranker import Reranker
from embedserve.models.pair_tokenizer import PairTokenizer
from embedserve.models.source import ModelSource
from tests.fakes import EchoBackend, batch_limits, client_for, fake_embedder

EMBEDDER = "sentence-transformers/all-MiniLM-L6-v2"


def fake_reranker(source: ModelSource) -> ServedModel:
    """A cross-encoder on the echo backend: its score is the sigmoid of the pair's length."""
    tokenizer = PairTokenizer(source.files / "tokenizer.json", 128)
    limits = batch_limits(max_batch_size=8, max_queued=40, max_wait_s=math.inf)  # a CPU's wait
    reranker = Reranker(tokenizer, EchoBackend(), model_id="fake-reranker", limits=limits)
    model = ServedModel(source, lambda _source: reranker)
    model.served_name, model.task = "fake-reranker", "rerank"  # its folder is MiniLM's
    return model


@pytest.fixture
def registry(minilm: ModelSource) -> ModelRegistry:
    limits = batch_limits(max_batch_tokens=4096, max_batch_size=32, max_padding_tokens=7.6)
    embedder = ServedModel(minilm, lambda s: fake_embedder(s, EchoBackend(), limits=limits))
    models = [embedder, fake_reranker(minilm)]
    for model in models:
        model.load()
    return ModelRegistry(models)


async def test_each_route_asks_for_its_kind_and_refuses_the_other(registry: ModelRegistry) -> None:
    async with client_for(registry) as client:
        embedded = await client.post("/v1/embeddings", json={"input": "a", "model": EMBEDDER})
        refused = await client.post("/v1/embeddings", json={"input": "a", "model": "fake-reranker"})
        tokens = await client.post("/tokenize", json={"inputs": "a", "model": "fake-reranker"})
        scored = await client.post(
            "/v1/rerank", json={"query": "q", "documents": ["short", "a longer document"]}
        )
        by_cosine = await client.post(
            "/v1/rerank", json={"query": "q", "documents": ["one", "two"], "model": EMBEDDER}
        )
    assert embedded.status_code == 200
    assert refused.status_code == 400
    assert refused.json()["error"]["code"] == "model_cannot_embed"
    assert "fake-reranker is a reranker" in refused.json()["error"]["message"]
    # TEI's /tokenize on a reranker was an AttributeError (a 500); now the same refusal, in
    # TEI's shape
    assert tokens.status_code == 422
    assert tokens.json()["error_type"] == "Validation"
    assert "is a reranker" in tokens.json()["error"]
    assert scored.json()["scored_by"] == "cross-encoder"
    assert [r["index"] for r in scored.json()["results"]] == [1, 0]  # the longer pair first
    assert by_cosine.json()["scored_by"] == "cosine"


async def test_cards_and_teis_info_report_the_resolved_limits(registry: ModelRegistry) -> None:
    settings = Settings(max_inputs=50, max_request_tokens=9000, request_timeout_s=12.0)
    async with client_for(registry, settings) as client:
        cards = {c["id"]: c for c in (await client.get("/v1/models")).json()["data"]}
        info = (await client.get("/info")).json()
    embedder, reranker = cards[EMBEDDER], cards["fake-reranker"]
    assert embedder["limits"] == {
        "max_inputs": 50,
        "max_request_tokens": 9000,
        "max_input_tokens": 256,
        "request_timeout_s": 12.0,
        "max_batch_tokens": 4096,
        "max_batch_size": 32,
        "max_padding": 0.15,
        "max_padding_tokens": 8,
        "max_wait_ms": 2.0,
        "max_queued": 16384,
    }
    assert reranker["limits"]["max_batch_size"] == 8
    assert reranker["limits"]["max_queued"] == 40
    assert reranker["limits"]["max_wait_ms"] is None  # until a stream frees: JSON has no inf
    assert reranker["quantization_ranges"] is None
    assert reranker["task"] == "rerank"
    # TEI's /info answers for the default embedding model, with the same resolved values
    expected: dict[str, Any] = {
        "max_concurrent_requests": 16384,
        "max_input_length": 256,
        "max_batch_tokens": 4096,
        "max_batch_requests": 32,
        "max_client_batch_size": 50,
    }
    assert {key: info[key] for key in expected} == expected


async def test_a_model_without_batches_reports_none_of_them(minilm: ModelSource) -> None:
    from embedserve.backends.static import StaticBackend
    from embedserve.engine.static_embedder import StaticEmbedder
    from embedserve.models.tokenizer import ModelTokenizer

    table = np.eye(30522, 16, dtype=np.float32)
    tokenizer = ModelTokenizer(minilm.files / "tokenizer.json", 256, static=True)
    static = StaticEmbedder(tokenizer, StaticBackend(table))
    model = ServedModel(minilm, lambda _source: static)
    model.load()
    async with client_for(ModelRegistry([model])) as client:
        card = (await client.get("/v1/models")).json()["data"][0]
        metrics = (await client.get("/metrics")).text
    assert card["limits"]["max_batch_tokens"] is None
    assert card["limits"]["max_inputs"] == Settings().max_inputs
    assert f'embedserve_queue_depth{{model="{EMBEDDER}"}} 0.0' in metrics
