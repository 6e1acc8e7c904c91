"""`embedserve embed` on the real packaged model: every input format, the output folder read as
one table, vectors equal to sentence-transformers' and to the server's, chunking, bad records,
resuming after SIGKILL, and memory that does not grow with the corpus."""

from __future__ import annotations

import contextlib
import csv
import itertools
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from embedserve import __version__
from embedserve.cli import main
from embedserve.engine.embedder import Embedder
from embedserve.models.source import ModelSource
from tests.conftest import VARIED_TEXTS, cosines, reference_vectors
from tests.fakes import client_for, registry_with

pytestmark = pytest.mark.slow

TEXTS = [t for t in VARIED_TEXTS if t.strip()] + [
    f"document number {i} about topic {i % 7}" for i in range(40)
]


def embed(*args: str | Path) -> int:
    return main(["embed", *map(str, args)])


def table(folder: Path) -> pa.Table:
    return ds.dataset(folder, format="parquet").to_table()


def matrix(t: pa.Table) -> np.ndarray:
    column = t.column("embedding").combine_chunks()
    return np.asarray(column.flatten().to_numpy()).reshape(len(t), column.type.list_size)


def write_jsonl(path: Path, records: list[object]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_jsonl_folder_reads_as_one_table_equal_to_sentence_transformers(  # type: ignore[no-untyped-def]
    tmp_path: Path, reference
) -> None:
    source = write_jsonl(
        tmp_path / "docs.jsonl", [{"text": t, "n": i} for i, t in enumerate(TEXTS)]
    )
    out = tmp_path / "out"
    assert embed(source, "--output", out, "--part-rows", "16") == 0
    parts = sorted(p.name for p in out.glob("part-*.parquet"))
    assert len(parts) == -(-len(TEXTS) // 16)
    got = table(out)
    assert got.column("id").to_pylist() == [f"docs.jsonl:{i + 1}" for i in range(len(TEXTS))]
    assert got.schema.field("embedding").type == pa.list_(pa.float32(), 384)
    assert cosines(matrix(got), reference_vectors(reference, TEXTS)).min() >= 0.9999
    import pandas as pd

    frame = pd.read_parquet(out)
    assert len(frame) == len(TEXTS)
    assert list(frame.columns) == ["id", "embedding"]
    meta = pq.read_schema(out / parts[0]).metadata
    assert meta[b"embedserve.model"] == b"sentence-transformers/all-MiniLM-L6-v2"
    assert meta[b"embedserve.version"] == __version__.encode()
    assert meta[b"embedserve.input_type"] == b"document"
    assert meta[b"embedserve.precision"] in (b"bf16", b"fp32")
    manifest = json.loads((out / "_manifest.json").read_text())
    assert manifest["complete"] is True
    assert manifest["records"] == len(TEXTS)


async def test_vectors_equal_the_servers(
    tmp_path: Path, minilm: ModelSource, embedder: Embedder
) -> None:
    lines = [t for t in TEXTS if "\n" not in t][:20]
    source = tmp_path / "docs.txt"
    source.write_text("\n\n".join(lines) + "\n")
    out = tmp_path / "out"
    import asyncio

    assert await asyncio.to_thread(embed, source, "--output", out, "--input-type", "query") == 0
    got = table(out)
    # blank lines are skipped, and ids count the file's lines
    assert got.column("id").to_pylist() == [f"docs.txt:{2 * i + 1}" for i in range(20)]
    async with client_for(registry_with(minilm, embedder)) as client:
        response = await client.post("/v1/embeddings", json={"input": lines, "input_type": "query"})
    served = np.array([d["embedding"] for d in response.json()["data"]], dtype=np.float32)
    assert cosines(matrix(got), served).min() >= 0.9999


def test_csv_and_parquet_with_chosen_fields_and_dimensions(tmp_path: Path, reference) -> None:  # type: ignore[no-untyped-def]
    folder = tmp_path / "in"
    (folder / "sub").mkdir(parents=True)
    with open(folder / "a.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["key", "body"])
        for i, text in enumerate(TEXTS[:10]):
            writer.writerow([f"c{i}", text])
    pq.write_table(
        pa.table({"key": [f"p{i}" for i in range(10)], "body": TEXTS[10:20]}),
        folder / "sub" / "b.parquet",
    )
    out = tmp_path / "out"
    code = embed(
        folder, "-o", out, "--text-field", "body", "--id-field", "key", "--dimensions", "64",
        "--keep-text",
    )  # fmt: skip
    assert code == 0
    got = table(out)
    assert got.column("id").to_pylist() == [f"c{i}" for i in range(10)] + [
        f"p{i}" for i in range(10)
    ]
    assert got.column("text").to_pylist() == TEXTS[:20]
    vectors = matrix(got)
    assert vectors.shape == (20, 64)
    expected = reference_vectors(reference, TEXTS[:20])[:, :64]
    assert cosines(vectors, expected).min() >= 0.9999
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_chunks_cut_the_text_where_their_offsets_say(  # type: ignore[no-untyped-def]
    tmp_path: Path, reference, embedder: Embedder
) -> None:
    long = " ".join(
        f"sentence {i} of a long document about rivers and their floods." for i in range(60)
    )
    source = write_jsonl(tmp_path / "long.jsonl", [{"text": long}, {"text": "short one"}])
    out = tmp_path / "out"
    assert (
        embed(source, "-o", out, "--chunk-tokens", "64", "--chunk-overlap", "16", "--keep-text")
        == 0
    )
    got = table(out).to_pylist()
    first = [row for row in got if row["id"] == "long.jsonl:1"]
    assert len(first) > 5
    assert [row["chunk"] for row in first] == list(range(len(first)))
    tokenizer = embedder.tokenizer
    for row in first:
        assert row["text"] == long[row["start"] : row["end"]]
        assert len(tokenizer.content_ids([row["text"]])[0]) <= 64
    assert first[0]["start"] == 0
    assert first[-1]["end"] == len(long)
    for before, after in itertools.pairwise(first):
        assert after["start"] < before["end"]  # they overlap
        shared = long[after["start"] : before["end"]]
        assert 10 <= len(tokenizer.content_ids([shared])[0]) <= 20
    short = [row for row in got if row["id"] == "long.jsonl:2"]
    assert [(r["chunk"], r["start"], r["end"]) for r in short] == [(0, 0, len("short one"))]
    texts = [row["text"] for row in got]
    vectors = np.array([row["embedding"] for row in got], dtype=np.float32)
    assert cosines(vectors, reference_vectors(reference, texts)).min() >= 0.9999


def test_npy_format_writes_one_matrix_and_its_ids(tmp_path: Path, reference) -> None:  # type: ignore[no-untyped-def]
    source = write_jsonl(tmp_path / "d.jsonl", [{"text": t, "id": i} for i, t in enumerate(TEXTS)])
    out = tmp_path / "out"
    assert embed(source, "-o", out, "--format", "npy", "--id-field", "id", "--part-rows", "10") == 0
    vectors = np.load(out / "embeddings.npy")
    ids = [json.loads(line)["id"] for line in (out / "ids.jsonl").read_text().splitlines()]
    assert ids == [str(i) for i in range(len(TEXTS))]
    assert cosines(vectors, reference_vectors(reference, TEXTS)).min() >= 0.9999


def test_a_malformed_record_stops_the_job_with_its_file_and_line(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    source = tmp_path / "bad.jsonl"
    source.write_text('{"text": "fine"}\n{"text": 42}\n{not json\n{"other": "x"}\n{"text": "ok"}\n')
    code = embed(source, "-o", tmp_path / "out")
    assert code == 2
    err = capsys.readouterr().err
    assert "bad.jsonl:2: 'text' is a number, not a string" in err
    assert "Traceback" not in err


def test_skip_bad_writes_rejects_and_goes_on(tmp_path: Path) -> None:
    source = tmp_path / "bad.jsonl"
    source.write_text('{"text": "fine"}\n{"text": 42}\n{not json\n{"other": "x"}\n{"text": "ok"}\n')
    out = tmp_path / "out"
    assert embed(source, "-o", out, "--skip-bad") == 0
    assert table(out).column("id").to_pylist() == ["bad.jsonl:1", "bad.jsonl:5"]
    rejects = [json.loads(line) for line in (out / "_rejects.jsonl").read_text().splitlines()]
    assert [(r["file"], r["line"]) for r in rejects] == [
        ("bad.jsonl", 2),
        ("bad.jsonl", 3),
        ("bad.jsonl", 4),
    ]
    assert rejects[0]["record"] == '{"text": 42}'
    assert "not valid JSON" in rejects[1]["reason"]
    assert rejects[2]["reason"] == "no 'text' field"
    assert len(pq.read_table(out).column("id")) == 2  # the bookkeeping stays out of the table


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: p / "missing.jsonl", "missing.jsonl: no such file or folder"),
        (lambda p: (p / "x.md").write_text("a\n") and p / "x.md", "cannot tell its format"),
        (lambda p: (p / "x.parquet").write_text("nope") and p / "x.parquet", "not a Parquet file"),
    ],
)
def test_unreadable_input_is_one_clear_line(tmp_path: Path, capsys, make, message) -> None:  # type: ignore[no-untyped-def]
    assert embed(make(tmp_path), "-o", tmp_path / "out") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert message in err[-1]
    assert not any("Traceback" in line for line in err)


def test_a_csv_without_the_text_column_names_its_columns(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "a.csv").write_text("title,body\nx,y\n")
    assert embed(tmp_path / "a.csv", "-o", tmp_path / "out") == 2
    assert "a.csv: no column 'text' (its columns: title, body)" in capsys.readouterr().err


def test_resuming_with_other_options_is_refused_naming_the_option(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    source = write_jsonl(tmp_path / "d.jsonl", [{"text": t} for t in TEXTS[:5]])
    out = tmp_path / "out"
    assert embed(source, "-o", out) == 0
    assert embed(source, "-o", out, "--dimensions", "32") == 2
    err = capsys.readouterr().err
    assert "written with dimensions=none, and this run has dimensions=32" in err
    assert embed(source, "-o", out) == 0  # the same options: nothing left to do
    assert len(table(out)) == 5


def test_progress_lines_and_summary_when_stderr_is_not_a_terminal(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    source = write_jsonl(tmp_path / "d.jsonl", [{"text": t} for t in TEXTS])
    assert embed(source, "-o", tmp_path / "out", "--part-rows", "8", "--progress-every", "0") == 0
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("read ")]
    assert lines, err
    for part in ("docs/s", "tokens/s", "left"):
        assert part in lines[-1]
    assert f"done: {len(TEXTS)} documents" in err
    assert "0 skipped" in err


def _job(args: list[str], tmp_path: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "embedserve", "embed", *args],
        stdout=subprocess.DEVNULL,
        stderr=open(tmp_path / "job.log", "ab"),
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )


def test_a_run_killed_mid_way_resumes_to_every_record_exactly_once(tmp_path: Path) -> None:
    count = 6000
    source = write_jsonl(
        tmp_path / "d.jsonl",
        [{"text": f"record {i}: the {i % 13}th note on item {i}"} for i in range(count)],
    )
    out = tmp_path / "out"
    args = [str(source), "-o", str(out), "--part-rows", "250"]
    job = _job(args, tmp_path)
    try:
        deadline = time.monotonic() + 120
        while len(list(out.glob("part-*.parquet"))) < 3:
            assert job.poll() is None, (tmp_path / "job.log").read_text()
            assert time.monotonic() < deadline
            time.sleep(0.05)
        job.send_signal(signal.SIGKILL)
    finally:
        job.kill()
        job.wait(30)
    finished = len(list(out.glob("part-*.parquet")))
    assert finished < count // 250, "the job ended before it was killed"
    resumed = _job(args, tmp_path)
    assert resumed.wait(300) == 0, (tmp_path / "job.log").read_text()
    ids = table(out).column("id").to_pylist()
    assert sorted(ids, key=lambda i: int(i.rsplit(":", 1)[1])) == [
        f"d.jsonl:{i + 1}" for i in range(count)
    ]
    assert "were done already" in (tmp_path / "job.log").read_text()
    assert not list(out.glob(".*"))  # nothing half-written is left


def _steady_rss_mib(args: list[str], out: Path, tmp_path: Path) -> float:
    """The job's largest resident memory once it streams (its first part is written), so that
    the start-up's passing peaks (model load, probes) do not hide growth."""
    import psutil

    job = _job(args, tmp_path)
    process = psutil.Process(job.pid)
    peak = 0.0
    try:
        while job.poll() is None:
            if any(out.glob("part-*")):
                with contextlib.suppress(psutil.NoSuchProcess):
                    peak = max(peak, process.memory_info().rss / 2**20)
            time.sleep(0.02)
    finally:
        job.kill()
        job.wait(30)
    assert job.returncode == 0, (tmp_path / "job.log").read_text()
    assert peak, "no sample while it streamed"
    return peak


def test_memory_does_not_grow_with_the_corpus(tmp_path: Path, embedder: Embedder) -> None:
    """Each record carries 4 KiB beside its short text: a job that held its input would grow by
    ~80 MiB from 2,000 to 20,000 records; a streaming one stays within a few tens of MiB.
    (`embedder`: the model's build is cached, so neither run pays for the export.)"""
    bulk = "x" * 4096
    sizes = {}
    for count in (2000, 20000):
        source = write_jsonl(
            tmp_path / f"d{count}.jsonl",
            [{"text": f"note {i} on item {i % 97}", "bulk": bulk} for i in range(count)],
        )
        out = tmp_path / f"out{count}"
        sizes[count] = _steady_rss_mib(
            [str(source), "-o", str(out), "--part-rows", "200"], out, tmp_path
        )
    assert sizes[20000] - sizes[2000] < 40, sizes


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--dimensions", "999"], "--dimensions must be between 1 and 384 for this model, got 999"),
        (["--chunk-tokens", "300"], "--chunk-tokens 300 is more than this model reads"),
        (["--chunk-overlap", "4"], "--chunk-overlap needs --chunk-tokens"),
    ],
)
def test_options_the_model_cannot_take_are_refused_before_anything_is_written(  # type: ignore[no-untyped-def]
    tmp_path: Path, capsys, args: list[str], message: str
) -> None:
    source = write_jsonl(tmp_path / "d.jsonl", [{"text": "a"}])
    assert embed(source, "-o", tmp_path / "out", *args) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_an_output_that_is_a_file_is_one_clear_line(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    source = write_jsonl(tmp_path / "d.jsonl", [{"text": "a"}])
    (tmp_path / "out").write_text("")
    assert embed(source, "-o", tmp_path / "out") == 2
    assert "a file, not a folder" in capsys.readouterr().err


def test_no_records_still_make_a_table(tmp_path: Path) -> None:
    source = tmp_path / "empty.jsonl"
    source.write_text("\n\n")
    assert embed(source, "-o", tmp_path / "out") == 0
    got = table(tmp_path / "out")
    assert len(got) == 0
    assert got.schema.field("embedding").type == pa.list_(pa.float32(), 384)


def test_a_progress_bar_on_a_terminal(tmp_path: Path) -> None:
    """stderr a terminal (a pseudo-terminal here): tqdm's bar, with documents, the rate and
    tokens/s, ending at the total."""
    import fcntl
    import pty
    import struct
    import termios

    source = write_jsonl(tmp_path / "d.jsonl", [{"text": t} for t in TEXTS])
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 120, 0, 0))  # 120 columns
    try:
        job = subprocess.Popen(
            [sys.executable, "-m", "embedserve", "embed", str(source), "-o", str(tmp_path / "o")],
            stdout=subprocess.DEVNULL,
            stderr=follower,
            env={**os.environ, "HF_HUB_OFFLINE": "1"},
        )
        os.close(follower)
        shown = b""
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # the job closed its end
                break
            if not chunk:
                break
            shown += chunk
        assert job.wait(120) == 0, shown.decode(errors="replace")
    finally:
        os.close(leader)
    text = shown.decode(errors="replace")
    assert f"{len(TEXTS)}/{len(TEXTS)}" in text
    assert "doc/s" in text
    assert "tokens/s" in text


def test_a_resumed_npy_run_and_its_rejects_hold_each_record_once(tmp_path: Path) -> None:
    """An interrupted run's state, made by removing what it had not finished: the last part and
    the assembled matrix. The rerun writes that part again and its rejects once."""
    lines = [json.dumps({"text": f"doc {i}"}) if i % 7 else "{bad" for i in range(30)]
    source = tmp_path / "d.jsonl"
    source.write_text("\n".join(lines) + "\n")
    out = tmp_path / "out"
    args: list[str | Path] = [
        source,
        "-o",
        out,
        "--format",
        "npy",
        "--part-rows",
        "10",
        "--skip-bad",
    ]
    assert embed(*args) == 0
    whole = np.load(out / "embeddings.npy")
    ids = (out / "ids.jsonl").read_text()
    rejects = (out / "_rejects.jsonl").read_text()
    (out / "_parts" / "part-00002.npy").unlink()
    (out / "embeddings.npy").unlink()
    assert embed(*args) == 0
    assert cosines(np.load(out / "embeddings.npy"), whole).min() >= 0.9999
    assert (out / "ids.jsonl").read_text() == ids
    assert (out / "_rejects.jsonl").read_text().count("\n") == rejects.count("\n") == 5
