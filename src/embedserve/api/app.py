"""The ASGI application factory."""

from __future__ import annotations

from fastapi import FastAPI

from embedserve import __version__
from embedserve.api import errors
from embedserve.api.limits import BodyLimit
from embedserve.api.routes import AppState, router
from embedserve.config import Settings
from embedserve.engine.registry import ModelRegistry


def create_app(settings: Settings, registry: ModelRegistry) -> FastAPI:
    app = FastAPI(
        title="embedserve",
        version=__version__,
        description="OpenAI-compatible text embeddings (h2oGPT's /v1/embeddings contract).",
    )
    app.state.embedserve = AppState(settings=settings, registry=registry)
    errors.install(app)
    app.include_router(router)
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    return app
