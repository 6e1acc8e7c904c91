"""Dynamic batching: every request for one model feeds one queue; batches are formed under a
padded-token budget, grouping similar lengths, and run on the backend, as many at once as it
has streams.

Per model, a *former* thread picks and lays out the next batch (on a CPU once a stream frees or
the waiting sequences fill a pass, so that it holds all that came meanwhile) for the *compute*
threads: one per stream the backend runs at once (on a CPU, independent single-threaded
passes outrun one pass split over the cores: small matrices leave threads waiting at every
op). A batch with nothing else running or waiting beside it may run alone on every core
instead, where the backend offers that: a lone request is not left with one core's speed.
Requests from any event loop can wait on results (they are handed back with
call_soon_threadsafe), so the event loop never computes; it lays out only a small request's
batch on an idle batcher, handed straight to a compute thread (one wake-up before its pass).

A backend that runs packed batches (several texts end to end in a row, each attending to
itself: backends/packing.py) gets them instead: the oldest sequences that fit the token budget,
whatever their lengths, laid into rows, so no batch is cut short to spare padding.

Background work (a batch job's requests) waits in a queue of its own: a pass of it is formed only
when no online sequence waits and a stream is free, and it is kept short (BACKGROUND_PASS_S), so
an online request waits at most for a short pass already running.

The parts: admission.py is the front (the queue limit, the request timeout, and the compute
rate their answers are told from); selection.py chooses each batch and its layout, as pure
functions; work.py holds the jobs and the one state every thread shares, whose changes wake
its waiters; this file runs the former and the compute threads.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from embedserve import stages
from embedserve.backends.base import SECOND_TEXT, UNPOOLED, Backend
from embedserve.backends.packing import RunPacked, lay_out, packed_passes
from embedserve.engine.admission import Admission
from embedserve.engine.selection import (
    Budget,
    Packed,
    Selection,
    coarse_width,
    select_packed,
    select_padded,
)
from embedserve.engine.work import Item, Job, SchedulerState
from embedserve.errors import ModelNotReady

log = logging.getLogger(__name__)

RunBatch = Callable[[np.ndarray, np.ndarray], np.ndarray]
Work = tuple[list[Item], tuple[object, ...], int]
"""A batch laid out: its sequences (in the order its results come back), the pass's arguments,
its padded tokens."""

__all__ = ["BatchLimits", "BatchReport", "Batcher", "BatcherState", "coarse_width", "pad"]

BACKGROUND_PASS_S = 0.02
"""How long a pass of background work may take, at the measured rate, while online requests
come: what one arriving during it waits at most. Shorter passes pay a pass's fixed cost more
often; longer ones make online requests wait (docs/engineering-notes.md, "Constants")."""
ONLINE_RECENT_S = 10.0
"""With no online request for this long, background passes take the normal budget: an idle
server runs batch work at the speed of a job."""
BACKGROUND_FIRST_TOKENS = 256
"""A background pass's tokens before any pass has been timed."""
DIRECT_MAX_SEQUENCES = 16
DIRECT_MAX_TOKENS = 512
"""A request of at most these many sequences and tokens arriving at an idle batcher has its
first batch formed on the submitting thread (tens of microseconds) and handed straight to a
compute thread: a lone question skips the former's wake-up (~0.1 ms here). A bigger one goes
through the former, so that laying out much never runs on the event loop."""


@dataclass(frozen=True)
class BatchLimits:
    """Every limit of a model's batches, resolved in one place (engine/sizing.py), so none has
    a default here."""

    max_batch_tokens: int
    """Most padded tokens (padded width x rows) in one forward pass."""

    max_batch_size: int
    """Most sequences in one forward pass."""

    max_padding: float
    """Largest share of a batch's padded tokens that may be padding."""

    max_padding_tokens: float
    """Most padding tokens in one batch. A forward pass has a fixed cost; on a CPU it is worth
    only a few tokens of compute, and padding beyond that costs more than the pass it saves."""

    coarse_widths: bool
    """Pad each batch to a width on a coarse grid (see `coarse_width`), for a backend that builds
    kernels for every shape it meets (OpenVINO): fewer shapes stay within its kernel cache."""

    max_wait_s: float
    """How long the former waits for more sequences to fill a batch that is not full, while
    every stream computes (with one free, the batch starts at once); inf: until one frees."""

    max_queued: int
    """Most sequences waiting; past it new requests get 429 (a request alone is always taken)."""

    timeout_s: float | None
    """How long a request may wait with none of its sequences computing (before its first pass,
    or between two of its passes); past it its waiting sequences are dropped and it fails with
    QueueTimeout (503). A big request whose passes keep coming is not waiting, however long."""


@dataclass(frozen=True)
class BatchReport:
    """What one forward pass did, for observers (metrics)."""

    rows: int
    tokens: int
    padded_tokens: int
    seconds: float


@dataclass(frozen=True)
class BatcherState:
    """Where the sequences are, at one moment (for metrics and for tests to wait on)."""

    queued: int
    """Sequences waiting for a batch."""

    formed: int
    """Batches formed (padded, or being padded) that no pass has taken yet."""

    computing: int
    """Passes running."""

    waiting_for_cores: int
    """Passes held back while a pass on every core runs."""

    background: int = 0
    """Background sequences waiting (a batch job's)."""


class Batcher:
    def __init__(
        self,
        run: RunBatch,
        dimension: int,
        pad_id: int,
        limits: BatchLimits,
        workers: int = 1,
        every_core_pass: RunBatch | None = None,
        max_width: int | None = None,
        packed: tuple[RunPacked, RunPacked | None] | None = None,
    ) -> None:
        """`workers`: batches `run` may compute at once (it must be thread-safe if more than 1).
        `every_core_pass`: a pass on every core, for a batch with nothing else to run beside it; the
        other workers wait for it to finish. `max_width`: the model's longest sequence, which
        coarse widths never pass. `packed`: passes (on a stream, on every core) of packed batches,
        run instead of `run` and `every_core_pass`."""
        self._packs = packed is not None
        runs: tuple[Callable[..., np.ndarray], Callable[..., np.ndarray] | None]
        runs = packed if packed is not None else (run, every_core_pass)
        self._run: Callable[..., np.ndarray] = runs[0]
        self._every_core_pass = runs[1]
        self._max_width = max_width
        self._workers = workers
        self._dimension = dimension
        self._pad_id = pad_id
        self.limits = limits
        self._state = SchedulerState()
        self._admission = Admission(self._state, limits.max_queued, limits.timeout_s)
        self._token_rate = 0.0  # tokens per second of one pass, smoothed
        self._arrivals = itertools.count()
        self._handoff: queue.Queue[Work | None] = queue.Queue(maxsize=1)
        self.observers: list[Callable[[BatchReport], None]] = []
        self._threads = [
            threading.Thread(target=self._form_loop, name="embedserve-former", daemon=True)
        ] + [
            threading.Thread(target=self._compute_loop, name=f"embedserve-compute-{n}", daemon=True)
            for n in range(workers)
        ]
        for thread in self._threads:
            thread.start()

    @property
    def queued(self) -> int:
        """Sequences waiting for a batch."""
        with self._state.reading() as state:
            return len(state.waiting)

    @property
    def closing(self) -> bool:
        """close() was called: nothing new is taken."""
        with self._state.reading() as state:
            return state.closed

    def state(self) -> BatcherState:
        with self._state.reading() as state:
            return BatcherState(
                len(state.waiting), state.unclaimed, state.busy, state.held, len(state.background)
            )

    async def submit(
        self,
        sequences: list[list[int]],
        unpooled: Sequence[int] | None = None,
        background: bool = False,
        second: Sequence[int] | None = None,
    ) -> np.ndarray:
        """Pooled vectors for `sequences`, in order, once every batch holding them has run.
        `unpooled[i]` leading tokens of sequence i are read but not pooled (INSTRUCTOR models);
        `second[i]`: where the second text of pair i starts (cross-encoders).
        `background`: computed only when no online sequence waits (never refused or timed out:
        its caller bounds what it submits)."""
        loop = asyncio.get_running_loop()
        recording = stages.current()
        job = Job(
            loop=loop,
            future=loop.create_future(),
            out=np.empty((len(sequences), self._dimension), dtype=np.float32),
            remaining=len(sequences),
            queued=len(sequences),
            background=background,
            stages=recording,
            submitted_ns=stages.now_if(recording),
        )
        if not sequences:
            return job.out
        order = sorted(range(len(sequences)), key=lambda i: len(sequences[i]))
        items = [
            Item(
                job,
                row,
                sequences[row],
                next(self._arrivals),
                unpooled[row] if unpooled else 0,
                second[row] if second else 0,
            )
            for row in order
        ]
        with self._state.changing() as state:
            if state.closed:
                raise ModelNotReady("the model is being unloaded or the server is stopping")
            if background:
                state.background.extend(items)
            else:
                state.last_online = time.monotonic()
                self._admission.admit(len(sequences))
                if self._small(items) and self._idle(state):
                    self._hand_to_compute(state, items)
                else:
                    state.waiting.extend(items)
        try:
            return await (job.future if background else self._admission.wait(job))
        except asyncio.CancelledError:
            with self._state.changing():  # the former drops its queued items before they cost
                job.finished = True
            raise

    def close(self) -> None:
        """Stop the threads (after the pass in flight); whatever still waits fails with
        ModelNotReady rather than waiting forever."""
        with self._state.changing() as state:
            state.closed = True
        for thread in self._threads:
            thread.join(timeout=5)
        with self._state.changing() as state:
            left = [*state.waiting, *state.background]
            state.waiting, state.background = [], []
            gone = ModelNotReady("the model was unloaded or the server stopped before this ran")
            for job in {id(item.job): item.job for item in left}.values():
                job.settle(error=gone)

    @staticmethod
    def _small(items: list[Item]) -> bool:
        """Small enough to be laid out on the event loop."""
        if len(items) > DIRECT_MAX_SEQUENCES:
            return False
        return sum(len(item.tokens) for item in items) <= DIRECT_MAX_TOKENS

    def _idle(self, state: SchedulerState) -> bool:
        """Called holding the lock: nothing waits, is formed or runs, so a stream is free."""
        return not (state.waiting or state.unclaimed or state.busy or state.held)

    def _hand_to_compute(self, state: SchedulerState, items: list[Item]) -> None:
        """Called holding the lock on an idle batcher: form the first batch of `items` here and
        hand it straight to a compute thread (one wake-up, not the former's and then the compute
        thread's); what does not fit waits for the former."""
        chosen = self._select(items, self.limits.max_batch_tokens)
        work = self._laid_out(chosen)  # first: should it fail, the state is as it was
        state.waiting.extend(chosen.left)
        state.unclaimed += 1
        self._handoff.put_nowait(work)  # empty: nothing was formed

    # -- former thread -------------------------------------------------------------------------

    def _form_loop(self) -> None:
        while True:
            with self._state.changing() as state:
                chosen = self._next_batch(state)
                if chosen is not None:
                    state.unclaimed += 1
            if chosen is None:
                for _ in range(self._workers):
                    self._handoff.put(None)
                return
            self._handoff.put(self._laid_out(chosen))  # waits while one batch is already laid out

    def _next_batch(self, state: SchedulerState) -> Selection[Item] | None:
        """Called holding the lock: wait for work, give stragglers a moment, pick a batch; with
        no online work waiting and a stream free, a short pass of background work."""
        while not state.closed:
            state.waiting = [item for item in state.waiting if not item.job.finished]
            if not state.waiting:
                state.background = [item for item in state.background if not item.job.finished]
                if state.background and self._stream_free(state):
                    chosen = self._select(state.background, self._background_tokens(state))
                    state.background = chosen.left
                    return chosen
                state.wait()
                continue
            deadline = time.monotonic() + self.limits.max_wait_s
            while len(state.waiting) < self.limits.max_batch_size and not state.closed:
                # Waiting to fill a batch is free only while every stream computes: with one
                # free, what waits starts at once (a lone request never waits for company).
                if self._stream_free(state):
                    break
                left = deadline - time.monotonic()
                if left <= 0 or self._fills_a_pass(state.waiting):
                    break
                state.wait(min(left, threading.TIMEOUT_MAX))
            state.waiting = [item for item in state.waiting if not item.job.finished]
            if state.waiting:
                chosen = self._select(state.waiting, self.limits.max_batch_tokens)
                state.waiting = chosen.left
                return chosen
        return None

    def _stream_free(self, state: SchedulerState) -> bool:
        """Called holding the lock: a batch formed now would start at once (no pass on every
        core holds the others back, and a stream has none running or formed)."""
        return not state.exclusive and state.busy + state.unclaimed < self._workers

    def _fills_a_pass(self, waiting: list[Item]) -> bool:
        """Whether the sequences waiting hold a whole pass's tokens: then waiting longer adds
        nothing, and the batch is laid out while the current pass runs."""
        tokens = 0
        for item in waiting:
            tokens += len(item.tokens)
            if tokens >= self.limits.max_batch_tokens:
                return True
        return False

    def _background_tokens(self, state: SchedulerState) -> int:
        """A background pass's token budget: BACKGROUND_PASS_S of one pass's measured rate while
        online requests come, the normal budget when none has come for ONLINE_RECENT_S."""
        if time.monotonic() - state.last_online > ONLINE_RECENT_S:
            return self.limits.max_batch_tokens
        if not self._token_rate:
            return min(BACKGROUND_FIRST_TOKENS, self.limits.max_batch_tokens)
        return max(1, min(self.limits.max_batch_tokens, int(self._token_rate * BACKGROUND_PASS_S)))

    def _select(self, waiting: list[Item], max_tokens: int) -> Selection[Item]:
        """The next batch (packed or padded) with its layout, and what is left waiting."""
        limits = self.limits
        budget = Budget(
            max_tokens, limits.max_batch_size, limits.max_padding, limits.max_padding_tokens
        )
        choose = select_packed if self._packs else select_padded
        return choose(waiting, budget, self._width)

    def _width(self, longest: int) -> int:
        """The width a batch whose longest sequence is `longest` is laid out in and costs."""
        if self.limits.coarse_widths:
            return coarse_width(longest, self._max_width)
        return longest

    def _laid_out(self, chosen: Selection[Item]) -> Work:
        """The pass's arguments, in the layout the selection chose."""
        batch = chosen.chosen
        sequences = [item.tokens for item in batch]
        layout = chosen.layout
        if isinstance(layout, Packed):
            starts = itertools.accumulate(layout.rows, initial=0)
            rows = [sequences[a:b] for a, b in itertools.pairwise(starts)]
            packed = lay_out(rows, layout.width)
            return batch, (packed,), packed.padded_tokens
        unpooled, second = [item.unpooled for item in batch], [item.second for item in batch]
        ids, mask = pad(sequences, self._pad_id, unpooled, layout.width, second)
        return batch, (ids, mask), int(ids.size)

    # -- compute threads -----------------------------------------------------------------------

    def _compute_loop(self) -> None:
        while (work := self._handoff.get()) is not None:
            batch, args, padded = work
            with self._state.changing() as state:  # from here on, a timeout waits for the result
                state.unclaimed -= 1
                started = time.monotonic()
                for item in batch:
                    item.job.queued -= 1
                    item.job.progressed = started
                if all(item.job.finished for item in batch):
                    continue  # every client went away: skip the compute (the stream is free)
                every_core = self._claim_cores(state, may_take_all=not batch[0].job.background)
            try:
                self._compute(batch, args, padded, every_core or self._run)
            finally:
                with self._state.changing() as state:
                    state.busy -= 1
                    if every_core:
                        state.exclusive = False

    def _claim_cores(
        self, state: SchedulerState, may_take_all: bool
    ) -> Callable[..., np.ndarray] | None:
        """Called holding the lock, before a pass: wait out a pass on every core, then take
        every core too if nothing else is running or waiting. The pass on every core if taken."""
        state.held += 1
        while state.exclusive:
            state.wait()
        state.held -= 1
        alone = may_take_all and not state.busy and not state.unclaimed and not state.waiting
        every_core = self._every_core_pass if alone else None
        state.busy += 1
        state.exclusive = every_core is not None
        return every_core

    def _compute(
        self,
        batch: list[Item],
        args: tuple[object, ...],
        padded: int,
        run: Callable[..., np.ndarray],
    ) -> None:
        started = time.perf_counter()
        traced = stages.traced_jobs(batch) if stages.enabled else []
        started_ns = time.time_ns() if traced else 0
        try:
            vectors = run(*args)
        except Exception as exc:
            log.error("a batch of %d sequences failed: %s", len(batch), exc, exc_info=exc)
            with self._state.changing():
                for job in {id(item.job): item.job for item in batch}.values():
                    job.settle(error=exc)
            return
        self._report(batch, padded, time.perf_counter() - started, alone=run is not self._run)
        if traced:
            self._trace(traced, batch, padded, started_ns, every_core=run is not self._run)
        with self._state.changing():  # a job's rows may come back from several workers
            for item, vector in zip(batch, vectors, strict=True):
                job = item.job
                if job.finished:
                    continue
                job.out[item.row] = vector
                job.remaining -= 1
                if job.remaining == 0:
                    job.settle()

    def _trace(
        self, jobs: list[Job], batch: list[Item], padded: int, started_ns: int, every_core: bool
    ) -> None:
        """Each traced request's wait for its first pass, and this pass: its rows and tokens
        (all its requests'), how they were laid out, on which cores."""
        ended_ns = time.time_ns()
        tokens = sum(len(item.tokens) for item in batch)
        for job in jobs:
            assert job.stages is not None
            if job.submitted_ns:  # its first pass: the queue wait ends here
                job.stages.add("queue", job.submitted_ns, started_ns)
                job.submitted_ns = 0
            job.stages.add(
                "compute",
                started_ns,
                ended_ns,
                rows=len(batch),
                tokens=tokens,
                padded_tokens=padded,
                layout="packed" if self._packs else "padded",
                every_core=every_core,
            )

    def _report(self, batch: list[Item], padded: int, seconds: float, alone: bool) -> None:
        tokens = sum(len(item.tokens) for item in batch)
        report = BatchReport(len(batch), tokens, padded, seconds)
        self._admission.observe(len(batch), seconds, 1 if alone else self._workers)
        if not alone:  # one stream's rate, for the length of a background pass
            tokens_per_s = padded / max(seconds, 1e-6)
            self._token_rate = (
                tokens_per_s
                if not self._token_rate
                else 0.8 * self._token_rate + 0.2 * tokens_per_s
            )
        for observer in self.observers:
            try:
                observer(report)
            except Exception:  # an observer must never stop the engine
                log.exception("a batch observer failed")


def batcher_for(backend: Backend, pad_id: int, limits: BatchLimits, max_width: int) -> Batcher:
    """A batcher over `backend`'s passes: one worker a stream, its every-core pass for a lone
    batch; packed batches where the backend runs them."""
    return Batcher(
        backend.embed,
        backend.dimension,
        pad_id,
        limits,
        workers=backend.streams,
        every_core_pass=backend.every_core_pass,
        max_width=max_width,
        packed=packed_passes(backend),
    )


def pad(
    sequences: list[list[int]],
    pad_id: int,
    unpooled: Sequence[int] | None = None,
    width: int = 0,
    second: Sequence[int] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Padded ids and their attention mask: 1 for tokens, 0 for padding, UNPOOLED for tokens
    the model reads but leaves out of pooling, SECOND_TEXT from where `second[row]` says a
    pair's second text starts. At least `width` wide."""
    width = max(width, *map(len, sequences))
    ids = np.full((len(sequences), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(sequences), width), dtype=np.int64)
    for row, seq in enumerate(sequences):
        ids[row, : len(seq)] = seq
        mask[row, : len(seq)] = 1
        if unpooled:
            mask[row, : min(unpooled[row], len(seq))] = UNPOOLED
        if second and second[row]:
            mask[row, second[row] : len(seq)] = SECOND_TEXT
    return ids, mask
