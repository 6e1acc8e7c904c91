"""Packed batches: rows laid out, token vectors pooled per text, and the batcher that forms them
(with a fake backend that answers from the packed ids alone)."""

from __future__ import annotations

import asyncio
import random

import numpy as np
import pytest

from embedserve.backends.packing import (
    PackedBatch,
    fill_rows,
    lay_out,
    one_text_a_row,
    pool_packed,
)
from embedserve.backends.pooling import pool
from embedserve.engine.batcher import Batcher, coarse_width
from tests.fakes import batch_limits


def test_rows_hold_the_first_text_then_the_longest_that_fit() -> None:
    lengths = [3, 9, 2, 7, 5, 4]
    rows = fill_rows(lengths, width=10, max_rows=2)
    assert rows[0][0] == 0  # the first (the oldest) always goes
    for row in rows:
        assert sum(lengths[i] for i in row) <= 10
    placed = sorted(i for row in rows for i in row)
    assert len(set(placed)) == len(placed)
    assert len(rows) == 2
    assert sum(lengths[i] for i in placed) >= 17  # first-fit decreasing leaves little room
    assert fill_rows([], 10, 4) == []
    assert fill_rows([12], 12, 1) == [[0]]


def test_a_layout_marks_each_text_with_its_own_segment_and_positions() -> None:
    batch = lay_out([[[5, 6, 7], [8, 9]], [[1, 1, 1, 1]]], width=6)
    assert batch.ids.tolist() == [[5, 6, 7, 8, 9, 0], [1, 1, 1, 1, 0, 0]]
    assert batch.positions.tolist() == [[0, 1, 2, 0, 1, 0], [0, 1, 2, 3, 0, 0]]
    assert batch.segments.tolist() == [[1, 1, 1, 2, 2, 0], [1, 1, 1, 1, 0, 0]]
    assert batch.spans.tolist() == [[0, 0, 3], [0, 3, 2], [1, 0, 4]]
    assert batch.padded_tokens == 12


@pytest.mark.parametrize("mode", ["mean", "cls", "lasttoken"])
def test_packed_pooling_pools_each_text_alone(mode: str) -> None:
    rng = np.random.default_rng(0)
    texts = [rng.integers(1, 99, n).tolist() for n in (4, 1, 6, 3, 5)]
    batch = lay_out([[texts[0], texts[1], texts[3]], [texts[2]], [texts[4]]], width=9)
    tokens = rng.normal(size=(*batch.ids.shape, 7)).astype(np.float32)
    got = pool_packed(tokens, batch.spans, mode)
    for vector, (row, start, length) in zip(got, batch.spans, strict=True):
        own = tokens[row, start : start + length]
        expected = {"mean": own.mean(axis=0), "cls": own[0], "lasttoken": own[-1]}[mode]
        np.testing.assert_allclose(vector, expected, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="cannot pool packed texts"):
        pool_packed(tokens, batch.spans, "max")


@pytest.mark.parametrize("mode", ["mean", "cls", "lasttoken"])
def test_a_padded_batch_packs_one_text_a_row_and_pools_as_padded(mode: str) -> None:
    rng = np.random.default_rng(1)
    ids = rng.integers(1, 99, (3, 6))
    mask = np.array([[1] * 6, [1, 1, 1, 0, 0, 0], [1, 1, 0, 0, 0, 0]])
    batch = one_text_a_row(ids, mask)
    assert batch.segments.tolist() == mask.tolist()
    assert batch.positions.tolist() == [[0, 1, 2, 3, 4, 5], [0, 1, 2, 0, 0, 0], [0, 1, 0, 0, 0, 0]]
    assert (batch.ids == ids * mask).all()
    tokens = rng.normal(size=(3, 6, 4)).astype(np.float32)
    np.testing.assert_allclose(
        pool_packed(tokens, batch.spans, mode), pool(tokens, mask, mode), rtol=1e-5, atol=1e-6
    )


class PackedEcho:
    """A packing backend whose vector of a text is [length, first content id, sum of ids, its
    row's width, ...], read from the packed batch: a text given another's tokens, or cut, shows."""

    dimension = 6

    def __init__(self) -> None:
        self.batches: list[PackedBatch] = []

    def embed_packed(self, batch: PackedBatch) -> np.ndarray:
        self.batches.append(batch)
        out = np.zeros((len(batch.spans), self.dimension), dtype=np.float32)
        for n, (row, start, length) in enumerate(batch.spans):
            text = batch.ids[row, start : start + length]
            assert (batch.segments[row, start : start + length] == batch.segments[row, start]).all()
            assert batch.positions[row, start : start + length].tolist() == list(range(length))
            out[n, :4] = (length, text[1], text.sum(), batch.ids.shape[1])
        return out

    def embed(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        raise AssertionError("a packing batcher never runs padded passes")


def seq(token: int, length: int) -> list[int]:
    return [101, token, *([5] * (length - 3)), 102]


async def test_packed_batches_take_every_length_and_each_request_gets_its_own() -> None:
    backend = PackedEcho()
    limits = batch_limits(max_batch_tokens=256, max_batch_size=16, coarse_widths=True)
    batcher = Batcher(
        backend.embed, backend.dimension, 0, limits, workers=2, packed=(backend.embed_packed, None)
    )
    rng = random.Random(3)
    jobs = [
        [seq(1000 + 100 * j + i, rng.randint(3, 120)) for i in range(rng.randint(1, 12))]
        for j in range(40)
    ]
    results = await asyncio.gather(*(batcher.submit(job) for job in jobs))
    batcher.close()
    for job, vectors in zip(jobs, results, strict=True):
        assert vectors[:, 1].tolist() == [s[1] for s in job]  # each its own, in order
        assert vectors[:, 0].tolist() == [len(s) for s in job]
        assert vectors[:, 2].tolist() == [sum(s) for s in job]
    for batch in backend.batches:
        width = batch.ids.shape[1]
        assert batch.padded_tokens <= 256 or len(batch.ids) == 1
        assert len(batch.spans) <= 16
        longest = int(batch.spans[:, 2].max())
        assert width == coarse_width(max(longest, min(64, int(batch.spans[:, 2].sum()))))
    # texts of unlike lengths share rows, so passes are full where padding would cut them short
    assert any(len(b.spans) > len(b.ids) for b in backend.batches)
    mixed = [b for b in backend.batches if b.spans[:, 2].max() > 3 * b.spans[:, 2].min()]
    assert mixed
    real = sum(int(b.spans[:, 2].sum()) for b in backend.batches)
    assert real / sum(b.padded_tokens for b in backend.batches) > 0.85


async def test_a_lone_short_text_is_not_widened_and_the_oldest_always_goes_first() -> None:
    backend = PackedEcho()
    limits = batch_limits(max_batch_tokens=128, max_batch_size=64)
    batcher = Batcher(
        backend.embed, backend.dimension, 0, limits, packed=(backend.embed_packed, None)
    )
    vectors = await batcher.submit([seq(7, 9)])
    assert vectors[0, 3] == 9  # its own width, not MIN_PACKED_WIDTH: a lone request pays nothing
    # a long text before many short ones: it goes in the first pass, the short ones fill it
    backend.batches.clear()
    first = batcher.submit([seq(8, 100)])
    rest = [batcher.submit([seq(9 + i, 10)]) for i in range(20)]
    await asyncio.gather(first, *rest)
    batcher.close()
    assert 8 in backend.batches[0].ids[:, 1].tolist()
    assert sum(len(b.spans) for b in backend.batches) == 21
