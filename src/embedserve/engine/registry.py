"""Served models by name, and their load state (eager or lazy, one load under concurrency)."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable

from embedserve.engine.embedder import Embedder
from embedserve.errors import ModelNotFound, ModelNotReady
from embedserve.models.metadata import ModelMetadata, read_metadata
from embedserve.models.source import ModelSource

log = logging.getLogger(__name__)

Loader = Callable[[ModelSource], Embedder]


class ServedModel:
    def __init__(self, source: ModelSource, loader: Loader) -> None:
        self.source = source
        self.metadata: ModelMetadata = read_metadata(source.folder)
        self.error: str | None = None
        self.load_seconds: float | None = None
        self._loader = loader
        self._embedder: Embedder | None = None
        self._lock = threading.Lock()
        self._pending: asyncio.Future[Embedder] | None = None

    @property
    def id(self) -> str:
        return self.source.id

    @property
    def names(self) -> tuple[str, ...]:
        short = self.id.rsplit("/", 1)[-1]
        return (self.id, short) if short != self.id else (self.id,)

    @property
    def loaded(self) -> Embedder | None:
        return self._embedder

    def load(self) -> Embedder:
        """Load once (thread-safe); later calls return the same embedder."""
        with self._lock:
            if self._embedder is None:
                if self.error is not None:
                    raise ModelNotReady(f"model {self.id} failed to load: {self.error}")
                started = time.perf_counter()
                log.info("loading model %s from %s", self.id, self.source.folder)
                try:
                    self._embedder = self._loader(self.source)
                except Exception as exc:
                    self.error = f"{type(exc).__name__}: {exc}"
                    log.exception("model %s failed to load", self.id)
                    raise ModelNotReady(f"model {self.id} failed to load: {self.error}") from exc
                self.load_seconds = time.perf_counter() - started
                log.info("model %s ready in %.1fs", self.id, self.load_seconds)
            return self._embedder

    async def embedder(self) -> Embedder:
        """The loaded embedder; loads it off the event loop on first use, once."""
        if self._embedder is not None:
            return self._embedder
        if self._pending is None:
            self._pending = asyncio.ensure_future(asyncio.to_thread(self.load))
        return await asyncio.shield(self._pending)


class ModelRegistry:
    def __init__(self, models: list[ServedModel], *, strict: bool = False) -> None:
        if not models:
            raise ValueError("at least one model must be served")
        self.models = models
        self.strict = strict

    def resolve(self, name: str | None) -> ServedModel:
        """The model a request names. With one model, any name reaches it unless strict."""
        for model in self.models:
            if name in model.names:
                return model
        if (name is None or not self.strict) and len(self.models) == 1:
            return self.models[0]
        served = ", ".join(m.id for m in self.models)
        raise ModelNotFound(
            f"the model '{name}' does not exist on this server; served models: {served}",
            param="model",
            code="model_not_found",
        )

    def get(self, model_id: str) -> ServedModel:
        for model in self.models:
            if model_id in model.names:
                return model
        raise ModelNotFound(
            f"the model '{model_id}' does not exist on this server", code="model_not_found"
        )

    @property
    def ready(self) -> bool:
        return all(m.loaded is not None for m in self.models)
