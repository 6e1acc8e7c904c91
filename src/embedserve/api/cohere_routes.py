"""Cohere's v2 wire format: POST /v2/embed, with Cohere's error shape {"message"}. Its
`input_type`s map onto our instructions (search_query: the query's; the others: the
document's), its `embedding_types` onto our encodings."""

from __future__ import annotations

import uuid
from typing import Any, Literal

from fastapi import Request
from pydantic import BaseModel, ConfigDict, Field, StrictInt, field_validator, model_validator
from pydantic_core import PydanticCustomError
from starlette.responses import Response

from embedserve.api.calls import json_response, unless_client_leaves
from embedserve.api.encoding import JSONBytes, encoded_rows
from embedserve.api.errors import ApiError
from embedserve.api.fields import Dimensions, RerankDocuments, text_list
from embedserve.api.reranking import ranked_rows
from embedserve.api.wire import WireFormat, state_of
from embedserve.serving.quantize import ENCODINGS
from embedserve.serving.requests import Embedded, EmbedRequest, InputType, RerankRequest


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


CohereInputType = Literal["search_query", "search_document", "classification", "clustering"]
Truncate = Literal["NONE", "START", "END"]


def _embedding_types(value: list[str]) -> list[str]:
    if not value:
        raise PydanticCustomError(
            "invalid_input", f"'embedding_types' must name one of {', '.join(ENCODINGS)}"
        )
    return list(dict.fromkeys(value))


def content_texts(value: Any) -> list[str]:
    """Cohere v2's `inputs`: one text a content list of parts, its text parts joined by a line
    break. An image part is refused: no image model is served."""
    if not isinstance(value, list) or not value:
        raise PydanticCustomError(
            "invalid_input", "'inputs' must be a non-empty array of {\"content\": [...]} objects"
        )
    texts = []
    for index, item in enumerate(value):
        parts = item.get("content") if isinstance(item, dict) else None
        if not isinstance(parts, list) or not parts:
            raise PydanticCustomError(
                "invalid_input", f"inputs[{index}] must be an object with a non-empty 'content'"
            )
        kinds = {part.get("type") if isinstance(part, dict) else None for part in parts}
        if kinds - {"text"}:
            raise PydanticCustomError(
                "invalid_input",
                f"inputs[{index}] has a part of type {sorted(map(str, kinds - {'text'}))[0]!r}; "
                f"this server embeds text only (parts of type 'text')",
            )
        words = [part.get("text") for part in parts]
        if not all(isinstance(text, str) for text in words):
            raise PydanticCustomError(
                "invalid_input", f"inputs[{index}]: each text part needs a string 'text'"
            )
        texts.append(text_list(["\n".join(words)], f"inputs[{index}].content", one=False)[0])
    return texts


class _CohereEmbed(BaseModel):
    """What Cohere's v1 and v2 embed bodies share."""

    model_config = ConfigDict(extra="ignore")

    model: str | None = Field(default=None, description="Served model name.")
    truncate: Truncate | None = Field(
        default="END",
        description="Cut an over-long input's START or END (null: END), or refuse it (NONE).",
    )

    def request(
        self,
        texts: list[str],
        input_type: CohereInputType,
        types: list[EmbeddingType],
        dimensions: int | None = None,
    ) -> EmbedRequest:
        return EmbedRequest(
            inputs=texts,
            model=self.model,
            input_type=INPUT_TYPES[input_type],
            truncate=self.truncate != "NONE",
            truncate_left=self.truncate == "START",
            dimensions=dimensions,
            encodings=tuple(types),
        )


class CohereEmbedBody(_CohereEmbed):
    """Body of POST /v2/embed: `texts`, or `inputs` of content parts."""

    model_config = ConfigDict(
        extra="ignore",
        json_schema_extra={
            "example": {"model": "any", "texts": ["hello"], "input_type": "search_document"}
        },
    )

    texts: list[str] | None = Field(default=None, description="The texts to embed.")
    inputs: list[dict[str, Any]] | None = Field(
        default=None,
        description='Or each text as {"content": [{"type": "text", "text": ...}]} (text parts '
        "only: images are not served).",
    )
    input_type: CohereInputType = Field(
        default="search_document", description="search_query gets the query instruction."
    )
    embedding_types: list[EmbeddingType] = Field(
        default=["float"], description="The encodings to return, one key each."
    )
    output_dimension: Dimensions

    @field_validator("texts", mode="before")
    @classmethod
    def _check_texts(cls, value: Any) -> Any:
        return value if value is None else text_list(value, "texts", one=False)

    @field_validator("inputs", mode="before")
    @classmethod
    def _check_inputs(cls, value: Any) -> Any:
        if value is not None:
            content_texts(value)  # refused here, in the body's own error
        return value

    @field_validator("embedding_types")
    @classmethod
    def _check_types(cls, value: list[str]) -> list[str]:
        return _embedding_types(value)

    @model_validator(mode="after")
    def _texts_or_inputs(self) -> CohereEmbedBody:
        if (self.texts is None) == (self.inputs is None):
            given = "both" if self.texts is not None else "neither"
            raise PydanticCustomError("invalid_input", f"give 'texts' or 'inputs' (got {given})")
        return self

    @property
    def all_texts(self) -> list[str]:
        if self.texts is not None:
            return self.texts
        return content_texts(self.inputs)


class CohereEmbedResponse(BaseModel):
    id: str
    embeddings: dict[str, list[list[float]] | list[list[int]] | list[str]] | list[list[float]]
    """By type; v1 without embedding_types: the float vectors alone."""

    texts: list[str]
    meta: dict[str, Any]
    response_type: Literal["embeddings_by_type", "embeddings_floats"] = "embeddings_by_type"


def _answer(
    result: Embedded, texts: list[str], types: list[EmbeddingType] | None, version: str
) -> dict[str, Any]:
    """Cohere's embed response: by type, or (v1 without embedding_types) the floats alone."""
    embeddings: Any = (
        encoded_rows(result, "float")
        if types is None
        else {kind: encoded_rows(result, kind) for kind in types}
    )
    return {
        "id": str(uuid.uuid4()),
        "embeddings": embeddings,
        "texts": texts,
        "meta": {
            "api_version": {"version": version},
            "billed_units": {"input_tokens": result.prompt_tokens},
        },
        "response_type": "embeddings_floats" if types is None else "embeddings_by_type",
    }


@router.post(
    "/v2/embed",
    response_model=CohereEmbedResponse,
    responses=ERRORS,
    summary="Embed (Cohere v2's shape)",
)
async def embed(body: CohereEmbedBody, request: Request) -> Response:
    texts = body.all_texts
    asked = body.request(texts, body.input_type, body.embedding_types, body.output_dimension)
    result = await unless_client_leaves(request, state_of(request).serving.embed(asked))
    content = _answer(result, texts, body.embedding_types, "2")
    return await json_response(content, result.vectors.size * len(body.embedding_types))


class CohereV1EmbedBody(_CohereEmbed):
    """Body of POST /v1/embed (Cohere's v1 API: cohere.Client, langchain-cohere)."""

    model_config = ConfigDict(
        extra="ignore", json_schema_extra={"example": {"texts": ["hello"], "model": "any"}}
    )

    texts: list[str] = Field(description="The texts to embed.")
    input_type: CohereInputType | None = Field(
        default=None, description="search_query gets the query instruction; else the document's."
    )
    embedding_types: list[EmbeddingType] | None = Field(
        default=None,
        description="The encodings to return, one key each; without it, the floats alone.",
    )

    @field_validator("texts", mode="before")
    @classmethod
    def _check_texts(cls, value: Any) -> Any:
        return text_list(value, "texts", one=False)

    @field_validator("embedding_types")
    @classmethod
    def _check_types(cls, value: list[str] | None) -> list[str] | None:
        return value if value is None else _embedding_types(value)


@router.post(
    "/v1/embed",
    response_model=CohereEmbedResponse,
    responses=ERRORS,
    summary="Embed (Cohere v1's shape)",
)
async def embed_v1(body: CohereV1EmbedBody, request: Request) -> Response:
    types = body.embedding_types
    asked = body.request(body.texts, body.input_type or "search_document", types or ["float"])
    result = await unless_client_leaves(request, state_of(request).serving.embed(asked))
    content = _answer(result, body.texts, types, "1")
    return await json_response(content, result.vectors.size * len(types or ["float"]))


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
