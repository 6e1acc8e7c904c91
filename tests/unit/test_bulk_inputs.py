"""The embed job's inputs and output folder, without a model: which files INPUT names, the
records they hold with their file and line, and a folder that refuses other options."""

from __future__ import annotations

import csv
import itertools
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from embedserve.bulk.inputs import Cursor, Fields, expand, read, scan
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
    assert scan(files, 1)[0] == 4
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
    assert scan(files, 1)[0] == 3
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


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "parquet", "text"])
def test_a_part_read_from_its_cursor_is_the_same_records_as_read_in_order(
    tmp_path: Path, fmt: str
) -> None:
    texts = [
        f"doc {i}" + ("\nsecond line" if fmt == "csv" and i % 3 == 0 else "") for i in range(23)
    ]
    for n, chunk in enumerate((texts[:10], texts[10:])):
        path = tmp_path / f"f{n}.{ {'text': 'txt'}.get(fmt, fmt) }"
        if fmt == "jsonl":
            path.write_text("".join(f'{{"text": "{t}"}}\n\n' for t in chunk))
        elif fmt == "text":
            path.write_text("".join(f"{t}\n\n" for t in chunk))
        elif fmt == "csv":
            with open(path, "w", newline="") as f:
                csv.writer(f).writerows([["text"], *([t] for t in chunk)])
        else:
            pq.write_table(pa.table({"text": chunk}), path, row_group_size=4)
    files = expand([str(tmp_path)])
    total, starts = scan(files, 4)
    assert total == 23
    assert len(starts) == 6
    whole = list(read(files, Fields()))
    for part, start in enumerate(starts):
        got = list(itertools.islice(read(files, Fields(), start, part * 4), 4))
        assert got == whole[part * 4 : part * 4 + 4]
    assert starts[0] == Cursor(0, starts[0].offset, starts[0].line, 0)


def test_csv_blank_lines_a_bom_and_extra_columns(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    path.write_bytes(b"\xef\xbb\xbftext,id\nhello,1\n\nworld,2\nbad, comma,3\n\xff\xfe,4\n")
    files = expand([str(path)])
    assert scan(files, 1)[0] == 4
    got = [(r.where, r.id, r.text, r.problem) for r in read(files, Fields(id="id"))]
    assert got == [
        ("d.csv:2", "1", "hello", None),
        ("d.csv:4", "2", "world", None),
        ("d.csv:5", "d.csv:5", None, "more columns than the header (an unquoted comma?)"),
        ("d.csv:6", "d.csv:6", None, "not valid UTF-8"),
    ]


def test_a_rejects_line_cut_short_by_a_kill_is_dropped(tmp_path: Path) -> None:
    folder = OutputFolder(tmp_path / "out", "parquet", {})
    folder.open(manifest())
    folder.append_rejects(0, [{"record": b"bytes from parquet"}])
    with open(tmp_path / "out" / "_rejects.jsonl", "ab") as f:
        f.write(b'{"part":1,"x"')
    folder.keep_rejects({0, 1})
    lines = (tmp_path / "out" / "_rejects.jsonl").read_text().splitlines()
    assert lines == ['{"record":"b\'bytes from parquet\'","part":0}']


def test_a_folder_is_written_by_one_job_at_a_time(tmp_path: Path) -> None:
    writing = OutputFolder(tmp_path / "out", "parquet", {})
    writing.open(manifest())
    with pytest.raises(BadInput, match="another embed job is writing it"):
        OutputFolder(tmp_path / "out", "parquet", {}).open(manifest())


def test_a_folder_embedded_on_another_engine_is_refused(tmp_path: Path) -> None:
    bf16 = {**manifest(), "engine": {"precision": "bf16", "backend": "openvino"}}
    folder = OutputFolder(tmp_path / "out", "parquet", {})
    folder.open(bf16)
    folder.close()  # the job that wrote it has ended
    fp32 = {**manifest(), "engine": {"precision": "fp32", "backend": "onnx"}}
    with pytest.raises(
        BadInput, match="embedded in bf16 on openvino, and this run got fp32 on onnx"
    ):
        OutputFolder(tmp_path / "out", "parquet", {}).open(fp32)


def test_the_output_folder_inside_an_input_folder_is_not_read(tmp_path: Path) -> None:
    (tmp_path / "data" / "vectors").mkdir(parents=True)
    (tmp_path / "data" / "a.txt").write_text("x\n")
    (tmp_path / "data" / "vectors" / "b.txt").write_text("y\n")
    got = expand([str(tmp_path / "data")], exclude=tmp_path / "data" / "vectors")
    assert [f.name for f in got] == ["a.txt"]
