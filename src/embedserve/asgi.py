"""The app for any ASGI server, configured by EMBEDSERVE_* variables and an optional
$EMBEDSERVE_CONFIG file:

    uvicorn --factory embedserve.asgi:create_app --port 5000 --workers 2

serves the same API as `embedserve serve`; each worker loads the models in its own lifespan."""

from __future__ import annotations

import logging
import os

from fastapi import FastAPI
from uvicorn.config import STARTUP_FAILURE

from embedserve.api.app import create_app as create_app_for
from embedserve.config.sources import settings_from_environment
from embedserve.errors import EmbedServeError
from embedserve.logs import configure as configure_logging

log = logging.getLogger("embedserve")


def create_app() -> FastAPI:
    """The app, or one line saying why not (a bad setting, a model that cannot be found) and
    uvicorn's own start-up failure code, 3, which also stops its supervisor of --workers
    instead of having it start the worker again and again."""
    try:
        settings = settings_from_environment(os.environ)
        if not logging.getLogger().handlers:  # the host server configured only its own loggers
            configure_logging(settings.log_level, settings.log_format)
        return create_app_for(settings)
    except EmbedServeError as exc:
        if not logging.getLogger().handlers:
            configure_logging()
        log.error("embedserve cannot start: %s", exc.message)
        raise SystemExit(STARTUP_FAILURE) from None
