"""Rows of vectors cut to a request's dimensions and scaled to unit length: what every kind of
model does last, and what int8 ranges are measured on."""

from __future__ import annotations

import numpy as np

from embedserve.engine.instructions import name_parts


def scaled_rows(
    vectors: np.ndarray,
    dimensions: int | None = None,
    *,
    normalize: bool = True,
    layer_norm: bool = False,
) -> np.ndarray:
    """Keep the first `dimensions` components and scale each row to unit length (unless not
    `normalize`: sentence-transformers' `encode(normalize_embeddings=False)`). `layer_norm`: a
    row cut short is layer-normed whole first (no weights, as `F.layer_norm`), as
    nomic-embed-text-v1.5's card cuts its Matryoshka vectors."""
    if layer_norm and dimensions and dimensions < vectors.shape[1]:
        centred = vectors - vectors.mean(axis=1, keepdims=True)
        vectors = centred / np.sqrt((centred * centred).mean(axis=1, keepdims=True) + 1e-5)
    kept = vectors[:, :dimensions] if dimensions else vectors
    if normalize:
        kept = kept / np.maximum(np.linalg.norm(kept, axis=1, keepdims=True), 1e-12)
    return np.ascontiguousarray(kept, dtype=np.float32)


_LAYER_NORMED = (frozenset({"nomic", "embed", "text", "v1", "5"}),)
"""Models whose Matryoshka cut follows a layer norm, by the parts of their id: only
nomic-embed-text-v1.5 (its card's recipe; v2's cuts plainly, v1 is not Matryoshka)."""


def layer_norms_before_cut(model_id: str) -> bool:
    parts = name_parts(model_id)
    return any(rule <= parts for rule in _LAYER_NORMED)
