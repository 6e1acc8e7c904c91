"""OpenAI's Batch API driven end to end by the real `openai` SDK, in a venv of its own, against
`embedserve serve` from a plain `pip install -e .`: upload, create, poll, read the output and
error files, cancel, and a restart (SIGTERM) mid-batch after which every request is answered
exactly once.

    <clients venv>/bin/python -m tests.smoke.batch_api_client --embedserve <venv>/bin/embedserve

Needs the `openai` package and the standard library only."""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from openai import OpenAI

from tests.smoke.server import Server, SmokeFailure, expect

FINAL = ("completed", "failed", "cancelled", "expired")
BATCH_S = 300.0
LONG = " ".join(["river", "bridge", "invoice", "harbour", "lantern", "meadow"] * 8)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--embedserve", type=Path, required=True, help="the plain install's")
    parser.add_argument("--work", type=Path, help="a folder for logs and data (default: temp)")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="embedserve-batch-client-"))
    work.mkdir(parents=True, exist_ok=True)
    flags = ("--data-dir", str(work / "data"))
    server = Server(args.embedserve, work, *flags)
    try:
        server.wait_ready()
        client = OpenAI(base_url=f"{server.base}/v1", api_key="unused", max_retries=0)
        output_and_errors(client)
        print("batch client: output and error files ok", flush=True)
        cancelled(client)
        print("batch client: cancel ok", flush=True)
        batch_id, ids = started_long_batch(client)
        code = server.stop()
        expect(code == 0, "SIGTERM mid-batch", f"a drained stop exits 0, got {code}")
    except BaseException:
        server.stop()
        print(server.tail(), file=sys.stderr)
        raise
    server = Server(args.embedserve, work, *flags)
    try:
        server.wait_ready()
        client = OpenAI(base_url=f"{server.base}/v1", api_key="unused", max_retries=0)
        resumed_exactly_once(client, batch_id, ids)
        print("batch client: restart mid-batch ok", flush=True)
    finally:
        server.stop()


def lines(requests: list[tuple[str, dict[str, Any]]]) -> bytes:
    return "".join(
        json.dumps({"custom_id": c, "method": "POST", "url": "/v1/embeddings", "body": b}) + "\n"
        for c, b in requests
    ).encode()


def create(client: OpenAI, content: bytes) -> str:
    upload = client.files.create(file=("requests.jsonl", content), purpose="batch")
    expect(upload.purpose == "batch", "files.create", f"a batch file, got {upload}")
    batch = client.batches.create(
        input_file_id=upload.id, endpoint="/v1/embeddings", completion_window="24h"
    )
    return batch.id


def finished(client: OpenAI, batch_id: str) -> Any:
    deadline = time.monotonic() + BATCH_S
    while (batch := client.batches.retrieve(batch_id)).status not in FINAL:
        expect(time.monotonic() < deadline, "batches.retrieve", f"done, still {batch.status}")
        time.sleep(0.2)
    return batch


def file_lines(client: OpenAI, file_id: str | None) -> list[dict[str, Any]]:
    if file_id is None:
        return []
    return [json.loads(line) for line in client.files.content(file_id).text.splitlines()]


def output_and_errors(client: OpenAI) -> None:
    requests: list[tuple[str, dict[str, Any]]] = [
        ("ok-1", {"input": "hello", "model": "text-embedding-3-small"}),
        ("ok-2", {"input": ["a", "b"], "encoding_format": "base64", "dimensions": 64}),
        ("bad", {"input": [], "model": "text-embedding-3-small"}),
    ]
    batch = finished(client, create(client, lines(requests)))
    expect(batch.status == "completed", "a batch", f"completed, got {batch}")
    counts = batch.request_counts
    expect(counts and (counts.completed, counts.failed) == (2, 1), "request_counts", str(counts))
    output = {line["custom_id"]: line for line in file_lines(client, batch.output_file_id)}
    expect(sorted(output) == ["ok-1", "ok-2"], "the output file", f"ok-1 and ok-2: {output}")
    first = output["ok-1"]["response"]["body"]["data"][0]["embedding"]
    expect(len(first) == 384, "the output file", "a 384-float vector for ok-1")
    errors = file_lines(client, batch.error_file_id)
    expect([e["custom_id"] for e in errors] == ["bad"], "the error file", f"bad: {errors}")
    expect(errors[0]["response"]["status_code"] == 400, "the error file", "a 400 for bad")


def cancelled(client: OpenAI) -> None:
    many = [(f"c{n}", {"input": [f"{n} {LONG}"] * 8}) for n in range(400)]
    batch_id = create(client, lines(many))
    client.batches.cancel(batch_id)
    batch = finished(client, batch_id)
    expect(batch.status == "cancelled", "batches.cancel", f"cancelled, got {batch.status}")
    counts = batch.request_counts
    expect(counts is not None and counts.completed < len(many), "a cancelled batch", str(counts))


def started_long_batch(client: OpenAI) -> tuple[str, list[str]]:
    """A batch of several seconds, once part of it is done (so the stop comes mid-batch)."""
    ids = [f"k{n}" for n in range(300)]
    batch_id = create(client, lines([(i, {"input": [f"{i} {LONG}"] * 8}) for i in ids]))
    deadline = time.monotonic() + BATCH_S
    while True:
        batch = client.batches.retrieve(batch_id)
        done = batch.request_counts.completed if batch.request_counts else 0
        expect(batch.status == "in_progress" or done < 20, "a long batch", "still running")
        if done >= 20:
            return batch_id, ids
        expect(time.monotonic() < deadline, "a long batch", "20 requests done in time")
        time.sleep(0.1)


def resumed_exactly_once(client: OpenAI, batch_id: str, ids: list[str]) -> None:
    batch = finished(client, batch_id)
    expect(batch.status == "completed", "a batch after a restart", f"completed: {batch}")
    answered = [line["custom_id"] for line in file_lines(client, batch.output_file_id)]
    expect(sorted(answered) == sorted(ids), "the resumed output", "every custom_id exactly once")


if __name__ == "__main__":
    try:
        main()
    except SmokeFailure as exc:
        print(f"batch client FAILED: {exc}", file=sys.stderr)
        sys.exit(1)
