"""What this machine offers a server: the cores this process may use, native bf16, and how many
forward passes to run at once on them. Counted once per process (`cores()`) and handed down."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
from collections.abc import Callable
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
PROC_CGROUP = Path("/proc/self/cgroup")


_share: int | None = None


def use_at_most(count: int) -> None:
    """Use at most `count` cores in this process: a Ray actor's share of its node, which it
    does not own alone. Before anything is loaded."""
    global _share
    _share = max(1, count)
    cores.cache_clear()


def sharing_cores() -> bool:
    """Whether this process was given a share of its node (`use_at_most`): other processes run
    on the same cores, so it must not pin its threads (each would pin to the same first ones)."""
    return _share is not None


@functools.cache
def cores() -> int:
    """The cores this process may use, counted once: see `usable_cores`."""
    usable = usable_cores()
    return min(usable, _share) if _share else usable


def usable_cores(cgroup_root: Path = CGROUP_ROOT, proc_cgroup: Path = PROC_CGROUP) -> int:
    """The CPUs this process may run on (its affinity, a container's CPU set), capped by its
    cgroup's CPU quota: a container limited to 2 CPUs on a 64-core host gets 2, not 64."""
    try:
        count = len(os.sched_getaffinity(0)) or 1
    except AttributeError:  # not on Linux
        count = os.cpu_count() or 1
    quota = cgroup_cpu_quota(cgroup_root, proc_cgroup)
    return count if quota is None else max(1, min(count, int(quota)))


def cgroup_cpu_quota(cgroup_root: Path, proc_cgroup: Path) -> float | None:
    """CPUs' worth of time the process's cgroup (or an ancestor) allows, or None when no quota
    is set; cgroup v2 (cpu.max) or v1 (cpu.cfs_quota_us over cpu.cfs_period_us)."""
    limits: list[float] = []
    with contextlib.suppress(OSError):
        for line in proc_cgroup.read_text().splitlines():
            _, controllers, path = line.split(":", 2)
            if controllers == "":  # v2: one unified hierarchy
                limits += _quotas(cgroup_root, path, _v2_quota)
            elif "cpu" in controllers.split(","):
                for mount in (controllers, "cpu", "cpu,cpuacct"):
                    if (cgroup_root / mount).is_dir():
                        limits += _quotas(cgroup_root / mount, path, _v1_quota)
                        break
    return min(limits) if limits else None


def _quotas(mount: Path, path: str, read: Callable[[Path], float | None]) -> list[float]:
    """The quotas on the way from the process's cgroup up to the mount's root (an ancestor's
    limit binds too). Inside a container the host's path may not exist: then the root's."""
    folder = mount / path.strip("/")
    if not folder.is_dir():
        folder = mount
    found = []
    while True:
        quota = read(folder)
        if quota is not None:
            found.append(quota)
        if folder == mount or mount not in folder.parents:
            return found
        folder = folder.parent


def _v2_quota(folder: Path) -> float | None:
    with contextlib.suppress(OSError, ValueError):
        quota, period = (folder / "cpu.max").read_text().split()[:2]
        if quota != "max":
            return int(quota) / int(period)
    return None


def _v1_quota(folder: Path) -> float | None:
    with contextlib.suppress(OSError, ValueError):
        quota = int((folder / "cpu.cfs_quota_us").read_text())
        period = int((folder / "cpu.cfs_period_us").read_text())
        if quota > 0 and period > 0:
            return quota / period
    return None


BF16_FLAGS = ("amx_bf16", "avx512_bf16")
"""The CPU flags of native bf16 dot products (AMX, AVX512-BF16)."""


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> frozenset[str]:
    """The feature flags the kernel reports for this CPU (empty where it reports none)."""
    with contextlib.suppress(OSError):
        for line in cpuinfo.read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def native_bf16() -> tuple[str, ...]:
    """The native bf16 flags this CPU has (none: it would emulate bf16, slowly)."""
    flags = cpu_flags()
    return tuple(flag for flag in BF16_FLAGS if flag in flags)


VNNI_FLAGS = ("amx_int8", "avx512_vnni", "avx_vnni")
"""The CPU flags of int8 dot products that accumulate in 32 bits (AMX, VNNI). Without them
OpenVINO's int8 kernels sum pairs in 16 bits and saturate, and keep some layers in f32."""


def native_int8() -> tuple[str, ...]:
    """The int8 dot-product flags this CPU has."""
    flags = cpu_flags()
    return tuple(flag for flag in VNNI_FLAGS if flag in flags)


def cpu_supports_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX512-BF16 or AMX)."""
    return bool(native_bf16())


def cpu_identity() -> str:
    """What a numeric verdict about this CPU depends on: its model and its flags."""
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    text = model + " " + " ".join(sorted(cpu_flags()))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def default_streams(cores: int) -> int:
    """CPU forward passes to run at once. Below 4 cores, one pass on every core: with two
    streams a lone request needs a second compiled graph to run on every core, its weights
    again, and on 2 cores the second stream bought 7-8% more inputs/s under load for 50% more
    resident memory (docs/performance.md). From 4 cores, independent passes outrun one split
    over every core (an embedding model's matrices are small and a pass waits for its threads
    at every op); above 8, streams of 4 threads keep a lone request's latency low."""
    return 1 if cores < 4 else max(2, cores // 4)


def resident_bytes() -> int | None:
    """This process's resident memory now (Linux: /proc/self/statm), None where unknown."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return pages * os.sysconf("SC_PAGE_SIZE")


def start_peak_resident() -> bool:
    """Start measuring this process's peak resident memory afresh (Linux: the high-water mark
    is reset by writing 5 to /proc/self/clear_refs); False where it cannot be."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def peak_resident_bytes() -> int | None:
    """The most resident memory this process has held since start_peak_resident (VmHWM)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def return_freed_heap() -> None:
    """Give the heap's free pages back to the system (glibc's malloc_trim), after a large
    short-lived allocation is dropped: freed, they stay resident in the allocator otherwise."""
    import ctypes

    with contextlib.suppress(OSError, AttributeError):  # not glibc: nothing to ask
        ctypes.CDLL(None).malloc_trim(0)


MADV_PAGEOUT = 21  # Linux 5.4+; the mmap module names it only for its own maps


def page_out_files_under(folder: Path) -> int:
    """Hand the pages of this process's file mappings under `folder` back to the page cache
    (madvise MADV_PAGEOUT): they leave its resident memory, and a page read again faults back
    in from the file. Only clean file pages go; nothing is lost. The bytes of the mappings
    advised (0 where none, or off Linux)."""
    import ctypes

    try:
        maps = Path("/proc/self/maps").read_text().splitlines()
        libc = ctypes.CDLL(None, use_errno=True)
    except OSError:
        return 0
    prefix = str(folder.resolve()) + os.sep
    advised = 0
    for line in maps:
        fields = line.split(maxsplit=5)
        if len(fields) < 6 or not fields[5].startswith(prefix):
            continue
        start, end = (int(edge, 16) for edge in fields[0].split("-"))
        if libc.madvise(ctypes.c_void_p(start), ctypes.c_size_t(end - start), MADV_PAGEOUT) == 0:
            advised += end - start
    return advised
