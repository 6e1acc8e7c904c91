"""A job's inputs: files, globs and folders of JSON Lines, CSV, Parquet or plain text, read lazily
as records in one fixed order, so that a record has the same position on every run (resuming
depends on it)."""

from __future__ import annotations

import csv
import glob
import os
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from embedserve.errors import BadInput

FORMATS = {
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".csv": "csv",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".txt": "text",
}
INPUT_FORMATS = ("auto", "jsonl", "csv", "parquet", "text")
_PARQUET_BATCH_ROWS = 1024

csv.field_size_limit(min(sys.maxsize, 2**31 - 1))  # a document may be far longer than 128 KiB


@dataclass(frozen=True)
class InputFile:
    path: Path
    name: str
    """How ids and messages name it: its file name, or its path under a folder given."""

    format: str


@dataclass(frozen=True)
class Fields:
    text: str = "text"
    id: str | None = None
    """The field holding each record's id; None: its position, `<file name>:<line>`."""


@dataclass(frozen=True)
class Record:
    position: int
    """Its index among every record of every input, bad ones included."""

    where: str
    """`<file name>:<line>` (the row, counted from 1, for Parquet)."""

    id: str
    text: str | None
    problem: str | None = None
    """Why the record cannot be embedded (then `text` is None)."""

    raw: Any = None
    """The record as read, for the rejects file."""

    @property
    def file(self) -> str:
        return self.where.rsplit(":", 1)[0]

    @property
    def line(self) -> int:
        return int(self.where.rsplit(":", 1)[1])


def expand(inputs: Sequence[str], input_format: str = "auto") -> list[InputFile]:
    """The files that INPUT arguments name, in order: a file, a glob (sorted) or a folder (its
    files with a known suffix, sorted, recursively). A file named twice is read once."""
    found: list[tuple[Path, str]] = []
    for given in inputs:
        path = Path(given)
        if path.is_dir():
            inside = sorted(
                p
                for p in path.rglob("*")
                if p.is_file()
                and not p.name.startswith(("_", "."))
                and (input_format != "auto" or p.suffix.lower() in FORMATS)
            )
            if not inside:
                raise BadInput(f"{given}: a folder with no {_known()} file in it")
            found += [(p, p.relative_to(path).as_posix()) for p in inside]
        elif path.is_file():
            found.append((path, path.name))
        elif glob.has_magic(given):
            matched = sorted(Path(m) for m in glob.glob(given, recursive=True) if Path(m).is_file())
            if not matched:
                raise BadInput(f"{given}: matches no file")
            found += [(p, p.name) for p in matched]
        else:
            raise BadInput(f"{given}: no such file or folder")
    seen: set[Path] = set()
    unique = []
    for path, name in found:
        if path.resolve() not in seen:
            seen.add(path.resolve())
            unique.append((path, name))
    names = [name for _, name in unique]
    clash = len(set(names)) < len(names)  # two inputs of one name: name each by its path
    return [
        InputFile(path, str(path) if clash else name, _format(path, input_format))
        for path, name in unique
    ]


def _format(path: Path, input_format: str) -> str:
    if input_format != "auto":
        return input_format
    if path.suffix.lower() not in FORMATS:
        raise BadInput(
            f"{path}: cannot tell its format from its name ({_known()}); "
            f"give --input-format {'|'.join(INPUT_FORMATS[1:])}"
        )
    return FORMATS[path.suffix.lower()]


def _known() -> str:
    return ", ".join(FORMATS)


def count(file: InputFile) -> int:
    """The records `read` will yield from `file`, for the progress bar and the parts."""
    try:
        if file.format == "parquet":
            import pyarrow.parquet as pq

            return int(pq.ParquetFile(file.path).metadata.num_rows)
        if file.format == "csv":
            with open(file.path, newline="", encoding="utf-8", errors="replace") as f:
                return max(0, sum(1 for _ in csv.reader(f)) - 1)
        with open(file.path, "rb") as f:
            return sum(1 for line in f if line.strip())
    except OSError as exc:
        raise BadInput(f"{file.name}: cannot read it ({exc.strerror or exc})") from None
    except csv.Error as exc:
        raise BadInput(f"{file.name}: not valid CSV ({exc})") from None
    except Exception as exc:  # pyarrow's errors for a file that is not Parquet
        raise BadInput(f"{file.name}: not a Parquet file ({exc})") from None


def read(files: Sequence[InputFile], fields: Fields) -> Iterator[Record]:
    """Every record of every file, in order, with its position."""
    position = 0
    for file in files:
        for where, text, record_id, problem, raw in _read_file(file, fields):
            yield Record(
                position, where, record_id or where, text, problem, raw if problem else None
            )
            position += 1


_Row = tuple[str, str | None, str | None, str | None, Any]  # where, text, id, problem, raw


def _read_file(file: InputFile, fields: Fields) -> Iterator[_Row]:
    readers = {"jsonl": _jsonl, "csv": _csv, "parquet": _parquet, "text": _text}
    try:
        yield from readers[file.format](file, fields)
    except OSError as exc:
        raise BadInput(f"{file.name}: cannot read it ({exc.strerror or exc})") from None


def _text(file: InputFile, fields: Fields) -> Iterator[_Row]:
    with open(file.path, "rb") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"{file.name}:{number}"
            try:
                text = line.decode("utf-8").rstrip("\r\n")
            except UnicodeDecodeError:
                yield where, None, None, "not valid UTF-8", line.decode("utf-8", "replace")
                continue
            yield where, text, None, None, text


def _jsonl(file: InputFile, fields: Fields) -> Iterator[_Row]:
    with open(file.path, "rb") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"{file.name}:{number}"
            raw = line.decode("utf-8", "replace").rstrip("\r\n")
            try:
                record = orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                yield where, None, None, f"not valid JSON ({exc})", raw
                continue
            if not isinstance(record, dict):
                yield where, None, None, f"not a JSON object but {_kind(record)}", raw
                continue
            yield (where, *_fields_of(record, fields), raw)


def _csv(file: InputFile, fields: Fields) -> Iterator[_Row]:
    with open(file.path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        try:
            header = reader.fieldnames or []
            for name in (fields.text, fields.id):
                if name is not None and name not in header:
                    raise BadInput(
                        f"{file.name}: no column '{name}' (its columns: {', '.join(header)})"
                    )
            start = reader.line_num + 1
            for row in reader:
                where = f"{file.name}:{start}"
                start = reader.line_num + 1
                if None in row.values():
                    yield where, None, None, "fewer columns than the header", row
                    continue
                yield (where, *_fields_of(row, fields), row)
        except csv.Error as exc:
            raise BadInput(f"{file.name}:{reader.line_num}: not valid CSV ({exc})") from None
        except UnicodeDecodeError:
            raise BadInput(f"{file.name}:{reader.line_num + 1}: not valid UTF-8") from None


def _parquet(file: InputFile, fields: Fields) -> Iterator[_Row]:
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(file.path)
    except OSError:
        raise
    except Exception as exc:
        raise BadInput(f"{file.name}: not a Parquet file ({exc})") from None
    columns = [name for name in (fields.text, fields.id) if name is not None]
    missing = [name for name in columns if name not in parquet.schema_arrow.names]
    if missing:
        raise BadInput(
            f"{file.name}: no column '{missing[0]}' "
            f"(its columns: {', '.join(parquet.schema_arrow.names)})"
        )
    number = 0
    for batch in parquet.iter_batches(batch_size=_PARQUET_BATCH_ROWS, columns=columns):
        for row in batch.to_pylist():
            number += 1
            yield (f"{file.name}:{number}", *_fields_of(row, fields), row)


def _fields_of(record: dict[str, Any], fields: Fields) -> tuple[str | None, str | None, str | None]:
    """text, id, problem."""
    if fields.text not in record:
        return None, None, f"no '{fields.text}' field"
    text = record[fields.text]
    if not isinstance(text, str):
        return None, None, f"'{fields.text}' is {_kind(text)}, not a string"
    if fields.id is None:
        return text, None, None
    if fields.id not in record:
        return None, None, f"no '{fields.id}' field"
    record_id = record[fields.id]
    if isinstance(record_id, bool) or not isinstance(record_id, str | int):
        return None, None, f"'{fields.id}' is {_kind(record_id)}, not a string or a number"
    return text, str(record_id), None


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    names = {
        bool: "a boolean",
        int: "a number",
        float: "a number",
        list: "a list",
        dict: "an object",
    }
    return names.get(type(value), f"a {type(value).__name__}")


def signature(files: Sequence[InputFile]) -> list[dict[str, Any]]:
    """What the output folder remembers of its inputs, to refuse resuming over changed ones."""
    out = []
    for file in files:
        stat = os.stat(file.path)
        out.append({"name": file.name, "bytes": stat.st_size, "modified_ns": stat.st_mtime_ns})
    return out
