"""The serving layer: the request policy every wire format and job shares, in one place."""

from __future__ import annotations

import asyncio
import itertools

import numpy as np
import pytest

from embedserve.config import ModelSpec, Settings
from embedserve.engine.embedder import Embedder
from embedserve.engine.registry import ModelRegistry, ServedModel
from embedserve.errors import InvalidInput, ModelNotFound, Overloaded
from embedserve.models.source import ModelSource
from embedserve.serving.policy import Serving
from embedserve.serving.requests import EmbedRequest, InputType
from tests.fakes import (
    BlockingBackend,
    EchoBackend,
    batch_limits,
    fake_embedder,
    state_of,
    until_equal,
)


def serving_for(
    minilm: ModelSource, backend: EchoBackend | None = None, **settings: object
) -> Serving:
    spec = ModelSpec(query_instruction="query: ", document_instruction="passage: ")
    limits = batch_limits(max_batch_size=1, max_queued=1)
    embedder = fake_embedder(minilm, backend or EchoBackend(), token_ids="native", limits=limits)
    model = ServedModel(minilm, lambda _s: embedder, spec)
    registry = ModelRegistry([model], strict=True)
    return Serving.build(Settings(**settings), registry)  # type: ignore[arg-type]


@pytest.mark.parametrize("dimensions", [0, -3, 9])
async def test_dimensions_outside_the_models_are_refused(
    minilm: ModelSource, dimensions: int
) -> None:
    with pytest.raises(InvalidInput, match="'dimensions' must be between 1 and 8") as caught:
        await serving_for(minilm).embed(EmbedRequest(["x"], dimensions=dimensions))
    assert caught.value.param == "dimensions"


async def test_inputs_past_the_limit_are_refused(minilm: ModelSource) -> None:
    serving = serving_for(minilm, max_inputs=2)
    assert len((await serving.embed(EmbedRequest(["a", "b"]))).vectors) == 2
    with pytest.raises(InvalidInput, match="limit of 2 per request"):
        await serving.embed(EmbedRequest(["a", "b", "c"]))


async def test_the_instruction_follows_the_input_type(minilm: ModelSource) -> None:
    serving = serving_for(minilm)
    embedder = serving.registry.models[0].load()
    assert isinstance(embedder, Embedder)
    tokenizer = embedder.tokenizer
    types: list[tuple[InputType, str]] = [("query", "query: "), ("document", "passage: ")]
    for input_type, instruction in types:
        got = await serving.embed(EmbedRequest([[2000]], input_type=input_type, normalize=False))
        prefix = tokenizer.content_ids([instruction])[0]
        assert got.vectors[0, 1] == prefix[0]  # the first content token is the instruction's


async def test_truncate_defaults_to_the_servers_setting(minilm: ModelSource) -> None:
    long = [[1000] * 300]
    with pytest.raises(InvalidInput, match="more tokens than this model's maximum"):
        await serving_for(minilm, truncate=False).embed(EmbedRequest(long))
    kept = await serving_for(minilm, truncate=False).embed(EmbedRequest(long, truncate=True))
    assert kept.prompt_tokens == 256


async def test_the_token_budget_is_the_servers(minilm: ModelSource) -> None:
    tokens = (await serving_for(minilm).embed(EmbedRequest([[5] * 8]))).prompt_tokens
    serving = serving_for(minilm, max_request_tokens=tokens)
    assert (await serving.embed(EmbedRequest([[5] * 8]))).prompt_tokens == tokens
    with pytest.raises(InvalidInput, match=f"limit of {tokens} per request"):
        await serving.embed(EmbedRequest([[5] * 9]))


async def test_an_unknown_model_is_named(minilm: ModelSource) -> None:
    with pytest.raises(ModelNotFound, match="'nope' does not exist"):
        await serving_for(minilm).embed(EmbedRequest(["x"], model="nope"))


async def test_results_and_refusals_are_counted(minilm: ModelSource) -> None:
    backend = BlockingBackend()
    serving = serving_for(minilm, backend)
    batcher = serving.registry.models[0].load().batcher
    assert batcher is not None
    busy = []
    # one computes, two are formed (one handed over, one being padded), one waits in the queue
    for i, state in enumerate([(1, 0, 0), (1, 1, 0), (1, 2, 0), (1, 2, 1)]):
        request = EmbedRequest([[7000 + i]], normalize=False)
        busy.append(asyncio.create_task(serving.embed(request)))
        await until_equal(lambda: state_of(batcher), state)
    with pytest.raises(Overloaded):
        await serving.embed(EmbedRequest([[8000]]))
    backend.release.set()
    results = await asyncio.gather(*busy)
    sums = [int(r.vectors[0, 2]) for r in results]  # the echo's sum of ids: each its own
    assert [b - a for a, b in itertools.pairwise(sums)] == [1, 1, 1]
    metrics = serving.metrics.render().decode()
    model = "sentence-transformers/all-MiniLM-L6-v2"
    assert f'embedserve_inputs_total{{model="{model}"}} 4.0' in metrics
    assert (
        f'embedserve_rejected_requests_total{{model="{model}",reason="queue_full"}} 1.0' in metrics
    )


async def test_unnormalized_vectors_keep_their_length(minilm: ModelSource) -> None:
    serving = serving_for(minilm)
    raw = await serving.embed(EmbedRequest([[5, 6]], normalize=False))
    unit = await serving.embed(EmbedRequest([[5, 6]]))
    assert np.linalg.norm(raw.vectors[0]) > 1.5
    assert np.isclose(np.linalg.norm(unit.vectors[0]), 1.0)
