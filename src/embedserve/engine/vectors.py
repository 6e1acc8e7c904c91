"""Rows of vectors cut to a request's dimensions and scaled to unit length: what every kind of
model does last, and what int8 ranges are measured on."""

from __future__ import annotations

import numpy as np


def scaled_rows(
    vectors: np.ndarray, dimensions: int | None = None, *, normalize: bool = True
) -> np.ndarray:
    """Keep the first `dimensions` components and scale each row to unit length (unless not
    `normalize`: sentence-transformers' `encode(normalize_embeddings=False)`)."""
    kept = vectors[:, :dimensions] if dimensions else vectors
    if normalize:
        kept = kept / np.maximum(np.linalg.norm(kept, axis=1, keepdims=True), 1e-12)
    return np.ascontiguousarray(kept, dtype=np.float32)
