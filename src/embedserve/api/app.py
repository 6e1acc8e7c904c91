"""The ASGI application factory."""

from __future__ import annotations

from fastapi import FastAPI
from starlette.datastructures import Headers
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import Response

from embedserve import __version__
from embedserve.api import errors
from embedserve.api.auth import ApiKeyAuth
from embedserve.api.limits import BodyLimit
from embedserve.api.metrics import Metrics
from embedserve.api.observe import HEADER, RequestContext
from embedserve.api.routes import AppState, router
from embedserve.config import Settings
from embedserve.engine.registry import ModelRegistry

_BODY_HEADERS = ("content-length", "content-type")


class EnvelopeCORS(CORSMiddleware):
    """Starlette's CORS, with a refused preflight answered in the OpenAI error envelope."""

    def preflight_response(self, request_headers: Headers) -> Response:
        response = super().preflight_response(request_headers)
        if response.status_code < 400:
            return response
        reason = bytes(response.body).decode()  # "Disallowed CORS origin, method, headers"
        refused = errors.envelope(400, f"CORS preflight refused: {reason}", "invalid_request_error")
        cors = {k: v for k, v in response.headers.items() if k not in _BODY_HEADERS}
        refused.headers.update(cors)
        return refused


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
            EnvelopeCORS,
            allow_origins=list(settings.cors_origins),
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type", HEADER],
            expose_headers=[HEADER, "Retry-After"],
        )
    app.add_middleware(
        RequestContext, metrics=metrics, routes=router.routes, access_log=settings.access_log
    )
    return app
