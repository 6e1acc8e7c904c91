"""Which models are in memory: each loads on its first request, under an optional budget that
evicts the least recently used idle models to make room, and unloads after its keep-alive.
A model with requests in flight or queued is never evicted, nor one marked pinned."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import math
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence

from embedserve import machine
from embedserve.config.quantities import shown_bytes
from embedserve.engine.model_sizes import ModelSizes
from embedserve.engine.registry import ServedModel, Service
from embedserve.errors import ModelNotReady, ModelUnavailable, OverBudget

log = logging.getLogger("embedserve")


class Residency:
    """Loads, keeps and unloads the served models. `budget`: bytes the loaded models may hold
    together (None: no limit); `keep_alive_s`: idle seconds before a model unloads (None or
    negative: never), a model's own setting or a request's winning over it."""

    def __init__(
        self,
        models: Sequence[ServedModel],
        *,
        budget: int | None,
        keep_alive_s: float | None,
        sizes: ModelSizes,
        load_timeout_s: float,
        reclaim: Callable[[], None] = machine.return_freed_heap,
    ) -> None:
        self.models = list(models)
        self.budget = budget
        self.keep_alive_s = keep_alive_s
        self.sizes = sizes
        self.load_timeout_s = load_timeout_s
        self._reclaim = reclaim
        self._lock = asyncio.Lock()  # one load or unload at a time: each measures the process
        self._loads: dict[ServedModel, asyncio.Task[Service]] = {}
        self._changed = asyncio.Event()
        self._next_wake = math.inf  # when the sweeper wakes unless woken sooner
        self._sweeper: asyncio.Task[None] | None = None

    @property
    def on_demand(self) -> bool:
        """Whether models load on their first request instead of at start-up."""
        return self.budget is not None

    def start(self) -> None:
        """Begin unloading models whose keep-alive has run out."""
        if self._sweeper is None:
            self._sweeper = asyncio.ensure_future(self._sweep())

    async def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
            self._sweeper = None

    @contextlib.asynccontextmanager
    async def use(
        self, model: ServedModel, keep_alive_s: float | None = None
    ) -> AsyncIterator[Service]:
        """The model's service, loaded now if it is not, held (never evicted) until the block
        ends; then its keep-alive starts (`keep_alive_s`: this request's, e.g. Ollama's)."""
        model.in_flight += 1
        model.expires_at = None
        try:
            yield model.loaded or await self.load(model, self.load_timeout_s)
        finally:
            self._release(model, keep_alive_s)

    @contextlib.contextmanager
    def held(self, model: ServedModel) -> Iterator[Service | None]:
        """The model's service if it is loaded (None if not: nothing loads it), kept loaded
        until the block ends; a look, not a use: its keep-alive runs on."""
        if model.loaded is None:
            yield None
            return
        model.in_flight += 1
        try:
            yield model.loaded
        finally:
            model.in_flight -= 1
            self._wake_if_sooner(model)  # it may have run out while held

    def _release(self, model: ServedModel, keep_alive_s: float | None) -> None:
        model.in_flight -= 1
        model.last_used = time.monotonic()
        if model.in_flight == 0 and model.loaded is not None:
            self._arm(model, keep_alive_s)

    def used_bytes(self) -> int:
        """What the loaded models hold, as measured when each loaded."""
        return sum(self.size_of(m) for m in self.models if m.loaded is not None)

    def size_of(self, model: ServedModel) -> int:
        """Its measured size (this process's last load, else the last remembered for its
        build), else an estimate from its weights."""
        return self.sizes.size(model)

    async def load(self, model: ServedModel, timeout_s: float | None = None) -> Service:
        """Load `model` (one load shared by concurrent first requests), waiting at most
        `timeout_s`; the load itself goes on for the next request if the wait gives up."""
        if model.loaded is not None:
            return model.loaded
        task = self._loads.get(model)
        if task is None:
            task = asyncio.ensure_future(self._load_in_turn(model))
            self._loads[model] = task
            task.add_done_callback(lambda done: self._forget(model, done))
        try:
            return await asyncio.wait_for(asyncio.shield(task), timeout_s)
        except asyncio.TimeoutError:
            raise ModelNotReady(
                f"model {model.id} is still loading after {timeout_s:g}s; retry shortly"
            ) from None

    async def preload(self, model: ServedModel) -> None:
        """Load `model` at start-up, however long it takes; its keep-alive starts now."""
        await self.load(model)
        model.last_used = time.monotonic()
        self._arm(model, None)

    def _forget(self, model: ServedModel, task: asyncio.Task[Service]) -> None:
        """The load is over: a next request starts another where this one was refused for
        room (a model that failed to load keeps its error). The error, which its waiters got,
        is taken here too, where all of them gave up waiting."""
        self._loads.pop(model, None)
        if not task.cancelled():
            task.exception()

    async def _load_in_turn(self, model: ServedModel) -> Service:
        async with self._lock:
            if model.loaded is not None:
                return model.loaded
            if self.budget is not None:
                await self._make_room(model, self.budget)
            service = await model.service()
            self.sizes.measured(model)
            if model.in_flight == 0:  # every waiter gave up: it is idle from now on
                model.last_used = time.monotonic()
                self._arm(model, None)
            log.info(
                "model %s loaded: %s; models hold %s%s",
                model.id,
                shown_bytes(self.size_of(model)),
                shown_bytes(self.used_bytes()),
                f" of {shown_bytes(self.budget)}" if self.budget is not None else "",
            )
            return service

    async def _make_room(self, model: ServedModel, budget: int) -> None:
        """Unload the least recently used idle models until `model`'s load fits (its peak while
        loading, which is more than it holds after), or none at all and OverBudget where it
        would not fit even then."""
        need = self.sizes.load_peak(model)
        loaded = [m for m in self.models if m.loaded is not None]
        free = budget - sum(self.size_of(m) for m in loaded)
        evictable = sorted(
            (m for m in loaded if m.in_flight == 0 and not m.pinned), key=lambda m: m.last_used
        )
        pinned = [m for m in loaded if m.pinned and m is not model]
        room = budget - sum(self.size_of(m) for m in pinned)
        if need > room:
            names = ", ".join(f"{m.id} ({shown_bytes(self.size_of(m))})" for m in pinned)
            raise ModelUnavailable(
                f"model {model.id} needs {shown_bytes(need)} to load, more than the memory "
                f"budget of {shown_bytes(budget)} leaves beside the pinned models "
                f"({names or 'none'}): it can never load; raise --memory-budget or pin fewer "
                f"models"
            )
        chosen: list[ServedModel] = []
        for candidate in evictable:
            if free >= need:
                break
            chosen.append(candidate)
            free += self.size_of(candidate)
        if free < need:
            held = ", ".join(
                f"{m.id} ({shown_bytes(self.size_of(m))}"
                f"{', pinned' if m.pinned else ', busy' if m.in_flight else ''})"
                for m in loaded
            )
            raise OverBudget(
                f"model {model.id} needs {shown_bytes(need)} to load and does not fit in the "
                f"memory budget of {shown_bytes(budget)} beside the models that cannot be "
                f"unloaded now: {held or 'none'}; retry when they are idle"
            )
        # Detached at once, with no await after the check: a request arriving meanwhile for a
        # victim finds it unloaded and waits for its own load, instead of using it as it closes.
        # Popped into _close, never named here: a reference left in this frame would keep
        # each closed engine's memory until the last one closed.
        detached = [victim.unload("evicted") for victim in chosen]
        for victim in chosen:
            log.info("evicting model %s to make room for %s", victim.id, model.id)
            try:
                await self._close(victim, detached.pop(0), "evicted")
            except Exception:  # detached all the same: the others still close
                log.exception("model %s did not close cleanly", victim.id)

    async def unload(self, model: ServedModel, reason: str, only_if_due: bool = False) -> bool:
        """Unload `model` now if it is idle (`only_if_due`: and its keep-alive has run out, as
        it stands once the lock is held); False if not."""
        async with self._lock:
            if model.loaded is None or model.in_flight or (only_if_due and not _due(model)):
                return False
            await self._unload(model, reason)
            return True

    async def _unload(self, model: ServedModel, reason: str) -> None:
        await self._close(model, model.unload(reason), reason)

    async def _close(self, model: ServedModel, service: Service | None, reason: str) -> None:
        """Close a detached service and give what it held back to the system."""
        if service is None:
            return
        before = machine.resident_bytes()
        await service.aclose()
        del service
        await asyncio.to_thread(self._collect)
        after = machine.resident_bytes()
        freed = f", {shown_bytes(before - after)} returned" if before and after else ""
        log.info("model %s unloaded (%s)%s", model.id, reason, freed)

    def _collect(self) -> None:
        """Free what the closed service held, and give the heap's free pages back."""
        gc.collect()
        self._reclaim()

    def _arm(self, model: ServedModel, keep_alive_s: float | None) -> None:
        """Start `model`'s keep-alive: the request's, else the model's, else the server's."""
        keep = next(
            (k for k in (keep_alive_s, model.keep_alive_s, self.keep_alive_s) if k is not None),
            None,
        )
        if keep is None or keep < 0:
            model.expires_at = None
            return
        model.expires_at = time.monotonic() + keep
        self._wake_if_sooner(model)

    def _wake_if_sooner(self, model: ServedModel) -> None:
        """Wake the sweeper if `model` runs out before it would wake."""
        if model.expires_at is not None and model.expires_at < self._next_wake:
            self._changed.set()

    async def _sweep(self) -> None:
        """Unload each model whose keep-alive has run out, sleeping until the next one does."""
        while True:
            for model in self.models:
                if not _due(model):
                    continue
                try:
                    await self.unload(model, "expired", only_if_due=True)
                except Exception:  # one model's failure to close must not stop the sweep
                    log.exception("model %s did not unload cleanly", model.id)
                    model.expires_at = None
            upcoming = [  # a held model's turn comes when it is let go (_wake_if_sooner)
                m.expires_at
                for m in self.models
                if m.expires_at is not None and m.loaded and not m.in_flight
            ]
            wait = max(0.0, min(upcoming) - time.monotonic()) if upcoming else None
            self._next_wake = math.inf if wait is None else time.monotonic() + wait
            self._changed.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._changed.wait(), wait)


def _due(model: ServedModel) -> bool:
    """Loaded, idle, and past its keep-alive."""
    expires = model.expires_at
    idle = model.in_flight == 0 and model.loaded is not None
    return idle and expires is not None and expires <= time.monotonic()
