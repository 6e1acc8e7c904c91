"""Pooling token vectors into one per sequence, for ONNX models that output token vectors
(ONNX folders from the hub); our own exports carry pooling inside the graph."""

from __future__ import annotations

import numpy as np

POOLINGS = ("mean", "cls", "max", "lasttoken")


def pool(tokens: np.ndarray, mask: np.ndarray, mode: str) -> np.ndarray:
    """[batch, seq, hidden] token vectors -> [batch, hidden], pooling only where mask == 1
    (0 is padding; UNPOOLED marks tokens read but not pooled)."""
    if mode == "cls":
        return np.asarray(tokens[:, 0])
    if mode == "lasttoken":
        last = (mask > 0).sum(axis=1) - 1
        return np.asarray(tokens[np.arange(len(tokens)), last])
    weights = (mask == 1)[:, :, None].astype(tokens.dtype)
    if mode == "max":
        return np.asarray(np.where(weights > 0, tokens, -np.inf).max(axis=1))
    if mode == "mean":
        return np.asarray((tokens * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-9))
    raise ValueError(f"pooling '{mode}' is not supported for ONNX folders (supported: {POOLINGS})")
