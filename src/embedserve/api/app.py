"""The ASGI application: `create_app(settings)` builds it, and its lifespan owns the models
(loaded and warmed before it reports started, or on first use; closed when it stops). Any ASGI
server can host it (server.serve, `uvicorn --factory embedserve.asgi:create_app`, Ray Serve)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial

from fastapi import FastAPI
from starlette.datastructures import Headers
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from embedserve import __version__
from embedserve.api import (
    batches_routes,
    cohere_routes,
    errors,
    files_routes,
    infinity_routes,
    ollama_routes,
    openai_routes,
    page_routes,
    probes,
    rerank_routes,
    tei_routes,
)
from embedserve.api.auth import ApiKeyAuth
from embedserve.api.encoding import JSONBytes
from embedserve.api.limits import BodyLimit
from embedserve.api.observe import HEADER, RequestContext
from embedserve.api.state import AppState
from embedserve.api.tracing import TraceRequests, Tracing, tracing_for
from embedserve.batches.service import Batches
from embedserve.config import Settings
from embedserve.engine.registry import ModelRegistry
from embedserve.errors import EmbedServeError
from embedserve.serving.policy import Serving

_BODY_HEADERS = ("content-length", "content-type")


def create_app(
    settings: Settings, registry: ModelRegistry | None = None, tracing: Tracing | None = None
) -> FastAPI:
    """The app serving `settings`' models (or `registry`'s, already built). Resolving the
    models happens here and fails fast; loading them happens in the lifespan. `tracing`: where
    its traces go (default: --otlp-endpoint's, or none)."""
    tracing = tracing or tracing_for(settings)
    serving = Serving.build(settings, registry)
    app = FastAPI(
        title="embedserve",
        version=__version__,
        description="OpenAI-compatible text embeddings (h2oGPT's /v1/embeddings contract).",
        lifespan=_lifespan,
    )
    batches = Batches(settings, partial(batches_routes.run_line, serving), serving.metrics)
    app.state.embedserve = AppState(settings, serving, batches, tracing=tracing)
    errors.install(app)
    _include_routes(app)
    if settings.web_page:
        app.include_router(page_routes.router)
    # Outermost last: request id and metrics see everything, CORS answers preflights before
    # the key check, and the key check runs before the body is read.
    app.add_middleware(
        BodyLimit,
        max_bytes=settings.max_body_bytes,
        streamed={files_routes.UPLOAD_PATH: files_routes.upload_limit(settings)},
    )
    app.add_middleware(
        ApiKeyAuth,
        keys=settings.api_keys,
        public_probes=settings.public_probes,
        public_page=settings.web_page,
    )
    if settings.cors_origins:
        app.add_middleware(
            EnvelopeCORS,
            allow_origins=list(settings.cors_origins),
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type", HEADER, "traceparent", "tracestate"],
            expose_headers=[HEADER, "Retry-After"],
        )
    if tracing is not None:  # inside RequestContext: its spans carry the request id
        app.add_middleware(TraceRequests, tracing=tracing)
    app.add_middleware(RequestContext, metrics=serving.metrics, access_log=settings.access_log)
    app.add_middleware(StartupFailure)
    return app


def route_table() -> FastAPI:
    """The app's routes and nothing else: which wire format a path belongs to, and so its error
    shape, for a process that forwards requests to the app without running it."""
    app = FastAPI()
    _include_routes(app)
    return app


def _include_routes(app: FastAPI) -> None:
    app.include_router(openai_routes.router)
    app.include_router(files_routes.router)
    app.include_router(batches_routes.router)
    app.include_router(probes.router)
    app.include_router(rerank_routes.router)
    app.include_router(tei_routes.router)
    app.include_router(ollama_routes.router)
    app.include_router(cohere_routes.router)
    app.include_router(infinity_routes.router)


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    state: AppState = app.state.embedserve
    try:
        await state.serving.start(stop_requested=lambda: state.draining)
    except EmbedServeError as exc:
        state.startup_error = exc
        await state.serving.close()
        raise
    state.batches.start()  # unfinished batches resume
    try:
        yield
    finally:
        await state.batches.close()
        await state.serving.close()
        if state.tracing is not None:
            state.tracing.shutdown()


class StartupFailure:
    """Says why the lifespan failed in one line (ModelNotReady's message), where the server
    would log a traceback: a model that cannot be served is not a crash."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "lifespan":
            await self.app(scope, receive, send)
            return
        state: AppState = scope["app"].state.embedserve

        async def send_briefly(message: Message) -> None:
            if message["type"] == "lifespan.startup.failed" and state.startup_error is not None:
                message = {**message, "message": state.startup_error.message}
            await send(message)

        await self.app(scope, receive, send_briefly)


class EnvelopeCORS(CORSMiddleware):
    """Starlette's CORS, with a refused preflight answered in the OpenAI error envelope."""

    def preflight_response(self, request_headers: Headers) -> Response:
        response = super().preflight_response(request_headers)
        if response.status_code < 400:
            return response
        reason = bytes(response.body).decode()  # "Disallowed CORS origin, method, headers"
        error = errors.ApiError(400, f"CORS preflight refused: {reason}")
        refused = JSONBytes(errors.openai_error(error), status_code=400)
        cors = {k: v for k, v in response.headers.items() if k not in _BODY_HEADERS}
        refused.headers.update(cors)
        return refused
