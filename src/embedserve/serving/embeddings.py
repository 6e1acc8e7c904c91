"""Request policy for embeddings, in one place for every wire format and every job: which model,
how many inputs, the truncate default, the instruction, the dimensions, the token budget, and
what the metrics count."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from embedserve.config import Settings
from embedserve.engine.embedder import EmbedOptions
from embedserve.engine.loading import build_registry
from embedserve.engine.registry import ModelRegistry, ServedModel
from embedserve.errors import InvalidInput, Overloaded, QueueTimeout
from embedserve.serving.metrics import Metrics
from embedserve.serving.requests import Embedded, EmbedRequest

log = logging.getLogger("embedserve")


class Serving:
    """What every route and job calls: settings, the served models and the metrics; and their
    lifecycle (start, close), which an app's lifespan or a job drives."""

    def __init__(self, settings: Settings, registry: ModelRegistry, metrics: Metrics) -> None:
        self.settings = settings
        self.registry = registry
        self.metrics = metrics

    @classmethod
    def build(cls, settings: Settings, registry: ModelRegistry | None = None) -> Serving:
        """Serving for `settings`' models (resolved now, failing fast; loaded by `start`), or
        for `registry`'s."""
        registry = registry if registry is not None else build_registry(settings)
        return cls(settings, registry, Metrics(registry))

    async def start(self, stop_requested: Callable[[], bool] = lambda: False) -> None:
        """Open the models and, with --preload, load and warm each, one after another (each
        times its own passes), until `stop_requested()` says to give up."""
        self.registry.open()
        if not self.settings.preload:
            log.info("models load on first use (--pre_load_embedding_model=False)")
            return
        for model in self.registry.models:
            if stop_requested():
                log.info("stopping during start-up: %s left unloaded", model.id)
                return
            await asyncio.to_thread(model.load)
        log.info("serving %s", ", ".join(m.id for m in self.registry.models))

    async def close(self) -> None:
        await self.registry.aclose()

    def model(self, name: str | None) -> ServedModel:
        """The served model a request names (ModelNotFound where none serves it)."""
        return self.registry.resolve(name)

    async def embed(self, request: EmbedRequest) -> Embedded:
        """The request's vectors, or the domain error (InvalidInput, ModelNotFound, Overloaded,
        ModelNotReady, ...) that says why not."""
        model = self.model(request.model)
        count = len(request.inputs)
        if count > self.settings.max_inputs:
            raise InvalidInput(
                f"'input' has {count} items, more than this server's limit of "
                f"{self.settings.max_inputs} per request; split it into several requests",
                param="input",
                code="too_many_inputs",
            )
        service = await model.embedder()
        _check_dimensions(request.dimensions, service.dimension)
        options = EmbedOptions(
            truncate=self.settings.truncate if request.truncate is None else request.truncate,
            truncate_left=request.truncate_left,
            instruction=model.instructions.for_type(request.input_type),
            dimensions=request.dimensions,
            normalize=request.normalize,
            max_tokens=self.settings.max_request_tokens,
            background=request.background,
        )
        try:
            result = await service.embed(request.inputs, options)
        except Overloaded as exc:
            reason = "timeout" if isinstance(exc, QueueTimeout) else "queue_full"
            self.metrics.rejected.labels(model.id, reason).inc()
            raise
        self.metrics.embedded(model.id, count, result.prompt_tokens)
        return Embedded(model.id, result.vectors, result.prompt_tokens)


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
