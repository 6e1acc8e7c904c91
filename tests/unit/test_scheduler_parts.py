"""The scheduler's parts alone: the shared state wakes whoever waits on it at every change, and
the admission front refuses past the queue limit with a Retry-After told from the rate."""

from __future__ import annotations

import threading

import pytest

from embedserve.engine.admission import Admission
from embedserve.engine.work import SchedulerState
from embedserve.errors import Overloaded


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
    """Whatever changes, a sleeper with no timeout wakes and sees it: no change can be made
    without the wake-up, since changing() is the only way in."""
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
    assert woke.wait(5)
    thread.join(5)


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
