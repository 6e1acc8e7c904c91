"""The request policy, in one place for every wire format and every job: which model (and of
which kind) serves a request, how many inputs, the truncate default, the instruction, the
dimensions, the token budget, the limits as resolved, and what the metrics count; and the served
models' lifecycle."""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any, Literal

import numpy as np

from embedserve.config import Settings
from embedserve.engine.embedder import (
    Embedder,
    Embeddings,
    EmbeddingService,
    EmbedOptions,
    LocalModel,
)
from embedserve.engine.loading import build_key, build_registry, cache_root
from embedserve.engine.model_sizes import ModelSizes
from embedserve.engine.registry import ModelRegistry, ServedModel, Service
from embedserve.engine.reranker import Reranker
from embedserve.engine.residency import Residency
from embedserve.errors import InvalidInput, Overloaded, QueueTimeout
from embedserve.models.tokenizer import ModelTokenizer, Token
from embedserve.serving.embedding_cache import EmbeddingCache, embed_through
from embedserve.serving.metrics import Metrics
from embedserve.serving.quantize import BIT_ENCODINGS, RANGED_ENCODINGS, quantized
from embedserve.serving.requests import (
    Embedded,
    EmbedRequest,
    InputType,
    Reranked,
    RerankRequest,
)

log = logging.getLogger("embedserve")


class Serving:
    """What every route and job calls: settings, the served models and the metrics; and their
    lifecycle (start, close), which an app's lifespan or a job drives."""

    def __init__(
        self, settings: Settings, registry: ModelRegistry, metrics: Metrics, residency: Residency
    ) -> None:
        self.settings = settings
        self.registry = registry
        self.metrics = metrics
        self.residency = residency
        self.cache = EmbeddingCache(settings.embedding_cache) if settings.embedding_cache else None
        metrics.watch_cache(self.cache)

    @classmethod
    def build(cls, settings: Settings, registry: ModelRegistry | None = None) -> Serving:
        """Serving for `settings`' models (resolved now, failing fast; loaded by `start`), or
        for `registry`'s."""
        registry = registry if registry is not None else build_registry(settings)
        sizes = ModelSizes(
            cache_root(settings) / "model-sizes.json",
            key=lambda model: build_key(model.source, settings),
        )
        residency = Residency(
            registry.models,
            budget=settings.memory_budget,
            keep_alive_s=settings.keep_alive_s,
            sizes=sizes,
            load_timeout_s=settings.request_timeout_s,
        )
        return cls(settings, registry, Metrics(registry, residency), residency)

    async def start(self, stop_requested: Callable[[], bool] = lambda: False) -> None:
        """Open the models and, with --preload and no memory budget, load and warm each, one
        after another (each times its own passes), until `stop_requested()` says to give up."""
        self.registry.open()
        self.residency.start()
        if self.residency.on_demand:
            log.info("models load on first use, within the memory budget")
            return
        if not self.settings.preload:
            log.info("models load on first use (--pre_load_embedding_model=False)")
            return
        for model in self.registry.models:
            if stop_requested():
                log.info("stopping during start-up: %s left unloaded", model.id)
                return
            await self.residency.preload(model)
        log.info("serving %s", ", ".join(m.id for m in self.registry.models))

    async def close(self) -> None:
        await self.residency.close()
        await self.registry.aclose()

    async def keep(self, model: ServedModel, keep_alive_s: float) -> None:
        """Load `model` (if it is not) to stay `keep_alive_s` idle; 0 unloads it now."""
        if keep_alive_s == 0:
            await self.residency.unload(model, "requested")
            return
        async with self.residency.use(model, keep_alive_s):
            pass

    @property
    def ready(self) -> bool:
        """Every model loaded, or unloaded and able to load on its next request."""
        return all(self.state_of(m) in ("ready", "unloaded") for m in self.registry.models)

    def state_of(self, model: ServedModel) -> str:
        """ "ready" (loaded), "failed", "unloaded" (loads on its next request: under a budget,
        or since its keep-alive ran out) or "loading" (at start-up)."""
        if model.loaded is not None:
            return "ready"
        if model.error is not None:
            return "failed"
        return "unloaded" if self.residency.on_demand or model.loads else "loading"

    def check_count(self, count: int, field: str = "input") -> None:
        """At most --max-inputs inputs a request."""
        if count > self.settings.max_inputs:
            raise InvalidInput(
                f"'{field}' has {count} items, more than this server's limit of "
                f"{self.settings.max_inputs} per request; split it into several requests",
                param=field,
                code="too_many_inputs",
            )

    async def tokenize(
        self,
        name: str | None,
        texts: list[str],
        *,
        special: bool = True,
        input_type: str = "",
        prompt_name: str | None = None,
    ) -> tuple[ServedModel, list[list[Token]]]:
        """The tokens the model reads for each text (its instruction for `input_type`, or the
        prompt named, first)."""
        model = self.model(name)
        self.check_count(len(texts), "inputs")
        instruction = ""
        if input_type or prompt_name is not None:
            instruction = instruction_for(model, input_type or "document", prompt_name)
        async with self.residency.use(model) as service:
            tokenizer = _tokenizer(model, service)
            tokens = await asyncio.to_thread(
                lambda: [tokenizer.tokens(instruction + text, special=special) for text in texts]
            )
        return model, tokens

    async def decode(
        self, name: str | None, ids: list[list[int]], *, skip_special: bool = True
    ) -> list[str]:
        """The text each sequence of token ids stands for, in the model's own vocabulary."""
        model = self.model(name)
        self.check_count(len(ids), "ids")
        async with self.residency.use(model) as service:
            tokenizer = _tokenizer(model, service)
            return await asyncio.to_thread(tokenizer.decode, ids, skip_special=skip_special)

    async def similarity(
        self, source: str, sentences: list[str], options: EmbedRequest
    ) -> np.ndarray:
        """The cosine of each sentence's vector to the source's, all embedded alike (`options`:
        the model, prompt and truncation; its inputs are ignored), as sentence-transformers'
        similarity task and TEI answer it."""
        request = replace(options, inputs=[source, *sentences], normalize=True)
        vectors = (await self.embed(request)).vectors
        return np.asarray(vectors[1:] @ vectors[0], dtype=np.float32)

    async def rerank(self, request: RerankRequest) -> Reranked:
        """The documents scored against the query: by a reranker (a cross-encoder), or by an
        embedding model as the cosine of the query (embedded as a query) and each document."""
        model = self.model(request.model, "rerank")
        self.check_count(len(request.documents), "documents")
        async with self.residency.use(model) as service:
            if isinstance(service, Reranker):
                truncate = self.settings.truncate if request.truncate is None else request.truncate
                scored = await service.rerank(
                    request.query,
                    request.documents,
                    raw=request.raw,
                    truncate=truncate,
                    left=request.truncate_left,
                    max_tokens=self.settings.max_request_tokens,
                )
                self.metrics.embedded(model.id, len(request.documents), scored.prompt_tokens)
                return _ranked(model, scored.scores, scored.prompt_tokens, "cross-encoder", request)
        asked: list[tuple[Sequence[str], InputType]] = [
            ([request.query], "query"),
            (request.documents, "document"),
        ]
        query, documents = [
            await self.embed(
                EmbedRequest(
                    texts,
                    model.id,
                    input_type,
                    truncate=request.truncate,
                    truncate_left=request.truncate_left,
                )
            )
            for texts, input_type in asked
        ]
        scores = documents.vectors @ query.vectors[0]
        tokens = query.prompt_tokens + documents.prompt_tokens
        return _ranked(model, scores, tokens, "cosine", request)

    async def embedding_service(self, model: ServedModel) -> EmbeddingService:
        """The model's loaded embedding service (loaded now if it is not), for a job that holds
        it throughout (a job has no memory budget or keep-alive: nothing unloads it): a
        reranker's is not one, and a job that would embed with it is refused."""
        return _embedding(model, await self.residency.load(model))

    async def token_vectors(self, request: EmbedRequest) -> list[np.ndarray]:
        """Each input's token vectors, unpooled (TEI's /embed_all)."""
        model = self.model(request.model)
        self.check_count(len(request.inputs))
        async with self.residency.use(model, request.keep_alive_s) as loaded:
            service = _embedding(model, loaded)
            if not isinstance(service, LocalModel):
                raise InvalidInput(
                    f"{model.id} passes through to an upstream API, which gives pooled vectors "
                    f"only; per-token vectors come from a local model",
                    param="model",
                    code="token_vectors_unavailable",
                )
            options = self._options(model, request)
            vectors, tokens = await service.token_vectors(request.inputs, options)
        self.metrics.embedded(model.id, len(request.inputs), tokens)
        return vectors

    def _options(self, model: ServedModel, request: EmbedRequest, **more: Any) -> EmbedOptions:
        """What tokenizing `request` takes (truncation, the instruction, the token limit), the
        same for pooled and per-token vectors; `more`: the rest of EmbedOptions."""
        return EmbedOptions(
            truncate=self.settings.truncate if request.truncate is None else request.truncate,
            truncate_left=request.truncate_left,
            instruction=instruction_for(model, request.input_type, request.prompt_name),
            max_tokens=self.settings.max_request_tokens,
            **more,
        )

    def limits(self, model: ServedModel) -> dict[str, Any]:
        """Every limit a request to `model` meets, as resolved: the server's per request, and
        the model's batches once it is loaded (a static or upstream model runs none)."""
        service = model.loaded
        batches = service.batcher.limits if service is not None and service.batcher else None
        padding = batches.max_padding_tokens if batches else math.inf  # inf: none set
        return {
            "max_inputs": self.settings.max_inputs,
            "max_request_tokens": self.settings.max_request_tokens,
            "max_input_tokens": service.max_tokens if service else model.metadata.max_tokens,
            "request_timeout_s": self.settings.request_timeout_s,
            "max_batch_tokens": batches.max_batch_tokens if batches else None,
            "max_batch_size": batches.max_batch_size if batches else None,
            "max_padding": batches.max_padding if batches else None,
            "max_padding_tokens": None if math.isinf(padding) else round(padding),
            "max_wait_ms": batches.max_wait_s * 1000 if batches else None,  # inf: JSON null
            "max_queued": batches.max_queued if batches else None,
        }

    def model(self, name: str | None, task: str = "embed") -> ServedModel:
        """The served model a request names (ModelNotFound where none serves it), or the default
        model of the request's task."""
        return self.registry.resolve(name, task)

    async def embed(self, request: EmbedRequest) -> Embedded:
        """The request's vectors, or the domain error (InvalidInput, ModelNotFound, Overloaded,
        ModelNotReady, ...) that says why not."""
        model = self.model(request.model)
        self.check_count(len(request.inputs))
        async with self.residency.use(model, request.keep_alive_s) as loaded:
            return await self._embed(model, _embedding(model, loaded), request)

    async def _embed(
        self, model: ServedModel, service: EmbeddingService, request: EmbedRequest
    ) -> Embedded:
        count = len(request.inputs)
        _check_dimensions(request.dimensions, service.dimension)
        _check_bits(request.encodings, request.dimensions or service.dimension)
        ranges = {name: await _ranges(model, service, name, request) for name in request.encodings}
        options = self._options(
            model,
            request,
            dimensions=request.dimensions,
            normalize=request.normalize,
            background=request.background,
        )
        try:
            result = await self._computed_or_cached(model, service, request.inputs, options)
        except Overloaded as exc:
            reason = "timeout" if isinstance(exc, QueueTimeout) else "queue_full"
            self.metrics.rejected.labels(model.id, reason).inc()
            raise
        self.metrics.embedded(model.id, count, result.prompt_tokens)
        encoded = {
            name: quantized(result.vectors, name, ranges[name])
            for name in request.encodings
            if name not in ("float", "base64")
        }
        return Embedded(model.id, result.vectors, result.prompt_tokens, encoded)

    async def _computed_or_cached(
        self,
        model: ServedModel,
        service: EmbeddingService,
        inputs: Sequence[str] | Sequence[Sequence[int]],
        options: EmbedOptions,
    ) -> Embeddings:
        """Texts through the embedding cache where it is on (a batched local model's; token
        ids and other models' inputs are computed), else computed."""
        if self.cache is None or not isinstance(service, Embedder):
            return await service.embed(inputs, options)
        texts = [text for text in inputs if isinstance(text, str)]
        if len(texts) < len(inputs):
            return await service.embed(inputs, options)
        build = self.residency.sizes.key(model)
        result, hits = await embed_through(self.cache, build, service, texts, options)
        self.metrics.cache_hits.inc(hits)
        self.metrics.cache_misses.inc(len(texts) - hits)
        return result


INPUT_TYPES = ("query", "document", "passage")


def _embedding(model: ServedModel, service: Service) -> EmbeddingService:
    """`service` as an embedding service: a reranker's is not one, and a request that would
    embed with it is refused."""
    if isinstance(service, Reranker):
        raise InvalidInput(
            f"{model.id} is a reranker (a cross-encoder): it scores query-document pairs "
            f"on /v1/rerank and does not embed; ask an embedding model",
            param="model",
            code="model_cannot_embed",
        )
    return service


def _tokenizer(model: ServedModel, service: Service) -> ModelTokenizer:
    """The embedding model's tokenizer (an upstream's is not here)."""
    tokenizer = _embedding(model, service).tokenizer
    if tokenizer is None:
        raise InvalidInput(
            f"{model.id} is served by an upstream API: its tokenizer is not here",
            code="no_tokenizer",
        )
    return tokenizer


def _ranked(
    model: ServedModel,
    scores: np.ndarray,
    tokens: int,
    by: Literal["cross-encoder", "cosine"],
    request: RerankRequest,
) -> Reranked:
    order = np.argsort(-scores, kind="stable").tolist()[: request.top_n]
    return Reranked(model.id, scores, order, tokens, by)


def instruction_for(model: ServedModel, input_type: str, prompt_name: str | None = None) -> str:
    """What goes before each input: the prompt `prompt_name` names (an input type's name, or
    one of the prompts the model's own configuration lists), else `input_type`'s instruction."""
    if prompt_name is None or prompt_name in INPUT_TYPES:
        return model.instructions.for_type(prompt_name or input_type)
    prompts = model.metadata.prompts or {}
    if prompt_name not in prompts:
        known = ", ".join([*INPUT_TYPES, *(p for p in prompts if p not in INPUT_TYPES)])
        raise InvalidInput(
            f"prompt_name {prompt_name!r} is not a prompt of model {model.id}; "
            f"its prompts: {known}",
            param="prompt_name",
            code="unknown_prompt",
        )
    return prompts[prompt_name]


def _check_bits(encodings: tuple[str, ...], dimension: int | None) -> None:
    """Packed bits need whole bytes: a dimension that is a multiple of 8."""
    bits = [name for name in encodings if name in BIT_ENCODINGS]
    if bits and dimension and dimension % 8:
        raise InvalidInput(
            f"'{bits[0]}' packs 8 dimensions per byte: 'dimensions' must be a multiple of 8, "
            f"got {dimension}",
            param="dimensions",
            code="invalid_dimensions",
        )


async def _ranges(
    model: ServedModel, service: EmbeddingService, encoding: str, request: EmbedRequest
) -> np.ndarray | None:
    """The calibrated ranges `encoding` needs, for the request's dimensions and normalization."""
    if encoding not in RANGED_ENCODINGS:
        return None
    ranges = await service.quantization_ranges(request.dimensions, request.normalize)
    if ranges is None:
        raise InvalidInput(
            f"{model.id} has no calibrated ranges for '{encoding}' (an upstream model's vectors "
            f"are not calibrated here); ask for float, base64, binary or ubinary",
            code="unsupported_encoding",
        )
    return ranges


def _check_dimensions(dimensions: int | None, dimension: int | None) -> None:
    """1..the model's dimension (an upstream's is known once it has answered)."""
    if dimensions is None or 1 <= dimensions <= (dimension or dimensions):
        return
    allowed = f"between 1 and {dimension} for this model" if dimension else "at least 1"
    raise InvalidInput(
        f"'dimensions' must be {allowed}, got {dimensions}",
        param="dimensions",
        code="invalid_dimensions",
    )
