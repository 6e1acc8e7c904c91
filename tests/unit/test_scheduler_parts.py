"""The scheduler's parts alone: the shared state wakes whoever may wait on it at every change
that matters to a waiter, and the admission front refuses past the queue limit with a
Retry-After told from the rate; its timeout drops a job that waited too long."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import numpy as np
import pytest

from embedserve.engine.admission import Admission
from embedserve.engine.work import Job, SchedulerState
from embedserve.errors import Overloaded, QueueTimeout


def waiter_for(
    state: SchedulerState, condition: object
) -> tuple[threading.Thread, threading.Event]:
    """A thread that sleeps on the state, with no timeout, until `condition(state)` holds."""
    woke = threading.Event()

    def wait() -> None:
        with state.reading():
            while not condition(state):  # type: ignore[operator]
                state.wait()
        woke.set()

    thread = threading.Thread(target=wait, daemon=True)
    thread.start()
    return thread, woke


@pytest.mark.parametrize(
    "change",
    [
        lambda s: setattr(s, "busy", s.busy - 1),
        lambda s: setattr(s, "unclaimed", s.unclaimed - 1),
        lambda s: s.waiting.clear(),
        lambda s: setattr(s, "closed", True),
    ],
    ids=["a pass ends", "a formed batch is taken", "the queue empties", "closing"],
)
def test_every_change_wakes_a_thread_asleep_on_the_state(change: object) -> None:
    """Whatever changes while sequences wait, a sleeper with no timeout wakes and sees it: no
    change can be made without the wake-up, since changing() is the only way in."""
    state = SchedulerState()
    with state.changing() as s:
        s.busy, s.unclaimed, s.waiting = 1, 1, [object()]  # type: ignore[list-item]

    def free(s: SchedulerState) -> bool:
        return s.closed or s.busy + s.unclaimed < 2 or not s.waiting

    thread, woke = waiter_for(state, free)
    with state.reading():  # the sleeper holds the lock only while checking
        pass
    assert not woke.wait(0.05)  # nothing changed: it sleeps
    with state.changing() as s:
        change(s)  # type: ignore[operator]
        s.background = [object()]  # type: ignore[list-item]  # something still waits
    assert woke.wait(5)
    thread.join(5)


def test_a_change_that_leaves_nothing_to_wait_for_wakes_nobody() -> None:
    """With no sequence waiting (online or background), no pass held for the cores and the
    state open, a sleeper can only be waiting for new work: a lone request's pass starting and
    ending wakes nobody (woken for nothing, the former took the lock the compute thread
    needed). The work's coming wakes it."""
    state = SchedulerState()
    wakes: list[int] = []
    asleep = threading.Event()

    def former() -> None:
        with state.reading() as s:
            while not s.waiting:
                asleep.set()  # under the lock, which wait() gives up only once asleep
                s.wait()
                wakes.append(len(s.waiting))

    thread = threading.Thread(target=former, daemon=True)
    thread.start()
    assert asleep.wait(5)
    with state.reading():  # taken: the former sleeps in wait()
        pass
    with state.changing() as s:  # a pass handed straight to a compute thread starts, then ends
        s.busy += 1
    with state.changing() as s:
        s.busy -= 1
    thread.join(0.1)
    assert wakes == []  # asleep all along
    with state.changing() as s:
        s.waiting.append(object())  # type: ignore[arg-type]
    thread.join(5)
    assert wakes == [1]


def test_admission_refuses_past_the_queue_limit_with_a_retry_after_from_the_rate() -> None:
    state = SchedulerState()
    admission = Admission(state, max_queued=10, timeout_s=None)
    with state.changing() as s:
        admission.admit(50)  # alone, a request is always taken, however big
        s.waiting = [object()] * 8  # type: ignore[list-item]
        admission.admit(2)
        with pytest.raises(Overloaded) as refused:
            admission.admit(3)
    assert refused.value.retry_after == 1  # no rate measured yet
    admission.observe(rows=2, seconds=1.0, passes=1)  # 2 sequences a second
    with state.changing(), pytest.raises(Overloaded) as measured:
        admission.admit(3)
    assert measured.value.retry_after == 4  # 8 waiting at 2/s
    assert "8 inputs queued" in measured.value.message


def queued_job(loop: asyncio.AbstractEventLoop) -> Job:
    """A job of one sequence that no pass has taken."""
    out = np.empty((1, 2), dtype=np.float32)
    return Job(loop=loop, future=loop.create_future(), out=out, remaining=1, queued=1)


async def test_the_timeout_drops_a_job_left_waiting_and_not_one_that_computes() -> None:
    loop = asyncio.get_running_loop()
    admission = Admission(SchedulerState(), max_queued=10, timeout_s=0.05)
    waiting = queued_job(loop)
    with pytest.raises(QueueTimeout):
        await admission.wait(waiting)
    assert waiting.finished  # its queued sequences are dropped
    computing = queued_job(loop)
    computing.queued = 0  # every sequence in a pass: waited for, however long
    loop.call_later(0.15, computing.future.set_result, computing.out)
    assert await admission.wait(computing) is computing.out


async def test_the_timeout_leaves_a_request_cancelled_as_it_falls_due() -> None:
    """The client goes (its request cancelled, which cancels the job's future) just before the
    timeout falls due, in one turn of the loop: the timer finds the future done and leaves it
    (setting QueueTimeout on it was an InvalidStateError in the loop's log)."""
    loop = asyncio.get_running_loop()
    problems: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _loop, context: problems.append(context))
    admission = Admission(SchedulerState(), max_queued=10, timeout_s=0.05)
    request = asyncio.ensure_future(admission.wait(queued_job(loop)))
    await asyncio.sleep(0)  # its timer is set
    loop.call_later(0.04, request.cancel)
    time.sleep(0.1)  # the loop held: the cancel and the timer come due in the same turn
    with pytest.raises(asyncio.CancelledError):
        await request
    await asyncio.sleep(0.01)
    assert problems == []
