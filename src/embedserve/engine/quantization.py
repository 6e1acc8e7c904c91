"""The per-dimension ranges that int8 and uint8 vectors are quantized over: each dimension's
minimum and maximum over a model's vectors of real text (sentence-transformers'
`calibration_embeddings`), measured once per model build and kept beside the builds."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from embedserve.backends.calibration import calibration_texts
from embedserve.engine.vectors import scaled_rows

log = logging.getLogger(__name__)

CALIBRATION_PARAGRAPHS = 100
"""Paragraphs of the int8 calibration text (then as many sentences and snippets): 200 texts."""

_CHUNK = 32  # texts a calibration pass embeds, length-sorted so that little is padding


class QuantizationRanges:
    """Ranges for any `dimensions` and normalization, from the calibration texts' pooled
    vectors (computed for each once, on first use)."""

    def __init__(self, pooled: np.ndarray) -> None:
        self.pooled = pooled
        self._ranges: dict[tuple[int | None, bool], np.ndarray] = {}

    def ranges(self, dimensions: int | None = None, normalize: bool = True) -> np.ndarray:
        """[2, dimensions]: the minimums, then the maximums (quantize_embeddings' `ranges`)."""
        key = (dimensions, normalize)
        if key not in self._ranges:
            vectors = scaled_rows(self.pooled, dimensions, normalize=normalize)
            self._ranges[key] = np.stack([vectors.min(axis=0), vectors.max(axis=0)])
        return self._ranges[key]


def calibration_key(*parts: object) -> str:
    """A cache key from what decides a model's vectors, and what decides the calibration texts:
    the standard library's docstrings (this Python) and how many paragraphs are drawn. Building
    the texts only to hash them cost 0.26 s of every warm start."""
    texts = [sys.version, CALIBRATION_PARAGRAPHS]
    return hashlib.sha256(json.dumps([*map(str, texts), *map(str, parts)]).encode()).hexdigest()


def calibrated(
    embed: Callable[[Sequence[str]], np.ndarray], cache_root: Path, key: str
) -> QuantizationRanges:
    """The ranges of the vectors `embed` (texts -> pooled float32 rows) gives the calibration
    texts: read from `<cache>/quantization/`, else measured and kept there."""
    target = cache_root / "quantization" / f"{key[:32]}.npy"
    try:
        return QuantizationRanges(np.load(target, allow_pickle=False))
    except (OSError, ValueError):
        pass
    texts = sorted(calibration_texts(CALIBRATION_PARAGRAPHS), key=len)
    pooled = np.concatenate([embed(texts[i : i + _CHUNK]) for i in range(0, len(texts), _CHUNK)])
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_suffix(f".{os.getpid()}.tmp.npy")
        np.save(partial, pooled.astype(np.float32), allow_pickle=False)
        partial.replace(target)
    except OSError as exc:
        log.warning("cannot keep the quantization ranges in %s (%s)", target.parent, exc)
    return QuantizationRanges(pooled)
