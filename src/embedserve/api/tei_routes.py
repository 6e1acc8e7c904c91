"""Hugging Face text-embeddings-inference's wire format: POST /embed (and POST /, where TEI
answers an embedding model's requests too), /tokenize and GET /info, with TEI's error shape
{"error", "error_type"}. TEI's bodies name no model: the default model serves them."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import Request
from pydantic import BaseModel, ConfigDict, Field, StrictBool, field_validator
from starlette.responses import Response

from embedserve import __version__
from embedserve.api.calls import json_body, json_response, unless_client_leaves, validated
from embedserve.api.encoding import JSONBytes
from embedserve.api.errors import ApiError
from embedserve.api.fields import Dimensions, RerankQuery, TruncationDirection, cuts_left, text_list
from embedserve.api.reranking import RerankBody, ranked_rows
from embedserve.api.wire import WireFormat, state_of
from embedserve.engine.registry import ServedModel
from embedserve.serving.requests import EmbedRequest, RerankRequest


def tei_error(error: ApiError) -> dict[str, Any]:
    return {"error": error.message, "error_type": _error_type(error)}


def _error_type(error: ApiError) -> str:
    if error.code == "empty_input":
        return "Empty"
    if error.status == 429:
        return "Overloaded"
    if error.status == 503:
        return "Unhealthy"
    return "Backend" if error.status >= 500 else "Validation"


def tei_status(error: ApiError) -> int:
    """TEI answers a body it cannot use with 422 (an empty one with 400)."""
    return 422 if error.status == 400 and error.code != "empty_input" else error.status


class TeiError(BaseModel):
    error: str
    error_type: Literal["Validation", "Empty", "Overloaded", "Unhealthy", "Backend"]


TEI = WireFormat(
    "TEI",
    error_shape=tei_error,
    error_model=TeiError,
    error_status=tei_status,
    statuses=(400, 401, 404, 413, 415, 422, 429, 500, 503),
)
router = TEI.router()
ERRORS = TEI.responses


class _Texts(BaseModel):
    model_config = ConfigDict(extra="ignore")

    inputs: str | list[str] = Field(description="A text or a list of texts.")
    prompt_name: str | None = Field(
        default=None,
        description='"query" puts the model\'s query instruction first; "document" or '
        '"passage" its document instruction; any other name one of the prompts the model\'s '
        "own configuration lists (EmbeddingGemma's task prompts).",
    )

    @field_validator("inputs", mode="before")
    @classmethod
    def _check_inputs(cls, value: Any) -> Any:
        return text_list(value, "inputs")


class TeiEmbedBody(_Texts):
    """Body of POST /embed."""

    model_config = ConfigDict(
        extra="ignore", json_schema_extra={"example": {"inputs": "What is Deep Learning?"}}
    )

    normalize: StrictBool = Field(default=True, description="Unit-length vectors.")
    truncate: StrictBool | None = Field(
        default=None, description="Truncate over-long inputs (default: the server's setting)."
    )
    truncation_direction: TruncationDirection = Field(
        default="Right", description="Which end of an over-long input is cut."
    )
    dimensions: Dimensions


class TokenizeBody(_Texts):
    """Body of POST /tokenize."""

    add_special_tokens: StrictBool = Field(default=True, description="Frame with [CLS] ... [SEP].")
    model: str | None = Field(
        default=None,
        description="Which served model's tokenizer (an extension; default: the default model).",
    )


class SimpleToken(BaseModel):
    id: int
    text: str
    special: bool
    start: int | None = Field(description="Byte offset in the UTF-8 text; null when special.")
    stop: int | None


@router.post(
    "/embed",
    response_model=list[list[float]],
    responses=ERRORS,
    summary="Embed (text-embeddings-inference's shape)",
)
@router.post(
    "/",
    response_model=list[list[float]],
    responses=ERRORS,
    summary="Embed at the root, as TEI serves an embedding model",
)
async def embed(body: TeiEmbedBody, request: Request) -> Response:
    serving = state_of(request).serving
    texts: list[str] = body.inputs  # type: ignore[assignment]  # the validator made it a list
    embed_request = EmbedRequest(
        inputs=texts,
        prompt_name=body.prompt_name,
        truncate=body.truncate,
        truncate_left=cuts_left(body.truncation_direction),
        dimensions=body.dimensions,
        normalize=body.normalize,
    )
    result = await unless_client_leaves(request, serving.embed(embed_request))
    return await json_response(list(result.vectors), result.vectors.size)


@router.post(
    "/tokenize",
    response_model=list[list[SimpleToken]],
    responses=ERRORS,
    summary="Tokenize (text-embeddings-inference's shape)",
)
async def tokenize(body: TokenizeBody, request: Request) -> JSONBytes:
    texts: list[str] = body.inputs  # type: ignore[assignment]
    _, tokens = await state_of(request).serving.tokenize(
        body.model, texts, special=body.add_special_tokens, prompt_name=body.prompt_name
    )
    return JSONBytes([[token.__dict__ for token in text] for text in tokens])


@router.get(
    "/info", responses=ERRORS, summary="The served model (text-embeddings-inference's shape)"
)
async def info(request: Request) -> JSONBytes:
    state = state_of(request)
    settings = state.settings
    model = state.serving.model(None)
    service = model.loaded
    limits = state.serving.limits(model)  # resolved; the batches' once the model is loaded
    return JSONBytes(
        {
            "model_id": model.id,
            "model_sha": None,
            "model_dtype": _DTYPES.get(service.precision or "", "float32") if service else None,
            "model_type": _model_type(model),
            "max_concurrent_requests": limits["max_queued"],
            "max_input_length": limits["max_input_tokens"],
            "max_batch_tokens": limits["max_batch_tokens"],
            "max_batch_requests": limits["max_batch_size"],
            "max_client_batch_size": limits["max_inputs"],
            "auto_truncate": settings.truncate,
            "tokenization_workers": 1,
            "version": __version__,
            "sha": None,
            "docker_label": None,
        }
    )


def _model_type(model: ServedModel) -> dict[str, Any]:
    if model.task == "rerank":
        labels = {"0": "LABEL_0"}
        return {"reranker": {"id2label": labels, "label2id": {"LABEL_0": 0}}}
    return {"embedding": {"pooling": model.metadata.pooling or "mean"}}


_DTYPES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16", "int8": "int8"}


class TeiRerankBody(RerankQuery):
    """Body of POST /rerank in TEI's shape (with `texts`)."""

    texts: list[str] = Field(description="The texts to score.", min_length=1)
    raw_scores: StrictBool = Field(default=False, description="The logits, not the sigmoid.")
    return_text: StrictBool = Field(default=False, description="Echo each text.")
    truncate: StrictBool | None = Field(default=None, description="Cut over-long pairs.")
    truncation_direction: TruncationDirection = Field(default="Right")

    @field_validator("texts", mode="before")
    @classmethod
    def _check_texts(cls, value: Any) -> Any:
        return text_list(value, "texts", one=False)


_RERANK_BODY = {
    "required": True,
    "content": {
        "application/json": {
            "schema": {"anyOf": [TeiRerankBody.model_json_schema(), RerankBody.model_json_schema()]}
        }
    },
}


@router.post(
    "/rerank",
    responses=ERRORS,
    summary="Rerank: TEI's shape with `texts`, Cohere's / Jina's with `documents`",
    openapi_extra={"requestBody": _RERANK_BODY},
)
async def rerank(request: Request) -> JSONBytes:
    payload = await json_body(request)
    serving = state_of(request).serving
    if not (isinstance(payload, dict) and "texts" in payload):  # Cohere's / Jina's body
        documents = validated(RerankBody, payload)
        result = await unless_client_leaves(request, serving.rerank(documents.request()))
        return JSONBytes(documents.answer(result))
    body = validated(TeiRerankBody, payload)
    asked = RerankRequest(
        query=body.query,
        documents=body.texts,
        raw=body.raw_scores,
        truncate=body.truncate,
        truncate_left=cuts_left(body.truncation_direction),
    )
    result = await unless_client_leaves(request, serving.rerank(asked))
    echoed = body.texts if body.return_text else None
    return JSONBytes(ranked_rows(result, "score", echoed, echo=lambda text: {"text": text}))
