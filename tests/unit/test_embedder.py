import numpy as np
import pytest

from embedserve.errors import InvalidInput
from embedserve.models.source import ModelSource
from tests.fakes import EchoBackend, fake_embedder


def test_order_survives_length_sorted_batches(minilm: ModelSource) -> None:
    backend = EchoBackend()
    embedder = fake_embedder(minilm, backend, max_batch_size=3, token_ids="native")
    items = [[7] * n for n in (9, 1, 5, 3, 8, 2, 7)]
    sequences = embedder.tokenize(items, truncate=True)
    pooled = embedder.forward(sequences)
    assert pooled[:, 0].tolist() == [n + 2 for n in (9, 1, 5, 3, 8, 2, 7)]
    assert [rows for rows, _ in backend.batches] == [3, 3, 1]
    widths = [width for _, width in backend.batches]
    assert widths == sorted(widths)  # similar lengths share a batch: little padding


async def test_dimensions_keep_a_prefix_and_renormalize(minilm: ModelSource) -> None:
    embedder = fake_embedder(minilm, EchoBackend(), token_ids="native")
    full = await embedder.embed([[5, 6]])
    cut = await embedder.embed([[5, 6]], dimensions=2)
    assert cut.vectors.shape == (1, 2)
    assert np.isclose(np.linalg.norm(cut.vectors), 1.0)
    direction = full.vectors[0, :2] / np.linalg.norm(full.vectors[0, :2])
    assert np.allclose(cut.vectors[0], direction)
    assert full.prompt_tokens == 4  # [CLS] 5 6 [SEP]


@pytest.mark.parametrize("dimensions", [0, -3, 9])
async def test_bad_dimensions_are_refused(minilm: ModelSource, dimensions: int) -> None:
    embedder = fake_embedder(minilm, EchoBackend())
    with pytest.raises(InvalidInput, match="between 1 and 8"):
        await embedder.embed(["x"], dimensions=dimensions)


async def test_token_ids_can_be_refused(minilm: ModelSource) -> None:
    embedder = fake_embedder(minilm, EchoBackend(), token_ids="reject")
    with pytest.raises(InvalidInput, match="does not accept token-id inputs"):
        await embedder.embed([[1, 2]])
    assert (await embedder.embed(["text still works"])).vectors.shape == (1, 8)


async def test_tiktoken_ids_are_decoded_then_tokenized_by_the_model(minilm: ModelSource) -> None:
    embedder = fake_embedder(minilm, EchoBackend())
    from_ids = await embedder.embed([[15339, 1917]])  # cl100k_base for "hello world"
    from_text = await embedder.embed(["hello world"])
    assert np.array_equal(from_ids.vectors, from_text.vectors)
