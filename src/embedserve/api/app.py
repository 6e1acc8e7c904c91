"""The ASGI application factory."""

from __future__ import annotations

from fastapi import FastAPI
from starlette.middleware.cors import CORSMiddleware

from embedserve import __version__
from embedserve.api import errors
from embedserve.api.auth import ApiKeyAuth
from embedserve.api.limits import BodyLimit
from embedserve.api.metrics import Metrics
from embedserve.api.observe import HEADER, RequestContext
from embedserve.api.routes import AppState, router
from embedserve.config import Settings
from embedserve.engine.registry import ModelRegistry


def create_app(settings: Settings, registry: ModelRegistry) -> FastAPI:
    app = FastAPI(
        title="embedserve",
        version=__version__,
        description="OpenAI-compatible text embeddings (h2oGPT's /v1/embeddings contract).",
    )
    metrics = Metrics(registry)
    app.state.embedserve = AppState(settings=settings, registry=registry, metrics=metrics)
    errors.install(app)
    app.include_router(router)
    # Outermost last: request id and metrics see everything, CORS answers preflights before
    # the key check, and the key check runs before the body is read.
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(ApiKeyAuth, keys=settings.api_keys, public_probes=settings.public_probes)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(settings.cors_origins),
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type", HEADER],
            expose_headers=[HEADER, "Retry-After"],
        )
    app.add_middleware(
        RequestContext, metrics=metrics, routes=router.routes, access_log=settings.access_log
    )
    return app
