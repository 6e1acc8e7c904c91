"""Joining a Ray cluster, or starting one on this machine for a job or a deployment, and
leaving nothing of it behind. Ray is an extra: `pip install "embedserve[ray]"`."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from embedserve.errors import ConfigError

RAY_MISSING = 'Ray is not installed: pip install "embedserve[ray]"'

# No usage report, no token to manage, and a local cluster's listeners on 127.0.0.1.
_RAY_ENVIRONMENT = {
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_AUTH_MODE": "disabled",
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
}


def import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise ConfigError(RAY_MISSING) from None
    return ray


@contextmanager
def cluster(address: str) -> Iterator[Any]:
    """Ray, connected to the cluster at `address` (auto: the running one; local: one started
    now, its files under $RAY_TMPDIR if set, stopped with every process it started on the way
    out)."""
    ray = import_ray()
    for name, value in _RAY_ENVIRONMENT.items():
        os.environ.setdefault(name, value)
    options: dict[str, Any] = {
        "address": address,
        "include_dashboard": False,
        "logging_level": "WARNING",
    }
    if address == "local" and os.environ.get("RAY_TMPDIR"):
        options["_temp_dir"] = os.environ["RAY_TMPDIR"]
    try:
        ray.init(**options)
    except ConnectionError as exc:
        raise ConfigError(f"cannot reach the Ray cluster at {address}: {exc}") from None
    try:
        yield ray
    finally:
        _join_ray_data_threads()
        ray.shutdown()


_RAY_DATA_THREADS = ("StreamingExecutor-", "ray-data-metadata-prefetch")


def _join_ray_data_threads(timeout_s: float = 30.0) -> None:
    """Wait for Ray Data's executor threads to end: its own shutdown waits 2 s for them, and one
    still running after ray.shutdown() touches the dead worker, which ends the process with
    exit 1 (seen in CI on a refused job, whose exit is 2)."""
    deadline = time.monotonic() + timeout_s
    for thread in threading.enumerate():
        if thread.name.startswith(_RAY_DATA_THREADS) and thread is not threading.current_thread():
            thread.join(max(0.0, deadline - time.monotonic()))
