"""Infinity's routes at the root, as its clients call them (LiteLLM's `infinity/` provider,
LangChain's InfinityEmbeddings, Infinity's generated client): POST /embeddings (OpenAI's body
and answer, plus Infinity's `id` and `created`) and GET /models (Infinity's model list). Its
/rerank is the root's, answered in Infinity's shape (tei_routes.py: TEI's own body there has
`texts`). POST /classify answers that no classification model is served. Errors take OpenAI's
envelope, as Infinity's do."""

from __future__ import annotations

import time
import uuid
from typing import Any, Literal

from fastapi import Request
from pydantic import Field, field_validator
from starlette.responses import Response

from embedserve.api.calls import json_response, unless_client_leaves
from embedserve.api.encoding import JSONBytes
from embedserve.api.openai_protocol import EmbeddingRequest, embed_request, embeddings_body
from embedserve.api.wire import OPENAI, state_of
from embedserve.errors import InvalidInput

router = OPENAI.router("Infinity")


class InfinityEmbeddingRequest(EmbeddingRequest):
    """OpenAI's body as Infinity reads it: `dimensions` 0 keeps every component (its generated
    client sends 0 unless told), and a `modality` that is text."""

    modality: Literal["text", "image", "audio"] = Field(
        default="text", description='Only "text" is served here.'
    )

    @field_validator("dimensions", mode="before")
    @classmethod
    def _zero_is_all(cls, value: Any) -> Any:
        return None if value == 0 and type(value) is int else value

    @field_validator("modality")
    @classmethod
    def _text_only(cls, value: str) -> str:
        if value != "text":
            raise ValueError(f"this server embeds text; modality {value!r} is not served")
        return value


@router.post("/embeddings", responses=OPENAI.responses, summary="Embed (Infinity's root route)")
async def embeddings(body: InfinityEmbeddingRequest, request: Request) -> Response:
    serving = state_of(request).serving
    result = await unless_client_leaves(request, serving.embed(embed_request(body)))
    content = {
        **embeddings_body(result, body.encoding_format),
        "id": f"infinity-{uuid.uuid4()}",
        "created": int(time.time()),
    }
    return await json_response(content, result.vectors.size)


@router.get("/models", summary="The served models (Infinity's list)")
async def models(request: Request) -> JSONBytes:
    state = state_of(request)
    data = [
        {
            "id": model.id,
            "stats": {},
            "object": "model",
            "owned_by": "infinity",
            "created": state.started,
            "backend": model.loaded.kind if model.loaded else "",
            "capabilities": ["rerank"] if model.task == "rerank" else ["embed"],
        }
        for model in state.serving.registry.models
    ]
    return JSONBytes({"data": data, "object": "list"})


@router.post("/classify", responses=OPENAI.responses, summary="Classify (Infinity's route)")
async def classify(request: Request) -> JSONBytes:
    raise InvalidInput(
        "no classification model is served here: this server embeds and reranks "
        "(POST /embeddings, POST /rerank)",
        param="model",
        code="model_cannot_classify",
    )
