"""Prometheus metrics, one registry per app: requests, latency, queue depth, batches, tokens,
models' loads, unloads and memory, and rejections. Keys and inputs never become labels."""

from __future__ import annotations

import math

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from embedserve.engine.batcher import BatchReport
from embedserve.engine.registry import ModelRegistry, ServedModel, Service
from embedserve.engine.residency import Residency
from embedserve.serving.embedding_cache import EmbeddingCache

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
_ROWS_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
_TOKEN_BUCKETS = (64, 256, 1024, 4096, 16384, 65536)
CONTENT_TYPE = CONTENT_TYPE_LATEST
BATCH_STATUSES = (
    "validating",
    "failed",
    "in_progress",
    "finalizing",
    "completed",
    "expired",
    "cancelling",
    "cancelled",
)


class Metrics:
    def __init__(self, registry: ModelRegistry, residency: Residency | None = None) -> None:
        self.collector = CollectorRegistry()  # this app's own, so apps never share counters
        r = self.collector
        self.requests = Counter(
            "embedserve_requests",
            "HTTP requests by route and status",
            ["route", "status"],
            registry=r,
        )
        self.latency = Histogram(
            "embedserve_request_seconds",
            "HTTP request latency by route",
            ["route"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.inputs = Counter("embedserve_inputs", "Inputs embedded", ["model"], registry=r)
        self.tokens = Counter("embedserve_tokens", "Tokens embedded", ["model"], registry=r)
        self.rejected = Counter(
            "embedserve_rejected_requests",
            "Requests refused for load: queue full (429) or queued too long (503)",
            ["model", "reason"],
            registry=r,
        )
        self.batch_rows = Histogram(
            "embedserve_batch_size",
            "Sequences per forward pass",
            ["model"],
            buckets=_ROWS_BUCKETS,
            registry=r,
        )
        self.batch_tokens = Histogram(
            "embedserve_batch_tokens",
            "Padded tokens per forward pass",
            ["model"],
            buckets=_TOKEN_BUCKETS,
            registry=r,
        )
        self.batch_seconds = Histogram(
            "embedserve_batch_seconds",
            "Forward pass time",
            ["model"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.queue = Gauge("embedserve_queue_depth", "Sequences waiting", ["model"], registry=r)
        self.background_queue = Gauge(
            "embedserve_batch_queue_depth",
            "Batch API sequences waiting behind the online ones",
            ["model"],
            registry=r,
        )
        self.batch_requests = Counter(
            "embedserve_batch_requests",
            "Batch API requests run, by HTTP status",
            ["status"],
            registry=r,
        )
        self.batch_inputs = Counter(
            "embedserve_batch_inputs", "Inputs of the Batch API's requests run", registry=r
        )
        self.batches = Gauge(
            "embedserve_batches", "Batch API batches by status", ["status"], registry=r
        )
        self.load = Gauge(
            "embedserve_model_load_seconds", "Time the model took to load", ["model"], registry=r
        )
        self.ready = Gauge(
            "embedserve_model_ready", "1 while the model is loaded", ["model"], registry=r
        )
        self.loads = Counter("embedserve_model_loads", "Model loads", ["model"], registry=r)
        self.unloads = Counter(
            "embedserve_model_unloads",
            "Model unloads: evicted for room, or idle past their keep-alive",
            ["model"],
            registry=r,
        )
        self.evictions = Counter(
            "embedserve_model_evictions",
            "Models unloaded to make room for another under the memory budget",
            ["model"],
            registry=r,
        )
        self.memory = Gauge(
            "embedserve_model_memory_bytes",
            "Resident memory a loaded model holds, as measured at its load (0: not loaded)",
            ["model"],
            registry=r,
        )
        self.in_flight = Gauge(
            "embedserve_model_requests_in_flight",
            "Requests holding the model (queued or computing): it is not unloaded meanwhile",
            ["model"],
            registry=r,
        )
        self.cache_hits = Counter(
            "embedserve_embedding_cache_hits",
            "Inputs answered from the embedding cache",
            registry=r,
        )
        self.cache_misses = Counter(
            "embedserve_embedding_cache_misses",
            "Inputs the embedding cache did not hold (computed, then kept)",
            registry=r,
        )
        self.cache_bytes = Gauge(
            "embedserve_embedding_cache_bytes", "Bytes the embedding cache holds", registry=r
        )
        self.cache_entries = Gauge(
            "embedserve_embedding_cache_entries", "Vectors the embedding cache holds", registry=r
        )
        self.residency = residency
        if residency is not None and residency.budget is not None:
            Gauge(
                "embedserve_memory_budget_bytes",
                "What the loaded models may hold together (--memory-budget)",
                registry=r,
            ).set(residency.budget)
        for model in registry.models:
            self._watch(model)

    def watch_cache(self, cache: EmbeddingCache | None) -> None:
        """Report `cache`'s size (none: an empty one)."""
        self.cache_bytes.set_function(lambda: cache.bytes if cache else 0)
        self.cache_entries.set_function(lambda: len(cache) if cache else 0)

    def render(self) -> bytes:
        return generate_latest(self.collector)

    def batch_request(self, status: int, inputs: int) -> None:
        self.batch_requests.labels(str(status)).inc()
        self.batch_inputs.inc(inputs)

    def count_batches(self, counts: dict[str, int]) -> None:
        for status in BATCH_STATUSES:
            self.batches.labels(status).set(counts.get(status, 0))

    def embedded(self, model: str, inputs: int, tokens: int) -> None:
        self.inputs.labels(model).inc(inputs)
        self.tokens.labels(model).inc(tokens)

    def _watch(self, model: ServedModel) -> None:
        name = model.id
        self.load.labels(name).set_function(lambda: model.load_seconds or math.nan)
        self.ready.labels(name).set_function(lambda: float(model.loaded is not None))
        self.queue.labels(name).set_function(lambda: _queued(model.loaded))
        self.background_queue.labels(name).set_function(lambda: _queued(model.loaded, True))
        model.when_loaded(lambda service: self._observe_batches(name, service))
        model.when_loaded(lambda _: self.loads.labels(name).inc())
        model.when_unloaded(lambda reason: self._unloaded(name, reason))
        self.loads.labels(name)
        self.unloads.labels(name)
        self.evictions.labels(name)
        self.memory.labels(name).set_function(lambda: self._memory_of(model))
        self.in_flight.labels(name).set_function(lambda: model.in_flight)

    def _unloaded(self, name: str, reason: str) -> None:
        self.unloads.labels(name).inc()
        if reason == "evicted":
            self.evictions.labels(name).inc()

    def _memory_of(self, model: ServedModel) -> float:
        if model.loaded is None:
            return 0.0
        if self.residency is not None:
            return float(self.residency.size_of(model))
        return float(model.memory_bytes or 0)

    def _observe_batches(self, name: str, service: Service) -> None:
        batcher = service.batcher
        if batcher is None:  # a static or upstream model runs no batches of its own
            return
        rows, tokens, seconds = (
            self.batch_rows.labels(name),
            self.batch_tokens.labels(name),
            self.batch_seconds.labels(name),
        )

        def observe(report: BatchReport) -> None:
            rows.observe(report.rows)
            tokens.observe(report.padded_tokens)
            seconds.observe(report.seconds)

        batcher.observers.append(observe)


def _queued(service: Service | None, background: bool = False) -> float:
    batcher = service.batcher if service is not None else None
    if batcher is None:
        return 0.0
    return float(batcher.state().background if background else batcher.queued)
