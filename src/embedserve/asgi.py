"""The app for any ASGI server, configured by EMBEDSERVE_* variables and an optional
$EMBEDSERVE_CONFIG file:

    uvicorn --factory embedserve.asgi:create_app --port 5000 --workers 2

serves the same API as `embedserve serve`; each worker loads the models in its own lifespan.
Two things `embedserve serve` does that plain uvicorn does not are done here: readiness turns
503 `draining` on SIGTERM/SIGINT, and a worker that cannot start makes the supervisor of
--workers exit non-zero (uvicorn's own exits 0 then, uvicorn#1115)."""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import sys
import threading
import time
from types import FrameType
from typing import Any

from fastapi import FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.config import STARTUP_FAILURE

from embedserve.api.app import create_app as create_app_for
from embedserve.api.state import AppState
from embedserve.config.sources import settings_from_environment
from embedserve.errors import EmbedServeError
from embedserve.logs import configure as configure_logging

log = logging.getLogger("embedserve")

SUPERVISOR_CHECK_S = 0.5
"""How often a worker of uvicorn's supervisor checks that the supervisor is still there."""


def create_app() -> FastAPI:
    """The app, or one line saying why not (a bad setting, a model that cannot be found) and
    uvicorn's own start-up failure code, 3, which also stops its supervisor of --workers
    instead of having it start the worker again and again."""
    supervisor = uvicorn_supervisor()
    try:
        settings = settings_from_environment(os.environ)
        if not logging.getLogger().handlers:  # the host server configured only its own loggers
            configure_logging(settings.log_level, settings.log_format)
        app = create_app_for(settings)
    except EmbedServeError as exc:
        if not logging.getLogger().handlers:
            configure_logging()
        log.error("embedserve cannot start: %s", exc.message)
        if supervisor is not None:
            fail_supervisor(supervisor)
        raise SystemExit(STARTUP_FAILURE) from None
    drain_on_stop_signals(app.state.embedserve)
    if supervisor is not None:
        app.add_middleware(FailSupervisorOnStartupFailure, supervisor=supervisor)
        watch_supervisor(supervisor)
    return app


def drain_on_stop_signals(state: AppState) -> None:
    """Readiness says `draining` from the moment the host server is told to stop: the signal
    handlers it installed (uvicorn's) are wrapped, and still called."""
    if threading.current_thread() is not threading.main_thread():
        return  # a host that runs the app off the main thread has its own way to stop it
    for sig in (signal.SIGINT, signal.SIGTERM):
        previous = signal.getsignal(sig)
        if not callable(previous):
            continue  # nothing of the host's to call: leave the default or ignored signal be

        def handler(number: int, frame: FrameType | None, previous: Any = previous) -> None:
            if not state.draining:
                log.info("signal %d: draining in-flight requests, then stopping", number)
            state.draining = True
            previous(number, frame)

        signal.signal(sig, handler)


def uvicorn_supervisor() -> int | None:
    """The pid of uvicorn's supervisor of --workers, if this process is one of its workers."""
    parent = multiprocessing.parent_process()
    if parent is None or parent.pid != os.getppid():
        return None
    if "uvicorn.supervisors.multiprocess" not in sys.modules:  # its worker's target came from it
        return None
    return parent.pid


def fail_supervisor(pid: int) -> None:
    """Stop uvicorn's supervisor with a failure status: it would stop the workers and exit 0
    (uvicorn 0.55 with --workers), and an orchestrator would read a clean stop. SIGALRM is a
    signal it does not handle: the process ends at once with a non-zero status, and the other
    workers see their supervisor gone (`watch_supervisor`) and drain."""
    log.error("stopping uvicorn's supervisor (pid %d) with a failure status", pid)
    os.kill(pid, signal.SIGALRM)


def watch_supervisor(pid: int) -> None:
    """A worker whose supervisor is gone stops (draining) instead of serving on unwatched."""

    def watch() -> None:
        while os.getppid() == pid:
            time.sleep(SUPERVISOR_CHECK_S)
        log.warning("uvicorn's supervisor (pid %d) is gone: stopping this worker", pid)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="supervisor-watch", daemon=True).start()


class FailSupervisorOnStartupFailure:
    """A lifespan that fails (a model that cannot load) stops the supervisor too."""

    def __init__(self, app: ASGIApp, supervisor: int) -> None:
        self.app = app
        self.supervisor = supervisor

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "lifespan":
            await self.app(scope, receive, send)
            return

        async def watched(message: Message) -> None:
            if message["type"] == "lifespan.startup.failed":
                fail_supervisor(self.supervisor)
            await send(message)

        await self.app(scope, receive, watched)
