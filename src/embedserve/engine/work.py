"""A request's sequences as the scheduler holds them: the job (its caller's future, the array
its vectors go into, how far it got) and one item per sequence; and the scheduler's shared
state, whose changes wake whoever may be waiting for them."""

from __future__ import annotations

import asyncio
import contextlib
import math
import threading
import time
from dataclasses import dataclass, field

import numpy as np

from embedserve.stages import StageLog


@dataclass(eq=False)
class Job:
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[np.ndarray]
    out: np.ndarray
    remaining: int
    queued: int = 0
    """Items no compute thread has taken yet (queued, or in a formed batch)."""

    finished: bool = False
    """Result, error or cancellation: its queued items are dropped. Written under the lock."""

    background: bool = False
    """A batch job's: never a pass on every core."""

    progressed: float = field(default_factory=time.monotonic)
    """When it was submitted, or a pass of it began."""

    stages: StageLog | None = None
    """Where its queueing and passes are recorded (tracing on), from `submitted_ns`."""

    submitted_ns: int = 0

    def settle(self, error: BaseException | None = None) -> None:
        """Resolve the caller's future, once, on its own event loop (called under the lock)."""
        if self.finished:
            return
        self.finished = True

        def resolve() -> None:
            if self.future.done():
                return
            if error is None:
                self.future.set_result(self.out)
            else:
                self.future.set_exception(error)

        with contextlib.suppress(RuntimeError):  # RuntimeError: the request's event loop is gone
            self.loop.call_soon_threadsafe(resolve)


@dataclass(eq=False)
class Item:
    job: Job
    row: int
    tokens: list[int]
    arrival: int = 0
    unpooled: int = 0  # leading tokens attended to but left out of pooling
    second: int = 0  # where a pair's second text starts (a cross-encoder's document), or 0


class SchedulerState:
    """What the scheduler's threads and its callers share: the waiting sequences and the
    counters of the passes. Changed only inside `changing()`, which wakes every waiter that may
    wait for it when the change is done: no change can leave a thread asleep on a state that no
    longer holds (a skipped batch once did, and background work stalled until an online request
    came)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._changing = _Changing(self)
        self._reading = _Reading(self)
        self.waiting: list[Item] = []
        """Online sequences waiting for a batch, oldest first."""

        self.background: list[Item] = []
        """A batch job's sequences: formed only when no online one waits and a stream is free."""

        self.busy = 0
        """Passes running."""

        self.unclaimed = 0
        """Batches formed that no compute thread has taken yet."""

        self.exclusive = False
        """A pass on every core is running."""

        self.held = 0
        """Passes waiting for it to end."""

        self.closed = False
        self.last_online = -math.inf
        """When the last online request came."""

    def changing(self) -> _Changing:
        """Hold the lock to change the state; every waiter is woken when the block ends."""
        return self._changing

    def reading(self) -> _Reading:
        """Hold the lock to read the state (and to wait on it)."""
        return self._reading

    def wait(self, timeout: float | None = None) -> None:
        """Sleep until a change (or `timeout`); only inside `reading()` or `changing()`."""
        self._cond.wait(timeout)


class _Reading:
    """The lock held over a block (a plain class: contextlib's generator costs ~4 us an entry,
    and a lone request enters five times)."""

    def __init__(self, state: SchedulerState) -> None:
        self._state = state
        self._cond = state._cond

    def __enter__(self) -> SchedulerState:
        self._cond.acquire()
        return self._state

    def __exit__(self, *exc: object) -> None:
        self._cond.release()


class _Changing(_Reading):
    """The lock held over a change, and every waiter woken at its end: unless nothing is left
    that a thread could wait for (no sequence waits, online or background, no pass is held for
    the cores, and the state is open), when a waiter can only be waiting for new work, whose
    coming is a change of its own. A lone request's passes then wake nobody but the thread
    that runs them: woken for nothing, the former took the lock the others needed."""

    def __exit__(self, *exc: object) -> None:
        state = self._state
        try:
            if state.waiting or state.background or state.held or state.closed:
                self._cond.notify_all()
        finally:
            self._cond.release()
