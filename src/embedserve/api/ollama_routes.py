"""Ollama's wire format: POST /api/embed, the legacy POST /api/embeddings, POST /api/show, GET
/api/tags, /api/ps and /api/version, with Ollama's error shape {"error"}. Ollama's model names
carry a tag ("all-minilm:latest"); ":latest" names the model without it. `keep_alive` is
Ollama's: how long the model stays loaded once idle (0 unloads it after the request; an empty
input only loads or unloads it)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from fastapi import Request
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    field_validator,
)
from starlette.responses import Response

from embedserve import __version__
from embedserve.api.calls import json_response, unless_client_leaves
from embedserve.api.encoding import JSONBytes
from embedserve.api.errors import ApiError
from embedserve.api.fields import Dimensions, check_unicode, text_list
from embedserve.api.wire import WireFormat, state_of
from embedserve.config.quantities import parse_duration
from embedserve.engine.registry import ServedModel
from embedserve.errors import InvalidInput
from embedserve.models.metadata import parameter_count
from embedserve.serving.policy import Serving
from embedserve.serving.requests import Embedded, EmbedRequest


def ollama_error(error: ApiError) -> dict[str, Any]:
    return {"error": error.message}


class OllamaError(BaseModel):
    error: str


OLLAMA = WireFormat("Ollama", error_shape=ollama_error, error_model=OllamaError)
router = OLLAMA.router()
ERRORS = OLLAMA.responses


class _Request(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str | None = Field(default=None, description="Served model name (tag optional).")
    keep_alive: StrictStr | StrictInt | StrictFloat | None = Field(
        default=None,
        description="How long the model stays loaded once idle: seconds, or a duration like "
        '"5m"; 0 unloads it after this request, a negative one keeps it loaded.',
    )
    options: dict[str, Any] | None = Field(default=None, description="Accepted, ignored.")

    @property
    def keep_alive_s(self) -> float | None:
        return _seconds(self.keep_alive)


class OllamaEmbedBody(_Request):
    """Body of POST /api/embed."""

    model_config = ConfigDict(
        extra="ignore", json_schema_extra={"example": {"model": "all-minilm", "input": "hi"}}
    )

    input: str | list[str] = Field(description="A text or a list of texts.")
    truncate: StrictBool = Field(default=True, description="Truncate over-long inputs.")
    dimensions: Dimensions

    @field_validator("input", mode="before")
    @classmethod
    def _check_input(cls, value: Any) -> Any:
        return text_list(value, "input", allow_empty=True)


class OllamaEmbeddingsBody(_Request):
    """Body of the legacy POST /api/embeddings."""

    prompt: str = Field(description="One text.")

    @field_validator("prompt")
    @classmethod
    def _check_prompt(cls, value: str) -> str:
        check_unicode(value, "'prompt'")
        return value


def _seconds(keep_alive: str | float | None) -> float | None:
    """Ollama's keep_alive in seconds: a number is seconds, a string a Go duration."""
    if keep_alive is None:
        return None
    try:
        return parse_duration(str(keep_alive))
    except ValueError as exc:
        raise InvalidInput(f"'keep_alive': {exc}", param="keep_alive") from None


class OllamaEmbedResponse(BaseModel):
    model: str
    embeddings: list[list[float]]
    total_duration: int = Field(description="Nanoseconds.")
    load_duration: int
    prompt_eval_count: int


class OllamaEmbeddingsResponse(BaseModel):
    embedding: list[float]


@router.post(
    "/api/embed",
    response_model=OllamaEmbedResponse,
    responses=ERRORS,
    summary="Embed (Ollama's shape)",
)
async def embed(body: OllamaEmbedBody, request: Request) -> Response:
    started = time.perf_counter_ns()
    serving = state_of(request).serving
    model = _model(serving, body.model)
    texts: list[str] = body.input  # type: ignore[assignment]  # the validator made it a list
    loaded = model.loaded is not None
    keep = body.keep_alive_s
    result = await _embed(request, serving, model, texts, body.truncate, body.dimensions, keep)
    total = time.perf_counter_ns() - started
    content = {
        "model": body.model or model.id,
        "embeddings": list(result.vectors) if result else [],
        "total_duration": total,
        "load_duration": 0 if loaded else total,
        "prompt_eval_count": result.prompt_tokens if result else 0,
    }
    return await json_response(content, result.vectors.size if result else 0)


@router.post(
    "/api/embeddings",
    response_model=OllamaEmbeddingsResponse,
    responses=ERRORS,
    summary="Embed one text (Ollama's legacy shape)",
)
async def embeddings(body: OllamaEmbeddingsBody, request: Request) -> Response:
    serving = state_of(request).serving
    model = _model(serving, body.model)
    texts = [body.prompt] if body.prompt else []  # Ollama answers an empty prompt with []
    keep = body.keep_alive_s
    result = await _embed(request, serving, model, texts, True, None, keep)
    vector = result.vectors[0] if result else []
    return await json_response({"embedding": vector}, len(vector))


async def _embed(
    request: Request,
    serving: Serving,
    model: ServedModel,
    texts: list[str],
    truncate: bool,
    dimensions: int | None,
    keep_alive_s: float | None,
) -> Embedded | None:
    if not texts:  # Ollama's way to load a model, or with keep_alive 0 to unload it
        if keep_alive_s is not None:
            await serving.keep(model, keep_alive_s)
        return None
    embed_request = EmbedRequest(
        inputs=texts,
        model=model.id,
        truncate=truncate,
        dimensions=dimensions,
        keep_alive_s=keep_alive_s,
    )
    return await unless_client_leaves(request, serving.embed(embed_request))


def _model(serving: Serving, name: str | None, known_only: bool = False) -> ServedModel:
    """The model `name` names, with or without Ollama's ":latest" tag (`known_only`: a name no
    model has is a 404, whatever --strict-model says)."""
    known = {known for model in serving.registry.models for known in model.names}
    if name and name.endswith(":latest") and name not in known:
        name = name.removesuffix(":latest")
    if known_only and name is not None:
        return serving.registry.get(name)
    return serving.model(name)


class OllamaShowBody(BaseModel):
    """Body of POST /api/show: the model by `model` (or `name`, the older field)."""

    model_config = ConfigDict(
        extra="ignore", json_schema_extra={"example": {"model": "all-minilm"}}
    )

    model: str | None = Field(default=None, description="Served model name (tag optional).")
    name: str | None = Field(default=None, description="The same, as older clients send it.")
    verbose: StrictBool = Field(default=False, description="Accepted; the answer is whole.")


@router.post("/api/show", responses=ERRORS, summary="One model's facts (Ollama's shape)")
async def show(body: OllamaShowBody, request: Request) -> JSONBytes:
    state = state_of(request)
    name = body.model or body.name
    if not name:
        raise InvalidInput("'model' is required", param="model", code="invalid_value")
    model = _model(state.serving, name, known_only=True)  # facts of another model mislead
    metadata, service = model.metadata, model.loaded
    folder = model.source.folder
    parameters = await asyncio.to_thread(parameter_count, folder) if folder else None
    family = metadata.family or "unknown"
    info: dict[str, Any] = {"general.architecture": family}
    if parameters:
        info["general.parameter_count"] = parameters
    dimension = (service.dimension if service else None) or metadata.dimension
    if dimension:
        info[f"{family}.embedding_length"] = dimension
    info[f"{family}.context_length"] = service.max_tokens if service else metadata.max_tokens
    precision = (service.precision or "") if service else ""
    return JSONBytes(
        {
            "license": "",
            "modelfile": "",
            "parameters": "",
            "template": "",
            "details": {
                "parent_model": "",
                "format": service.kind if service else "",
                "family": family,
                "families": [family],
                "parameter_size": _count(parameters),
                "quantization_level": precision.upper(),
            },
            "model_info": info,
            "capabilities": ["embedding"] if model.task == "embed" else [],
            "modified_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(state.started)),
        }
    )


def _count(parameters: int | None) -> str:
    """As Ollama writes a parameter count: 22.7M, 595.8M, 1.2B."""
    if not parameters:
        return ""
    for scale, unit in ((1e9, "B"), (1e6, "M"), (1e3, "K")):
        if parameters >= scale:
            return f"{parameters / scale:.1f}{unit}"
    return str(parameters)


@router.get("/api/tags", summary="The served models (Ollama's shape)")
async def tags(request: Request) -> JSONBytes:
    state = state_of(request)
    modified = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(state.started))
    models = [
        {
            "name": model.id,
            "model": model.id,
            "modified_at": modified,
            "size": 0,
            "digest": "",
            "details": {
                "format": model.loaded.kind if model.loaded else "",
                "family": "",
                "families": None,
                "parameter_size": "",
                "quantization_level": (model.loaded.precision or "") if model.loaded else "",
            },
        }
        for model in state.serving.registry.models
    ]
    return JSONBytes({"models": models})


@router.get("/api/ps", summary="The loaded models (Ollama's shape)")
async def ps(request: Request) -> JSONBytes:
    serving = state_of(request).serving
    models = []
    for model in serving.registry.models:
        service = model.loaded
        if service is None:
            continue
        models.append(
            {
                "name": model.id,
                "model": model.id,
                "size": serving.residency.size_of(model),
                "digest": "",
                "details": {
                    "parent_model": "",
                    "format": service.kind,
                    "family": model.metadata.family or "",
                    "families": None,
                    "parameter_size": "",
                    "quantization_level": (service.precision or "").upper(),
                },
                "expires_at": _wall_clock(model.expires_at),
                "size_vram": 0,
                "context_length": service.max_tokens,
            }
        )
    return JSONBytes({"models": models})


def _wall_clock(monotonic: float | None) -> str | None:
    """A time.monotonic() instant as Ollama writes times (None: never)."""
    if monotonic is None:
        return None
    instant = time.time() + (monotonic - time.monotonic())
    try:
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(instant))
    except (OverflowError, ValueError, OSError):  # past year 9999: as good as never
        return None


@router.get("/api/version", summary="The server's version (Ollama's shape)")
async def version() -> JSONBytes:
    return JSONBytes({"version": __version__})
