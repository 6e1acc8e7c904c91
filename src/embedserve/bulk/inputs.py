"""A job's inputs: files, globs and folders of JSON Lines, CSV, Parquet or plain text, read lazily
as records in one fixed order, so that a record has the same position on every run (resuming
depends on it)."""

from __future__ import annotations

import csv
import glob
import os
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import IO, Any

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


def expand(
    inputs: Sequence[str], input_format: str = "auto", exclude: Path | None = None
) -> list[InputFile]:
    """The files that INPUT arguments name, in order: a file, a glob (sorted) or a folder (its
    files with a known suffix, sorted, recursively), leaving out what is under `exclude` (the
    output folder). A file named twice is read once."""
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
    skip = exclude.resolve() if exclude is not None else None
    for path, name in found:
        if skip is not None and path.resolve().is_relative_to(skip):
            continue
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


@dataclass(frozen=True)
class Cursor:
    """Where a record starts: its file, the byte offset and number of its first line (text,
    JSON Lines, CSV), and its row among the file's records (Parquet)."""

    file: int = 0
    offset: int = 0
    line: int = 1
    row: int = 0


def scan(files: Sequence[InputFile], every: int) -> tuple[int, list[Cursor]]:
    """The number of records, and where every `every`-th one starts (record 0 included): so
    that a worker can read any part of `every` records without reading what comes before it."""
    total = 0
    starts: list[Cursor] = []
    for index, file in enumerate(files):
        try:
            for cursor in _record_starts(file):
                if total % every == 0:
                    starts.append(replace(cursor, file=index))
                total += 1
        except OSError as exc:
            raise BadInput(f"{file.name}: cannot read it ({exc.strerror or exc})") from None
        except csv.Error as exc:
            raise BadInput(f"{file.name}: not valid CSV ({exc})") from None
        except ValueError as exc:  # pyarrow's ArrowInvalid: a file that is not Parquet
            if file.format != "parquet":
                raise
            raise BadInput(f"{file.name}: not a Parquet file ({exc})") from None
    return total, starts


def _record_starts(file: InputFile) -> Iterator[Cursor]:
    if file.format == "parquet":
        import pyarrow.parquet as pq

        count = int(pq.ParquetFile(file.path).metadata.num_rows)
        yield from (Cursor(row=row) for row in range(count))
        return
    if file.format != "csv":
        with open(file.path, "rb") as f:
            offset = 0
            for number, line in enumerate(f, 1):
                if line.strip():
                    yield Cursor(offset=offset, line=number)
                offset += len(line)
        return
    records = _csv_rows(file)
    next(records, None)  # the header
    for number, at, _, _ in records:
        yield Cursor(offset=at, line=number)


class _Lines:
    """A binary file's lines decoded one by one for csv.reader, remembering where the current
    record began and whether a line of it was not UTF-8."""

    def __init__(self, f: IO[bytes], offset: int, line: int) -> None:
        f.seek(offset)
        self._f = f
        self.number = line - 1
        self._at = offset
        self.first: tuple[int, int] = (line, offset)
        self.bad = False
        self._fresh = True

    def __iter__(self) -> Iterator[str]:
        for raw in self._f:
            self.number += 1
            if self._fresh:
                self.first, self._fresh = (self.number, self._at), False
            self._at += len(raw)
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                self.bad, text = True, raw.decode("utf-8", "replace")
            yield text.lstrip("\ufeff") if self.number == 1 else text  # a BOM is not a name

    def take(self) -> tuple[int, int, bool]:
        """The record just read: its first line, that line's offset, whether it was bad."""
        (number, offset), bad = self.first, self.bad
        self._fresh, self.bad = True, False
        return number, offset, bad


def _csv_rows(
    file: InputFile, offset: int = 0, line: int = 1
) -> Iterator[tuple[int, int, list[str], bool]]:
    """(first line, its offset, fields, not UTF-8) of each CSV record from `offset` on; blank
    lines are skipped."""
    with open(file.path, "rb") as f:
        lines = _Lines(f, offset, line)
        try:
            for row in csv.reader(lines):
                number, at, bad = lines.take()
                if row:
                    yield number, at, row, bad
        except csv.Error as exc:
            raise BadInput(f"{file.name}:{lines.number}: not valid CSV ({exc})") from None


def read(
    files: Sequence[InputFile], fields: Fields, start: Cursor | None = None, position: int = 0
) -> Iterator[Record]:
    """Every record of every file in order, with its position, from `start` (the record at
    `position`) on: a part's reader stops after its records."""
    start = start or Cursor()
    for index in range(start.file, len(files)):
        file = files[index]
        at = start if index == start.file else Cursor(file=index)
        for where, text, record_id, problem, raw in _read_file(file, fields, at):
            yield Record(
                position, where, record_id or where, text, problem, raw if problem else None
            )
            position += 1


_Row = tuple[str, str | None, str | None, str | None, Any]  # where, text, id, problem, raw


def _read_file(file: InputFile, fields: Fields, at: Cursor) -> Iterator[_Row]:
    readers = {"jsonl": _jsonl, "csv": _csv, "parquet": _parquet, "text": _text}
    try:
        yield from readers[file.format](file, fields, at)
    except OSError as exc:
        raise BadInput(f"{file.name}: cannot read it ({exc.strerror or exc})") from None


def _lines(file: InputFile, at: Cursor) -> Iterator[tuple[int, bytes]]:
    with open(file.path, "rb") as f:
        f.seek(at.offset)
        yield from enumerate(f, at.line)


def _text(file: InputFile, fields: Fields, at: Cursor) -> Iterator[_Row]:
    for number, line in _lines(file, at):
        if not line.strip():
            continue
        where = f"{file.name}:{number}"
        try:
            text = line.decode("utf-8").rstrip("\r\n")
        except UnicodeDecodeError:
            yield where, None, None, "not valid UTF-8", line.decode("utf-8", "replace")
            continue
        yield where, text, None, None, text


def _jsonl(file: InputFile, fields: Fields, at: Cursor) -> Iterator[_Row]:
    for number, line in _lines(file, at):
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


def _csv(file: InputFile, fields: Fields, at: Cursor) -> Iterator[_Row]:
    header = next(_csv_rows(file), (0, 0, [], False))[2]
    for name in (fields.text, fields.id):
        if name is not None and name not in header:
            raise BadInput(f"{file.name}: no column '{name}' (its columns: {', '.join(header)})")
    rows = _csv_rows(file, at.offset, at.line)
    if not at.offset:
        next(rows, None)  # the header
    for number, _, row, bad in rows:
        where = f"{file.name}:{number}"
        record = dict(zip(header, row, strict=False))
        raw = record if len(row) <= len(header) else row
        if bad:
            yield where, None, None, "not valid UTF-8", raw
        elif len(row) < len(header):
            yield where, None, None, "fewer columns than the header", raw
        elif len(row) > len(header):
            yield where, None, None, "more columns than the header (an unquoted comma?)", raw
        else:
            yield (where, *_fields_of(record, fields), raw)


def _parquet(file: InputFile, fields: Fields, at: Cursor) -> Iterator[_Row]:
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(file.path)
    except ValueError as exc:  # pyarrow's ArrowInvalid: not Parquet (a missing pyarrow is ours)
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
        if number + batch.num_rows <= at.row:  # before the part: not even decoded
            number += batch.num_rows
            continue
        rows = batch.to_pylist()
        skip = max(0, at.row - number)
        number += skip
        for row in rows[skip:]:
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
