"""Batch limits derived from the machine, and the flags that override them."""

from __future__ import annotations

import math
import re

import pytest

from embedserve.config import Settings
from embedserve.config.flags import shown_default
from embedserve.config.settings import SETTINGS
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


def documented(name: str) -> list[float]:
    """The numbers in a setting's default as --help and docs/configuration.md show it."""
    described = next(d for d in SETTINGS if d.name == name)
    return [float(n) for n in re.findall(r"\d+(?:\.\d+)?", shown_default(described))]


@pytest.mark.parametrize(("cores", "streams"), [(1, 1), (2, 1), (4, 2), (16, 4), (64, 1)])
def test_each_documented_default_is_what_the_resolver_gives(cores: int, streams: int) -> None:
    settings = Settings(max_inputs=100)
    cpu = batch_limits(settings, on_gpu=False, cores=cores, streams=streams)
    gpu = batch_limits(settings, on_gpu=True, cores=cores, streams=streams)
    per_thread, cap, on_gpu = documented("max_batch_tokens")  # "1024 per thread ..., at most"
    assert cpu.max_batch_tokens == min(per_thread * max(1, cores // streams), cap)
    assert gpu.max_batch_tokens == on_gpu
    assert [cpu.max_batch_size, gpu.max_batch_size] == documented("max_batch_size")
    assert [cpu.max_padding, gpu.max_padding] == documented("max_padding")
    assert cpu.max_wait_s == math.inf  # "until a stream frees"
    assert [gpu.max_wait_s * 1000] == documented("max_wait_ms")
    (per_request,) = documented("max_queued")  # "8 x --max-inputs"
    assert cpu.max_queued == gpu.max_queued == per_request * 100
    assert cpu.timeout_s == settings.request_timeout_s
