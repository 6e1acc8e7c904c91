"""Probes and scraping: liveness, readiness (503 while loading, failed or draining), metrics."""

from __future__ import annotations

from fastapi import Request
from starlette.responses import Response

from embedserve.api.encoding import JSONBytes
from embedserve.api.wire import OPENAI, state_of
from embedserve.serving.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE

router = OPENAI.router("Probes")


@router.get("/health", summary="Liveness: the process is up")
async def health() -> JSONBytes:
    return JSONBytes({"status": "ok"})


@router.get("/metrics", summary="Prometheus metrics", include_in_schema=False)
async def metrics(request: Request) -> Response:
    state = state_of(request)
    state.batches.count()
    body = state.serving.metrics.render()
    return Response(body, media_type=METRICS_CONTENT_TYPE)


@router.get("/ready", summary="Readiness: 200 once every model is loaded, else 503")
async def ready(request: Request) -> JSONBytes:
    state = state_of(request)
    serving = state.serving
    registry = serving.registry
    models = [
        {"id": m.id, "ready": m.loaded is not None, "state": serving.state_of(m), "error": m.error}
        for m in registry.models
    ]
    is_ready = serving.ready and not state.draining
    if state.draining:
        status = "draining"
    elif any(m.error for m in registry.models):
        status = "failed"
    else:
        status = "ready" if is_ready else "loading"
    return JSONBytes({"status": status, "models": models}, status_code=200 if is_ready else 503)
