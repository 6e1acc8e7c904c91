"""Hugging Face text-embeddings-inference's wire format: POST /embed (and POST /, where TEI
answers an embedding model's requests too), /tokenize and GET /info, with TEI's error shape
{"error", "error_type"}. TEI's bodies name no model: the default model serves them."""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Literal

from fastapi import Request
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, field_validator
from starlette.responses import Response

from embedserve import __version__
from embedserve.api.calls import json_body, json_response, unless_client_leaves, validated
from embedserve.api.encoding import JSONBytes
from embedserve.api.errors import ApiError
from embedserve.api.fields import (
    Dimensions,
    RerankQuery,
    TruncationDirection,
    check_unicode,
    cuts_left,
    text_list,
)
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


class TeiEmbedAllBody(_Texts):
    """Body of POST /embed_all (and what /embed adds to)."""

    model_config = ConfigDict(
        extra="ignore", json_schema_extra={"example": {"inputs": "What is Deep Learning?"}}
    )

    truncate: StrictBool | None = Field(
        default=None, description="Truncate over-long inputs (default: the server's setting)."
    )
    truncation_direction: TruncationDirection = Field(
        default="Right", description="Which end of an over-long input is cut."
    )


class TeiEmbedBody(TeiEmbedAllBody):
    """Body of POST /embed."""

    normalize: StrictBool = Field(default=True, description="Unit-length vectors.")
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
async def embed(body: TeiEmbedBody, request: Request) -> Response:
    serving = state_of(request).serving
    embed_request = replace(_asked(body), dimensions=body.dimensions, normalize=body.normalize)
    result = await unless_client_leaves(request, serving.embed(embed_request))
    return await json_response(list(result.vectors), result.vectors.size)


@router.post(
    "/embed_all",
    response_model=list[list[list[float]]],
    responses=ERRORS,
    summary="Every token's vector, unpooled (text-embeddings-inference's shape)",
)
async def embed_all(body: TeiEmbedAllBody, request: Request) -> Response:
    serving = state_of(request).serving
    vectors = await unless_client_leaves(request, serving.token_vectors(_asked(body)))
    return await json_response(vectors, sum(v.size for v in vectors))


def _asked(body: TeiEmbedAllBody) -> EmbedRequest:
    """What /embed and /embed_all both ask: the texts, prompt and truncation."""
    texts: list[str] = body.inputs  # type: ignore[assignment]  # the validator made it a list
    return EmbedRequest(
        inputs=texts,
        prompt_name=body.prompt_name,
        truncate=body.truncate,
        truncate_left=cuts_left(body.truncation_direction),
    )


class SimilarityInputs(BaseModel):
    source_sentence: str = Field(description="The text the others are compared with.")
    sentences: list[str] = Field(description="The texts compared with it.", min_length=1)

    @field_validator("source_sentence", mode="before")
    @classmethod
    def _check_source(cls, value: Any) -> Any:
        if isinstance(value, str):
            check_unicode(value, "'inputs.source_sentence'")
        return value

    @field_validator("sentences", mode="before")
    @classmethod
    def _check_sentences(cls, value: Any) -> Any:
        return text_list(value, "inputs.sentences", one=False)


class SimilarityParameters(BaseModel):
    model_config = ConfigDict(extra="ignore")

    prompt_name: str | None = None
    truncate: StrictBool | None = None
    truncation_direction: TruncationDirection = "Right"


class TeiSimilarityBody(BaseModel):
    """Body of POST /similarity (and of POST / with these inputs): the sentence-similarity task
    of TEI and of huggingface_hub's InferenceClient.sentence_similarity."""

    model_config = ConfigDict(
        extra="ignore",
        json_schema_extra={
            "example": {"inputs": {"source_sentence": "a cat", "sentences": ["a dog", "a car"]}}
        },
    )

    inputs: SimilarityInputs
    parameters: SimilarityParameters | None = None


@router.post(
    "/similarity",
    response_model=list[float],
    responses=ERRORS,
    summary="Cosine of each sentence to the source sentence (text-embeddings-inference's shape)",
)
async def similarity(body: TeiSimilarityBody, request: Request) -> JSONBytes:
    parameters = body.parameters or SimilarityParameters()
    options = EmbedRequest(
        inputs=[],
        prompt_name=parameters.prompt_name,
        truncate=parameters.truncate,
        truncate_left=cuts_left(parameters.truncation_direction),
    )
    serving = state_of(request).serving
    sources = body.inputs
    scores = await unless_client_leaves(
        request, serving.similarity(sources.source_sentence, sources.sentences, options)
    )
    return JSONBytes(scores.tolist())


_ROOT_BODY = {
    "required": True,
    "content": {
        "application/json": {
            "schema": {
                "anyOf": [TeiEmbedBody.model_json_schema(), TeiSimilarityBody.model_json_schema()]
            }
        }
    },
}


@router.post(
    "/",
    responses=ERRORS,
    summary="At the root, as TEI serves an embedding model: embed, or with inputs "
    "{source_sentence, sentences} the similarity task",
    openapi_extra={"requestBody": _ROOT_BODY},
)
async def root(request: Request) -> Response:
    payload = await json_body(request)
    if isinstance(payload, dict) and isinstance(payload.get("inputs"), dict):
        return await similarity(validated(TeiSimilarityBody, payload), request)
    return await embed(validated(TeiEmbedBody, payload), request)


class TeiDecodeBody(BaseModel):
    """Body of POST /decode."""

    model_config = ConfigDict(extra="ignore", json_schema_extra={"example": {"ids": [101, 102]}})

    ids: list[StrictInt] | list[list[StrictInt]] = Field(
        description="Token ids, or several sequences of them.", min_length=1
    )
    skip_special_tokens: StrictBool = Field(default=True, description="Leave out [CLS], [SEP]...")
    model: str | None = Field(
        default=None, description="Which served model's vocabulary (an extension)."
    )


@router.post(
    "/decode",
    response_model=list[str],
    responses=ERRORS,
    summary="Token ids to text (text-embeddings-inference's shape)",
)
async def decode(body: TeiDecodeBody, request: Request) -> JSONBytes:
    ids = body.ids if isinstance(body.ids[0], list) else [body.ids]
    texts = await state_of(request).serving.decode(
        body.model, ids, skip_special=body.skip_special_tokens
    )
    return JSONBytes(texts)


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
    summary="Rerank: TEI's shape with `texts`, Infinity's with `documents`",
    openapi_extra={"requestBody": _RERANK_BODY},
)
async def rerank(request: Request) -> JSONBytes:
    payload = await json_body(request)
    serving = state_of(request).serving
    if not (isinstance(payload, dict) and "texts" in payload):  # Infinity's, at the root
        documents = validated(RerankBody, payload)
        result = await unless_client_leaves(request, serving.rerank(documents.request()))
        return JSONBytes(documents.infinity_answer(result))
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
