"""Composition root: wires a model source, the engine and a concrete backend, then serves."""

from __future__ import annotations

import logging
import os
from functools import partial

from embedserve.api.app import create_app
from embedserve.config import Settings
from embedserve.engine.batcher import BatchLimits
from embedserve.engine.embedder import Embedder
from embedserve.engine.registry import Loader, ModelRegistry, ServedModel
from embedserve.engine.tokenizer import ModelTokenizer
from embedserve.models.metadata import read_metadata
from embedserve.models.source import ModelSource, resolve

log = logging.getLogger("embedserve")


def load_embedder(source: ModelSource, settings: Settings) -> Embedder:
    """Read the model's files, build its tokenizer and torch backend, and warm it up."""
    from embedserve.backends.torch import TorchBackend

    metadata = read_metadata(source.folder)
    tokenizer = ModelTokenizer(source.folder / "tokenizer.json", metadata.max_tokens)
    backend = TorchBackend(source.folder, settings.device)
    embedder = Embedder(
        tokenizer,
        backend,
        token_ids=settings.token_ids,
        limits=batch_limits(settings, on_gpu=False),
    )
    embedder.embed_sync(["warm-up", "a longer warm-up sentence " * 8])
    return embedder


def batch_limits(settings: Settings, *, on_gpu: bool) -> BatchLimits:
    """Batch sizes from the flags, or from the machine: a CPU gains nothing from batches much
    larger than its cores can keep busy; a GPU wants large ones."""
    cores = os.cpu_count() or 1
    tokens = 65536 if on_gpu else min(max(4096, 2048 * cores), 32768)
    return BatchLimits(
        max_batch_tokens=settings.max_batch_tokens or tokens,
        max_batch_size=settings.max_batch_size or (256 if on_gpu else 64),
        max_wait_s=settings.max_wait_ms / 1000,
        max_queued=settings.max_queued or 8 * settings.max_inputs,
    )


def build_registry(settings: Settings, loader: Loader | None = None) -> ModelRegistry:
    """Resolve the configured model (fails fast with one clear line) without loading it."""
    source = resolve(settings.model)
    model = ServedModel(source, loader or partial(load_embedder, settings=settings))
    return ModelRegistry([model], strict=settings.strict_model)


def serve(settings: Settings) -> None:
    import uvicorn

    registry = build_registry(settings)
    if settings.preload:
        for model in registry.models:
            model.load()
    else:
        log.info("models load on first use (--pre_load_embedding_model=False)")
    app = create_app(settings, registry)
    log.info("serving %s on http://%s:%d/v1", registry.models[0].id, settings.host, settings.port)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        access_log=settings.access_log,
        log_config=None,
    )
    uvicorn.Server(config).run()
