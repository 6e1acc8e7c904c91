"""The Residency's corner cases, on models of declared sizes whose loads and closes a test
controls: a keep-alive re-read under the lock, a close that fails among evictions, a load
every waiter gave up on, a model that can never fit."""

from __future__ import annotations

import asyncio
import math
import time
from pathlib import Path
from typing import Any

import pytest

from embedserve.config import ModelSpec
from embedserve.engine.model_sizes import ModelSizes
from embedserve.engine.registry import ServedModel
from embedserve.engine.residency import Residency
from embedserve.errors import ModelNotReady, ModelUnavailable, OverBudget
from embedserve.models.source import ModelSource
from tests.fakes import until

MiB = 2**20


class FakeService:
    batcher = None

    def __init__(self, fail_close: bool = False) -> None:
        self.closed = False
        self.fail_close = fail_close

    async def aclose(self) -> None:
        self.closed = True
        if self.fail_close:
            raise RuntimeError("simulated close failure")


class DeclaredSizes(ModelSizes):
    """Each model's size as the test declares it, whatever its load measured."""

    def __init__(self, sizes: dict[str, int]) -> None:
        super().__init__(None, key=lambda model: model.id)
        self.sizes = sizes

    def size(self, model: ServedModel) -> int:
        return self.sizes[model.id]


def model(
    source: ModelSource, name: str, *, load_s: float = 0.0, pinned: bool = False, **service: Any
) -> ServedModel:
    def load(_: ModelSource) -> FakeService:
        time.sleep(load_s)
        return FakeService(**service)

    return ServedModel(source, load, ModelSpec(name=name, pinned=pinned))  # type: ignore[arg-type]


def residency(models: list[ServedModel], **options: Any) -> Residency:
    sizes = DeclaredSizes({m.id: options.pop("size", 100 * MiB) for m in models})
    options.setdefault("budget", None)
    options.setdefault("keep_alive_s", None)
    return Residency(models, sizes=sizes, load_timeout_s=30, **options)


async def test_the_sweeper_reads_a_keep_alive_again_once_it_holds_the_lock(
    minilm: ModelSource,
) -> None:
    a = model(minilm, "a")
    keeper = residency([a], keep_alive_s=0)
    await keeper.load(a)
    async with keeper.use(a):
        pass  # armed: due at once
    await keeper._lock.acquire()  # a load or unload under way: the sweeper waits
    keeper.start()
    try:
        await asyncio.sleep(0.05)
        async with keeper.use(a, keep_alive_s=-1):  # meanwhile a request keeps it for good
            pass
        keeper._next_wake = 0.0  # set again only when the sweeper's round is over
    finally:
        keeper._lock.release()
    await until(lambda: keeper._next_wake == math.inf)  # the sweeper went round again
    assert a.loaded is not None
    await keeper.close()


async def test_a_victim_that_fails_to_close_leaves_the_others_closed(minilm: ModelSource) -> None:
    a, b = model(minilm, "a", fail_close=True), model(minilm, "b")
    c = model(minilm, "c")
    keeper = residency([a, b, c], budget=250 * MiB)
    keeper.sizes.sizes["c"] = 200 * MiB  # type: ignore[attr-defined]
    first: Any = await keeper.load(a)
    second: Any = await keeper.load(b)
    await keeper.load(c)  # evicts both
    assert first.closed
    assert second.closed
    assert (a.loaded, b.loaded) == (None, None)
    assert c.loaded is not None


async def test_a_load_every_waiter_gave_up_on_still_starts_its_keep_alive(
    minilm: ModelSource,
) -> None:
    a = model(minilm, "a", load_s=0.3)
    keeper = residency([a], keep_alive_s=0.05)
    keeper.start()
    with pytest.raises(ModelNotReady, match="still loading"):
        await keeper.load(a, timeout_s=0.01)
    await until(lambda: a.loads == 1)
    await until(lambda: a.loaded is None)  # idle from its load on, then past its keep-alive
    await keeper.close()


async def test_a_model_that_can_never_fit_beside_the_pinned_ones_is_not_told_to_retry(
    minilm: ModelSource,
) -> None:
    pinned, busy, big = (
        model(minilm, "pinned", pinned=True),
        model(minilm, "busy"),
        model(minilm, "big"),
    )
    keeper = residency([pinned, busy, big], budget=250 * MiB)
    keeper.sizes.sizes["big"] = 200 * MiB  # type: ignore[attr-defined]
    await keeper.load(pinned)
    with pytest.raises(ModelUnavailable, match="can never load"):
        await keeper.load(big)
    keeper.sizes.sizes["big"] = 100 * MiB  # type: ignore[attr-defined]
    async with keeper.use(busy):
        with pytest.raises(OverBudget, match="busy"):  # this one may fit later: retry
            await keeper.load(big)
    await keeper.load(big)
    assert (pinned.loaded is not None, busy.loaded, big.loaded is not None) == (True, None, True)


async def test_a_models_own_keep_alive_wins_over_the_servers_and_a_requests_over_both(
    minilm: ModelSource,
) -> None:
    own = ServedModel(minilm, lambda _: FakeService(), ModelSpec(name="own", keep_alive_s=0.05))  # type: ignore[arg-type, return-value]
    keeper = residency([own], keep_alive_s=-1)  # the server: never
    keeper.start()
    async with keeper.use(own, keep_alive_s=-1):  # this request: never
        pass
    assert own.loaded is not None
    assert own.expires_at is None
    async with keeper.use(own):  # the model's own 50 ms
        pass
    await until(lambda: own.loaded is None)
    await keeper.close()


def test_a_measured_size_is_remembered_for_the_next_start(
    minilm: ModelSource, tmp_path: Path
) -> None:
    book = tmp_path / "model-sizes.json"
    first = model(minilm, "a")
    sizes = ModelSizes(book, key=lambda m: "build-of-a")
    estimate = sizes.size(first)
    assert estimate > 50 * MiB  # before any load: one copy of its weights
    first.memory_bytes, first.load_peak_bytes = 70 * MiB, 90 * MiB
    sizes.measured(first)
    later = ModelSizes(book, key=lambda m: "build-of-a")  # another process, the same cache
    fresh = model(minilm, "a")
    assert later.size(fresh) == 70 * MiB
    assert later.load_peak(fresh) == 90 * MiB
    other = ModelSizes(book, key=lambda m: "another-build")
    assert other.size(fresh) == estimate
