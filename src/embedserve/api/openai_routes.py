"""OpenAI's wire format: POST /v1/embeddings and the model list. Parse, hand to the serving
layer, format."""

from __future__ import annotations

from typing import Any

from fastapi import Query, Request
from starlette.responses import Response

from embedserve.api.calls import json_response, unless_client_leaves
from embedserve.api.encoding import JSONBytes
from embedserve.api.openai_protocol import (
    EmbeddingRequest,
    EmbeddingResponse,
    ModelCard,
    ModelList,
    embed_request,
    embeddings_body,
)
from embedserve.api.wire import OPENAI, state_of
from embedserve.engine.registry import ServedModel
from embedserve.engine.reranker import Reranker
from embedserve.errors import InvalidInput
from embedserve.serving.policy import Serving

router = OPENAI.router("Embeddings")
ERRORS = OPENAI.responses


@router.post(
    "/v1/embeddings",
    response_model=EmbeddingResponse,
    responses=ERRORS,
    summary="Create embeddings (OpenAI-compatible)",
)
async def create_embeddings(body: EmbeddingRequest, request: Request) -> Response:
    serving = state_of(request).serving
    result = await unless_client_leaves(request, serving.embed(embed_request(body)))
    return await json_response(embeddings_body(result, body.encoding_format), result.vectors.size)


@router.get("/v1/models", response_model=ModelList, summary="List served models")
async def list_models(request: Request) -> JSONBytes:
    state = state_of(request)
    # the list shows the int8 ranges measured so far; one model's card measures them if need be
    models = state.serving.registry.models
    cards = [await _card(m, state.serving, state.started, measure=False) for m in models]
    return JSONBytes({"object": "list", "data": cards})


@router.get(
    "/v1/models/{model_id:path}", response_model=ModelCard, responses=ERRORS, summary="One model"
)
async def get_model(
    model_id: str,
    request: Request,
    dimensions: int | None = Query(
        None, ge=1, description="Give quantization_ranges for vectors cut to this many."
    ),
) -> JSONBytes:
    state = state_of(request)
    model = state.serving.registry.get(model_id)
    served = model.loaded.dimension if model.loaded else None
    if dimensions is not None and (served is None or dimensions > served):
        raise InvalidInput(
            f"'dimensions' must be at most the model's {served} (loaded)",
            param="dimensions",
        )
    return JSONBytes(await _card(model, state.serving, state.started, dimensions))


async def _card(
    model: ServedModel,
    serving: Serving,
    created: int,
    dimensions: int | None = None,
    *,
    measure: bool = True,
) -> dict[str, Any]:
    # int8/uint8 ranges of vectors cut to `dimensions` (and renormalized), as requests get them;
    # held while they are measured (a pass through its batcher), so that it is not unloaded
    ranges = None
    with serving.residency.held(model) as service:
        if service is not None and not isinstance(service, Reranker):
            ranges = await service.quantization_ranges(dimensions, measure=measure)
    return {
        "id": model.id,
        "object": "model",
        "created": created,
        "owned_by": "embedserve",
        "dimension": (service.dimension if service else None) or model.metadata.dimension,
        "max_tokens": service.max_tokens if service else model.metadata.max_tokens,
        "ready": service is not None,
        "loaded": service is not None,
        "aliases": list(model.aliases),
        "task": model.task,
        "pooling": model.metadata.pooling,
        "backend": service.kind if service else None,
        "precision": service.precision if service else None,
        "selection": (service.selection or None) if service else None,
        "query_instruction": model.instructions.query,
        "document_instruction": model.instructions.document,
        "prompts": dict(model.metadata.prompts or {}),
        "quantization_ranges": ranges.tolist() if ranges is not None else None,
        "limits": serving.limits(model),
        # what loading it added to the process's resident memory, as measured (this process's
        # load, or remembered from an earlier one), else estimated from its weights
        "memory_bytes": serving.residency.size_of(model),
        "load_peak_bytes": serving.residency.sizes.load_peak(model),
        "pinned": model.pinned,
    }
