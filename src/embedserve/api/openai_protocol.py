"""OpenAI-compatible request and response models, and the request and body they turn into
(which the Batch API and Infinity's root routes use too)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, field_validator
from pydantic_core import PydanticCustomError

from embedserve.api.encoding import encoded_rows
from embedserve.api.fields import Dimensions, TruncationDirection, check_unicode, cuts_left
from embedserve.serving.quantize import Encoding
from embedserve.serving.requests import Embedded, EmbedRequest

_INPUT_HELP = (
    "'input' must be a string, an array of strings, an array of token ids, "
    "or an array of token-id arrays"
)


_TOKEN_ID: dict[str, Any] = {"type": "integer", "minimum": 0}
_INPUT_SCHEMA: list[Any] = [
    {"type": "string"},
    {"type": "array", "items": {"type": "string"}, "minItems": 1},
    {"type": "array", "items": _TOKEN_ID, "minItems": 1},
    {"type": "array", "items": {"type": "array", "items": _TOKEN_ID}, "minItems": 1},
]


class EmbeddingRequest(BaseModel):
    """Body of POST /v1/embeddings. Unknown fields are ignored, as h2oGPT does."""

    model_config = ConfigDict(
        extra="ignore",
        json_schema_extra={"example": {"input": "The food was delicious", "model": "any"}},
    )

    input: str | list[str] | list[int] | list[list[int]] = Field(
        description="Text, texts, OpenAI (cl100k_base) token ids, or arrays of token ids.",
        json_schema_extra={"anyOf": _INPUT_SCHEMA},  # what the validator below enforces
    )
    model: str | None = Field(
        default=None,
        description="Served model name. With one served model any name is accepted.",
    )
    encoding_format: Encoding | None = Field(
        default="float",
        description='"float" (JSON numbers), "base64" (little-endian float32 bytes), or the '
        'integer encodings: "int8"/"uint8" (each dimension\'s calibrated range in 256 steps, the '
        'ranges in GET /v1/models/{id}), "binary"/"ubinary" (sign bits packed 8 per byte, as '
        "signed/unsigned integers).",
    )
    dimensions: Dimensions
    user: str | None = Field(default=None, description="End-user id; accepted and ignored.")
    input_type: Literal["query", "document", "passage"] | None = Field(
        default=None,
        description='"query" gets the model\'s query instruction; "document" (the default, as '
        'in h2oGPT) or "passage" its document instruction.',
    )
    prompt_name: str | None = Field(
        default=None,
        description="One of the prompts the model's own configuration lists (EmbeddingGemma's "
        '"Clustering", "Classification", ...), put before each input in place of input_type\'s '
        "instruction.",
    )
    truncate: StrictBool | None = Field(
        default=None,
        description="Truncate over-long inputs (default: the server's setting) or refuse them.",
    )
    truncation_direction: TruncationDirection | None = Field(
        default=None,
        description='Which end of an over-long input is cut: "right" (the default) or "left".',
    )
    normalize: StrictBool = Field(
        default=True,
        description="Unit-length vectors; false returns the model's pooled vector as it is.",
    )

    @field_validator("input", mode="before")
    @classmethod
    def _check_input(cls, value: Any) -> Any:
        if isinstance(value, str):
            _check_unicode(value, None)
            return value
        if not isinstance(value, list):
            raise PydanticCustomError("invalid_input", _INPUT_HELP)
        if not value:
            raise PydanticCustomError("invalid_input", "'input' must not be an empty array")
        kinds = {_kind(item) for item in value}
        if None in kinds:
            bad = next(i for i, item in enumerate(value) if _kind(item) is None)
            raise PydanticCustomError(
                "invalid_input",
                f"input[{bad}] is not a string, a token id or an array of token ids; {_INPUT_HELP}",
            )
        if len(kinds) > 1:
            raise PydanticCustomError(
                "invalid_input",
                "'input' mixes strings, token ids and token-id arrays; send one kind per request",
            )
        if "text" in kinds:
            for index, text in enumerate(value):
                _check_unicode(text, index)
        return value


def _check_unicode(text: str, index: int | None) -> None:
    check_unicode(text, "'input'" if index is None else f"input[{index}]")


def _kind(item: Any) -> str | None:
    if isinstance(item, str):
        return "text"
    if _is_token_id(item):
        return "id"
    if isinstance(item, list) and all(_is_token_id(t) for t in item):
        return "ids"
    return None


def _is_token_id(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


class EmbeddingData(BaseModel):
    object: Literal["embedding"] = "embedding"
    embedding: list[float] | list[int] | str
    index: int


class Usage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class EmbeddingResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[EmbeddingData]
    model: str
    usage: Usage


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "embedserve"
    dimension: int | None = Field(description="Length of the model's embeddings.")
    max_tokens: int = Field(description="Longest input the model reads, in its own tokens.")
    ready: bool = Field(description="Whether the model is loaded.")
    loaded: bool = Field(
        default=False,
        description="The same: under --memory-budget or a keep-alive a model may be unloaded, "
        "and loads again on its next request.",
    )
    pinned: bool = Field(default=False, description="Never unloaded to make room for another.")
    load_peak_bytes: int | None = Field(
        default=None,
        description="The most its load adds to resident memory while it runs (at least "
        "memory_bytes): what --memory-budget makes room for before loading it.",
    )
    aliases: list[str] = Field(description="Other names requests may use.")
    task: str = Field(default="embed", description='"embed", or "rerank" for a cross-encoder.')
    pooling: str | None = Field(description="How token vectors are pooled.")
    backend: str | None = Field(description="onnx, openvino or torch, once loaded.")
    precision: str | None = Field(description="fp32, int8, bf16 or fp16, once loaded.")
    selection: str | None = Field(
        default=None, description="Why it got its backend and precision, once loaded."
    )
    query_instruction: str = Field(description="Put before inputs with input_type=query.")
    document_instruction: str = Field(description="Put before documents.")
    prompts: dict[str, str] = Field(
        default_factory=dict,
        description="The model's own prompts by name, each reachable with prompt_name.",
    )
    limits: dict[str, float | None] = Field(
        default_factory=dict,
        description="Every limit a request to the model meets, as resolved from the settings, "
        "the machine and the model: per request (max_inputs, max_request_tokens, "
        "max_input_tokens, request_timeout_s) and per batch once loaded (max_batch_tokens, "
        "max_batch_size, max_padding, max_padding_tokens, max_wait_ms, max_queued).",
    )
    quantization_ranges: list[list[float]] | None = Field(
        default=None,
        description="The ranges int8/uint8 vectors map onto 256 steps: each dimension's "
        "minimum, then its maximum (sentence-transformers' quantize_embeddings `ranges`; "
        "null in the list until first measured).",
    )
    memory_bytes: int | None = Field(
        default=None,
        description="What loading the model added to the server's resident memory: measured at "
        "its load (this process's, or the last one remembered for its build), else estimated "
        "from its weights' files.",
    )


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorDetail


def embed_request(body: EmbeddingRequest) -> EmbedRequest:
    """What an OpenAI embeddings body asks of the serving layer."""
    value = body.input
    if isinstance(value, str) or isinstance(value[0], int):
        inputs: Any = [value]  # one text, or one token-id sequence
    else:
        inputs = value
    return EmbedRequest(
        inputs=inputs,
        model=body.model,
        input_type=body.input_type or "document",
        prompt_name=body.prompt_name,
        truncate=body.truncate,
        truncate_left=cuts_left(body.truncation_direction),
        dimensions=body.dimensions,
        normalize=body.normalize,
        encodings=(body.encoding_format or "float",),
    )


def embeddings_body(result: Embedded, encoding_format: str | None) -> dict[str, Any]:
    """OpenAI's embeddings response for `result`."""
    rows = encoded_rows(result, encoding_format or "float")
    tokens = result.prompt_tokens
    return {
        "object": "list",
        "data": [
            {"object": "embedding", "embedding": row, "index": i} for i, row in enumerate(rows)
        ],
        "model": result.model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }
