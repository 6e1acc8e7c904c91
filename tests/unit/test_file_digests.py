"""File digests (the build cache's keys) are kept beside the builds: the next start does not
hash the same weights again, and a changed file is hashed anew."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from embedserve.models import cache


@pytest.fixture
def counted(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every file hashed, by name; the process's own memory of digests emptied."""
    hashed: list[str] = []
    real = hashlib.file_digest

    def counting(handle, digest):  # type: ignore[no-untyped-def]
        hashed.append(Path(handle.name).name)
        return real(handle, digest)

    monkeypatch.setattr(hashlib, "file_digest", counting)
    monkeypatch.setattr(cache, "_DIGESTS", {})
    monkeypatch.setattr(cache, "_KEPT_IN", [])
    return hashed


def test_a_digest_is_kept_for_the_next_process(tmp_path: Path, counted: list[str]) -> None:
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(b"weights" * 1000)
    want = hashlib.sha256(weights.read_bytes()).hexdigest()
    cache.remember_digests_in(tmp_path / "cache")
    assert cache.file_digest(weights) == want
    assert counted == ["model.safetensors"]
    cache._DIGESTS.clear()  # as a new process
    assert cache.file_digest(weights) == want
    assert counted == ["model.safetensors"]  # read from the cache, not hashed
    assert len(list((tmp_path / "cache" / "digests").iterdir())) == 1


def test_a_changed_file_is_hashed_again(tmp_path: Path, counted: list[str]) -> None:
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(b"a" * 100)
    cache.remember_digests_in(tmp_path / "cache")
    first = cache.file_digest(weights)
    weights.write_bytes(b"b" * 100)  # the same size, a later modification time
    stat = weights.stat()
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    cache._DIGESTS.clear()
    assert cache.file_digest(weights) == hashlib.sha256(b"b" * 100).hexdigest() != first
    assert counted == ["model.safetensors", "model.safetensors"]


def test_a_damaged_kept_digest_is_hashed_again(tmp_path: Path, counted: list[str]) -> None:
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(b"c" * 100)
    cache.remember_digests_in(tmp_path / "cache")
    cache.file_digest(weights)
    [kept] = (tmp_path / "cache" / "digests").iterdir()
    kept.write_text("half a dig")
    cache._DIGESTS.clear()
    assert cache.file_digest(weights) == hashlib.sha256(b"c" * 100).hexdigest()
    assert len(counted) == 2
