"""The batch runner on a real SQLite store with a stand-in for the endpoint: expiry keeps the
partial output, a resumed run cuts uncommitted lines, --batch-workers 0 runs nothing, and the
validator names every bad line."""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from embedserve.batches.input_file import MAX_REQUESTS, check
from embedserve.batches.runner import BatchRunner
from embedserve.batches.service import Batches
from embedserve.batches.store import BatchRecord, FileRecord, Progress, Store, new_id, now
from embedserve.config import Settings
from embedserve.serving.metrics import Metrics


def request_lines(count: int) -> bytes:
    lines = [
        {"custom_id": f"c{n}", "method": "POST", "url": "/v1/embeddings", "body": {"input": str(n)}}
        for n in range(count)
    ]
    return "".join(json.dumps(line) + "\n" for line in lines).encode()


def stored_batch(store: Store, count: int, **fields: Any) -> BatchRecord:
    file_id = new_id("file-")
    store.path_of(file_id).write_bytes(request_lines(count))
    store.add_file(FileRecord(file_id, "", "in.jsonl", "batch", 1, now()))
    batch = BatchRecord(new_id("batch_"), "", file_id, "/v1/embeddings", "24h", now(), now() + 60)
    batch = replace(batch, **fields)
    store.save(batch)
    return batch


async def answer(body: dict[str, Any]) -> tuple[int, Any]:
    return 200, {"echo": body["input"]}


async def run_until(store: Store, batch_id: str, statuses: set[str], workers: int = 1) -> Any:
    runner = BatchRunner(store, answer, workers=workers)
    runner.start()
    try:
        for _ in range(500):
            batch = store.batch(batch_id)
            if batch is not None and batch.status in statuses:
                return batch
            await asyncio.sleep(0.01)
        raise AssertionError(f"batch never reached {statuses}")
    finally:
        await runner.close()


def output_ids(store: Store, file_id: str | None) -> list[str]:
    assert file_id is not None
    lines = store.path_of(file_id).read_text().splitlines()
    return [json.loads(line)["custom_id"] for line in lines]


async def test_a_batch_past_its_window_expires_with_what_was_done(tmp_path: Path) -> None:
    store = Store(tmp_path)
    output = new_id("file-")
    batch = stored_batch(
        store,
        10,
        status="in_progress",
        total=10,
        completed=3,
        output_file_id=output,
        error_file_id=new_id("file-"),
        progress=Progress(3, 0, 0),
        expires_at=now() - 1,
    )
    partial = b"".join(
        json.dumps({"custom_id": f"c{n}"}).encode() + b"\n" for n in range(3)
    )  # what the last commit counted
    store.path_of(output).write_bytes(partial)
    expired = await run_until(store, batch.id, {"expired"})
    assert expired.expired_at is not None
    assert output_ids(store, expired.output_file_id) == ["c0", "c1", "c2"]
    assert expired.error_file_id is None  # no failed request, no error file
    assert store.file(output, "") is not None  # the partial output is the owner's file


async def test_a_resumed_run_cuts_the_lines_no_commit_counted(tmp_path: Path) -> None:
    store = Store(tmp_path)
    output = new_id("file-")
    committed = b"".join(json.dumps({"custom_id": f"c{n}"}).encode() + b"\n" for n in range(4))
    uncounted = b'{"custom_id": "c4"}\n' * 100 + b'{"custom_i'  # written, then the crash
    store.path_of(output).write_bytes(committed + uncounted)
    batch = stored_batch(
        store,
        6,
        status="in_progress",
        total=6,
        completed=4,
        output_file_id=output,
        error_file_id=new_id("file-"),
        progress=Progress(4, len(committed), 0),
    )
    done = await run_until(store, batch.id, {"completed"})
    assert output_ids(store, done.output_file_id) == [f"c{n}" for n in range(6)]
    assert (done.completed, done.failed) == (6, 0)


async def test_batch_workers_0_accepts_batches_and_runs_none(tmp_path: Path) -> None:
    settings = Settings(data_dir=str(tmp_path), batch_workers=0)
    no_models: Any = SimpleNamespace(models=[])
    service = Batches(settings, answer, Metrics(no_models))
    batch = stored_batch(service.store(), 3)
    assert service.runner is None  # nothing in this process runs batches
    await service.close()
    # the batch waits for a process that runs batches on the same folder
    assert (await run_until(Store(tmp_path), batch.id, {"completed"})).completed == 3


async def test_only_one_process_runs_a_folders_batches(tmp_path: Path) -> None:
    first, second = BatchRunner(Store(tmp_path), answer), BatchRunner(Store(tmp_path), answer)
    assert first._runs_here()
    assert not second._runs_here()  # the lock is held by the first
    await first.close()
    assert second._runs_here()


def test_the_validator_names_each_bad_line(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    good = {"custom_id": "a", "method": "POST", "url": "/v1/embeddings", "body": {"input": "x"}}
    lines = [
        json.dumps(good),
        "",
        "[1, 2]",
        json.dumps({**good, "custom_id": 7}),
        json.dumps({**good, "method": "GET", "custom_id": "b"}),
        json.dumps({**good, "body": "text", "custom_id": "c"}),
    ]
    path.write_text("\n".join(lines) + "\n")
    found = [(e["line"], e["code"]) for e in check(path, "/v1/embeddings").errors]
    assert found == [
        (3, "invalid_json_line"),
        (4, "missing_required_parameter"),
        (5, "invalid_method"),
        (6, "missing_required_parameter"),
    ]


@pytest.mark.parametrize(
    ("requests", "inputs", "code"),
    [(MAX_REQUESTS + 1, 1, "too_many_requests too_many_inputs"), (1, 50_001, "too_many_inputs")],
)
def test_the_validator_holds_openais_limits(
    tmp_path: Path, requests: int, inputs: int, code: str
) -> None:
    path = tmp_path / "in.jsonl"
    body = {"input": ["x"] * inputs}
    with path.open("w") as out:
        for n in range(requests):
            out.write(
                json.dumps(
                    {"custom_id": f"{n}", "method": "POST", "url": "/v1/embeddings", "body": body}
                )
                + "\n"
            )
    assert [e["code"] for e in check(path, "/v1/embeddings").errors] == code.split()


async def test_files_past_their_retention_are_deleted(tmp_path: Path) -> None:
    store = Store(tmp_path)
    old, kept = new_id("file-"), new_id("file-")
    for file_id, expires in ((old, now() - 1), (kept, now() + 3600)):
        store.path_of(file_id).write_bytes(b"{}\n")
        store.add_file(FileRecord(file_id, "", "f.jsonl", "batch", 3, now(), expires))
    runner = BatchRunner(store, answer)
    runner.start()
    try:
        for _ in range(500):
            if store.file(old, "") is None:
                break
            await asyncio.sleep(0.01)
    finally:
        await runner.close()
    assert store.file(old, "") is None
    assert not store.path_of(old).exists()
    assert store.file(kept, "") is not None
