"""The backend interface: padded token ids in, one pooled vector per row out."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Collection
from typing import Protocol

import numpy as np

UNPOOLED = 2
"""Attention-mask value of a token the model reads but leaves out of pooling: an INSTRUCTOR
model's instruction. Backends attend where mask > 0 and pool where mask == 1."""

SECOND_TEXT = 3
"""Attention-mask value of a token of a pair's second text (a cross-encoder's document): its
token type is 1."""


class Backend(Protocol):
    """Runs a model's forward pass. Knows nothing of HTTP, requests or tokenization."""

    kind: str
    """The engine: "onnx", "openvino" or "torch"."""

    streams: int
    """How many `embed` calls may run at once (from different threads), each on its share of
    the cores."""

    kernels_per_shape: bool
    """Whether the engine builds (and caches) kernels for every input shape it meets: the
    batcher then pads batches to coarse widths, so that few shapes recur."""

    @property
    def precision(self) -> str:
        """The numbers it computes in: "fp32", "int8", "bf16" or "fp16"."""
        ...

    @property
    def dimension(self) -> int:
        """Length of the vectors `embed` returns."""
        ...

    def embed(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        """Pooled embeddings, float32 [batch, dimension], for int64 [batch, seq] inputs; the mask
        holds 0 (padding), 1, UNPOOLED or SECOND_TEXT."""
        ...

    @property
    def every_core_pass(self) -> Callable[[np.ndarray, np.ndarray], np.ndarray] | None:
        """`embed` on every core, for a batch with nothing running beside it, where the streams
        share out the cores and the engine keeps such a pass; None otherwise."""
        ...


def graph_feeds(
    names: Collection[str], input_ids: np.ndarray, attention_mask: np.ndarray
) -> dict[str, np.ndarray]:
    """The encoder inputs a graph declares among ids, mask and token types (1 where the mask
    marks a pair's SECOND_TEXT, else 0)."""
    feeds = {"input_ids": input_ids, "attention_mask": attention_mask}
    second = attention_mask == SECOND_TEXT
    if second.any():
        feeds["attention_mask"] = np.minimum(attention_mask, 1)
    if "token_type_ids" in names:
        feeds["token_type_ids"] = second.astype(np.int64)
    return {name: value for name, value in feeds.items() if name in names}


def probe_dimension(embed: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> int:
    """The vector length a graph outputs, from one tiny pass (ids every vocabulary has); it also
    warms the engine."""
    probe = np.zeros((1, 2), dtype=np.int64)
    return int(embed(probe, np.ones_like(probe)).shape[1])


def pass_cost_in_tokens(
    embed: Callable[[np.ndarray, np.ndarray], np.ndarray], width: int = 16, rows: int = 8
) -> float:
    """A forward pass's fixed cost, in tokens' worth of compute, from the quickest of three
    timings each of a one-row and a `rows`-row pass of `width` tokens (inf where the rows cost
    nothing that can be measured)."""

    def quickest(n: int) -> float:
        ids = np.zeros((n, width), dtype=np.int64)
        mask = np.ones_like(ids)
        times = []
        for _ in range(3):
            started = time.perf_counter()
            embed(ids, mask)
            times.append(time.perf_counter() - started)
        return min(times)

    one, many = quickest(1), quickest(rows)
    per_token = (many - one) / ((rows - 1) * width)
    return max(0.0, one / per_token - width) if per_token > 0 else math.inf
