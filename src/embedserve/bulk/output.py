"""A job's output folder: Parquet part files that appear only when complete (written under a
hidden name, then renamed), and the folder's own bookkeeping in files whose names start with
`_`, which pyarrow and pandas leave out when they read the folder as one table."""

from __future__ import annotations

import contextlib
import fcntl
import io
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from embedserve.errors import BadInput

MANIFEST = "_manifest.json"
REJECTS = "_rejects.jsonl"
LOCK = "_lock"
ENGINE = "_engine.json"  # on Ray: the engine the first actor claimed for the folder's parts
_PARTS = "_parts"  # npy format: the parts, assembled into one matrix at the end
_UNFINISHED = ".inprogress"


@dataclass
class PartRows:
    """The rows of one part, in input order."""

    ids: list[str]
    vectors: np.ndarray
    chunks: list[int] | None = None
    starts: list[int] | None = None
    ends: list[int] | None = None
    texts: list[str] | None = None


def write_atomically(path: Path, data: bytes) -> None:
    """`path` holds `data` whole or keeps what it held: written beside it, synced, renamed."""
    temporary = path.with_name(f".{path.name}{_UNFINISHED}")
    with open(temporary, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(temporary, path)
    _sync_folder(path.parent)


def _sync_folder(folder: Path) -> None:
    with contextlib.suppress(OSError):  # not every filesystem syncs a folder
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


class OutputFolder:
    """Parts named by their index; a part's file exists only once it is complete."""

    def __init__(self, folder: Path, fmt: str, metadata: dict[str, str] | None = None) -> None:
        self.folder = folder
        self.format = fmt
        self.metadata = metadata or {}  # the model, precision, input type and version: per part
        self.engine_before: dict[str, str] | None = None  # of the parts a resumed folder holds

    def open(self, manifest: dict[str, Any]) -> set[int]:
        """Create the folder or resume it: refuse one written with other options, drop what an
        interrupted run left half-written. The parts already complete. A `manifest` without an
        engine gets the folder's earlier one."""
        try:
            return self._open(manifest)
        except OSError as exc:
            raise BadInput(f"{self.folder}: cannot write there ({exc.strerror or exc})") from None

    def _open(self, manifest: dict[str, Any]) -> set[int]:
        path = self.folder / MANIFEST
        if self.folder.exists() and not self.folder.is_dir():
            raise BadInput(f"{self.folder}: a file, not a folder; give a folder as --output")
        if path.exists():
            before = orjson.loads(path.read_bytes())
            self.engine_before = before.get("engine") or self.claimed()
            _check_same({**before, "engine": self.engine_before}, manifest, self.folder)
            if self.engine_before:  # kept for a Ray run, whose actors learn theirs later
                manifest.setdefault("engine", self.engine_before)
        elif self.folder.exists() and any(p.name != LOCK for p in self.folder.iterdir()):
            raise BadInput(
                f"{self.folder}: holds files but no {MANIFEST}, so it is not a folder this "
                f"command wrote; give an empty or new --output folder"
            )
        self._parts_folder().mkdir(parents=True, exist_ok=True)
        self.close()
        self._lock = open(self.folder / LOCK, "wb")  # noqa: SIM115 — held while the job runs
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise BadInput(f"{self.folder}: another embed job is writing it") from None
        for stale in self.folder.rglob(f".*{_UNFINISHED}"):
            stale.unlink()
        self.write_manifest(manifest)
        return {
            int(p.name.split("-")[1].split(".")[0])
            for p in self._parts_folder().glob("part-*")
            if not p.name.endswith(".ids.jsonl")
        }

    def claim_engine(self, engine: dict[str, str]) -> dict[str, str]:
        """The engine of this folder's parts: the one claimed first, by any worker of any run
        (a Ray actor, before it writes a part), else `engine`, claimed now."""
        path = self.folder / ENGINE
        temporary = path.with_name(f".{ENGINE}.{os.getpid()}{_UNFINISHED}")
        temporary.write_bytes(orjson.dumps(engine))
        try:
            os.link(temporary, path)  # whole or not at all, and never over another's claim
        except FileExistsError:
            pass
        finally:
            temporary.unlink()
        claimed: dict[str, str] = orjson.loads(path.read_bytes())
        return claimed

    def claimed(self) -> dict[str, str] | None:
        path = self.folder / ENGINE
        return orjson.loads(path.read_bytes()) if path.exists() else None

    def write_manifest(self, manifest: dict[str, Any]) -> None:
        write_atomically(self.folder / MANIFEST, orjson.dumps(manifest, option=orjson.OPT_INDENT_2))

    def close(self) -> None:
        """Let another job open the folder."""
        lock = getattr(self, "_lock", None)
        if lock is not None:
            lock.close()

    def _parts_folder(self) -> Path:
        return self.folder / _PARTS if self.format == "npy" else self.folder

    def part_path(self, index: int) -> Path:
        suffix = "npy" if self.format == "npy" else "parquet"
        return self._parts_folder() / f"part-{index:05d}.{suffix}"

    def write_part(self, index: int, rows: PartRows) -> None:
        if self.format == "npy":
            self._write_npy_part(index, rows)
        else:
            self._write_parquet_part(index, rows)

    def _write_parquet_part(self, index: int, rows: PartRows) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        dimension = rows.vectors.shape[1]
        columns: dict[str, pa.Array] = {
            "id": pa.array(rows.ids, pa.string()),
            "embedding": pa.FixedSizeListArray.from_arrays(
                pa.array(rows.vectors.reshape(-1), pa.float32()), dimension
            ),
        }
        if rows.chunks is not None:
            columns["chunk"] = pa.array(rows.chunks, pa.int32())
            columns["start"] = pa.array(rows.starts, pa.int64())
            columns["end"] = pa.array(rows.ends, pa.int64())
        if rows.texts is not None:
            columns["text"] = pa.array(rows.texts, pa.string())
        table = pa.table(columns).replace_schema_metadata(
            {f"embedserve.{key}": value for key, value in self.metadata.items()}
        )
        sink = pa.BufferOutputStream()
        pq.write_table(table, sink, compression="zstd")
        write_atomically(self.part_path(index), sink.getvalue().to_pybytes())

    def _write_npy_part(self, index: int, rows: PartRows) -> None:
        path = self.part_path(index)
        ids = path.with_name(f"{path.stem}.ids.jsonl")
        write_atomically(ids, b"".join(_id_line(rows, n) for n in range(len(rows.ids))))
        matrix = io.BytesIO()
        np.save(matrix, rows.vectors.astype(np.float32, copy=False))
        write_atomically(path, matrix.getvalue())  # after its ids: the matrix marks it complete

    def append_rejects(self, part: int, rejects: Sequence[dict[str, Any]]) -> None:
        """Before the part's file appears: a run that stops in between writes them again, and
        `keep_rejects` drops the first copy."""
        if not rejects:
            return
        with open(self.folder / REJECTS, "ab") as f:
            f.write(b"".join(_json_line({**r, "part": part}) for r in rejects))
            f.flush()
            os.fsync(f.fileno())

    def keep_rejects(self, parts: set[int]) -> None:
        """Keep the rejects of complete parts only: the others are read again."""
        path = self.folder / REJECTS
        if not path.exists():
            return
        temporary = path.with_name(f".{path.name}{_UNFINISHED}")
        with open(path, "rb") as old, open(temporary, "wb") as new:
            for line in old:
                try:
                    part = orjson.loads(line)["part"]
                except (orjson.JSONDecodeError, KeyError, TypeError):
                    continue  # cut short by a kill: its part is not complete either
                if part in parts:
                    new.write(line)
            new.flush()
            os.fsync(new.fileno())
        os.replace(temporary, path)

    def finish(self, parts: int, manifest: dict[str, Any]) -> None:
        """npy: one matrix and one ids file from the parts. Then the manifest says complete, and
        holds the parts' engine, so the engine's claim (Ray's) is no longer needed."""
        if self.format == "npy":
            self._assemble_npy(parts)
        self.write_manifest({**manifest, "complete": True})
        if "engine" in manifest:
            (self.folder / ENGINE).unlink(missing_ok=True)

    def _assemble_npy(self, parts: int) -> None:
        matrices = [np.load(self.part_path(i), mmap_mode="r") for i in range(parts)]
        dimension = max((m.shape[1] for m in matrices if m.ndim == 2), default=0)
        rows = sum(m.shape[0] for m in matrices)
        temporary = self.folder / f".embeddings.npy{_UNFINISHED}"
        out = np.lib.format.open_memmap(temporary, "w+", np.float32, (rows, dimension))
        at = 0
        for matrix in matrices:
            out[at : at + len(matrix)] = matrix
            at += len(matrix)
        out.flush()
        del out
        os.replace(temporary, self.folder / "embeddings.npy")
        ids = self.folder / f".ids.jsonl{_UNFINISHED}"
        with open(ids, "wb") as f:
            for i in range(parts):
                path = self.part_path(i)
                f.write(path.with_name(f"{path.stem}.ids.jsonl").read_bytes())
        os.replace(ids, self.folder / "ids.jsonl")
        _sync_folder(self.folder)


def _json_line(value: Any) -> bytes:
    """One JSON line; a value JSON cannot hold (Parquet's bytes, decimals) as its repr."""
    return orjson.dumps(value, default=repr) + b"\n"


def _id_line(rows: PartRows, n: int) -> bytes:
    line: dict[str, Any] = {"id": rows.ids[n]}
    if rows.chunks is not None and rows.starts is not None and rows.ends is not None:
        line |= {"chunk": rows.chunks[n], "start": rows.starts[n], "end": rows.ends[n]}
    if rows.texts is not None:
        line["text"] = rows.texts[n]
    return _json_line(line)


def _check_same(before: dict[str, Any], now: dict[str, Any], folder: Path) -> None:
    """A folder is resumed only by the run that started it: same options, same inputs."""
    for option, value in now["options"].items():
        old = before.get("options", {}).get(option)
        if old != value:
            raise BadInput(
                f"{folder} was written with {option}={_shown(old)}, and this run has "
                f"{option}={_shown(value)}; run with the same options to resume it, or give "
                f"another --output folder"
            )
    if "engine" in now:  # on Ray the actors know theirs, and check it with `engine_differs`
        engine_differs(folder, before.get("engine"), now["engine"])
    if before.get("inputs") != now["inputs"]:
        was = {i["name"]: i for i in before.get("inputs", [])}
        changed = next(
            (i["name"] for i in now["inputs"] if was.get(i["name"]) != i),
            next(iter(set(was) - {i["name"] for i in now["inputs"]}), "?"),
        )
        raise BadInput(
            f"{folder} was written from other inputs ({changed} differs or changed since); "
            f"give another --output folder"
        )


def engine_differs(folder: Path, before: dict[str, str] | None, now: dict[str, str]) -> None:
    """Refuse to add parts computed by another engine than the folder's earlier parts."""
    if before and before != now:
        raise BadInput(
            f"{folder}'s parts were embedded in {before['precision']} on {before['backend']}, "
            f"and this run got {now['precision']} on {now['backend']} (another machine?); "
            f"give --precision and --backend to match, or another --output"
        )


def _shown(value: Any) -> str:
    return "none" if value is None else orjson.dumps(value).decode()
