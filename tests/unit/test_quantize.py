"""The integer encodings equal sentence-transformers' quantize_embeddings, and the calibrated
ranges are measured once and kept with the model's builds."""

from __future__ import annotations

import asyncio
import warnings
from pathlib import Path

import numpy as np
import pytest

from embedserve.engine.quantization import Calibration, QuantizationRanges
from embedserve.serving.quantize import quantized


def st_quantize(vectors: np.ndarray, precision: str, ranges: object = None) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from sentence_transformers.quantization import quantize_embeddings
    return np.asarray(quantize_embeddings(vectors, precision, ranges=ranges))


@pytest.mark.parametrize("encoding", ["int8", "uint8", "binary", "ubinary"])
def test_each_encoding_equals_quantize_embeddings(encoding: str) -> None:
    rng = np.random.default_rng(0)
    calibration = rng.normal(size=(200, 64)).astype(np.float32)
    ranges = np.stack([calibration.min(axis=0), calibration.max(axis=0)])
    vectors = rng.normal(size=(50, 64)).astype(np.float32) * 1.5  # some beyond the ranges
    want = st_quantize(vectors, encoding, ranges if "int8" in encoding else None)
    got = quantized(vectors, encoding, ranges)
    assert got.dtype == want.dtype
    assert np.array_equal(got, want)


def test_bits_are_packed_most_significant_first() -> None:
    vector = np.array([[1, -1, -1, -1, -1, -1, -1, 1, -1, 1, -1, -1, -1, -1, -1, -1]], np.float32)
    assert quantized(vector, "ubinary").tolist() == [[0b10000001, 0b01000000]]
    assert quantized(vector, "binary").tolist() == [[0b10000001 - 128, 0b01000000 - 128]]


def test_values_beyond_the_ranges_saturate() -> None:
    ranges = np.array([[-1.0, -1.0], [1.0, 1.0]], np.float32)
    vectors = np.array([[-5.0, 5.0], [0.0, 0.5]], np.float32)
    assert quantized(vectors, "uint8", ranges).tolist() == [[0, 255], [127, 191]]
    assert quantized(vectors, "int8", ranges).tolist() == [[-128, 127], [-1, 63]]


def test_ranges_are_measured_once_on_first_ask_and_kept(tmp_path: Path) -> None:
    calls: list[int] = []

    async def embed(texts: list[str]) -> np.ndarray:
        calls.append(len(texts))
        await asyncio.sleep(0.01)  # the measurement is under way while the others ask
        return np.array([[len(t), -len(t), 1.0] for t in texts], np.float32)

    async def asks(calibration: Calibration, count: int) -> list[QuantizationRanges]:
        return list(await asyncio.gather(*(calibration.ranges(embed) for _ in range(count))))

    first = Calibration(tmp_path, "key-a")
    assert first.known is None  # nothing measured until asked
    assert calls == []
    ranges = asyncio.run(asks(first, 5))
    assert calls == [200]  # five concurrent asks, one measurement
    assert all(r is ranges[0] for r in ranges)
    again = Calibration(tmp_path, "key-a")  # the next start: read from the cache
    assert again.known is not None
    assert asyncio.run(asks(again, 1))[0].ranges().tolist() == ranges[0].ranges().tolist()
    assert calls == [200]
    asyncio.run(asks(Calibration(tmp_path, "key-b"), 1))  # another build: measured anew
    assert calls == [200, 200]


def test_a_failed_measurement_is_tried_again(tmp_path: Path) -> None:
    outcomes = [RuntimeError("the queue is full"), None]

    async def embed(texts: list[str]) -> np.ndarray:
        failure = outcomes.pop(0)
        if failure is not None:
            raise failure
        return np.ones((len(texts), 4), np.float32)

    calibration = Calibration(tmp_path, "key")
    with pytest.raises(RuntimeError, match="queue is full"):
        asyncio.run(calibration.ranges(embed))
    assert asyncio.run(calibration.ranges(embed)).pooled.shape == (200, 4)
    assert outcomes == []


def test_ranges_follow_dimensions_and_normalization() -> None:
    pooled = np.array([[3.0, 4.0, 0.0], [0.0, 0.0, 2.0]], np.float32)
    ranges = QuantizationRanges(pooled)
    assert np.allclose(ranges.ranges(), np.array([[0, 0, 0], [0.6, 0.8, 1.0]]))
    assert np.allclose(ranges.ranges(2), np.array([[0, 0], [0.6, 0.8]]))  # [0, 0] stays 0
    assert np.allclose(ranges.ranges(normalize=False), np.array([[0, 0, 0], [3, 4, 2]]))
