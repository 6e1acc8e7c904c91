"""What the app holds for its routes and its lifespan."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from embedserve.batches.service import Batches
from embedserve.config import Settings
from embedserve.errors import EmbedServeError
from embedserve.serving.policy import Serving


@dataclass
class AppState:
    settings: Settings
    serving: Serving
    batches: Batches
    started: int = field(default_factory=lambda: int(time.time()))
    draining: bool = False
    """Set when the server stops (SIGTERM/SIGINT): readiness answers 503 while in-flight
    requests finish. Whoever hosts the app sets it (server.serve, a Ray replica)."""

    startup_error: EmbedServeError | None = None
    """Why the lifespan could not start the app (a model that cannot be served)."""

    tracing: Any = None
    """The app's api.tracing.Tracing where traces are on: flushed when it stops."""
