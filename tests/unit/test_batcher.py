"""The dynamic batcher with fake backends: budgets, ownership, cancellation, faults, overload."""

from __future__ import annotations

import asyncio
import itertools
import random
import threading
import time

import numpy as np
import pytest

from embedserve.config import Settings
from embedserve.engine.batcher import Batcher, coarse_width
from embedserve.engine.sizing import batch_limits as resolved_limits
from embedserve.errors import ModelNotReady, Overloaded, QueueTimeout
from tests.fakes import (
    BlockingBackend,
    EchoBackend,
    FailingBackend,
    SlowBackend,
    batch_limits,
    state_of,
    taken_or_refused,
    until,
    until_equal,
)

CPU_WAIT_S = resolved_limits(Settings(), on_gpu=False, cores=2).max_wait_s


def batcher_for(backend: EchoBackend, **limits: float) -> Batcher:
    return Batcher(backend.embed, backend.dimension, 0, batch_limits(**limits))


def seq(token: int, length: int) -> list[int]:
    """A framed sequence whose first content token identifies it."""
    return [101, token, *([5] * (length - 3)), 102]


async def held(
    token: int, length: int = 5, **limits: float
) -> tuple[BlockingBackend, Batcher, asyncio.Task[np.ndarray]]:
    """A batcher whose first pass (one sequence of `token`) is running, held until the test
    sets the backend's `release`: its backend, the batcher, and the first request."""
    backend = BlockingBackend()
    batcher = batcher_for(backend, **limits)
    first = asyncio.create_task(batcher.submit([seq(token, length)]))
    assert await asyncio.to_thread(backend.entered.wait, 10)
    return backend, batcher, first


@pytest.mark.parametrize("coarse_widths", [False, True])
async def test_token_budget_and_batch_size_are_respected(coarse_widths: bool) -> None:
    backend = EchoBackend()
    batcher = batcher_for(
        backend, max_batch_tokens=64, max_batch_size=8, max_wait_s=0.01, coarse_widths=coarse_widths
    )
    rng = random.Random(1)
    jobs = [[seq(1000 + 10 * j + i, rng.randint(3, 40)) for i in range(5)] for j in range(12)]
    await asyncio.gather(*(batcher.submit(job) for job in jobs))
    assert sum(rows for rows, _ in backend.batches) == 60
    for rows, width in backend.batches:
        assert rows <= 8
        assert rows == 1 or rows * width <= 64  # the width computed, grid padding included
    batcher.close()


async def assert_each_request_gets_its_own(batcher: Batcher, first_token: int) -> None:
    """40 concurrent requests of 1-9 inputs of random lengths: each gets its own rows, in order."""
    rng = random.Random(first_token)
    jobs = [
        [seq(first_token + 100 * j + i, rng.randint(3, 30)) for i in range(rng.randint(1, 9))]
        for j in range(40)
    ]
    results = await asyncio.gather(*(batcher.submit(job) for job in jobs))
    for job, vectors in zip(jobs, results, strict=True):
        assert vectors[:, 1].tolist() == [s[1] for s in job]  # each row is its own input
        assert vectors[:, 0].tolist() == [len(s) for s in job]


async def test_every_request_gets_its_own_vectors_in_order() -> None:
    batcher = batcher_for(EchoBackend(), max_batch_tokens=256, max_batch_size=16)
    await assert_each_request_gets_its_own(batcher, first_token=2000)
    batcher.close()


class MeetingBackend(EchoBackend):
    """Each of the first `parties` forward passes waits until all of them are running."""

    def __init__(self, parties: int) -> None:
        super().__init__()
        self.meeting = threading.Barrier(parties, timeout=5)
        self.calls = itertools.count()

    def embed(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        if next(self.calls) < self.meeting.parties:
            self.meeting.wait()  # BrokenBarrierError (the batch fails) if passes ran one by one
        return super().embed(input_ids, attention_mask)


@pytest.mark.parametrize("workers", [1, 2])
async def test_workers_compute_batches_at_once_and_rows_stay_owned(workers: int) -> None:
    backend = MeetingBackend(parties=workers)
    limits = batch_limits(max_batch_tokens=256, max_batch_size=4)
    batcher = Batcher(backend.embed, backend.dimension, 0, limits, workers=workers)
    await assert_each_request_gets_its_own(batcher, first_token=8000)
    batcher.close()
    assert not any(thread.is_alive() for thread in batcher._threads)  # every worker stopped


class AloneBackend(EchoBackend):
    """`embed_alone` (the pass on every core) holds until released; notes any pass that ran
    beside it."""

    def __init__(self) -> None:
        super().__init__()
        self.entered = threading.Event()
        self.release = threading.Event()
        self.lock = threading.Lock()
        self.running = 0
        self.alone_passes = 0
        self.overlapped = False

    def embed(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        with self.lock:
            self.overlapped |= self.alone_passes > 0 and self.running > 0
            self.running += 1
        try:
            return super().embed(input_ids, attention_mask)
        finally:
            with self.lock:
                self.running -= 1

    def embed_alone(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        with self.lock:
            self.overlapped |= self.running > 0
            self.alone_passes += 1
        self.entered.set()
        assert self.release.wait(5), "test never released the backend"
        return self.embed(input_ids, attention_mask)


async def test_a_lone_batch_runs_on_every_core_and_others_wait_for_it() -> None:
    backend = AloneBackend()
    limits = batch_limits(max_batch_size=4)
    batcher = Batcher(
        backend.embed, backend.dimension, 0, limits, workers=2, every_core_pass=backend.embed_alone
    )
    lone = asyncio.create_task(batcher.submit([seq(7001, 5)]))
    assert await asyncio.to_thread(backend.entered.wait, 5)  # nothing beside it: alone
    crowd = [asyncio.create_task(batcher.submit([seq(7100 + i, 6)])) for i in range(12)]
    await until(lambda: batcher.state().waiting_for_cores == 1)  # the other worker is held
    assert backend.batches == []  # the crowd's passes wait for the one on every core
    backend.release.set()
    results = await asyncio.gather(lone, *crowd)
    assert [int(r[0, 1]) for r in results] == [7001, *range(7100, 7112)]
    assert not backend.overlapped
    assert len(backend.batches) > backend.alone_passes  # a crowd shares the cores
    batcher.close()


async def test_waiting_texts_that_fill_a_pass_are_laid_out_while_the_stream_computes() -> None:
    """Waiting for the stream to free adds nothing once the waiting texts fill a pass: that batch
    is formed at once (laid out during the running pass), the rest waits on."""
    backend, batcher, first = await held(4700, max_batch_tokens=12, max_wait_s=CPU_WAIT_S)
    small = asyncio.ensure_future(batcher.submit([seq(4701, 6)]))
    await until_equal(lambda: state_of(batcher)[2], 1)
    await asyncio.sleep(0.01)  # the former has had its chance to form it
    assert state_of(batcher) == (1, 0, 1)  # 6 of 12 tokens: it waits for the stream
    filling = asyncio.ensure_future(batcher.submit([seq(4702, 6)]))
    await until_equal(lambda: state_of(batcher), (1, 1, 0))  # 12 tokens: formed at once
    backend.release.set()
    await asyncio.wait_for(asyncio.gather(first, small, filling), timeout=20)
    batcher.close()


async def test_a_huge_finite_wait_does_not_stop_the_former() -> None:
    """--max-wait-ms past what a thread may sleep (threading.TIMEOUT_MAX): the former waits
    until the stream frees, as with no bound (Condition.wait raised, and the former died)."""
    backend, batcher, first = await held(4800, max_wait_s=1e13)
    later = asyncio.ensure_future(batcher.submit([seq(4801, 5)]))
    await until_equal(lambda: state_of(batcher)[2], 1)
    backend.release.set()
    results = await asyncio.wait_for(asyncio.gather(first, later), timeout=20)
    assert [int(r[0, 1]) for r in results] == [4800, 4801]
    batcher.close()


async def test_behind_a_pass_on_every_core_the_next_batch_grows_until_it_ends() -> None:
    """With a CPU's wait (until a stream frees), requests coming while a pass holds every core
    are not formed one by one: no stream can take them before it ends, so they wait together
    and run as one pass."""
    backend = AloneBackend()
    limits = batch_limits(max_batch_size=8, max_wait_s=CPU_WAIT_S)
    batcher = Batcher(
        backend.embed, backend.dimension, 0, limits, workers=2, every_core_pass=backend.embed_alone
    )
    lone = asyncio.create_task(batcher.submit([seq(7201, 5)]))
    assert await asyncio.to_thread(backend.entered.wait, 5)
    later = []
    for i in range(3):
        later.append(asyncio.ensure_future(batcher.submit([seq(7202 + i, 6)])))
        await until_equal(lambda: state_of(batcher)[2], i + 1)
        await asyncio.sleep(0.01)  # the former has had its chance to form it
        assert state_of(batcher) == (1, 0, i + 1)  # queued, none formed
    backend.release.set()
    results = await asyncio.wait_for(asyncio.gather(lone, *later), timeout=20)
    assert [int(r[0, 1]) for r in results] == [7201, 7202, 7203, 7204]
    assert backend.batches[-1] == (3, 6)  # the three ran as one pass
    batcher.close()


async def test_similar_lengths_share_batches() -> None:
    backend = EchoBackend()
    batcher = batcher_for(backend, max_batch_tokens=100_000, max_batch_size=8, max_wait_s=0.05)
    lengths = [4, 200] * 8  # one request, short and long interleaved
    await batcher.submit([seq(3000 + i, n) for i, n in enumerate(lengths)])
    assert sorted(backend.batches) == [(8, 4), (8, 200)]  # never a short row padded to 200
    batcher.close()


async def test_padding_stays_under_its_share() -> None:
    backend = EchoBackend()
    batcher = batcher_for(backend, max_batch_tokens=100_000, max_batch_size=64, max_padding=0.15)
    rng = random.Random(3)
    lengths = [rng.randint(3, 120) for _ in range(200)]
    vectors = await batcher.submit([seq(8000 + i, n) for i, n in enumerate(lengths)])
    assert vectors[:, 0].tolist() == lengths
    real = sum(lengths)
    padded = sum(rows * width for rows, width in backend.batches)
    assert 1 - real / padded <= 0.15
    for rows, width in backend.batches:
        assert rows == 1 or width <= 1.2 * 120  # no batch mixes the shortest with the longest
    batcher.close()


async def test_padding_stays_under_its_token_limit() -> None:
    backend = EchoBackend()
    batcher = batcher_for(
        backend, max_batch_tokens=100_000, max_batch_size=64, max_padding=1.0, max_padding_tokens=6
    )
    rng = random.Random(4)
    lengths = [rng.randint(3, 40) for _ in range(200)]
    vectors = await batcher.submit([seq(8500 + i, n) for i, n in enumerate(lengths)])
    assert vectors[:, 0].tolist() == lengths
    assert 0 < max(backend.padding) <= 6  # padding is taken, up to the limit
    batcher.close()


async def test_the_oldest_request_is_never_starved() -> None:
    backend, batcher, blocker = await held(9000, max_batch_size=4, max_padding=0.0)
    fillers = []
    for formed, token in enumerate((9001, 9002), 1):  # one handed over, one in the former's hands
        fillers.append(asyncio.create_task(batcher.submit([seq(token, 5)])))
        await until_equal(lambda: state_of(batcher), (1, formed, 0))
    old = asyncio.create_task(batcher.submit([seq(9003, 90)]))  # long, and first in line
    await until(lambda: batcher.queued == 1)
    crowd = [asyncio.create_task(batcher.submit([seq(9100 + i, 6)])) for i in range(12)]
    await until(lambda: batcher.queued == 13)
    backend.release.set()
    await asyncio.gather(blocker, *fillers, old, *crowd)
    waiting_together = [t for t in backend.seen if t == 9003 or t >= 9100]
    assert waiting_together[0] == 9003  # the shorter crowd did not overtake it
    batcher.close()


async def test_a_cancelled_request_is_dropped_before_compute() -> None:
    backend, batcher, first = await held(4001, max_batch_size=1)
    ahead = asyncio.create_task(batcher.submit([seq(4002, 5)]))  # prepared while 4001 runs
    await until(lambda: state_of(batcher) == (1, 1, 0))
    gone = asyncio.create_task(batcher.submit([seq(4003, 5), seq(4004, 5)]))
    await until(lambda: state_of(batcher) == (1, 2, 1))  # 4003 in the former's hands, 4004 queued
    gone.cancel()
    with pytest.raises(asyncio.CancelledError):
        await gone  # the cancellation has landed before the backend moves on
    backend.release.set()
    await asyncio.gather(first, ahead)
    after = await batcher.submit([seq(4005, 5)])
    assert after[0, 1] == 4005
    assert 4003 not in backend.seen
    assert 4004 not in backend.seen
    batcher.close()


async def test_a_failing_batch_fails_only_its_requests_and_serving_goes_on() -> None:
    backend = FailingBackend(poison=666)
    batcher = batcher_for(backend, max_batch_tokens=10_000, max_batch_size=2, max_wait_s=0.05)
    poisoned = batcher.submit([seq(666, 6)])
    healthy = [batcher.submit([seq(5000 + i, 30)]) for i in range(5)]
    results = await asyncio.gather(poisoned, *healthy, return_exceptions=True)
    assert isinstance(results[0], RuntimeError)
    failed = [r for r in results[1:] if isinstance(r, BaseException)]
    assert len(failed) <= 1  # at most the one request batched with the poison
    assert all(isinstance(r, RuntimeError) for r in failed)
    later = await batcher.submit([seq(5100, 8)])
    assert later[0, 1] == 5100
    batcher.close()


async def test_full_queue_gives_429_then_recovers() -> None:
    backend = BlockingBackend()
    batcher = batcher_for(backend, max_batch_size=1, max_queued=4)
    # While the backend is held, at most 1 computing + 1 prepared + 1 in the former's hands + 4
    # queued can be taken: 12 requests must see refusals, whatever the machine's speed.
    tasks = []
    for i in range(12):
        tasks.append(asyncio.create_task(batcher.submit([seq(6000 + i, 5)])))
        # each one is taken (computing, formed or queued) or refused before the next comes
        await until_equal(lambda: taken_or_refused(batcher, tasks), i + 1)
    backend.release.set()
    outcomes = await asyncio.gather(*tasks, return_exceptions=True)
    refused = [o for o in outcomes if isinstance(o, Overloaded)]
    accepted = [(i, o) for i, o in enumerate(outcomes) if isinstance(o, np.ndarray)]
    assert len(refused) + len(accepted) == len(tasks)  # nothing else: no error, nothing lost
    assert len(refused) >= 5
    assert all(r.retry_after >= 1 and "at capacity" in r.message for r in refused)
    assert all(int(vectors[0, 1]) == 6000 + i for i, vectors in accepted)  # each its own
    assert batcher.queued == 0
    recovered = await batcher.submit([seq(6100, 5)])
    assert recovered[0, 1] == 6100
    batcher.close()


async def test_one_request_larger_than_the_queue_is_still_taken() -> None:
    batcher = batcher_for(EchoBackend(), max_queued=2)
    vectors = await batcher.submit([seq(7000 + i, 4) for i in range(10)])
    assert vectors.shape == (10, 8)
    batcher.close()


def test_coarse_widths_round_up_by_a_few_percent_to_few_shapes() -> None:
    assert [coarse_width(n) for n in (2, 9, 10, 63, 64, 65, 129, 300)] == [
        8, 16, 16, 64, 64, 68, 136, 304,
    ]  # fmt: skip
    for n in range(2, 513):
        assert n <= coarse_width(n) <= max(n + 7, n * 1.07)  # 8 a step below 64
    assert len({coarse_width(n) for n in range(1, 64)}) == 8  # short texts: 8 shapes
    assert len({coarse_width(n) for n in range(8, 513)}) < 80  # of 505 widths
    assert coarse_width(509, limit=510) == 510  # never past the model's longest sequence


async def test_a_batcher_with_coarse_widths_pads_to_the_grid_with_the_same_vectors() -> None:
    requests = [[seq(7, 9)], [seq(8, 65)], [seq(9, 12)]]
    vectors = {}
    for coarse in (False, True):
        backend = EchoBackend()
        limits = batch_limits(coarse_widths=coarse)
        batcher = Batcher(backend.embed, backend.dimension, 0, limits, max_width=66)
        vectors[coarse] = [await batcher.submit(request) for request in requests]
        batcher.close()
        assert [width for _, width in backend.batches] == ([16, 66, 16] if coarse else [9, 65, 12])
    for exact, padded in zip(vectors[False], vectors[True], strict=True):
        assert np.array_equal(exact, padded)


def test_pad_marks_unpooled_tokens_within_each_sequence() -> None:
    from embedserve.backends.base import UNPOOLED
    from embedserve.engine.batcher import pad

    ids, mask = pad([[5, 6, 7], [8]], 0, [2, 5])
    assert ids.tolist() == [[5, 6, 7], [8, 0, 0]]
    assert mask.tolist() == [[UNPOOLED, UNPOOLED, 1], [UNPOOLED, 0, 0]]
    assert pad([[5, 6]], 0)[1].tolist() == [[1, 1]]


async def test_retry_after_follows_the_queue_and_the_compute_rate() -> None:
    batcher = batcher_for(SlowBackend(0.05), max_batch_size=1, max_queued=30)  # <= 20/s
    first = asyncio.create_task(batcher.submit([seq(7, 5)] * 40))
    await until(lambda: 30 < batcher.queued < 40)  # the former has taken one
    with pytest.raises(Overloaded) as before_any_batch:
        await batcher.submit([seq(8, 5)])
    assert before_any_batch.value.retry_after == 1  # no rate known yet
    await first
    backlog = asyncio.create_task(batcher.submit([seq(9, 5)] * 40))
    await until(lambda: 30 < batcher.queued < 40)
    with pytest.raises(Overloaded) as measured:
        await batcher.submit([seq(10, 5)])
    # ~39 waiting at <= 20/s: at least 2 s, and never past the 60 s cap
    assert 2 <= measured.value.retry_after <= 60
    backlog.cancel()
    batcher.close()


class HeldBackend(AloneBackend):
    """The first pass of background work (tokens from 9000) holds until released."""

    def __init__(self) -> None:
        super().__init__()
        self.first = True
        self.batches_started = 0  # rows of the held pass

    def embed(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        if self.first and input_ids[0, 1] >= 9000:
            self.first = False
            self.batches_started = len(input_ids)
            self.entered.set()
            assert self.release.wait(5), "test never released the backend"
        return super().embed(input_ids, attention_mask)

    def embed_alone(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        self.alone_passes += 1  # not held: only background work is
        return self.embed(input_ids, attention_mask)


async def test_background_work_runs_only_when_no_online_work_waits() -> None:
    backend = HeldBackend()
    batcher = Batcher(
        backend.embed,
        backend.dimension,
        0,
        batch_limits(max_batch_size=64),
        workers=1,
        every_core_pass=backend.embed_alone,
    )
    await batcher.submit([seq(7000, 40)])  # online traffic: background passes are kept short
    backend.alone_passes = 0
    background = asyncio.create_task(
        batcher.submit([seq(9000 + i, 40) for i in range(40)], background=True)
    )
    assert await asyncio.to_thread(backend.entered.wait, 5)  # a first background pass runs
    online = asyncio.create_task(batcher.submit([seq(8000 + i, 40) for i in range(3)]))
    await until(lambda: batcher.state().formed == 1)  # the online batch, formed and waiting
    assert batcher.state().queued == 0
    assert batcher.state().background == 40 - backend.batches_started  # none formed ahead
    backend.release.set()
    online_rows, background_rows = await asyncio.gather(online, background)
    assert [int(r[1]) for r in online_rows] == [8000, 8001, 8002]
    assert sorted(int(r[1]) for r in background_rows) == list(range(9000, 9040))
    first_pass = backend.batches[1][0]
    assert backend.seen[1 + first_pass : 1 + first_pass + 3] == [8000, 8001, 8002]  # next
    rows, width = backend.batches[1]
    assert rows * width <= 256  # a short pass, before any pass has been timed
    assert backend.alone_passes == 1  # the online request's; background work never takes all
    batcher.close()


async def test_on_an_idle_server_background_passes_take_the_whole_budget() -> None:
    backend = EchoBackend()
    batcher = Batcher(
        backend.embed, backend.dimension, 0, batch_limits(max_batch_size=64), workers=2
    )
    rows = await batcher.submit([seq(9000 + i, 40) for i in range(128)], background=True)
    assert sorted(int(r[1]) for r in rows) == list(range(9000, 9128))
    assert max(rows for rows, _ in backend.batches) == 64  # as online batches would be
    batcher.close()


class GatedBatcher(Batcher):
    """Holds the former while it prepares the batch of `held` (token), until `gate` opens."""

    held = 4102
    gate = threading.Event()

    def _laid_out(self, chosen):  # type: ignore[no-untyped-def]
        if chosen.chosen[0].tokens[1] == self.held:
            assert self.gate.wait(10), "test never opened the gate"
        return super()._laid_out(chosen)


async def test_a_skipped_batch_frees_its_stream_for_waiting_background_work() -> None:
    """The only batch in flight belongs to a client that went away: skipping it must wake the
    former, which waits for a free stream while background work waits. No online request comes
    to wake it otherwise."""
    backend = BlockingBackend()
    batcher = GatedBatcher(backend.embed, backend.dimension, 0, batch_limits(max_batch_size=1))
    GatedBatcher.gate.clear()
    busy = asyncio.create_task(batcher.submit([seq(4101, 5)]))
    await asyncio.to_thread(backend.entered.wait, 5)
    gone = asyncio.create_task(batcher.submit([seq(4102, 5)]))
    await until(lambda: state_of(batcher) == (1, 1, 0))  # 4102 chosen, held in preparation
    background = asyncio.create_task(batcher.submit([seq(9100, 5)], background=True))
    await until(lambda: batcher.state().background == 1)
    gone.cancel()
    with pytest.raises(asyncio.CancelledError):
        await gone
    backend.release.set()
    await busy  # its stream is free while 4102 is still being prepared: nobody waits to hear
    GatedBatcher.gate.set()  # 4102 is handed over and skipped; the former waits for a stream
    rows = await asyncio.wait_for(background, 10)
    assert int(rows[0, 1]) == 9100
    assert 4102 not in backend.seen


async def test_the_timeout_measures_waiting_not_a_big_requests_own_compute() -> None:
    """Twenty passes of 0.05 s: a second of compute, past a 0.3 s timeout, yet never waiting."""
    batcher = batcher_for(SlowBackend(0.05), max_batch_size=1, timeout_s=0.3)
    rows = await batcher.submit([seq(7200 + i, 5) for i in range(20)])
    assert [int(r[1]) for r in rows] == [7200 + i for i in range(20)]


async def test_a_request_waiting_behind_others_past_the_timeout_is_dropped() -> None:
    backend, batcher, busy = await held(7301, max_batch_size=1, timeout_s=0.2)
    with pytest.raises(QueueTimeout) as waited:
        await batcher.submit([seq(7302, 5), seq(7303, 5)])
    backend.release.set()
    await busy
    assert "waited more than 0.2s" in waited.value.message
    assert 7303 not in backend.seen


async def test_closing_fails_what_still_waits_instead_of_leaving_it_hanging() -> None:
    backend, batcher, busy = await held(7401, max_batch_size=1)
    queued = asyncio.create_task(batcher.submit([seq(7402 + i, 5) for i in range(3)]))
    await until(lambda: batcher.state().queued >= 1)
    closing = asyncio.create_task(asyncio.to_thread(batcher.close))
    await until(lambda: batcher.closing)  # before the pass in flight ends
    backend.release.set()
    await closing
    assert int((await busy)[0, 1]) == 7401  # the pass in flight finishes
    with pytest.raises(ModelNotReady):
        await asyncio.wait_for(queued, 5)
    with pytest.raises(ModelNotReady):
        await batcher.submit([seq(7499, 5)])


class TimedBackend(EchoBackend):
    """Records when each pass began (time.monotonic)."""

    def __init__(self) -> None:
        super().__init__()
        self.began: list[float] = []

    def embed(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        self.began.append(time.monotonic())
        return super().embed(input_ids, attention_mask)


async def test_a_lone_request_on_a_free_stream_does_not_wait_to_fill_a_batch() -> None:
    """max_wait fills batches while every stream computes; with a stream free a request's pass
    begins at once. A 30 s max_wait makes a wait unmistakable."""
    backend = TimedBackend()
    batcher = batcher_for(backend, max_batch_size=8, max_wait_s=30.0)
    submitted = time.monotonic()
    await asyncio.wait_for(batcher.submit([seq(4242, 6)]), timeout=60)
    assert backend.began[0] - submitted < 5.0  # not the 30 s max_wait
    batcher.close()


@pytest.mark.parametrize("max_wait_s", [30.0, CPU_WAIT_S])
async def test_while_every_stream_computes_waiting_requests_form_one_batch(
    max_wait_s: float,
) -> None:
    """On a CPU by default (no bound: until the stream frees) as with a bound, requests coming
    one by one while the only stream computes wait for it together: none is formed into a
    pass of its own the moment it comes (under load those were a request or two a pass)."""
    backend, batcher, first = await held(4300, length=6, max_batch_size=8, max_wait_s=max_wait_s)
    later = []
    for i in range(3):
        later.append(asyncio.ensure_future(batcher.submit([seq(4301 + i, 6)])))
        await until_equal(lambda: state_of(batcher)[2], i + 1)  # queued, none formed
        await asyncio.sleep(0.01)  # the former has had its chance to form it
        assert state_of(batcher) == (1, 0, i + 1)
    backend.release.set()
    results = await asyncio.wait_for(asyncio.gather(first, *later), timeout=20)
    assert [int(r[0, 1]) for r in results] == [4300, 4301, 4302, 4303]
    assert backend.batches == [(1, 6), (3, 6)]  # the three waited together, then ran at once
    batcher.close()


async def test_a_lone_request_is_handed_to_a_compute_thread_without_the_former(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """On an idle batcher a small request's batch is laid out on the submitting thread and
    handed straight to a compute thread: one wake-up, not the former's and then the compute
    thread's. One that comes while the stream computes goes through the former; so does a
    request of too many sequences or tokens to lay out on the event loop."""
    import embedserve.engine.batcher as batcher_module

    laid_out_by: list[str] = []

    def pad(*args: object, **kwargs: object) -> tuple[np.ndarray, np.ndarray]:
        laid_out_by.append(threading.current_thread().name)
        return original(*args, **kwargs)  # type: ignore[arg-type]

    original = batcher_module.pad
    monkeypatch.setattr(batcher_module, "pad", pad)
    backend, batcher, first = await held(4400, max_batch_size=64)
    later = asyncio.ensure_future(batcher.submit([seq(4401, 5)]))
    await until_equal(lambda: state_of(batcher)[1], 1)  # formed, waiting for the stream
    backend.release.set()
    await asyncio.wait_for(asyncio.gather(first, later), timeout=20)
    many = [seq(4500 + i, 5) for i in range(batcher_module.DIRECT_MAX_SEQUENCES + 1)]
    await asyncio.wait_for(batcher.submit(many), timeout=20)
    long = [seq(4600, batcher_module.DIRECT_MAX_TOKENS + 1)]
    await asyncio.wait_for(batcher.submit(long), timeout=20)
    loop_thread = threading.current_thread().name
    assert laid_out_by == [loop_thread, *["embedserve-former"] * 3]
    batcher.close()
