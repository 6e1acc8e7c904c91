"""HTTP routes: thin. Parse, hand to the engine, encode."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

from fastapi import APIRouter, Request
from starlette.responses import Response

from embedserve.api.encoding import JSONBytes, embeddings_body, render_json
from embedserve.api.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from embedserve.api.metrics import Metrics
from embedserve.api.protocol import (
    EmbeddingRequest,
    EmbeddingResponse,
    ErrorResponse,
    ModelCard,
    ModelList,
)
from embedserve.config import Settings
from embedserve.engine.embedder import Item
from embedserve.engine.registry import ModelRegistry, ServedModel
from embedserve.errors import ClientGone, InvalidInput

T = TypeVar("T")
_ENCODE_INLINE_FLOATS = 32_768  # larger responses are serialized off the event loop

router = APIRouter()
_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse} for code in (400, 404, 413, 415, 500, 503)
}


@dataclass
class AppState:
    settings: Settings
    registry: ModelRegistry
    metrics: Metrics
    started: int = field(default_factory=lambda: int(time.time()))
    draining: bool = False
    """Set on SIGTERM/SIGINT: readiness answers 503 while in-flight requests finish."""


def _state(request: Request) -> AppState:
    state: AppState = request.app.state.embedserve
    return state


@router.post(
    "/v1/embeddings",
    response_model=EmbeddingResponse,
    responses=_ERRORS,
    summary="Create embeddings (OpenAI-compatible)",
)
async def create_embeddings(body: EmbeddingRequest, request: Request) -> Response:
    state = _state(request)
    model = state.registry.resolve(body.model)
    request.state.model = model.id
    items = _items(body.input)
    if len(items) > state.settings.max_inputs:
        raise InvalidInput(
            f"'input' has {len(items)} items, more than this server's limit of "
            f"{state.settings.max_inputs} per request; split it into several requests",
            param="input",
            code="too_many_inputs",
        )
    embedder = await model.embedder()
    truncate = state.settings.truncate if body.truncate is None else body.truncate
    instruction = model.instructions.for_type(body.input_type or "document")
    work = embedder.embed(
        items, truncate=truncate, dimensions=body.dimensions, instruction=instruction
    )
    result = await _unless_client_leaves(request, work)
    state.metrics.embedded(model.id, len(items), result.prompt_tokens)
    fmt = body.encoding_format or "float"
    content = embeddings_body(result.vectors, model.id, fmt, result.prompt_tokens)
    if result.vectors.size < _ENCODE_INLINE_FLOATS:
        return JSONBytes(content)
    return Response(await asyncio.to_thread(render_json, content), media_type="application/json")


async def _unless_client_leaves(request: Request, work: Coroutine[Any, Any, T]) -> T:
    """Run `work`, cancelling it (and freeing its queued sequences) if the client disconnects."""
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_disconnected(request))
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
    if not task.done():
        task.cancel()
        raise ClientGone("the client disconnected before its embeddings were ready")
    return task.result()


async def _disconnected(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass


@router.get("/v1/models", response_model=ModelList, summary="List served models")
async def list_models(request: Request) -> JSONBytes:
    state = _state(request)
    cards = [_card(m, state.started) for m in state.registry.models]
    return JSONBytes({"object": "list", "data": cards})


@router.get(
    "/v1/models/{model_id:path}", response_model=ModelCard, responses=_ERRORS, summary="One model"
)
async def get_model(model_id: str, request: Request) -> JSONBytes:
    state = _state(request)
    return JSONBytes(_card(state.registry.get(model_id), state.started))


@router.get("/health", summary="Liveness: the process is up")
async def health() -> JSONBytes:
    return JSONBytes({"status": "ok"})


@router.get("/metrics", summary="Prometheus metrics", include_in_schema=False)
async def metrics(request: Request) -> Response:
    return Response(_state(request).metrics.render(), media_type=METRICS_CONTENT_TYPE)


@router.get("/ready", summary="Readiness: 200 once every model is loaded, else 503")
async def ready(request: Request) -> JSONBytes:
    state = _state(request)
    models = [
        {"id": m.id, "ready": m.loaded is not None, "error": m.error} for m in state.registry.models
    ]
    is_ready = state.registry.ready and not state.draining
    if state.draining:
        status = "draining"
    elif any(m.error for m in state.registry.models):
        status = "failed"
    else:
        status = "ready" if is_ready else "loading"
    return JSONBytes({"status": status, "models": models}, status_code=200 if is_ready else 503)


def _items(value: str | list[str] | list[int] | list[list[int]]) -> list[Item]:
    if isinstance(value, str):
        return [value]
    if isinstance(value[0], int):
        return [value]
    return list(value)


def _card(model: ServedModel, created: int) -> dict[str, Any]:
    embedder = model.loaded
    return {
        "id": model.id,
        "object": "model",
        "created": created,
        "owned_by": "embedserve",
        "dimension": (embedder.dimension if embedder else None) or model.metadata.dimension,
        "max_tokens": embedder.max_tokens if embedder else model.metadata.max_tokens,
        "ready": embedder is not None,
        "aliases": list(model.aliases),
        "pooling": model.metadata.pooling,
        "backend": embedder.kind if embedder else None,
        "precision": embedder.precision if embedder else None,
        "query_instruction": model.instructions.query,
        "document_instruction": model.instructions.document,
    }
