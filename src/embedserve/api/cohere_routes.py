"""Cohere's v2 wire format: POST /v2/embed, with Cohere's error shape {"message"}. Its
`input_type`s map onto our instructions (search_query: the query's; the others: the
document's), its `embedding_types` onto our encodings."""

from __future__ import annotations

import uuid
from typing import Any, Literal

from fastapi import Request
from pydantic import BaseModel, ConfigDict, Field, StrictInt, field_validator
from pydantic_core import PydanticCustomError
from starlette.responses import Response

from embedserve.api.calls import json_response, unless_client_leaves
from embedserve.api.encoding import JSONBytes, encoded_rows
from embedserve.api.errors import ApiError
from embedserve.api.fields import Dimensions, RerankDocuments, text_list
from embedserve.api.reranking import ranked_rows
from embedserve.api.wire import WireFormat, state_of
from embedserve.serving.quantize import ENCODINGS
from embedserve.serving.requests import EmbedRequest, InputType, RerankRequest


def cohere_error(error: ApiError) -> dict[str, Any]:
    return {"message": error.message}


class CohereError(BaseModel):
    message: str


COHERE = WireFormat("Cohere", error_shape=cohere_error, error_model=CohereError)
router = COHERE.router()
ERRORS = COHERE.responses

INPUT_TYPES: dict[str, InputType] = {
    "search_query": "query",
    "search_document": "document",
    "classification": "document",
    "clustering": "document",
}
EmbeddingType = Literal["float", "int8", "uint8", "binary", "ubinary", "base64"]


class CohereEmbedBody(BaseModel):
    """Body of POST /v2/embed."""

    model_config = ConfigDict(
        extra="ignore",
        json_schema_extra={
            "example": {"model": "any", "texts": ["hello"], "input_type": "search_document"}
        },
    )

    model: str | None = Field(default=None, description="Served model name.")
    texts: list[str] = Field(description="The texts to embed.")
    input_type: Literal["search_query", "search_document", "classification", "clustering"] = Field(
        default="search_document", description="search_query gets the query instruction."
    )
    embedding_types: list[EmbeddingType] = Field(
        default=["float"], description="The encodings to return, one key each."
    )
    truncate: Literal["NONE", "START", "END"] = Field(
        default="END", description="Cut an over-long input's START or END, or refuse it (NONE)."
    )
    output_dimension: Dimensions

    @field_validator("texts", mode="before")
    @classmethod
    def _check_texts(cls, value: Any) -> Any:
        return text_list(value, "texts", one=False)

    @field_validator("embedding_types")
    @classmethod
    def _check_types(cls, value: list[str]) -> list[str]:
        if not value:
            raise PydanticCustomError(
                "invalid_input", f"'embedding_types' must name one of {', '.join(ENCODINGS)}"
            )
        return list(dict.fromkeys(value))


class CohereEmbedResponse(BaseModel):
    id: str
    embeddings: dict[str, list[list[float]] | list[list[int]] | list[str]]
    texts: list[str]
    meta: dict[str, Any]
    response_type: Literal["embeddings_by_type"] = "embeddings_by_type"


@router.post(
    "/v2/embed",
    response_model=CohereEmbedResponse,
    responses=ERRORS,
    summary="Embed (Cohere v2's shape)",
)
async def embed(body: CohereEmbedBody, request: Request) -> Response:
    serving = state_of(request).serving
    embed_request = EmbedRequest(
        inputs=body.texts,
        model=body.model,
        input_type=INPUT_TYPES[body.input_type],
        truncate=body.truncate != "NONE",
        truncate_left=body.truncate == "START",
        dimensions=body.output_dimension,
        encodings=tuple(body.embedding_types),
    )
    result = await unless_client_leaves(request, serving.embed(embed_request))
    content = {
        "id": str(uuid.uuid4()),
        "embeddings": {kind: encoded_rows(result, kind) for kind in body.embedding_types},
        "texts": body.texts,
        "meta": {
            "api_version": {"version": "2"},
            "billed_units": {"input_tokens": result.prompt_tokens},
        },
        "response_type": "embeddings_by_type",
    }
    return await json_response(content, result.vectors.size * len(body.embedding_types))


class CohereRerankBody(RerankDocuments):
    """Body of POST /v2/rerank."""

    max_tokens_per_doc: StrictInt | None = Field(
        default=None, description="Accepted; pairs are cut to the model's maximum."
    )


class CohereRerankResponse(BaseModel):
    id: str
    results: list[dict[str, Any]]
    meta: dict[str, Any]


@router.post(
    "/v2/rerank",
    response_model=CohereRerankResponse,
    responses=ERRORS,
    summary="Rerank (Cohere v2's shape)",
)
async def rerank(body: CohereRerankBody, request: Request) -> JSONBytes:
    asked = RerankRequest(body.query, body.texts, model=body.model, top_n=body.top_n)
    result = await unless_client_leaves(request, state_of(request).serving.rerank(asked))
    results = ranked_rows(result)
    meta = {"api_version": {"version": "2"}, "billed_units": {"search_units": 1}}
    return JSONBytes({"id": str(uuid.uuid4()), "results": results, "meta": meta})
