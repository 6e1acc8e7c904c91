"""What every model build shares: progress lines per step, quiet libraries, and running a step
in a child process so the server never carries the libraries a one-off build needs."""

from __future__ import annotations

import contextlib
import json
import logging
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

log = logging.getLogger("embedserve.build")


def step(index: int, total: int, what: str, run: Callable[[], object]) -> None:
    log.info("  [%d/%d] %s ...", index, total, what)
    started = time.perf_counter()
    with quiet():
        run()
    log.info("  [%d/%d] %s: done in %.1fs", index, total, what, time.perf_counter() - started)


class _QuietThread(logging.Filter):
    """Drops what other libraries log at WARNING and below from one thread: the build's."""

    def __init__(self, thread: int) -> None:
        super().__init__()
        self.thread = thread

    def filter(self, record: logging.LogRecord) -> bool:
        return (
            record.thread != self.thread
            or record.levelno > logging.WARNING
            or record.name.startswith("embedserve")
        )


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Exporters, optimizers and quantizers log every node (some on the root logger) and warn
    about tracing; our step lines say what matters. Only this thread's records are dropped, so
    the server's other threads (a request's access log, another model) log as ever."""
    handlers = list(logging.getLogger().handlers)
    silence = _QuietThread(threading.get_ident())
    for handler in handlers:
        handler.addFilter(silence)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for handler in handlers:
            handler.removeFilter(silence)


def run_apart(build_step: Callable[..., None], *args: Path | bool) -> None:
    """`build_step(*args)` in a child interpreter: its imports (torch, NNCF) die with it. The
    step must be a module-level function; paths and flags are its only arguments."""
    encoded = json.dumps([str(a) if isinstance(a, Path) else a for a in args])
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, build_step.__module__, build_step.__name__, encoded],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"the build step {build_step.__name__} failed in its process: {last}")


# The child is only the build: it silences every library below ERROR.
_CHILD = """
import importlib, json, logging, sys, warnings
from pathlib import Path
logging.disable(logging.WARNING)
warnings.simplefilter("ignore")
module = importlib.import_module(sys.argv[1])
args = [Path(a) if isinstance(a, str) else a for a in json.loads(sys.argv[3])]
getattr(module, sys.argv[2])(*args)
"""
