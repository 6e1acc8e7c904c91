"""Batch limits derived from the machine, and the flags that override them."""

from __future__ import annotations

from embedserve.config import Settings
from embedserve.engine.sizing import batch_limits


def test_a_cpu_batch_holds_about_1024_padded_tokens_per_thread_of_a_stream() -> None:
    settings = Settings(streams=2)  # the backend's own streams count, not the flag's
    for cores in (1, 2, 8):
        one = batch_limits(settings, on_gpu=False, cores=cores, streams=1)
        assert one.max_batch_tokens == 1024 * cores
        two = batch_limits(settings, on_gpu=False, cores=cores, streams=2)
        assert two.max_batch_tokens == 1024 * max(1, cores // 2)
    assert batch_limits(settings, on_gpu=False, cores=64).max_batch_tokens == 32768  # capped
    assert batch_limits(settings, on_gpu=True, cores=2).max_batch_tokens == 65536


def test_flags_override_the_derived_limits() -> None:
    settings = Settings(max_batch_tokens=300, max_batch_size=5, max_padding=0.3, max_wait_ms=4)
    limits = batch_limits(settings, on_gpu=False, cores=2, max_padding_tokens=9)
    assert (limits.max_batch_tokens, limits.max_batch_size) == (300, 5)
    assert (limits.max_padding, limits.max_padding_tokens, limits.max_wait_s) == (0.3, 9, 0.004)
