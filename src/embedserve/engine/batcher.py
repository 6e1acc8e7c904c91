"""Dynamic batching: every request for one model feeds one queue; batches are formed under a
padded-token budget, grouping similar lengths, and run on the backend, as many at once as it
has streams.

Per model, a *former* thread picks and pads the next batch while *compute* threads run the
current ones: one per stream the backend runs at once (on a CPU, independent single-threaded
passes outrun one pass split over the cores: small matrices leave threads waiting at every
op). A batch with nothing else running or waiting beside it may run alone on every core
instead, where the backend offers that: a lone request is not left with one core's speed.
Requests from any event loop can wait on results (they are handed back with
call_soon_threadsafe), so the event loop never computes or pads.

A backend that runs packed batches (several texts end to end in a row, each attending to
itself: backends/packing.py) gets them instead: the oldest sequences that fit the token budget,
whatever their lengths, laid into rows, so no batch is cut short to spare padding.

Background work (a batch job's requests) waits in a queue of its own: a pass of it is formed only
when no online sequence waits and a stream is free, and it is kept short (BACKGROUND_PASS_S), so
an online request waits at most for a short pass already running.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import math
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from embedserve.backends.base import SECOND_TEXT, UNPOOLED, Backend
from embedserve.backends.packing import (
    MIN_PACKED_WIDTH,
    RunPacked,
    fill_rows,
    lay_out,
    packed_passes,
)
from embedserve.errors import ModelNotReady, Overloaded, QueueTimeout

log = logging.getLogger(__name__)

RunBatch = Callable[[np.ndarray, np.ndarray], np.ndarray]
Work = tuple[list["_Item"], tuple[object, ...], int]
"""A batch formed: its sequences, the pass's arguments, its padded tokens."""

BACKGROUND_PASS_S = 0.02
"""How long a pass of background work may take, at the measured rate, while online requests
come: what one arriving during it waits at most. Shorter passes pay a pass's fixed cost more
often (at 20 ms a batch ran at ~81% of the job's rate, at 40 ms ~96% but online p50 went 4x)."""
ONLINE_RECENT_S = 10.0
"""With no online request for this long, background passes take the normal budget: an idle
server runs batch work at the speed of a job."""
BACKGROUND_FIRST_TOKENS = 256
"""A background pass's tokens before any pass has been timed."""


@dataclass(frozen=True)
class BatchLimits:
    max_batch_tokens: int = 16384
    """Most padded tokens (padded width x rows) in one forward pass."""

    max_batch_size: int = 64
    """Most sequences in one forward pass."""

    max_padding: float = 0.15
    """Largest share of a batch's padded tokens that may be padding."""

    max_padding_tokens: float = math.inf
    """Most padding tokens in one batch. A forward pass has a fixed cost; on a CPU it is worth
    only a few tokens of compute, and padding beyond that costs more than the pass it saves."""

    coarse_widths: bool = False
    """Pad each batch to a width on a coarse grid (see `coarse_width`), for a backend that builds
    kernels for every shape it meets (OpenVINO): fewer shapes stay within its kernel cache."""

    max_wait_s: float = 0.002
    """How long the former waits for more sequences to fill a batch that is not full."""

    max_queued: int = 16384
    """Most sequences waiting; past it new requests get 429 (a request alone is always taken)."""

    timeout_s: float | None = None
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


@dataclass(eq=False)
class _Job:
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[np.ndarray]
    out: np.ndarray
    remaining: int
    queued: int = 0  # items the compute thread has not taken yet
    finished: bool = False  # result, error or cancellation: its queued items are dropped
    background: bool = False  # a batch job's: never a pass on every core
    progressed: float = field(default_factory=time.monotonic)  # submitted, or a pass of it began


@dataclass(eq=False)
class _Item:
    job: _Job
    row: int
    tokens: list[int]
    arrival: int = field(default=0)
    unpooled: int = 0  # leading tokens attended to but left out of pooling
    second: int = 0  # where a pair's second text starts (a cross-encoder's document), or 0


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
        self._busy = 0  # passes running
        self._unclaimed = 0  # batches formed that no worker has taken yet
        self._exclusive = False  # a pass on every core is running
        self._held = 0  # passes waiting for it to end
        self._dimension = dimension
        self._pad_id = pad_id
        self.limits = limits
        self._pending: list[_Item] = []
        self._background: list[_Item] = []  # a batch job's sequences: only when nothing else waits
        self._token_rate = 0.0  # tokens per second of one pass, smoothed
        self._last_online = -math.inf  # when the last online request came
        self._cond = threading.Condition()
        self._arrivals = itertools.count()
        self._handoff: queue.Queue[Work | None] = queue.Queue(maxsize=1)
        self._closed = False
        self.observers: list[Callable[[BatchReport], None]] = []
        self._rate = 0.0  # recent sequences per second of compute, for Retry-After
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
        with self._cond:
            return len(self._pending)

    @property
    def closing(self) -> bool:
        """close() was called: nothing new is taken."""
        with self._cond:
            return self._closed

    def state(self) -> BatcherState:
        with self._cond:
            return BatcherState(
                len(self._pending), self._unclaimed, self._busy, self._held, len(self._background)
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
        job = _Job(
            loop=loop,
            future=loop.create_future(),
            out=np.empty((len(sequences), self._dimension), dtype=np.float32),
            remaining=len(sequences),
            queued=len(sequences),
            background=background,
        )
        if not sequences:
            return job.out
        order = sorted(range(len(sequences)), key=lambda i: len(sequences[i]))
        with self._cond:
            if self._closed:
                raise ModelNotReady("the model is being unloaded or the server is stopping")
            if not background:
                self._last_online = time.monotonic()
                if self._pending and len(self._pending) + len(sequences) > self.limits.max_queued:
                    raise Overloaded(
                        f"the server is at capacity ({len(self._pending)} inputs queued); "
                        f"retry shortly",
                        retry_after=self._drain_seconds(len(self._pending)),
                    )
            (self._background if background else self._pending).extend(
                _Item(
                    job,
                    row,
                    sequences[row],
                    next(self._arrivals),
                    unpooled[row] if unpooled else 0,
                    second[row] if second else 0,
                )
                for row in order
            )
            self._cond.notify_all()
        try:
            return await (job.future if background else self._wait(job))
        except asyncio.CancelledError:
            job.finished = True  # the former drops its queued items before they cost compute
            raise

    async def _wait(self, job: _Job) -> np.ndarray:
        """The job's result. A job that has waited the timeout with none of its sequences
        computing, while some still wait (queued, or in a prepared batch), is dropped; one whose
        sequences are all computing, or whose passes keep starting, is waited for."""
        timeout = self.limits.timeout_s
        if timeout is None:
            return await job.future
        left = timeout
        while True:
            try:
                return await asyncio.wait_for(asyncio.shield(job.future), left)
            except TimeoutError:
                with self._cond:
                    if not job.queued:
                        break
                    left = job.progressed + timeout - time.monotonic()
                    expired = left <= 0
                    job.finished = job.finished or expired
                    waiting = len(self._pending)
                if expired:
                    raise QueueTimeout(
                        f"the request waited more than {timeout:g}s for the model; "
                        f"the server is busy, retry shortly",
                        retry_after=self._drain_seconds(waiting),
                    ) from None
        return await job.future

    def _drain_seconds(self, waiting: int) -> int:
        """Retry-After: how long the sequences now waiting take at the recent compute rate
        (1 s before any batch has run), within 1..60 s."""
        if not self._rate:
            return 1
        return min(60, max(1, math.ceil(waiting / self._rate)))

    def close(self) -> None:
        """Stop the threads (after the pass in flight); whatever still waits fails with
        ModelNotReady rather than waiting forever."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        for thread in self._threads:
            thread.join(timeout=5)
        with self._cond:
            left = [*self._pending, *self._background]
            self._pending, self._background = [], []
            gone = ModelNotReady("the model was unloaded or the server stopped before this ran")
            for job in {id(item.job): item.job for item in left}.values():
                _settle(job, error=gone)

    # -- former thread -------------------------------------------------------------------------

    def _form_loop(self) -> None:
        while True:
            with self._cond:
                batch = self._next_batch()
                if batch is not None:
                    self._unclaimed += 1
            if batch is None:
                for _ in range(self._workers):
                    self._handoff.put(None)
                return
            self._handoff.put(self._prepare(batch))  # waits while one batch is already prepared

    def _prepare(self, batch: list[_Item]) -> Work:
        """The pass's arguments: the batch packed (in the order `_select_packed` laid it out), or
        padded."""
        sequences = [item.tokens for item in batch]
        if self._packs:  # the rows `_select_packed` found room in (one per sequence at most)
            width = self._packed_width(batch)
            rows = fill_rows([len(s) for s in sequences], width, len(batch))
            packed = lay_out([[sequences[i] for i in row] for row in rows], width)
            return [batch[i] for row in rows for i in row], (packed,), packed.padded_tokens
        width = self._padded_width(max(map(len, sequences)))
        unpooled, second = [item.unpooled for item in batch], [item.second for item in batch]
        ids, mask = pad(sequences, self._pad_id, unpooled, width, second)
        return batch, (ids, mask), int(ids.size)

    def _next_batch(self) -> list[_Item] | None:
        """Called holding the lock: wait for work, give stragglers a moment, pick a batch; with
        no online work waiting and a stream free, a short pass of background work."""
        while not self._closed:
            self._pending = [item for item in self._pending if not item.job.finished]
            if not self._pending:
                self._background = [item for item in self._background if not item.job.finished]
                if self._background and self._busy + self._unclaimed < self._workers:
                    chosen, self._background = self._select(
                        self._background, self._background_tokens()
                    )
                    return chosen
                self._cond.wait()
                continue
            deadline = time.monotonic() + self.limits.max_wait_s
            while len(self._pending) < self.limits.max_batch_size and not self._closed:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            self._pending = [item for item in self._pending if not item.job.finished]
            if self._pending:
                chosen, self._pending = self._select(self._pending, self.limits.max_batch_tokens)
                return chosen
        return None

    def _background_tokens(self) -> int:
        """A background pass's token budget: BACKGROUND_PASS_S of one pass's measured rate while
        online requests come, the normal budget when none has come for ONLINE_RECENT_S."""
        if time.monotonic() - self._last_online > ONLINE_RECENT_S:
            return self.limits.max_batch_tokens
        if not self._token_rate:
            return min(BACKGROUND_FIRST_TOKENS, self.limits.max_batch_tokens)
        return max(1, min(self.limits.max_batch_tokens, int(self._token_rate * BACKGROUND_PASS_S)))

    def _select(self, waiting: list[_Item], max_tokens: int) -> tuple[list[_Item], list[_Item]]:
        """The next batch (packed or padded) and what is left waiting."""
        if self._packs:
            return self._select_packed(waiting, max_tokens)
        return self._select_padded(waiting, max_tokens)

    def _select_packed(
        self, waiting: list[_Item], max_tokens: int
    ) -> tuple[list[_Item], list[_Item]]:
        """The oldest sequences whose tokens fit `max_tokens` (the oldest always, a longer one
        skipped for shorter ones after it), as many of them as the rows of one width hold."""
        chosen: list[_Item] = []
        tokens = 0
        for item in waiting:
            if len(chosen) == self.limits.max_batch_size or tokens == max_tokens:
                break
            if not chosen or tokens + len(item.tokens) <= max_tokens:
                chosen.append(item)
                tokens += len(item.tokens)
        width = self._packed_width(chosen)
        rows = fill_rows([len(item.tokens) for item in chosen], width, max(1, max_tokens // width))
        # In the order chosen, the oldest first: `_prepare` finds the same rows again.
        chosen = [chosen[i] for i in sorted(i for row in rows for i in row)]
        taken = set(map(id, chosen))
        return chosen, [item for item in waiting if id(item) not in taken]

    def _packed_width(self, batch: list[_Item]) -> int:
        """Rows as wide as the longest sequence, or MIN_PACKED_WIDTH where the batch holds that
        many tokens."""
        lengths = [len(item.tokens) for item in batch]
        return self._padded_width(max(max(lengths), min(MIN_PACKED_WIDTH, sum(lengths))))

    def _select_padded(
        self, waiting: list[_Item], max_tokens: int
    ) -> tuple[list[_Item], list[_Item]]:
        """A window of similar lengths around the anchor: the oldest request's shortest waiting
        sequence (so nothing starves). The window grows toward whichever neighbour, in length
        order, wastes least padding, while padding stays under its share of the batch and its
        token limit, and the batch under `max_tokens` and its row limit. On a CPU, compute
        follows padded tokens, so a smaller batch without padding beats a full one with it.
        The batch, and what is left waiting."""
        limits = self.limits
        anchor = waiting[0]
        ranked = sorted(waiting, key=lambda i: (len(i.tokens), i.arrival))
        low = high = next(n for n, item in enumerate(ranked) if item is anchor)
        width = real = len(anchor.tokens)
        while high - low + 1 < limits.max_batch_size:
            rows = high - low + 2
            options = []
            if low > 0:
                options.append((real + len(ranked[low - 1].tokens), width, -1))
            if high + 1 < len(ranked):
                longer = len(ranked[high + 1].tokens)
                options.append((real + longer, longer, +1))
            fits = [
                (tokens / padded, tokens, new_width, step)
                for tokens, new_width, step in options
                if (padded := self._padded_width(new_width) * rows) <= max_tokens
                and 1 - tokens / padded <= limits.max_padding
                and padded - tokens <= limits.max_padding_tokens
            ]
            if not fits:
                break
            _, real, width, step = max(fits)
            low, high = (low - 1, high) if step < 0 else (low, high + 1)
        chosen = ranked[low : high + 1]
        taken = set(map(id, chosen))
        return chosen, [item for item in waiting if id(item) not in taken]

    def _padded_width(self, longest: int) -> int:
        """The width a batch whose longest sequence is `longest` is padded to and costs."""
        if self.limits.coarse_widths:
            return coarse_width(longest, self._max_width)
        return longest

    # -- compute thread ------------------------------------------------------------------------

    def _compute_loop(self) -> None:
        while (work := self._handoff.get()) is not None:
            batch, args, padded = work
            with self._cond:  # from here on, a timeout waits for the result
                self._unclaimed -= 1
                started = time.monotonic()
                for item in batch:
                    item.job.queued -= 1
                    item.job.progressed = started
                if all(item.job.finished for item in batch):
                    self._cond.notify_all()  # a stream is free: the former may be waiting for one
                    continue  # every client went away: skip the compute
                every_core = self._claim_cores(may_take_all=not batch[0].job.background)
            try:
                self._compute(batch, args, padded, every_core or self._run)
            finally:
                with self._cond:
                    self._busy -= 1
                    if every_core:
                        self._exclusive = False
                    self._cond.notify_all()  # also a stream free for background work

    def _claim_cores(self, may_take_all: bool) -> Callable[..., np.ndarray] | None:
        """Called holding the lock, before a pass: wait out a pass on every core, then take
        every core too if nothing else is running or waiting. The pass on every core if taken."""
        self._held += 1
        while self._exclusive:
            self._cond.wait()
        self._held -= 1
        alone = may_take_all and not self._busy and not self._unclaimed and not self._pending
        every_core = self._every_core_pass if alone else None
        self._busy += 1
        self._exclusive = every_core is not None
        return every_core

    def _compute(
        self,
        batch: list[_Item],
        args: tuple[object, ...],
        padded: int,
        run: Callable[..., np.ndarray],
    ) -> None:
        started = time.perf_counter()
        try:
            vectors = run(*args)
        except Exception as exc:
            log.error("a batch of %d sequences failed: %s", len(batch), exc, exc_info=exc)
            with self._cond:
                for job in {id(item.job): item.job for item in batch}.values():
                    _settle(job, error=exc)
            return
        self._report(batch, padded, time.perf_counter() - started, alone=run is not self._run)
        with self._cond:  # a job's rows may come back from several workers
            for item, vector in zip(batch, vectors, strict=True):
                job = item.job
                if job.finished:
                    continue
                job.out[item.row] = vector
                job.remaining -= 1
                if job.remaining == 0:
                    _settle(job)

    def _report(self, batch: list[_Item], padded: int, seconds: float, alone: bool) -> None:
        tokens = sum(len(item.tokens) for item in batch)
        report = BatchReport(len(batch), tokens, padded, seconds)
        passes = 1 if alone else self._workers  # at once, for the machine's rate
        rate = passes * len(batch) / max(seconds, 1e-6)  # sequences/s, smoothed
        self._rate = rate if not self._rate else 0.8 * self._rate + 0.2 * rate
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


def _settle(job: _Job, error: BaseException | None = None) -> None:
    if job.finished:
        return
    job.finished = True

    def resolve() -> None:
        if job.future.done():
            return
        if error is None:
            job.future.set_result(job.out)
        else:
            job.future.set_exception(error)

    with contextlib.suppress(RuntimeError):  # RuntimeError: the request's event loop is gone
        job.loop.call_soon_threadsafe(resolve)


def coarse_width(width: int, limit: int | None = None) -> int:
    """`width` rounded up to the grid, never past `limit`: even widths below 64, then multiples
    of a 16th of the width's power of two (4 from 64, 8 from 128, ...), so a few percent of
    padding at most, and few shapes for a backend that builds kernels per shape to keep."""
    step = max(2, 1 << max(0, width.bit_length() - 5))
    grid = -(-width // step) * step
    return min(grid, limit) if limit else grid


def batcher_for(
    backend: Backend, pad_id: int, limits: BatchLimits | None, max_width: int
) -> Batcher:
    """A batcher over `backend`'s passes: one worker a stream, its every-core pass for a lone
    batch; packed batches where the backend runs them."""
    return Batcher(
        backend.embed,
        backend.dimension,
        pad_id,
        limits or BatchLimits(),
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
