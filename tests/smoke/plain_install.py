"""The first five minutes of a new user, on what the README's `pip install -e .` installed and
nothing more: `embedserve serve` on a free port and one real request of every route family
(OpenAI embeddings in every input and encoding, the Files and Batch APIs, TEI, Ollama, Cohere,
rerank, models, metrics, the page, the probes), then `embedserve embed` over a JSON Lines, a
CSV and a Parquet file. Each answer's status and shape is checked; the first that is wrong
fails the run with its route and what it answered.

    python -m tests.smoke.plain_install [--work DIR]

The standard library only (urllib, json, subprocess): it must need nothing that the plain
install lacks. Run by `.ci/run` before the test extras go in."""

from __future__ import annotations

import argparse
import base64
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from tests.smoke.server import Answer, Server, SmokeFailure, expect, multipart

DIMENSION = 384  # the default model's, all-MiniLM-L6-v2
BATCH_S = 120.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, help="a folder for logs and files (default: temp)")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="embedserve-smoke-"))
    work.mkdir(parents=True, exist_ok=True)
    embedserve = Path(sys.executable).parent / "embedserve"  # the console script the install made
    started = time.monotonic()
    server = Server(embedserve, work, "--data-dir", str(work / "data"))
    try:
        server.wait_ready()
        print(f"smoke: served and ready in {time.monotonic() - started:.0f} s", flush=True)
        checks = (openai_embeddings, batch_api, other_wire_formats, around_the_api)
        for check in checks:
            check(server)
            print(f"smoke: {check.__name__} ok", flush=True)
        code = server.stop()
        expect(code == 0, "SIGTERM", f"embedserve serve exits 0 when stopped, got {code}")
    except BaseException:
        server.stop()
        print(server.tail(), file=sys.stderr)
        raise
    embed_command(embedserve, work)
    print(f"smoke: embed ok; all checks passed in {time.monotonic() - started:.0f} s")


def vectors(answer: Answer, route: str, count: int) -> list[list[float]]:
    body = answer.json()
    rows = [item["embedding"] for item in body["data"]]
    expect(len(rows) == count, route, f"{count} embeddings", answer)
    for row in rows:
        expect(isinstance(row, list) and len(row) == DIMENSION, route, "384 floats each", answer)
    return rows


def openai_embeddings(server: Server) -> None:
    route = "POST /v1/embeddings"
    one = server.call("POST", "/v1/embeddings", {"input": "hello world", "model": "any"})
    vectors(one, route, 1)
    expect(one.json()["usage"]["prompt_tokens"] == 4, route, "4 prompt tokens", one)
    several = server.call("POST", "/v1/embeddings", {"input": ["hello", "world", ""]})
    vectors(several, route + " (a list)", 3)
    token_ids = server.call("POST", "/v1/embeddings", {"input": [[15339, 1917], [15339]]})
    vectors(token_ids, route + " (token ids)", 2)
    encoded = server.call(
        "POST", "/v1/embeddings", {"input": ["hello"], "encoding_format": "base64"}
    )
    raw = base64.b64decode(encoded.json()["data"][0]["embedding"])
    expect(len(raw) == 4 * DIMENSION, route + " (base64)", "384 float32s", encoded)
    int8 = server.call("POST", "/v1/embeddings", {"input": ["hello"], "encoding_format": "int8"})
    row = int8.json()["data"][0]["embedding"]
    expect(
        len(row) == DIMENSION and all(-128 <= v <= 127 for v in row),
        route + " (int8)",
        "384 integers in -128..127",
        int8,
    )
    bad = server.call("POST", "/v1/embeddings", {"input": []}, check=400)
    expect("error" in bad.json(), route + " (empty input)", "an OpenAI error envelope", bad)


def batch_api(server: Server) -> None:
    lines = [
        {"custom_id": f"r{n}", "method": "POST", "url": "/v1/embeddings", "body": body}
        for n, body in enumerate(
            [{"input": "hello"}, {"input": ["a", "b"], "encoding_format": "base64"}, {"input": []}]
        )
    ]
    content = "".join(json.dumps(line) + "\n" for line in lines).encode()
    body, content_type = multipart({"purpose": "batch"}, "requests.jsonl", content)
    upload = server.call("POST", "/v1/files", raw=body, headers={"Content-Type": content_type})
    expect(upload.json().get("object") == "file", "POST /v1/files", "a file object", upload)
    created = server.call(
        "POST",
        "/v1/batches",
        {
            "input_file_id": upload.json()["id"],
            "endpoint": "/v1/embeddings",
            "completion_window": "24h",
        },
    )
    batch_id = created.json()["id"]
    deadline = time.monotonic() + BATCH_S
    while (batch := server.call("GET", f"/v1/batches/{batch_id}")).json()["status"] not in (
        "completed",
        "failed",
        "cancelled",
        "expired",
    ):
        expect(time.monotonic() < deadline, "GET /v1/batches/{id}", "completed in time", batch)
        time.sleep(0.2)
    route = "GET /v1/batches/{id}"
    expect(batch.json()["status"] == "completed", route, "status completed", batch)
    counts = batch.json()["request_counts"]
    expect((counts["completed"], counts["failed"]) == (2, 1), route, "2 completed, 1 failed", batch)
    output = server.call("GET", f"/v1/files/{batch.json()['output_file_id']}/content")
    answers = {line["custom_id"]: line for line in map(json.loads, output.body.splitlines())}
    expect(sorted(answers) == ["r0", "r1"], "GET /v1/files/{id}/content", "r0 and r1", output)
    expect(
        len(answers["r1"]["response"]["body"]["data"]) == 2,
        "the batch's output file",
        "r1's two embeddings",
        output,
    )
    errors = server.call("GET", f"/v1/files/{batch.json()['error_file_id']}/content")
    failed = [json.loads(line) for line in errors.body.splitlines()]
    expect([line["custom_id"] for line in failed] == ["r2"], "the error file", "r2", errors)


def other_wire_formats(server: Server) -> None:
    tei = server.call("POST", "/embed", {"inputs": ["hello", "world"]})
    expect(len(tei.json()) == 2 and len(tei.json()[0]) == DIMENSION, "POST /embed", "2x384", tei)
    ollama = server.call("POST", "/api/embed", {"model": "all-minilm", "input": ["hello"]})
    rows = ollama.json()["embeddings"]
    expect(len(rows) == 1 and len(rows[0]) == DIMENSION, "POST /api/embed", "1x384", ollama)
    cohere = server.call(
        "POST",
        "/v2/embed",
        {
            "texts": ["hello"],
            "model": "embed-english-v3.0",
            "input_type": "search_document",
            "embedding_types": ["float", "int8"],
        },
    )
    kinds = cohere.json()["embeddings"]
    expect(sorted(kinds) == ["float", "int8"], "POST /v2/embed", "float and int8", cohere)
    expect(len(kinds["float"][0]) == DIMENSION, "POST /v2/embed", "384 floats", cohere)
    v1 = server.call("POST", "/v1/embed", {"texts": ["hello"], "model": "embed-english-v2.0"})
    floats = v1.json()["embeddings"]
    expect(len(floats) == 1 and len(floats[0]) == DIMENSION, "POST /v1/embed", "1x384", v1)
    pair = {"inputs": {"source_sentence": "a dog", "sentences": ["a dog", "the stock market"]}}
    similar = server.call("POST", "/similarity", pair).json()
    expect(similar[0] > similar[1], "POST /similarity", f"the same text closest, got {similar}")
    decoded = server.call("POST", "/decode", {"ids": [101, 7592, 102]}).json()
    expect(decoded == ["hello"], "POST /decode", f"['hello'], got {decoded}")
    shown = server.call("POST", "/api/show", {"model": "all-MiniLM-L6-v2:latest"}).json()
    expect(shown["model_info"].get("bert.embedding_length") == DIMENSION, "POST /api/show", "384")
    rerank = server.call(
        "POST",
        "/v1/rerank",
        {"query": "a pet", "documents": ["the stock market", "my dog"], "return_documents": True},
    )
    results = rerank.json()["results"]
    expect(len(results) == 2, "POST /v1/rerank", "two results", rerank)
    expect(results[0]["document"]["text"] == "my dog", "POST /v1/rerank", "the dog first", rerank)


def around_the_api(server: Server) -> None:
    models = server.call("GET", "/v1/models").json()["data"]
    expect(models and models[0]["dimension"] == DIMENSION, "GET /v1/models", "the model")
    metrics = server.call("GET", "/metrics").body.decode()
    expect("embedserve_requests_total" in metrics, "GET /metrics", "embedserve's metrics")
    page = server.call("GET", "/")
    expect(b"<html" in page.body.lower(), "GET /", "the web page")
    health = server.call("GET", "/health")
    expect(health.status == 200, "GET /health", "200")
    ready = server.call("GET", "/ready").json()
    expect(ready.get("status") == "ready", "GET /ready", f"status ready, got {ready}")


def embed_command(embedserve: Path, work: Path) -> None:
    """`embedserve embed` over one file of each input format, into a folder of Parquet parts;
    the files are made and the output read with the venv's own pyarrow (a plain dependency)."""
    inputs = work / "inputs"
    inputs.mkdir(exist_ok=True)
    (inputs / "a.jsonl").write_text('{"id": "j1", "text": "hello"}\n{"id": "j2", "text": "x"}\n')
    (inputs / "b.csv").write_text("id,text\nc1,hello there\nc2,general kenobi\nc3,third\n")
    python = str(embedserve.parent / "python")
    parquet = "import pyarrow as pa, pyarrow.parquet as pq, sys; pq.write_table(pa.table("
    parquet += "{'id': ['p1'], 'text': ['a parquet row']}), sys.argv[1])"
    run([python, "-c", parquet, str(inputs / "c.parquet")], "writing the Parquet input")
    output = work / "vectors"
    run(
        [
            str(embedserve),
            "embed",
            *map(str, sorted(inputs.iterdir())),
            "--id-field",
            "id",
            "--output",
            str(output),
        ],
        "embedserve embed",
    )
    count = "import pyarrow.dataset as ds, sys; t = ds.dataset(sys.argv[1]).to_table(); "
    count += "print(t.num_rows, sorted(t['id'].to_pylist()), len(t['embedding'][0]))"
    printed = run([python, "-c", count, str(output)], "reading embed's output").split()
    want = ["6", "['c1',", "'c2',", "'c3',", "'j1',", "'j2',", "'p1']", str(DIMENSION)]
    expect(printed == want, "embedserve embed", f"6 rows of 384 with every id, got {printed}")


def run(command: list[str], what: str) -> str:
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
    if done.returncode != 0:
        raise SmokeFailure(f"{what} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return done.stdout


def print_failure(exc: SmokeFailure) -> Any:
    print(f"smoke FAILED: {exc}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    try:
        main()
    except SmokeFailure as exc:
        sys.exit(print_failure(exc))
