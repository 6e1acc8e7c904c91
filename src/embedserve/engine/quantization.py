"""The per-dimension ranges that int8 and uint8 vectors are quantized over: each dimension's
minimum and maximum over a model's vectors of real text (sentence-transformers'
`calibration_embeddings`), measured once per model build, when first asked for, and kept
beside the builds."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

import numpy as np

from embedserve.backends.calibration import calibration_texts
from embedserve.engine.vectors import scaled_rows

log = logging.getLogger(__name__)

CALIBRATION_PARAGRAPHS = 100
"""Paragraphs of the int8 calibration text (then as many sentences and snippets): 200 texts."""


class QuantizationRanges:
    """Ranges for any `dimensions` and normalization, from the calibration texts' pooled
    vectors (computed for each once, on first use)."""

    def __init__(self, pooled: np.ndarray) -> None:
        self.pooled = pooled
        self._ranges: dict[tuple[int | None, bool, bool], np.ndarray] = {}

    def ranges(
        self, dimensions: int | None = None, normalize: bool = True, *, layer_norm: bool = False
    ) -> np.ndarray:
        """[2, dimensions]: the minimums, then the maximums (quantize_embeddings' `ranges`), of
        the vectors cut as requests get them (scaled_rows)."""
        key = (dimensions, normalize, layer_norm)
        if key not in self._ranges:
            vectors = scaled_rows(
                self.pooled, dimensions, normalize=normalize, layer_norm=layer_norm
            )
            self._ranges[key] = np.stack([vectors.min(axis=0), vectors.max(axis=0)])
        return self._ranges[key]


def calibration_key(*parts: object) -> str:
    """A cache key from what decides a model's vectors, and what decides the calibration texts:
    the standard library's docstrings (this Python) and how many paragraphs are drawn. Building
    the texts only to hash them cost 0.26 s of every warm start."""
    texts = [sys.version, CALIBRATION_PARAGRAPHS]
    return hashlib.sha256(json.dumps([*map(str, texts), *map(str, parts)]).encode()).hexdigest()


class Calibration:
    """A model's ranges: read from `<cache>/quantization/` when kept there, else measured on
    first ask (most servers never give int8 vectors: a 0.6B model's 200 calibration texts cost
    30 s of a first start here) and kept. Concurrent first asks share one measurement."""

    def __init__(self, cache_root: Path, key: str) -> None:
        self.target = cache_root / "quantization" / f"{key[:32]}.npy"
        try:
            self.known: QuantizationRanges | None = QuantizationRanges(
                np.load(self.target, allow_pickle=False)
            )
        except (OSError, ValueError):
            self.known = None
        self._measuring: asyncio.Future[QuantizationRanges] | None = None

    async def ranges(
        self, embed: Callable[[list[str]], Awaitable[np.ndarray]]
    ) -> QuantizationRanges:
        """The ranges, measured with `embed` (texts -> pooled float32 rows) if not yet known."""
        if self.known is not None:
            return self.known
        if self._measuring is None or self._measuring.cancelled():
            self._measuring = asyncio.ensure_future(self._measure(embed))
        measuring = self._measuring
        try:
            # shielded: a caller that goes away does not cancel the measurement for the others
            self.known = await asyncio.shield(measuring)
        except Exception:
            if self._measuring is measuring and measuring.done():
                self._measuring = None  # a failed measurement is tried again on the next ask
            raise
        return self.known

    async def _measure(
        self, embed: Callable[[list[str]], Awaitable[np.ndarray]]
    ) -> QuantizationRanges:
        pooled = await embed(calibration_texts(CALIBRATION_PARAGRAPHS))
        await asyncio.to_thread(self._keep, pooled)
        return QuantizationRanges(pooled)

    def _keep(self, pooled: np.ndarray) -> None:
        try:
            self.target.parent.mkdir(parents=True, exist_ok=True)
            partial = self.target.with_suffix(f".{os.getpid()}.tmp.npy")
            np.save(partial, pooled.astype(np.float32), allow_pickle=False)
            partial.replace(self.target)
        except OSError as exc:
            log.warning("cannot keep the quantization ranges in %s (%s)", self.target.parent, exc)
