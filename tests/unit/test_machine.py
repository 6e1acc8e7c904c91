"""Cores counted as a container's limits allow: its CPU set and its cgroup's CPU quota."""

from __future__ import annotations

import mmap
import os
from pathlib import Path

import pytest

from embedserve.machine import (
    cgroup_cpu_quota,
    default_streams,
    page_out_files_under,
    usable_cores,
)
from tests.conftest import resident_kib

AFFINITY = len(os.sched_getaffinity(0))


def cgroup_v2(tmp_path: Path, limits: dict[str, str], own: str = "/kubepods/pod1/app") -> Path:
    """A fake /sys/fs/cgroup (v2) and /proc/self/cgroup: `limits` maps a cgroup's path to the
    content of its cpu.max."""
    root = tmp_path / "cgroup"
    for path, cpu_max in limits.items():
        folder = root / path.strip("/")
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "cpu.max").write_text(cpu_max + "\n")
    (root / own.strip("/")).mkdir(parents=True, exist_ok=True)
    proc = tmp_path / "proc-self-cgroup"
    proc.write_text(f"0::{own}\n")
    return proc


def test_a_cgroup_quota_of_two_cpus_gives_two_cores(tmp_path: Path) -> None:
    proc = cgroup_v2(tmp_path, {"/kubepods/pod1/app": "200000 100000"})
    assert cgroup_cpu_quota(tmp_path / "cgroup", proc) == 2.0
    assert usable_cores(tmp_path / "cgroup", proc) == min(AFFINITY, 2)


def test_an_ancestors_quota_binds_and_the_smallest_wins(tmp_path: Path) -> None:
    proc = cgroup_v2(tmp_path, {"/kubepods": "100000 100000", "/kubepods/pod1/app": "max 100000"})
    assert cgroup_cpu_quota(tmp_path / "cgroup", proc) == 1.0
    assert usable_cores(tmp_path / "cgroup", proc) == 1


def test_a_fraction_of_a_cpu_still_gets_one_core(tmp_path: Path) -> None:
    proc = cgroup_v2(tmp_path, {"/kubepods/pod1/app": "50000 100000"})
    assert usable_cores(tmp_path / "cgroup", proc) == 1


@pytest.mark.parametrize("content", ["max 100000", "garbage", ""])
def test_no_quota_leaves_the_cpu_set(tmp_path: Path, content: str) -> None:
    proc = cgroup_v2(tmp_path, {"/kubepods/pod1/app": content})
    assert cgroup_cpu_quota(tmp_path / "cgroup", proc) is None
    assert usable_cores(tmp_path / "cgroup", proc) == AFFINITY


def test_inside_a_container_the_namespace_root_holds_the_quota(tmp_path: Path) -> None:
    proc = cgroup_v2(tmp_path, {"/": "300000 100000"}, own="/")
    assert cgroup_cpu_quota(tmp_path / "cgroup", proc) == 3.0


def test_cgroup_v1_quota_and_period(tmp_path: Path) -> None:
    folder = tmp_path / "cgroup" / "cpu,cpuacct" / "docker" / "abc"
    folder.mkdir(parents=True)
    (folder / "cpu.cfs_quota_us").write_text("150000\n")
    (folder / "cpu.cfs_period_us").write_text("100000\n")
    proc = tmp_path / "proc-self-cgroup"
    proc.write_text("12:memory:/docker/abc\n4:cpu,cpuacct:/docker/abc\n")
    assert cgroup_cpu_quota(tmp_path / "cgroup", proc) == 1.5
    assert usable_cores(tmp_path / "cgroup", proc) == 1


def test_no_cgroup_file_at_all(tmp_path: Path) -> None:
    assert usable_cores(tmp_path / "none", tmp_path / "none") == AFFINITY


def test_streams_follow_the_cores() -> None:
    assert [default_streams(n) for n in (1, 2, 4, 8, 16, 64)] == [1, 1, 2, 2, 4, 16]


def written(path: Path, size: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as f:
        f.write(os.urandom(size))
        f.flush()
        os.fsync(f.fileno())  # clean pages: a dirty one would wait for writeback
    return path


@pytest.mark.skipif(not Path("/proc/self/smaps").exists(), reason="Linux's /proc only")
def test_pages_mapped_from_files_under_a_folder_leave_resident_memory(tmp_path: Path) -> None:
    size = 8 << 20
    blob = written(tmp_path / "cache" / "model.blob", size)
    other = written(tmp_path / "elsewhere.bin", size)
    with (
        blob.open("rb") as a,
        other.open("rb") as b,
        mmap.mmap(a.fileno(), 0, access=mmap.ACCESS_READ) as mapped,
        mmap.mmap(b.fileno(), 0, access=mmap.ACCESS_READ) as kept,
    ):
        pages = range(0, size, mmap.PAGESIZE)
        before = bytes(mapped[i] for i in pages)  # every page read: resident
        bytes(kept[i] for i in pages)
        assert resident_kib(blob) >= size // 1024 * 0.9
        assert page_out_files_under(tmp_path / "cache") == size
        assert resident_kib(blob) < size // 1024 * 0.1
        assert resident_kib(other) >= size // 1024 * 0.9  # not under the folder: kept
        assert bytes(mapped[i] for i in pages) == before  # read again from the file


def test_the_peak_of_a_load_is_measured_from_a_fresh_start() -> None:
    from embedserve.machine import peak_resident_bytes, resident_bytes, start_peak_resident

    size = 64 * 2**20
    assert start_peak_resident()
    before = resident_bytes()
    transient = mmap.mmap(-1, size)  # its own mapping: unmapped, it leaves at once
    for offset in range(0, size, mmap.PAGESIZE):
        transient[offset] = 1  # touched: resident
    transient.close()
    peak, after = peak_resident_bytes(), resident_bytes()
    assert before is not None
    assert peak is not None
    assert after is not None
    assert peak - before >= size - 4 * 2**20
    assert peak - after >= size - 4 * 2**20  # gone now, still the peak
    assert start_peak_resident()  # measured afresh: the earlier peak is forgotten
    again = peak_resident_bytes()
    assert again is not None
    assert again < peak - size // 2
