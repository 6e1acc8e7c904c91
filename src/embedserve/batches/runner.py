"""Runs batches: validating -> in_progress -> finalizing -> completed (or failed, cancelled,
expired), through the same request handling as the online endpoint, as background work the
engine computes only when no online request waits.

Exactly once, across crashes: output and error lines are appended as requests finish, in input
order, and every second the files are flushed to disk and then the batch's progress (requests
done, both files' lengths) is committed in the database. A run that resumes cuts both files back
to the committed lengths and starts at the first request not committed. One process runs the
batches of a data folder (a lock file says which): others started on it (uvicorn --workers)
only accept files and batches."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import time
from collections import deque
from collections.abc import Callable, Coroutine
from dataclasses import replace
from pathlib import Path
from typing import IO, Any

import orjson

from embedserve.batches.input_file import MAX_INPUTS, Request, check, input_count, requests
from embedserve.batches.store import BatchRecord, FileRecord, Progress, Store, new_id, now

log = logging.getLogger("embedserve")

Execute = Callable[[dict[str, Any]], Coroutine[Any, Any, tuple[int, Any]]]
"""One request body to its HTTP status and response body, as the online endpoint answers."""

IN_FLIGHT = 128
"""Requests of one batch handed to the engine at once: enough to fill every pass with similar
lengths, no more (docs/engineering-notes.md, "Constants")."""
COMMIT_EVERY_S = 1.0
IDLE_CHECK_S = 30.0
"""How often an idle runner looks for expired batches and files, and for the runner lock."""

_WINDOWS = {"24h": 24 * 3600}


def window_seconds(completion_window: str) -> int | None:
    return _WINDOWS.get(completion_window)


class BatchRunner:
    def __init__(
        self,
        store: Store,
        execute: Execute,
        workers: int = 1,
        on_request: Callable[[int, int], None] = lambda status, inputs: None,
        max_inputs: int = MAX_INPUTS,
    ) -> None:
        self.store = store
        self.max_inputs = max_inputs
        self.execute = execute
        self.workers = workers
        self.on_request = on_request
        self._wake = asyncio.Event()
        self._cancels: dict[str, asyncio.Event] = {}  # batch id -> set when it is cancelled
        self._claimed: set[str] = set()
        self._tasks: list[asyncio.Task[None]] = []
        self._lock_file: IO[bytes] | None = None

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._loop(), name=f"embedserve-batch-{n}")
            for n in range(self.workers)
        ]

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._lock_file is not None:
            self._lock_file.close()

    def wake(self) -> None:
        """A batch was created: look for work now."""
        self._wake.set()

    def cancelled(self, batch_id: str) -> None:
        """The batch was marked cancelling: stop its requests now if this process runs it."""
        event = self._cancels.get(batch_id)
        if event is not None:
            event.set()
        self._wake.set()

    # -- the loop ------------------------------------------------------------------------------

    async def _loop(self) -> None:
        while True:
            batch = self._next() if self._runs_here() else None
            if batch is None:
                self._expire_files()
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), IDLE_CHECK_S)
                continue
            self._claimed.add(batch.id)
            try:
                await self._advance(batch)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a fault of ours: the batch fails, the runner goes on
                log.exception("batch %s failed: %s", batch.id, exc)
                self.store.update(
                    batch.id,
                    status="failed",
                    failed_at=now(),
                    errors=[{"code": "internal_error", "message": str(exc), "line": None}],
                )
            finally:
                self._claimed.discard(batch.id)

    def _runs_here(self) -> bool:
        """Whether this process holds the data folder's runner lock (taken once, kept)."""
        if self._lock_file is not None:
            return True
        handle = (self.store.folder / "runner.lock").open("wb")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            return False
        self._lock_file = handle
        return True

    def _next(self) -> BatchRecord | None:
        return next((b for b in self.store.unfinished() if b.id not in self._claimed), None)

    async def _advance(self, batch: BatchRecord) -> None:
        if batch.status in ("validating", "in_progress") and now() >= batch.expires_at:
            self._close(batch, "expired")
            return
        if batch.status == "validating":
            batch = await self._validate(batch)
        if batch.status == "in_progress":
            batch = await self._run(batch)
        if batch.status == "finalizing":
            self._close(batch, "completed")
        elif batch.status == "cancelling":
            self._close(batch, "cancelled")

    # -- the stages ----------------------------------------------------------------------------

    async def _validate(self, batch: BatchRecord) -> BatchRecord:
        path = self.store.path_of(batch.input_file_id)
        if self.store.file(batch.input_file_id, batch.owner) is None or not path.exists():
            error = {
                "code": "file_not_found",
                "message": f"the input file {batch.input_file_id} was deleted",
                "param": "input_file_id",
                "line": None,
            }
            return self._fail(batch, [error])
        checked = await asyncio.to_thread(check, path, batch.endpoint, self.max_inputs)
        if checked.errors:
            return self._fail(batch, checked.errors)

        def start(current: BatchRecord) -> BatchRecord | None:
            if current.status != "validating":
                return None  # cancelled meanwhile
            return replace(
                current,
                status="in_progress",
                in_progress_at=now(),
                total=checked.requests,
                output_file_id=new_id("file-"),
                error_file_id=new_id("file-"),
            )

        started = self.store.change(batch.id, start)
        log.info("batch %s: %d requests to run", batch.id, started.total)
        return started

    def _fail(self, batch: BatchRecord, errors: list[dict[str, Any]]) -> BatchRecord:
        log.info("batch %s failed validation: %s", batch.id, errors[0]["message"])
        return self.store.change(
            batch.id,
            lambda current: (
                replace(current, status="failed", failed_at=now(), errors=errors)
                if current.status == "validating"
                else None
            ),
        )

    async def _run(self, batch: BatchRecord) -> BatchRecord:
        """The batch's requests from where its last commit left them, until all are done, it is
        cancelled or it expires. The batch as the last commit left it."""
        cancel = self._cancels.setdefault(batch.id, asyncio.Event())
        assert batch.output_file_id is not None
        assert batch.error_file_id is not None
        output = _reopened(self.store.path_of(batch.output_file_id), batch.progress.output_bytes)
        errors = _reopened(self.store.path_of(batch.error_file_id), batch.progress.error_bytes)
        pending = requests(self.store.path_of(batch.input_file_id), skip=batch.progress.lines)
        in_flight: deque[tuple[Request, asyncio.Task[tuple[int, Any]]]] = deque()
        done, completed, failed = batch.progress.lines, batch.completed, batch.failed
        committed = time.monotonic()

        def commit() -> BatchRecord:
            for file in (output, errors):
                file.flush()
                os.fsync(file.fileno())
            progress = Progress(done, output.tell(), errors.tell())
            return self.store.change(
                batch.id,
                lambda current: replace(
                    current, progress=progress, completed=completed, failed=failed
                ),
            )

        waiter = asyncio.create_task(cancel.wait())
        try:
            while True:
                while len(in_flight) < IN_FLIGHT and (request := next(pending, None)):
                    task = asyncio.create_task(self.execute(request.body))
                    in_flight.append((request, task))
                if not in_flight:
                    break
                request, task = in_flight[0]
                await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
                if cancel.is_set():
                    break
                in_flight.popleft()
                status, body = task.result()
                line = _output_line(request.custom_id, status, body)
                if status == 200:
                    output.write(line)
                    completed += 1
                else:
                    errors.write(line)
                    failed += 1
                done += 1
                self.on_request(status, input_count(request.body.get("input")))
                if time.monotonic() - committed >= COMMIT_EVERY_S:
                    committed = time.monotonic()
                    if commit().status != "in_progress" or now() >= batch.expires_at:
                        break
        except asyncio.CancelledError:  # the server stops: what is done is committed below
            log.info(
                "batch %s: stopping with %d of %d requests done; the next start resumes it there",
                batch.id,
                done,
                batch.total,
            )
            raise
        finally:
            waiter.cancel()
            for _, task in in_flight:
                task.cancel()
            current = commit()
            output.close()
            errors.close()
            self._cancels.pop(batch.id, None)
        if current.status == "in_progress":
            if now() >= current.expires_at and done < current.total:
                return self._close(current, "expired")
            return self.store.change(
                batch.id,
                lambda c: (
                    replace(c, status="finalizing", finalizing_at=now())
                    if c.status == "in_progress"
                    else None
                ),
            )
        return current

    def _close(self, batch: BatchRecord, status: str) -> BatchRecord:
        """The batch ends as `status`: what its run wrote becomes its output and error files."""
        output = self._publish(batch, batch.output_file_id, "output", batch.completed)
        errors = self._publish(batch, batch.error_file_id, "error", batch.failed)
        changes: dict[str, Any] = {
            "status": status,
            "output_file_id": output,
            "error_file_id": errors,
            f"{status}_at": now(),  # completed_at, cancelled_at, expired_at
        }
        closed = self.store.change(batch.id, lambda current: replace(current, **changes))
        log.info(
            "batch %s %s: %d completed, %d failed of %d",
            batch.id,
            status,
            closed.completed,
            closed.failed,
            closed.total,
        )
        return closed

    def _publish(
        self, batch: BatchRecord, file_id: str | None, kind: str, lines: int
    ) -> str | None:
        """A run's output (or error) file as a file of the batch's owner; None if it has no
        line."""
        if file_id is None:
            return None
        path = self.store.path_of(file_id)
        if not lines:
            path.unlink(missing_ok=True)
            return None
        record = FileRecord(
            file_id,
            batch.owner,
            f"{batch.id}_{kind}.jsonl",
            "batch_output",
            path.stat().st_size,
            now(),
        )
        self.store.add_file(record)
        return file_id

    def _expire_files(self) -> None:
        for record in self.store.expired_files(now()):
            self.store.delete_file(record.id, record.owner)


def _reopened(path: Path, length: int) -> IO[bytes]:
    """The file, cut back to `length` (what the last commit counted), open for appending."""
    file = path.open("r+b" if path.exists() else "w+b")
    file.truncate(length)
    file.seek(length)
    return file


def _output_line(custom_id: str, status: int, body: Any) -> bytes:
    line = {
        "id": new_id("batch_req_"),
        "custom_id": custom_id,
        "response": {"status_code": status, "request_id": new_id("req_"), "body": body},
        "error": None,
    }
    return orjson.dumps(line, option=orjson.OPT_SERIALIZE_NUMPY) + b"\n"
