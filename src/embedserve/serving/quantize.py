"""Vectors in the integer encodings vector databases store, as sentence-transformers'
`quantize_embeddings` defines them: `ubinary` the sign bits packed most-significant-bit first,
`binary` that minus 128; `uint8`/`int8` each dimension's calibrated range mapped onto 256
steps."""

from __future__ import annotations

from typing import Literal

import numpy as np

Encoding = Literal["float", "base64", "int8", "uint8", "binary", "ubinary"]
ENCODINGS: tuple[Encoding, ...] = ("float", "base64", "int8", "uint8", "binary", "ubinary")
BIT_ENCODINGS = ("binary", "ubinary")
RANGED_ENCODINGS = ("int8", "uint8")


def quantized(vectors: np.ndarray, encoding: str, ranges: np.ndarray | None = None) -> np.ndarray:
    """`vectors` (float32 [n, d]) in `encoding`; `ranges` ([2, d]: minimums, maximums) for int8
    and uint8. A value outside its range saturates at the end of the scale."""
    if encoding in ("float", "base64"):
        return vectors
    if encoding in BIT_ENCODINGS:
        bits = np.packbits(vectors > 0, axis=-1)
        return (bits.astype(np.int16) - 128).astype(np.int8) if encoding == "binary" else bits
    if ranges is None:
        raise ValueError(f"{encoding} needs the model's calibrated ranges")
    ranges = ranges.astype(np.float32, copy=False)
    starts = ranges[0]
    steps = (ranges[1] - starts) / 255
    levels: np.ndarray = np.clip(
        np.floor((vectors - starts) / np.where(steps == 0, 1, steps)), 0, 255
    )
    return levels.astype(np.uint8) if encoding == "uint8" else (levels - 128).astype(np.int8)
