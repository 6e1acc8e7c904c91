"""What the batch settings are when none is given, per kind of device: the one table the
resolver (engine/sizing.py) reads and the settings' documented defaults are written from."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class BatchDefaults:
    max_batch_tokens: int
    """A GPU's; a CPU's cap on `tokens_per_thread` x threads."""

    tokens_per_thread: int | None
    """A CPU's padded tokens per thread of a stream: past that a pass's activations outgrow
    the core's cache and every token costs more. None: a GPU wants large batches."""

    max_batch_size: int
    max_padding: float
    max_wait_ms: float
    """How long a batch may grow while every stream computes. A CPU's: until a stream frees
    (formed earlier, it would start sooner only by the former's wake-up and layout, a fraction
    of a millisecond against a pass of tens; under load one formed at once was a request or
    two, run as a pass of its own). A GPU's: 2 ms, so that the next batch is laid out while its
    short passes run."""


CPU = BatchDefaults(
    max_batch_tokens=32768, tokens_per_thread=1024, max_batch_size=64, max_padding=0.15,
    max_wait_ms=math.inf,
)  # fmt: skip
GPU = BatchDefaults(
    max_batch_tokens=65536, tokens_per_thread=None, max_batch_size=256, max_padding=0.5,
    max_wait_ms=2.0,
)  # fmt: skip

QUEUED_PER_INPUT = 8
"""Sequences that may wait per model: this many requests of --max-inputs."""


def shown(field: str) -> str:
    """The default of a batch setting as --help and docs/configuration.md show it."""
    if field == "max_batch_tokens":
        return (
            f"{CPU.tokens_per_thread} per thread of a stream, at most {CPU.max_batch_tokens} "
            f"(CPU); {GPU.max_batch_tokens} (GPU)"
        )
    if field == "max_queued":
        return f"{QUEUED_PER_INPUT} x --max-inputs"
    if field == "max_wait_ms":
        return f"until a stream frees (CPU), {GPU.max_wait_ms:g} (GPU)"
    return f"{getattr(CPU, field):g} (CPU), {getattr(GPU, field):g} (GPU)"
