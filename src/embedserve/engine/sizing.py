"""How big batches are: from the flags, else from the machine and the backend."""

from __future__ import annotations

import logging
import math

from embedserve.backends.base import Backend, pass_cost_in_tokens
from embedserve.config import Settings
from embedserve.config.batch_defaults import CPU, GPU, QUEUED_PER_INPUT
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
    """Every batch limit a model is served with: the flag where one is given, else the device's
    default (config/batch_defaults.py), sized to the machine's `cores` and the backend's
    `streams`. `coarse_widths` for a backend that builds kernels per shape
    (`Backend.kernels_per_shape`)."""
    defaults = GPU if on_gpu else CPU
    tokens = defaults.max_batch_tokens
    if defaults.tokens_per_thread is not None:
        threads = max(1, cores // streams)
        tokens = min(defaults.tokens_per_thread * threads, tokens)
    wait_ms = defaults.max_wait_ms if settings.max_wait_ms is None else settings.max_wait_ms
    return BatchLimits(
        max_batch_tokens=settings.max_batch_tokens or tokens,
        max_batch_size=settings.max_batch_size or defaults.max_batch_size,
        max_padding=defaults.max_padding if settings.max_padding is None else settings.max_padding,
        max_padding_tokens=max_padding_tokens,
        coarse_widths=coarse_widths,
        max_wait_s=wait_ms / 1000,
        max_queued=settings.max_queued or QUEUED_PER_INPUT * settings.max_inputs,
        timeout_s=settings.request_timeout_s,
    )


def described(limits: BatchLimits) -> str:
    """The limits as the log says them at load."""
    padding = (
        ""
        if math.isinf(limits.max_padding_tokens)
        else f" and {limits.max_padding_tokens:.0f} tokens"
    )
    wait = (
        "until a stream frees"
        if math.isinf(limits.max_wait_s)
        else f"{limits.max_wait_s * 1000:g} ms"
    )
    return (
        f"batches of at most {limits.max_batch_tokens} padded tokens and {limits.max_batch_size} "
        f"sequences, padding at most {limits.max_padding:.0%}{padding}, waiting {wait} to fill; "
        f"at most {limits.max_queued} sequences queued"
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
