"""`embedserve serve`: the app under uvicorn, with the signals that drain it."""

from __future__ import annotations

import logging
import math
import signal
from types import FrameType
from typing import Any

from uvicorn import server as uvicorn_server

from embedserve.api.app import create_app
from embedserve.api.state import AppState
from embedserve.config import Settings

log = logging.getLogger("embedserve")


def serve(settings: Settings) -> None:
    """Serve until SIGTERM/SIGINT; raises the EmbedServeError that kept the app from starting."""
    import uvicorn

    app = create_app(settings)
    state: AppState = app.state.embedserve
    warn_if_open(settings)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        access_log=False,  # ours carries the request id (api/observe.py)
        log_config=None,
        timeout_graceful_shutdown=math.ceil(settings.drain_timeout_s),
    )
    server = DrainingServer(config, state)
    for sig in (signal.SIGINT, signal.SIGTERM):
        # uvicorn restores the handlers it found when it stops, then raises the signal that
        # stopped it again: into these, so that a drained stop exits 0.
        signal.signal(sig, server.handle_exit)
    try:
        server.run()
    except SystemExit:  # uvicorn's exit when the lifespan failed
        if state.startup_error is None:
            raise
    if state.startup_error is not None:
        raise state.startup_error
    log.info("stopped")


class DrainingServer(uvicorn_server.Server):
    """uvicorn's server, which on SIGTERM/SIGINT stops accepting and waits for in-flight
    requests (up to --drain-timeout); the app's readiness turns 503 at once."""

    def __init__(self, config: Any, state: AppState) -> None:
        super().__init__(config)
        self._state = state

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if not self._state.draining:
            log.info("signal %d: draining in-flight requests, then stopping", sig)
        self._state.draining = True
        super().handle_exit(sig, frame)


def warn_if_open(settings: Settings) -> None:
    loopback = settings.host in ("127.0.0.1", "localhost", "::1")
    if not loopback and not settings.api_keys:
        log.warning(
            "listening on %s without an API key: anyone who can reach this port can use it; "
            "set --api-key (or EMBEDSERVE_API_KEYS)",
            settings.host,
        )
