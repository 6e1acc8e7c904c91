"""How big batches are: from the flags, else from the machine and the backend."""

from __future__ import annotations

import logging
import math

from embedserve.backends.base import Backend, pass_cost_in_tokens
from embedserve.config import Settings
from embedserve.engine.batcher import BatchLimits

log = logging.getLogger(__name__)


def batch_limits(
    settings: Settings,
    *,
    on_gpu: bool,
    cores: int,
    streams: int = 1,
    max_padding_tokens: float = math.inf,
    coarse_widths: bool = False,
) -> BatchLimits:
    """Batch sizes from the flags, or from the machine's `cores` and the backend's `streams`.
    On a CPU, ~1024 padded tokens per thread of a stream: past that a pass's activations
    outgrow the core's cache and every token costs more. A GPU wants large batches.
    `coarse_widths` for a backend that builds kernels per shape (`Backend.kernels_per_shape`)."""
    threads = max(1, cores // streams)
    tokens = 65536 if on_gpu else min(1024 * threads, 32768)
    padding = 0.5 if on_gpu else 0.15
    wait_ms = 2.0 if on_gpu else 0.0
    return BatchLimits(
        max_batch_tokens=settings.max_batch_tokens or tokens,
        max_batch_size=settings.max_batch_size or (256 if on_gpu else 64),
        max_padding=padding if settings.max_padding is None else settings.max_padding,
        max_padding_tokens=max_padding_tokens,
        coarse_widths=coarse_widths,
        max_wait_s=(wait_ms if settings.max_wait_ms is None else settings.max_wait_ms) / 1000,
        max_queued=settings.max_queued or 8 * settings.max_inputs,
        timeout_s=settings.request_timeout_s,
    )


def max_padding_tokens(name: str, backend: Backend, settings: Settings, on_gpu: bool) -> float:
    """The flag, or on a CPU what a forward pass's fixed cost is worth, timed now."""
    if settings.max_padding_tokens is not None:
        return settings.max_padding_tokens
    if on_gpu:
        return math.inf
    tokens = pass_cost_in_tokens(backend.embed)
    log.info(
        "%s: a pass costs what %.0f tokens do; batches take at most that padding", name, tokens
    )
    return tokens
