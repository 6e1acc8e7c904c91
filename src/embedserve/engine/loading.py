"""Model loading, for the server, a bulk job or a Ray actor alike: settings in, served models
out. Resolves each model's files, picks and builds its backend (backends/registry.py), proves
a faster precision against fp32, sizes its batches and warms it up. No HTTP here."""

from __future__ import annotations

import logging
import os
from dataclasses import replace
from functools import partial
from pathlib import Path

from embedserve import machine
from embedserve.backends.base import Backend
from embedserve.backends.registry import BACKENDS, Choice, choose, known, resolve_device
from embedserve.backends.spec import BackendSpec
from embedserve.config import Settings
from embedserve.engine.embedder import Embedder, EmbeddingService
from embedserve.engine.fidelity import measure, report
from embedserve.engine.instructions import is_instructor
from embedserve.engine.registry import Loader, ModelRegistry, ServedModel
from embedserve.engine.sizing import batch_limits, max_padding_tokens
from embedserve.errors import ModelUnavailable
from embedserve.models.cache import default_cache_dir
from embedserve.models.metadata import read_metadata
from embedserve.models.source import ModelSource, onnx_file, resolve
from embedserve.models.tokenizer import ModelTokenizer, tokenize_on_calling_threads

log = logging.getLogger("embedserve")

_WARM_UP = ["warm-up", "a longer warm-up sentence " * 8]


def build_registry(settings: Settings, loader: Loader | None = None) -> ModelRegistry:
    """Resolve every configured model (failing fast, with one clear line) without loading."""
    tokenize_on_calling_threads()
    known(settings.backend)
    cache = cache_root(settings)
    load = loader or partial(load_service, settings=settings)
    models = [ServedModel(resolve(spec.ref, cache), load, spec) for spec in settings.models]
    return ModelRegistry(models, strict=settings.strict_model, default=settings.default_model)


def cache_root(settings: Settings) -> Path:
    return Path(settings.cache_dir) if settings.cache_dir else default_cache_dir()


def load_service(source: ModelSource, settings: Settings) -> EmbeddingService:
    """A served model: an upstream API for "openai:<model>", else the local model."""
    if source.upstream is None:
        return load_embedder(source, settings)
    from embedserve.engine.upstream import UpstreamEmbedder

    key = os.environ.get("OPENAI_API_KEY", "")  # the key's one place: never a flag or a file
    if not key:
        raise ModelUnavailable(
            f"serving openai:{source.upstream} needs the upstream's key in OPENAI_API_KEY"
        )
    log.info("model %s passes through to %s", source.id, settings.openai_base_url)
    return UpstreamEmbedder(
        settings.openai_base_url,
        source.upstream,
        key,
        timeout_s=settings.openai_timeout_s,
        max_inputs=settings.openai_max_inputs,
    )


def load_embedder(source: ModelSource, settings: Settings, cores: int | None = None) -> Embedder:
    """Read the model's files, build its tokenizer and backend, and warm it up. `cores`: the
    cores to size it for (default: those this process may use)."""
    cores = cores or machine.cores()
    metadata = read_metadata(source.files)
    pools_instruction = metadata.pools_prompt and not is_instructor(source.id)
    if not pools_instruction:
        log.info("%s: instruction tokens are read but left out of pooling (INSTRUCTOR)", source.id)
    tokenizer = ModelTokenizer(source.files / "tokenizer.json", metadata.max_tokens)
    backend, choice = build_backend(source, tokenizer, settings, cores, pools_instruction)
    on_gpu = choice.device.startswith("cuda")
    limits = batch_limits(
        settings,
        on_gpu=on_gpu,
        cores=cores,
        streams=backend.streams,
        max_padding_tokens=max_padding_tokens(source.id, backend, settings, on_gpu),
        coarse_widths=backend.kernels_per_shape,
    )
    embedder = Embedder(
        tokenizer,
        backend,
        token_ids=settings.token_ids,
        limits=limits,
        pools_instruction=pools_instruction,
    )
    embedder.embed_sync(_WARM_UP)
    return embedder


def build_backend(
    source: ModelSource,
    tokenizer: ModelTokenizer,
    settings: Settings,
    cores: int,
    pools_instruction: bool = True,
) -> tuple[Backend, Choice]:
    """The first backend the registry's rules offer that builds; a precision other than fp32
    is measured against fp32 on a probe set, and the figures logged."""
    device = resolve_device(settings.device)
    shipped = onnx_file(source.files) is not None
    choices = choose(
        settings.backend, device, settings.precision, onnx_only=source.id if shipped else None
    )
    for index, choice in enumerate(choices):
        spec = BackendSpec(
            files=source.files,
            model_id=source.id,
            precision=choice.precision,
            device=choice.device,
            cores=cores,
            streams=settings.streams or machine.default_streams(cores),
            cache_root=cache_root(settings),
            kernel_cache=settings.kernel_cache,
            pools_instruction=pools_instruction,
        )
        try:
            backend = choice.entry.build(spec)
        except ModelUnavailable:
            raise
        except Exception as exc:
            what = f"the {choice.precision} {choice.name} backend of {source.id}"
            if index + 1 == len(choices):
                raise ModelUnavailable(f"cannot build {what}: {exc}") from exc
            log.warning("cannot build %s (%s); trying %s", what, exc, choices[index + 1].name)
            continue
        if choice.precision != "fp32" and choice.entry.reference:
            _probe(backend, replace(spec, precision="fp32", streams=1), choice, tokenizer)
        return backend, choice
    raise AssertionError("choose() returns at least one choice")


def _probe(backend: Backend, fp32: BackendSpec, choice: Choice, tokenizer: ModelTokenizer) -> None:
    assert choice.entry.reference is not None
    reference = BACKENDS[choice.entry.reference].build(fp32)
    report(choice.precision, measure(reference, backend, tokenizer))
