"""Test doubles: backends whose behaviour a test controls, and helpers to build apps."""

from __future__ import annotations

import asyncio
import dataclasses
import math
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import httpx
import numpy as np

from embedserve.api.app import create_app
from embedserve.config import Settings
from embedserve.engine.batcher import BatchLimits
from embedserve.engine.embedder import Embedder
from embedserve.engine.registry import ModelRegistry, ServedModel
from embedserve.models.source import ModelSource
from embedserve.models.tokenizer import ModelTokenizer


class EchoBackend:
    """Vector = [sequence length, first content id, sum of ids, 1, 0, ...]: identifies its input."""

    kind = "echo"
    precision = "fp32"
    streams = 1
    kernels_per_shape = False
    every_core_pass: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None

    def __init__(self, dimension: int = 8) -> None:
        self._dimension = dimension
        self.batches: list[tuple[int, int]] = []  # (rows, width) of each forward call
        self.seen: list[int] = []  # first content token of every row computed
        self.padding: list[int] = []  # padding tokens of each forward call

    @property
    def dimension(self) -> int:
        return self._dimension

    def embed(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        self.batches.append(input_ids.shape)
        self.padding.append(int((attention_mask == 0).sum()))
        self.seen.extend(int(t) for t in input_ids[:, 1])
        out = np.zeros((len(input_ids), self._dimension), dtype=np.float32)
        out[:, 0] = attention_mask.sum(axis=1)
        out[:, 1] = input_ids[:, 1]
        out[:, 2] = (input_ids * attention_mask).sum(axis=1)
        out[:, 3] = 1.0
        return out


class BlockingBackend(EchoBackend):
    """Holds each forward pass until the test releases it."""

    def __init__(self) -> None:
        super().__init__()
        self.entered = threading.Event()
        self.release = threading.Event()

    def embed(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        self.entered.set()
        assert self.release.wait(30), "test never released the backend"
        return super().embed(input_ids, attention_mask)


class SlowBackend(EchoBackend):
    """Takes `seconds` per forward pass."""

    def __init__(self, seconds: float) -> None:
        super().__init__()
        self.seconds = seconds

    def embed(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        time.sleep(self.seconds)
        return super().embed(input_ids, attention_mask)


class FailingBackend(EchoBackend):
    """Fails every batch holding the poison token (all batches by default)."""

    def __init__(self, poison: int | None = None) -> None:
        super().__init__()
        self.poison = poison

    def embed(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        if self.poison is None or (input_ids == self.poison).any():
            raise RuntimeError("simulated backend fault")
        return super().embed(input_ids, attention_mask)


TEST_LIMITS = BatchLimits(
    max_batch_tokens=16384,
    max_batch_size=64,
    max_padding=0.15,
    max_padding_tokens=math.inf,
    coarse_widths=False,
    max_wait_s=0.002,
    max_queued=16384,
    timeout_s=None,
)
"""The batches of the tests' fake engines: a roomy CPU's, waiting 2 ms to fill a batch so that
concurrent requests share it."""


def batch_limits(**changes: Any) -> BatchLimits:
    """TEST_LIMITS with `changes`."""
    return dataclasses.replace(TEST_LIMITS, **changes)


def fake_embedder(
    source: ModelSource, backend: EchoBackend, max_tokens: int = 256, **kwargs: object
) -> Embedder:
    tokenizer = ModelTokenizer(source.files / "tokenizer.json", max_tokens)
    kwargs.setdefault("limits", TEST_LIMITS)
    return Embedder(tokenizer, backend, **kwargs)  # type: ignore[arg-type]


def client_for(registry: ModelRegistry, settings: Settings | None = None) -> httpx.AsyncClient:
    app = create_app(settings or Settings(), registry)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    return httpx.AsyncClient(transport=transport, base_url="http://test")


def registry_with(
    source: ModelSource, embedder: Embedder, *, strict: bool = False
) -> ModelRegistry:
    model = ServedModel(source, lambda _source: embedder)
    model.load()
    return ModelRegistry([model], strict=strict)


async def until(condition: Callable[[], object], timeout: float = 10.0) -> None:
    """Wait for the engine's state (never a fixed time): `condition` is polled until true."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition never met"
        await asyncio.sleep(0.005)


async def until_equal(value: Callable[[], object], expected: object) -> None:
    """Wait until `value()` == `expected`."""
    await until(lambda: value() == expected)


def taken_or_refused(batcher: object, tasks: Sequence[asyncio.Future[Any]]) -> int:
    """Single-sequence requests the batcher holds (computing, formed, queued) plus those that
    are done (refused), for a batcher of one sequence a batch."""
    return sum(state_of(batcher)) + sum(task.done() for task in tasks)


def state_of(batcher: object) -> tuple[int, int, int]:
    """(computing, formed, queued) of a Batcher."""
    state = batcher.state()  # type: ignore[attr-defined]
    return state.computing, state.formed, state.queued
