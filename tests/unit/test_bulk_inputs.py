"""The embed job's inputs and output folder, without a model: which files INPUT names, the
records they hold with their file and line, and a folder that refuses other options."""

from __future__ import annotations

import csv
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from embedserve.bulk.inputs import Fields, count, expand, read
from embedserve.bulk.output import MANIFEST, OutputFolder
from embedserve.errors import BadInput


def names(inputs: list[str], fmt: str = "auto") -> list[str]:
    return [f.name for f in expand(inputs, fmt)]


def test_folders_globs_and_files_in_order_each_once(tmp_path: Path) -> None:
    (tmp_path / "in" / "sub").mkdir(parents=True)
    for name in ("in/b.jsonl", "in/a.txt", "in/sub/c.csv", "in/_skip.jsonl", "in/notes.md"):
        (tmp_path / name).write_text("x\n")
    assert names([str(tmp_path / "in")]) == ["a.txt", "b.jsonl", "sub/c.csv"]
    assert names([str(tmp_path / "in" / "b*.jsonl"), str(tmp_path / "in" / "b.jsonl")]) == [
        "b.jsonl"
    ]
    with pytest.raises(BadInput, match=r"notes\.md: cannot tell its format"):
        expand([str(tmp_path / "in" / "notes.md")])
    assert [f.format for f in expand([str(tmp_path / "in" / "notes.md")], "text")] == ["text"]
    with pytest.raises(BadInput, match="matches no file"):
        expand([str(tmp_path / "*.parquet")])
    with pytest.raises(BadInput, match="no such file or folder"):
        expand([str(tmp_path / "nope.jsonl")])


def test_two_inputs_of_one_name_are_named_by_their_paths(tmp_path: Path) -> None:
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "d.txt").write_text("x\n")
    got = names([str(tmp_path / "a" / "d.txt"), str(tmp_path / "b" / "d.txt")])
    assert got == [str(tmp_path / "a" / "d.txt"), str(tmp_path / "b" / "d.txt")]


def test_jsonl_records_name_their_line_and_problem(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text('{"text": "a", "k": 7}\n\n[1]\n{"text": null}\n{"text": "b", "k": [1]}\n')
    files = expand([str(path)])
    assert count(files[0]) == 4
    got = [(r.position, r.where, r.id, r.text, r.problem) for r in read(files, Fields(id="k"))]
    assert got == [
        (0, "d.jsonl:1", "7", "a", None),
        (1, "d.jsonl:3", "d.jsonl:3", None, "not a JSON object but a list"),
        (2, "d.jsonl:4", "d.jsonl:4", None, "'text' is null, not a string"),
        (3, "d.jsonl:5", "d.jsonl:5", None, "'k' is a list, not a string or a number"),
    ]


def test_csv_records_start_on_their_own_line(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerows([["text"], ["one"], ["two\nlines"], ["three"]])
    files = expand([str(path)])
    assert count(files[0]) == 3
    records = list(read(files, Fields()))
    assert [(r.where, r.text) for r in records] == [
        ("d.csv:2", "one"),
        ("d.csv:3", "two\nlines"),
        ("d.csv:5", "three"),
    ]


def test_parquet_rows_are_counted_from_one(tmp_path: Path) -> None:
    path = tmp_path / "d.parquet"
    pq.write_table(pa.table({"body": ["x", None, "z"]}), path)
    files = expand([str(path)])
    records = list(read(files, Fields(text="body")))
    assert [(r.where, r.problem) for r in records] == [
        ("d.parquet:1", None),
        ("d.parquet:2", "'body' is null, not a string"),
        ("d.parquet:3", None),
    ]
    with pytest.raises(BadInput, match="no column 'text' \\(its columns: body\\)"):
        list(read(files, Fields()))


def manifest(**options: object) -> dict[str, object]:
    return {"options": {"dimensions": None, **options}, "inputs": [], "complete": False}


def test_a_folder_resumes_only_with_its_own_options(tmp_path: Path) -> None:
    out = tmp_path / "out"
    folder = OutputFolder(out, "parquet", {})
    assert folder.open(manifest()) == set()
    (out / "part-00003.parquet").write_bytes(b"done")
    (out / ".part-00004.parquet.inprogress").write_bytes(b"half")
    assert folder.open(manifest()) == {3}
    assert not (out / ".part-00004.parquet.inprogress").exists()
    with pytest.raises(
        BadInput, match="written with dimensions=none, and this run has dimensions=8"
    ):
        folder.open(manifest(dimensions=8))
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "x").write_text("")
    with pytest.raises(BadInput, match=f"no {MANIFEST}"):
        OutputFolder(tmp_path / "other", "parquet", {}).open(manifest())


def test_rejects_of_unfinished_parts_are_dropped_on_resume(tmp_path: Path) -> None:
    folder = OutputFolder(tmp_path / "out", "parquet", {})
    folder.open(manifest())
    folder.append_rejects(0, [{"line": 1}])
    folder.append_rejects(1, [{"line": 9}])
    folder.keep_rejects({0})
    assert (tmp_path / "out" / "_rejects.jsonl").read_text() == '{"line":1,"part":0}\n'
