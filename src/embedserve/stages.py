"""The stages of one request (tokenize, queue, compute, serialize), recorded as they happen by
whichever layer or thread runs them, for a trace to show. Nothing is recorded unless the
request's context holds a StageLog (tracing is on): off, each stage costs one lookup."""

from __future__ import annotations

import time
from collections.abc import Iterable
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Stage:
    name: str
    start_ns: int
    """Wall-clock nanoseconds (time.time_ns), as traces carry them."""

    end_ns: int
    attributes: dict[str, Any] = field(default_factory=dict)


class StageLog:
    """The stages of one request, appended from the event loop or a compute thread."""

    def __init__(self) -> None:
        self.stages: list[Stage] = []

    def add(self, name: str, start_ns: int, end_ns: int | None = None, **attributes: Any) -> None:
        self.stages.append(Stage(name, start_ns, end_ns or time.time_ns(), attributes))


CURRENT: ContextVar[StageLog | None] = ContextVar("embedserve_stages", default=None)

enabled = False
"""Whether any request of this process may carry a log: a forward pass looks for traced
requests only then."""


def enable() -> None:
    global enabled
    enabled = True


def current() -> StageLog | None:
    """The running request's log, where tracing is on."""
    return CURRENT.get()


def traced_jobs(items: Iterable[Any]) -> list[Any]:
    """The distinct jobs of a pass's items that carry a log."""
    jobs = {id(item.job): item.job for item in items}
    return [job for job in jobs.values() if job.stages is not None]


def now_if(log: StageLog | None) -> int:
    """The time a stage starts, where there is a log to record it in (else 0, for free)."""
    return time.time_ns() if log is not None else 0
