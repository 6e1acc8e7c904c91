"""The OpenAI Batch API for embeddings, driven by the real `openai` SDK against a real server
process: upload, batch, poll, download; vectors equal to the online endpoint's and to
sentence-transformers'; bad lines in the error file; a malformed file failed in `validating`
with its line numbers; cancel; SIGKILL mid-batch and a restart that finishes it with every
request exactly once; keys that cannot see each other's files; an over-limit upload refused and
not left on disk."""

from __future__ import annotations

import base64
import json
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import openai
import pytest
from openai import OpenAI

from tests.conftest import cosines, reference_vectors
from tests.processes import start, wait_until_listening

pytestmark = [pytest.mark.slow, pytest.mark.process]

WORDS = [
    "river",
    "bridge",
    "invoice",
    "harbour",
    "lantern",
    "meadow",
    "quartz",
    "violin",
    "orchard",
    "compass",
]


# Long enough that no other bytes of the database hold one by chance (the two-letter key "ka"
# once matched bytes of the SQLite file in CI).
KEY_A = "sk-batch-owner-alpha-4f1c9e27"
KEY_B = "sk-batch-owner-beta-8d3a6b50"


def texts_for(n: int, count: int) -> list[str]:
    return [f"{WORDS[(n + i) % 10]} {WORDS[(n * 3 + i) % 10]} number {n}-{i}" for i in range(count)]


def jsonl(lines: list[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(line) + "\n" for line in lines).encode()


def rows(body: dict[str, Any]) -> np.ndarray:
    """An embeddings response's vectors, float or base64 (the batch passes are shaped unlike the
    online ones, so the bits may differ where the vectors do not)."""
    data = [d["embedding"] for d in body["data"]]
    if isinstance(data[0], str):
        return np.stack([np.frombuffer(base64.b64decode(d), dtype="<f4") for d in data])
    return np.array(data, dtype=np.float32)


def request_line(custom_id: str, body: dict[str, Any]) -> dict[str, Any]:
    return {"custom_id": custom_id, "method": "POST", "url": "/v1/embeddings", "body": body}


def served(tmp_path: Path, *flags: str) -> tuple[subprocess.Popen[bytes], str, Path]:
    process, base, log = start(tmp_path, *flags)
    wait_until_listening(process, base, log)
    deadline = time.monotonic() + 120
    while httpx.get(f"{base}/ready", timeout=5).status_code != 200:
        assert time.monotonic() < deadline, log.read_text()[-3000:]
        time.sleep(0.2)
    return process, base, log


def stopped(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def finished(client: OpenAI, batch_id: str, seconds: float = 180) -> Any:
    deadline = time.monotonic() + seconds
    while True:
        batch = client.batches.retrieve(batch_id)
        if batch.status in ("completed", "failed", "cancelled", "expired"):
            return batch
        assert time.monotonic() < deadline, f"batch still {batch.status} after {seconds} s"
        time.sleep(0.2)


def lines_of(client: OpenAI, file_id: str | None) -> list[dict[str, Any]]:
    if file_id is None:
        return []
    return [json.loads(line) for line in client.files.content(file_id).text.splitlines()]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    tmp = tmp_path_factory.mktemp("batch-api")
    data = tmp / "data"
    process, base, _ = served(tmp, "--data-dir", str(data), "--max-file-bytes", "2000000")
    try:
        yield base, data
    finally:
        stopped(process)


@pytest.fixture
def client(server: tuple[str, Path]) -> OpenAI:
    return OpenAI(base_url=f"{server[0]}/v1", api_key="unused", max_retries=0)


def test_a_batch_gives_the_online_endpoints_vectors(  # type: ignore[no-untyped-def]
    client: OpenAI,
    server: tuple[str, Path],
    reference,
) -> None:
    bodies: dict[str, dict[str, Any]] = {
        f"req-{n}": {"input": texts_for(n, 1 + n % 8)} for n in range(24)
    }
    bodies["req-3"]["encoding_format"] = "base64"
    bodies["req-5"]["dimensions"] = 64
    bodies["req-7"] = {"input": "a query about rivers", "input_type": "query"}
    bodies["bad-empty"] = {"input": []}
    bodies["bad-dimensions"] = {"input": "x", "dimensions": 100000}
    upload = client.files.create(
        file=("requests.jsonl", jsonl([request_line(k, b) for k, b in bodies.items()])),
        purpose="batch",
    )
    assert upload.purpose == "batch"
    assert upload.bytes > 0
    batch = client.batches.create(
        input_file_id=upload.id,
        endpoint="/v1/embeddings",
        completion_window="24h",
        metadata={"run": "test"},
    )
    assert batch.status == "validating"
    assert batch.metadata == {"run": "test"}
    batch = finished(client, batch.id)
    assert batch.status == "completed", batch
    assert batch.request_counts is not None
    assert (batch.request_counts.total, batch.request_counts.failed) == (len(bodies), 2)
    assert batch.request_counts.completed == len(bodies) - 2
    assert batch.completed_at is not None
    assert batch.in_progress_at is not None
    output = {line["custom_id"]: line for line in lines_of(client, batch.output_file_id)}
    assert set(output) == {k for k in bodies if k.startswith("req-")}
    for custom_id, line in output.items():
        assert line["id"].startswith("batch_req_")
        assert line["error"] is None
        assert line["response"]["status_code"] == 200
        online = httpx.post(f"{server[0]}/v1/embeddings", json=bodies[custom_id], timeout=30)
        got, want = line["response"]["body"], online.json()
        assert got["usage"] == want["usage"]
        assert got["model"] == want["model"]
        vectors, online_vectors = rows(got), rows(want)
        assert vectors.shape == online_vectors.shape
        assert cosines(vectors, online_vectors).min() >= 0.9999
        if "dimensions" not in bodies[custom_id] and "input_type" not in bodies[custom_id]:
            texts = bodies[custom_id]["input"]
            assert cosines(vectors, reference_vectors(reference, texts)).min() >= 0.9999
    errors = {line["custom_id"]: line for line in lines_of(client, batch.error_file_id)}
    assert set(errors) == {"bad-empty", "bad-dimensions"}
    for line in errors.values():
        assert line["response"]["status_code"] == 400
        assert line["response"]["body"]["error"]["type"] == "invalid_request_error"
    assert client.batches.list(limit=100).data[0].id == batch.id
    metrics = httpx.get(f"{server[0]}/metrics", timeout=10).text
    assert metric(metrics, 'embedserve_batches{status="completed"}') >= 1
    assert metric(metrics, 'embedserve_batch_requests_total{status="400"}') >= 2
    assert metric(metrics, "embedserve_batch_inputs_total") >= sum(
        len(b["input"]) if isinstance(b["input"], list) else 1 for b in bodies.values()
    )


def metric(text: str, name: str) -> float:
    line = next(line for line in text.splitlines() if line.startswith(name + " "))
    return float(line.split()[-1])


def test_a_malformed_file_fails_in_validating_with_line_numbers(client: OpenAI) -> None:
    content = b"\n".join(
        [
            json.dumps(request_line("a", {"input": "x"})).encode(),
            b"{not json",
            json.dumps(request_line("b", {"input": "y"})).encode(),
            json.dumps(request_line("a", {"input": "z"})).encode(),
            json.dumps(
                {**request_line("c", {"input": "w"}), "url": "/v1/chat/completions"}
            ).encode(),
        ]
    )
    upload = client.files.create(file=("bad.jsonl", content), purpose="batch")
    batch = client.batches.create(
        input_file_id=upload.id, endpoint="/v1/embeddings", completion_window="24h"
    )
    batch = finished(client, batch.id)
    assert batch.status == "failed"
    assert batch.failed_at is not None
    assert batch.errors is not None
    found = {(e.line, e.code) for e in batch.errors.data or []}
    assert found == {(2, "invalid_json_line"), (4, "duplicate_custom_id"), (5, "invalid_url")}
    assert batch.output_file_id is None


def test_batches_for_other_endpoints_are_refused(client: OpenAI) -> None:
    upload = client.files.create(
        file=("x.jsonl", jsonl([request_line("a", {"input": "x"})])), purpose="batch"
    )
    with pytest.raises(openai.BadRequestError) as refused:
        client.batches.create(
            input_file_id=upload.id,
            endpoint="/v1/chat/completions",
            completion_window="24h",
        )
    assert "/v1/embeddings" in str(refused.value)
    with pytest.raises(openai.NotFoundError):
        client.batches.create(
            input_file_id="file-nope", endpoint="/v1/embeddings", completion_window="24h"
        )


def test_cancel_stops_the_batch_and_keeps_what_was_done(client: OpenAI) -> None:
    long_text = " ".join(WORDS * 6)
    lines = [request_line(f"r{n}", {"input": [f"{n} {long_text}"] * 8}) for n in range(400)]
    upload = client.files.create(file=("many.jsonl", jsonl(lines)), purpose="batch")
    batch = client.batches.create(
        input_file_id=upload.id, endpoint="/v1/embeddings", completion_window="24h"
    )
    deadline = time.monotonic() + 120
    while client.batches.retrieve(batch.id).request_counts.completed == 0:  # type: ignore[union-attr]
        assert time.monotonic() < deadline
        time.sleep(0.1)
    cancelling = client.batches.cancel(batch.id)
    assert cancelling.status == "cancelling"
    batch = finished(client, batch.id, seconds=30)
    assert batch.status == "cancelled"
    assert batch.cancelled_at is not None
    counts = batch.request_counts
    assert counts is not None
    assert 0 < counts.completed < counts.total == 400
    output = lines_of(client, batch.output_file_id)
    assert len(output) == counts.completed
    assert [line["custom_id"] for line in output] == [f"r{n}" for n in range(counts.completed)]
    with pytest.raises(openai.BadRequestError):
        client.batches.cancel(batch.id)


def test_files_are_listed_retrieved_and_deleted(client: OpenAI, server: tuple[str, Path]) -> None:
    upload = client.files.create(file=("notes.jsonl", b'{"a": 1}\n'), purpose="user_data")
    assert client.files.retrieve(upload.id).filename == "notes.jsonl"
    assert upload.id in [f.id for f in client.files.list(purpose="user_data")]
    assert client.files.content(upload.id).content == b'{"a": 1}\n'
    assert client.files.delete(upload.id).deleted
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve(upload.id)
    assert not (server[1] / "files" / upload.id).exists()


def test_an_upload_over_the_limit_is_refused_and_not_kept(
    client: OpenAI, server: tuple[str, Path]
) -> None:
    files = server[1] / "files"  # made at the first upload: maybe not yet, run alone
    before = sorted(p.name for p in files.iterdir()) if files.exists() else []
    boundary = "b0undary"
    form = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nbatch\r\n'
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="big.jsonl"\r\n'
            f"Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        + b"x" * 3_000_000
        + f"\r\n--{boundary}--\r\n".encode()
    )
    headers = {"content-type": f"multipart/form-data; boundary={boundary}"}
    for chunked in (False, True):  # with a Content-Length, and streamed without one
        pieces = [form[i : i + 65536] for i in range(0, len(form), 65536)]
        response = httpx.post(
            f"{server[0]}/v1/files",
            content=iter(pieces) if chunked else form,
            headers=headers,
            timeout=60,
        )
        assert response.status_code == 413, response.text
        assert response.json()["error"]["code"] == "file_too_large"
    assert (sorted(p.name for p in files.iterdir()) if files.exists() else []) == before
    with pytest.raises(openai.APIStatusError) as refused:
        client.files.create(file=("big.jsonl", b"y" * 2_100_000), purpose="batch")
    assert refused.value.status_code == 413


def test_two_keys_cannot_see_each_others_files_or_batches(tmp_path: Path) -> None:
    data = tmp_path / "data"
    process, base, _ = served(
        tmp_path, "--data-dir", str(data), "--api-key", KEY_A, "--api-key", KEY_B
    )
    try:
        a = OpenAI(base_url=f"{base}/v1", api_key=KEY_A, max_retries=0)
        b = OpenAI(base_url=f"{base}/v1", api_key=KEY_B, max_retries=0)
        upload = a.files.create(
            file=("a.jsonl", jsonl([request_line("1", {"input": "x"})])), purpose="batch"
        )
        batch = a.batches.create(
            input_file_id=upload.id, endpoint="/v1/embeddings", completion_window="24h"
        )
        with pytest.raises(openai.NotFoundError):
            b.files.retrieve(upload.id)
        with pytest.raises(openai.NotFoundError):
            b.files.content(upload.id)
        with pytest.raises(openai.NotFoundError):
            b.batches.retrieve(batch.id)
        with pytest.raises(openai.NotFoundError):
            b.batches.create(
                input_file_id=upload.id, endpoint="/v1/embeddings", completion_window="24h"
            )
        assert b.files.list().data == []
        assert b.batches.list().data == []
        assert upload.id in [f.id for f in a.files.list()]
        done = finished(a, batch.id)
        assert done.status == "completed"
        assert done.output_file_id is not None
        assert lines_of(a, done.output_file_id)
        with pytest.raises(openai.NotFoundError):  # the batch's output is its owner's too
            b.files.content(done.output_file_id)
        database = (data / "embedserve.sqlite3").read_bytes() + b"".join(
            p.read_bytes() for p in data.glob("*.sqlite3-wal")
        )
        assert KEY_A.encode() not in database  # keys are kept as digests only
        assert KEY_B.encode() not in database
    finally:
        stopped(process)


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_a_server_stopped_mid_batch_resumes_it_exactly_once(
    tmp_path: Path, sig: signal.Signals
) -> None:
    """SIGKILL: a crash. SIGTERM: the drain ends the batch's in-flight work cleanly (exit 0,
    nothing logged as an error) and commits what it finished."""
    data = tmp_path / "data"
    long_text = " ".join(WORDS * 6)
    ids = [f"k{n}" for n in range(300)]
    lines = [request_line(i, {"input": [f"{i} {long_text}"] * 8}) for i in ids]
    lines[10]["body"] = {"input": []}  # one failure, which must be in the error file once
    process, base, log = served(tmp_path, "--data-dir", str(data))
    try:
        client = OpenAI(base_url=f"{base}/v1", api_key="unused", max_retries=0)
        upload = client.files.create(file=("k.jsonl", jsonl(lines)), purpose="batch")
        batch = client.batches.create(
            input_file_id=upload.id, endpoint="/v1/embeddings", completion_window="24h"
        )
        deadline = time.monotonic() + 120
        while client.batches.retrieve(batch.id).request_counts.completed < 20:  # type: ignore[union-attr]
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.1)
        time.sleep(0.5)  # mid-commit, likely: lines written that no commit has counted yet
        process.send_signal(sig)
        code = process.wait(timeout=60)
    finally:
        stopped(process)
    first_run = log.read_text()
    if sig == signal.SIGTERM:
        assert code == 0, first_run[-3000:]
        assert "Traceback" not in first_run
        assert " ERROR " not in first_run, first_run[-3000:]
        assert f"batch {batch.id}: stopping with" in first_run  # says where it will resume
    process, base, log = served(tmp_path, "--data-dir", str(data))
    try:
        client = OpenAI(base_url=f"{base}/v1", api_key="unused", max_retries=0)
        done = finished(client, batch.id)
        assert done.status == "completed", log.read_text()[-3000:]
        output = [line["custom_id"] for line in lines_of(client, done.output_file_id)]
        errors = [line["custom_id"] for line in lines_of(client, done.error_file_id)]
        assert errors == ["k10"]
        assert sorted(output + errors) == sorted(ids)  # every request once, none twice
        assert done.request_counts is not None
        assert (done.request_counts.completed, done.request_counts.failed) == (299, 1)
    finally:
        stopped(process)
