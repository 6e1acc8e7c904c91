"""The scheduler's front door: whether a request is taken (past the queue limit, 429 with a
Retry-After), how long it may wait (past the request timeout, 503), and the compute rate both
answers are told from. Forming and running batches is the batcher's."""

from __future__ import annotations

import asyncio
import math
import time

import numpy as np

from embedserve.engine.work import Job, SchedulerState
from embedserve.errors import Overloaded, QueueTimeout


class Admission:
    def __init__(self, state: SchedulerState, max_queued: int, timeout_s: float | None) -> None:
        self.state = state
        self.max_queued = max_queued
        self.timeout_s = timeout_s
        self.rate = 0.0
        """Recent sequences per second of compute (the machine's, all streams), smoothed."""

    def admit(self, count: int) -> None:
        """Refuse (Overloaded) an online request of `count` sequences that would take the queue
        past its limit; a request alone is always taken. Called holding the state's lock."""
        waiting = len(self.state.waiting)
        if waiting and waiting + count > self.max_queued:
            raise Overloaded(
                f"the server is at capacity ({waiting} inputs queued); retry shortly",
                retry_after=self.drain_seconds(waiting),
            )

    async def wait(self, job: Job) -> np.ndarray:
        """The job's result. A job that has waited the timeout with none of its sequences
        computing, while some still wait (queued, or in a prepared batch), is dropped; one whose
        sequences are all computing, or whose passes keep starting, is waited for. The timeout
        is a timer on the loop, not wait_for around a shield: two futures and their callbacks
        fewer on every request's way back."""
        timeout = self.timeout_s
        if timeout is None:
            return await job.future
        loop = asyncio.get_running_loop()
        timer: asyncio.TimerHandle

        def check() -> None:
            nonlocal timer
            with self.state.changing() as state:
                if job.finished or job.future.done() or not job.queued:
                    return  # settled, cancelled, or all of it computing: waited for
                left = job.progressed + timeout - time.monotonic()
                if left > 0:
                    timer = loop.call_later(left, check)
                    return
                job.finished = True
                waiting = len(state.waiting)
            job.future.set_exception(
                QueueTimeout(
                    f"the request waited more than {timeout:g}s for the model; "
                    f"the server is busy, retry shortly",
                    retry_after=self.drain_seconds(waiting),
                )
            )

        timer = loop.call_later(timeout, check)
        try:
            return await job.future
        finally:
            timer.cancel()

    def drain_seconds(self, waiting: int) -> int:
        """Retry-After: how long the sequences now waiting take at the recent compute rate
        (1 s before any batch has run), within 1..60 s."""
        if not self.rate:
            return 1
        return min(60, max(1, math.ceil(waiting / self.rate)))

    def observe(self, rows: int, seconds: float, passes: int) -> None:
        """A pass of `rows` sequences took `seconds`, `passes` running at once."""
        rate = passes * rows / max(seconds, 1e-6)
        self.rate = rate if not self.rate else 0.8 * self.rate + 0.2 * rate
