"""The Batch API's durable state: file and batch records in SQLite (WAL, so readers never wait
for the runner's commits), the files themselves on disk beside it. A record belongs to its owner:
the digest of the API key that created it ("" without keys), never the key itself."""

from __future__ import annotations

import hashlib
import json
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

DATABASE = "embedserve.sqlite3"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS files (
    id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    filename TEXT NOT NULL,
    purpose TEXT NOT NULL,
    bytes INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER
);
CREATE INDEX IF NOT EXISTS files_by_owner ON files (owner, created_at);
CREATE TABLE IF NOT EXISTS batches (
    id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    status TEXT NOT NULL,
    record TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS batches_by_owner ON batches (owner, created_at);
CREATE INDEX IF NOT EXISTS batches_by_status ON batches (status);
"""

UNFINISHED = ("validating", "in_progress", "finalizing", "cancelling")


def owner_of(key: str | None) -> str:
    """Who owns what a request creates: a digest of its API key, or "" (one user, no keys)."""
    return hashlib.sha256(key.encode()).hexdigest() if key else ""


def new_id(prefix: str) -> str:
    return f"{prefix}{secrets.token_hex(12)}"


@dataclass(frozen=True)
class FileRecord:
    id: str
    owner: str
    filename: str
    purpose: str
    bytes: int
    created_at: int
    expires_at: int | None = None


@dataclass(frozen=True)
class Progress:
    """How far a batch's run has come, committed together: the input lines done, and the
    lengths of its output and error files when they were (a resumed run cuts them there)."""

    lines: int = 0
    output_bytes: int = 0
    error_bytes: int = 0


@dataclass(frozen=True)
class BatchRecord:
    id: str
    owner: str
    input_file_id: str
    endpoint: str
    completion_window: str
    created_at: int
    expires_at: int
    status: str = "validating"
    metadata: dict[str, str] | None = None
    output_file_id: str | None = None
    error_file_id: str | None = None
    errors: list[dict[str, Any]] | None = None
    total: int = 0
    completed: int = 0
    failed: int = 0
    progress: Progress = field(default_factory=Progress)
    in_progress_at: int | None = None
    finalizing_at: int | None = None
    completed_at: int | None = None
    failed_at: int | None = None
    expired_at: int | None = None
    cancelling_at: int | None = None
    cancelled_at: int | None = None

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> BatchRecord:
        values = json.loads(text)
        values["progress"] = Progress(**values.get("progress", {}))
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})


class Store:
    """One SQLite database under the data folder, and the files' folder beside it. Calls are
    short (one row), made from the event loop under one lock."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.files_folder = folder / "files"
        self.files_folder.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(folder / DATABASE, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")  # WAL: a crash loses no committed row
        self._db.executescript(_SCHEMA)
        self._lock = threading.Lock()

    @staticmethod
    def exists(folder: Path) -> bool:
        return (folder / DATABASE).exists()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def path_of(self, file_id: str) -> Path:
        return self.files_folder / file_id

    # -- files ---------------------------------------------------------------------------------

    def add_file(self, record: FileRecord) -> None:
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO files VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    record.id,
                    record.owner,
                    record.filename,
                    record.purpose,
                    record.bytes,
                    record.created_at,
                    record.expires_at,
                ),
            )

    def file(self, file_id: str, owner: str) -> FileRecord | None:
        with self._lock:
            row = self._db.execute(
                "SELECT * FROM files WHERE id = ? AND owner = ?", (file_id, owner)
            ).fetchone()
        return FileRecord(*row) if row else None

    def files(
        self, owner: str, purpose: str | None, limit: int, ascending: bool, after: str | None
    ) -> list[FileRecord]:
        """A page of the owner's files by creation (the id breaks ties), after the file
        `after` in that order."""
        where, values = ["owner = ?"], [owner]
        if purpose:
            where.append("purpose = ?")
            values.append(purpose)
        if after:
            anchor = self.file(after, owner)
            if anchor is not None:
                sign = ">" if ascending else "<"
                where.append(f"(created_at, id) {sign} (?, ?)")
                values += [anchor.created_at, anchor.id]  # type: ignore[list-item]
        order = "ASC" if ascending else "DESC"
        query = (
            f"SELECT * FROM files WHERE {' AND '.join(where)} "
            f"ORDER BY created_at {order}, id {order} LIMIT ?"
        )
        with self._lock:
            rows = self._db.execute(query, (*values, limit)).fetchall()
        return [FileRecord(*row) for row in rows]

    def delete_file(self, file_id: str, owner: str) -> bool:
        with self._lock:
            deleted = self._db.execute(
                "DELETE FROM files WHERE id = ? AND owner = ?", (file_id, owner)
            ).rowcount
        if deleted:
            self.path_of(file_id).unlink(missing_ok=True)
        return bool(deleted)

    def expired_files(self, now: int) -> Iterator[FileRecord]:
        with self._lock:
            rows = self._db.execute(
                "SELECT * FROM files WHERE expires_at IS NOT NULL AND expires_at <= ?", (now,)
            ).fetchall()
        return (FileRecord(*row) for row in rows)

    # -- batches -------------------------------------------------------------------------------

    def save(self, batch: BatchRecord) -> None:
        """Insert or replace the batch's record, in one transaction."""
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO batches VALUES (?, ?, ?, ?, ?)",
                (batch.id, batch.owner, batch.created_at, batch.status, batch.to_json()),
            )

    def change(
        self, batch_id: str, mutate: Callable[[BatchRecord], BatchRecord | None]
    ) -> BatchRecord:
        """Read, change and write the batch's record in one transaction (another process may
        change it too: a cancel that reached another worker); `mutate` returning None changes
        nothing. The record as it now stands."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                row = self._db.execute(
                    "SELECT record FROM batches WHERE id = ?", (batch_id,)
                ).fetchone()
                batch = BatchRecord.from_json(row[0])
                changed = mutate(batch)
                if changed is not None:
                    self._db.execute(
                        "UPDATE batches SET status = ?, record = ? WHERE id = ?",
                        (changed.status, changed.to_json(), batch_id),
                    )
                    batch = changed
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return batch

    def update(self, batch_id: str, **changes: Any) -> BatchRecord:
        return self.change(batch_id, lambda batch: replace(batch, **changes))

    def batch(self, batch_id: str, owner: str | None = None) -> BatchRecord | None:
        """The batch, if `owner` owns it (None: whoever does)."""
        query, values = "SELECT record FROM batches WHERE id = ?", [batch_id]
        if owner is not None:
            query += " AND owner = ?"
            values.append(owner)
        with self._lock:
            row = self._db.execute(query, values).fetchone()
        return BatchRecord.from_json(row[0]) if row else None

    def batches(self, owner: str, limit: int, after: str | None) -> list[BatchRecord]:
        """A page of the owner's batches, newest first, after the batch `after`."""
        where, values = "owner = ?", [owner]
        anchor = self.batch(after, owner) if after else None
        if anchor is not None:
            where += " AND (created_at, id) < (?, ?)"
            values += [anchor.created_at, anchor.id]  # type: ignore[list-item]
        query = (
            f"SELECT record FROM batches WHERE {where} ORDER BY created_at DESC, id DESC LIMIT ?"
        )
        with self._lock:
            rows = self._db.execute(query, (*values, limit)).fetchall()
        return [BatchRecord.from_json(row[0]) for row in rows]

    def unfinished(self) -> list[BatchRecord]:
        """Batches still to be run, validated, finalized or cancelled, oldest first."""
        marks = ", ".join("?" for _ in UNFINISHED)
        with self._lock:
            rows = self._db.execute(
                f"SELECT record FROM batches WHERE status IN ({marks}) ORDER BY created_at, id",
                UNFINISHED,
            ).fetchall()
        return [BatchRecord.from_json(row[0]) for row in rows]

    def count_by_status(self) -> dict[str, int]:
        with self._lock:
            rows = self._db.execute(
                "SELECT status, COUNT(*) FROM batches GROUP BY status"
            ).fetchall()
        return dict(rows)


def now() -> int:
    return int(time.time())
