"""Served models by name, and their load state (eager or lazy, one load under concurrency)."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable

from embedserve.config import ModelSpec
from embedserve.engine.embedder import EmbeddingService
from embedserve.engine.instructions import instructions_for
from embedserve.engine.reranker import Reranker
from embedserve.errors import ConfigError, EmbedServeError, ModelNotFound, ModelNotReady
from embedserve.machine import peak_resident_bytes, resident_bytes, start_peak_resident
from embedserve.models.metadata import ModelMetadata, read_metadata
from embedserve.models.source import ModelSource

log = logging.getLogger(__name__)

Service = EmbeddingService | Reranker
"""A loaded model, of the kind its task chose at load: an embedding model (local, static or an
upstream) or a reranker. Callers tell them apart by type."""

Loader = Callable[[ModelSource], Service]


class ServedModel:
    def __init__(self, source: ModelSource, loader: Loader, spec: ModelSpec | None = None) -> None:
        spec = spec or ModelSpec()
        self.source = source
        self.metadata: ModelMetadata = (
            read_metadata(source.folder) if source.folder else ModelMetadata(8191, None)
        )
        self.served_name = spec.name or source.id
        self.task = self.metadata.task
        """"embed", or "rerank" for a cross-encoder."""
        self.aliases = spec.aliases
        self.instructions = instructions_for(
            source.id, self.metadata.prompts, spec.query_instruction, spec.document_instruction
        )
        self.pinned = spec.pinned
        self.keep_alive_s = spec.keep_alive_s
        self.error: str | None = None
        self.load_seconds: float | None = None
        self.memory_bytes: int | None = None  # resident memory its last load added
        self.load_peak_bytes: int | None = None  # the most its last load added, while loading
        self.loads = 0
        # kept by the Residency: requests holding it, when the last one ended, when it unloads
        self.in_flight = 0
        self.last_used = 0.0
        self.expires_at: float | None = None
        self._loader = loader
        self._service: Service | None = None
        self._lock = threading.Lock()
        self._pending: asyncio.Future[Service] | None = None
        self._on_load: list[Callable[[Service], None]] = []
        self._on_unload: list[Callable[[str], None]] = []
        self._closed = False  # closed by aclose until opened again

    @property
    def id(self) -> str:
        """The name responses and /v1/models report."""
        return self.served_name

    @property
    def names(self) -> tuple[str, ...]:
        """Every name a request may use: served name, model id, its last part, aliases."""
        candidates = (self.served_name, self.source.id, self.source.id.rsplit("/", 1)[-1])
        return tuple(dict.fromkeys((*candidates, *self.aliases)))

    @property
    def loaded(self) -> Service | None:
        return self._service

    def load(self) -> Service:
        """Load once (thread-safe); later calls return the same service."""
        with self._lock:
            if self._closed:
                raise ModelNotReady(f"model {self.id} is closed: the server is stopping")
            if self._service is None:
                if self.error is not None:
                    raise ModelNotReady(f"model {self.id} failed to load: {self.error}")
                started = time.perf_counter()
                peak_measured = start_peak_resident()
                resident = resident_bytes()
                origin = self.source.folder or f"the upstream (openai:{self.source.upstream})"
                log.info("loading model %s from %s", self.id, origin)
                try:
                    self._service = self._loader(self.source)
                except EmbedServeError as exc:  # a reason we gave ourselves: one line
                    self.error = exc.message
                    log.error("model %s cannot be served: %s", self.id, exc.message)
                    raise ModelNotReady(f"model {self.id} cannot be served: {exc.message}") from exc
                except Exception as exc:
                    self.error = f"{type(exc).__name__}: {exc}"
                    log.exception("model %s failed to load", self.id)
                    raise ModelNotReady(f"model {self.id} failed to load: {self.error}") from exc
                self.load_seconds = time.perf_counter() - started
                self.loads += 1
                after, peak = resident_bytes(), peak_resident_bytes()
                if resident is not None and after is not None:
                    self.memory_bytes = max(0, after - resident)
                    if peak_measured and peak is not None:
                        self.load_peak_bytes = max(self.memory_bytes, peak - resident)
                log.info(
                    "model %s ready in %.1fs, %s MiB resident",
                    self.id,
                    self.load_seconds,
                    "?" if self.memory_bytes is None else round(self.memory_bytes / 2**20),
                )
                for callback in self._on_load:
                    callback(self._service)
            return self._service

    def when_loaded(self, callback: Callable[[Service], None]) -> None:
        """Call `callback` with the service once loaded (now, if it already is)."""
        with self._lock:
            self._on_load.append(callback)
            if self._service is not None:
                callback(self._service)

    def when_unloaded(self, callback: Callable[[str], None]) -> None:
        """Call `callback` with the reason ("evicted", "expired") each time it is unloaded."""
        self._on_unload.append(callback)

    def unload(self, reason: str) -> Service | None:
        """Detach the loaded service (the caller closes it); the next request loads it again."""
        with self._lock:
            service, self._service = self._service, None
            self._pending = None
            self.expires_at = None
        if service is not None:
            for callback in self._on_unload:
                callback(reason)
        return service

    async def service(self) -> Service:
        """The loaded service; loads it off the event loop on first use, once."""
        if self._service is not None:
            return self._service
        if self._pending is None:
            self._pending = asyncio.ensure_future(asyncio.to_thread(self.load))
        return await asyncio.shield(self._pending)

    def open(self) -> None:
        """Allow loading (again, after aclose)."""
        with self._lock:
            self._closed = False

    async def aclose(self) -> None:
        """Close the loaded service (its batcher's threads, an upstream's HTTP client); until
        opened again, a request for it is refused instead of loading it anew. Waits (off the
        event loop) for a load in progress."""
        service = await asyncio.to_thread(self._detach)
        if service is not None:
            await service.aclose()
            log.info("model %s closed", self.id)

    def _detach(self) -> Service | None:
        with self._lock:
            self._closed = True
            service, self._service = self._service, None
            self._pending = None
            return service


class ModelRegistry:
    def __init__(
        self,
        models: list[ServedModel],
        *,
        strict: bool = False,
        default: str | None = None,
        default_reranker: str | None = None,
    ) -> None:
        if not models:
            raise ValueError("at least one model must be served")
        self.models = models
        self.strict = strict
        self._check_names()
        self.default = self._default("embed", default, "--default-model")
        self.default_reranker = self._default("rerank", default_reranker, "--default-reranker")

    def _default(self, task: str, configured: str | None, flag: str) -> ServedModel | None:
        """The configured model, else the only model of `task` (else the only model)."""
        if configured:
            if not any(configured in m.names for m in self.models):
                raise ConfigError(f"{flag} '{configured}' is not one of the served models")
            return self.get(configured)
        of_task = [m for m in self.models if m.task == task]
        if len(of_task) == 1:
            return of_task[0]
        return self.models[0] if len(self.models) == 1 and task == "embed" else None

    def resolve(self, name: str | None, task: str = "embed") -> ServedModel:
        """The model a request names. Unknown names (and none) reach the default model of the
        request's task: the only one, or the configured one (a rerank request, else the default
        embedding model); with --strict-model an unknown name is always a 404."""
        for model in self.models:
            if name in model.names:
                return model
        default = (self.default_reranker or self.default) if task == "rerank" else self.default
        if default is not None and (name is None or not self.strict):
            return default
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

    def _check_names(self) -> None:
        owners: dict[str, int] = {}
        for index, model in enumerate(self.models):
            for name in dict.fromkeys((model.served_name, *model.aliases)):
                if owners.setdefault(name, index) != index:
                    raise ConfigError(f"the name '{name}' is given to two served models")

    def open(self) -> None:
        for model in self.models:
            model.open()

    async def aclose(self) -> None:
        for model in self.models:
            try:
                await model.aclose()
            except Exception:  # one model's failure to close must not keep the others open
                log.exception("model %s did not close cleanly", model.id)
