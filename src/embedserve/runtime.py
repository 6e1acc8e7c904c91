"""Composition root: wires a model source, the engine and a concrete backend, then serves."""

from __future__ import annotations

import logging
import math
import os
import signal
from functools import partial
from pathlib import Path
from types import FrameType
from typing import Any

from uvicorn import server as uvicorn_server

from embedserve.api.app import create_app
from embedserve.backends.base import Backend, pass_cost_in_tokens
from embedserve.backends.onnx_build import cached_onnx_model
from embedserve.config import Settings, cpu_supports_bf16, default_streams, usable_cores
from embedserve.engine.batcher import BatchLimits
from embedserve.engine.embedder import Embedder, EmbeddingService
from embedserve.engine.fidelity import measure, report
from embedserve.engine.instructions import is_instructor
from embedserve.engine.registry import Loader, ModelRegistry, ServedModel
from embedserve.engine.tokenizer import ModelTokenizer, tokenize_on_calling_threads
from embedserve.errors import ModelUnavailable
from embedserve.models.cache import default_cache_dir
from embedserve.models.metadata import ModelMetadata, read_metadata
from embedserve.models.source import ModelSource, onnx_file, resolve

log = logging.getLogger("embedserve")


def load_service(source: ModelSource, settings: Settings) -> EmbeddingService:
    """A served model: an upstream API for "openai:<model>", else the local model."""
    if source.upstream is None:
        return load_embedder(source, settings)
    from embedserve.engine.upstream import UpstreamEmbedder

    key = os.environ.get("OPENAI_API_KEY", "")
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


def load_embedder(source: ModelSource, settings: Settings) -> Embedder:
    """Read the model's files, build its tokenizer and backend, and warm it up."""
    metadata = read_metadata(source.files)
    pools_instruction = metadata.pools_prompt and not is_instructor(source.id)
    if not pools_instruction:
        log.info("%s: instruction tokens are read but left out of pooling (INSTRUCTOR)", source.id)
    tokenizer = ModelTokenizer(source.files / "tokenizer.json", metadata.max_tokens)
    backend, on_gpu = build_backend(source, metadata, tokenizer, settings, pools_instruction)
    embedder = Embedder(
        tokenizer,
        backend,
        token_ids=settings.token_ids,
        limits=batch_limits(
            settings,
            on_gpu=on_gpu,
            streams=backend.streams,
            max_padding_tokens=_max_padding_tokens(source.id, backend, settings, on_gpu),
            coarse_widths=backend.kernels_per_shape,
        ),
        pools_instruction=pools_instruction,
        max_request_tokens=settings.max_request_tokens,
    )
    embedder.embed_sync(["warm-up", "a longer warm-up sentence " * 8])
    return embedder


def build_backend(
    source: ModelSource,
    metadata: ModelMetadata,
    tokenizer: ModelTokenizer,
    settings: Settings,
    pools_instruction: bool = True,
) -> tuple[Backend, bool]:
    """ONNX Runtime on CPU (fp32 exact by default); OpenVINO for int8 and bf16 on CPU when
    installed (else ONNX Runtime int8 / torch bf16); torch on GPU (fp16 by default) and when
    the model cannot be exported. Faster modes are measured against fp32 on a probe set and the
    figures logged."""
    from embedserve.backends.torch import TorchBackend, gpu_present

    device = settings.device
    if device == "auto":
        device = "cuda" if gpu_present() else "cpu"
    on_gpu = device.startswith("cuda")
    precision = settings.precision
    if precision == "auto":
        precision = "fp16" if on_gpu else "fp32"
    shipped = onnx_file(source.files)
    if shipped is not None:
        return _shipped_onnx(source, shipped, metadata, settings), False
    if settings.backend == "openvino" or (
        settings.backend == "auto" and not on_gpu and _openvino_suits(precision)
    ):
        if on_gpu:
            raise ModelUnavailable("OpenVINO runs on the CPU: drop --device cuda")
        return _openvino_backend(source, tokenizer, settings, precision, pools_instruction), False
    use_torch = settings.backend == "torch" or on_gpu or precision in ("bf16", "fp16")
    if precision == "int8" and use_torch:
        raise ModelUnavailable(
            "int8 runs on the CPU (OpenVINO or ONNX Runtime): drop --backend torch / --device cuda"
        )
    if not use_torch:
        try:
            return _onnx_backend(source, tokenizer, settings, precision, pools_instruction), False
        except Exception as exc:
            if settings.backend == "onnx" or precision == "int8":
                raise ModelUnavailable(
                    f"cannot build the ONNX model of {source.id}: {exc}"
                ) from exc
            log.warning("cannot export %s to ONNX (%s); serving it with torch", source.id, exc)
    backend = TorchBackend(source.files, device, precision)  # type: ignore[arg-type]
    if precision != "fp32":
        reference = TorchBackend(source.files, device, "fp32")
        report(precision, measure(reference, backend, tokenizer))
        del reference
    return backend, on_gpu


def _openvino_suits(precision: str) -> bool:
    """Whether "auto" picks OpenVINO on the CPU: for int8, and for bf16 where the CPU has it,
    when embedserve[openvino] is installed (else ONNX Runtime int8 and torch bf16 serve)."""
    from embedserve.backends.openvino_build import openvino_missing

    if precision == "int8":
        missing = openvino_missing(quantizer=True)
    elif precision == "bf16" and cpu_supports_bf16():
        missing = openvino_missing(quantizer=False)
    else:
        return False
    if missing:
        log.info("%s without OpenVINO (%s)", precision, missing)
    return missing is None


def _shipped_onnx(
    source: ModelSource, model: Path, metadata: ModelMetadata, settings: Settings
) -> Backend:
    """An ONNX folder is served as it is: no export, fp32 on the CPU, pooled as its 1_Pooling
    says. Only what the user asked for is refused (on a GPU, "auto" would mean fp16)."""
    from embedserve.backends.onnx import OnnxBackend
    from embedserve.backends.pooling import POOLINGS

    if settings.backend == "torch" or settings.precision not in ("fp32", "auto"):
        raise ModelUnavailable(
            f"{source.id} ships only an ONNX model: it is served by ONNX Runtime in fp32 "
            f"(drop --backend torch / --precision {settings.precision})"
        )
    if any("Dense" in m for m in metadata.modules):
        raise ModelUnavailable(
            f"{source.id} has a Dense layer after pooling but only ONNX weights for the "
            f"transformer; provide the PyTorch weights so the whole stack can be exported"
        )
    pooling = metadata.pooling or "mean"
    if pooling not in POOLINGS:
        raise ModelUnavailable(
            f"{source.id}: pooling '{pooling}' is not supported for ONNX folders"
        )
    log.info("serving the ONNX model shipped in %s (%s pooling)", model, pooling)
    return OnnxBackend(model, pooling=pooling, streams=_streams(settings))


def _onnx_backend(
    source: ModelSource,
    tokenizer: ModelTokenizer,
    settings: Settings,
    precision: str,
    pools_instruction: bool,
) -> Backend:
    from embedserve.backends.onnx import OnnxBackend

    build = partial(
        cached_onnx_model,
        source.files,
        cache_root=_cache_root(settings),
        name=source.id,
        pools_instruction=pools_instruction,
    )
    model = build(precision)  # type: ignore[arg-type]
    backend = OnnxBackend(model, precision=precision, streams=_streams(settings))
    if precision == "int8":
        reference = OnnxBackend(build("fp32"))
        report("int8", measure(reference, backend, tokenizer))
    return backend


def _openvino_backend(
    source: ModelSource,
    tokenizer: ModelTokenizer,
    settings: Settings,
    precision: str,
    pools_instruction: bool,
) -> Backend:
    from embedserve.backends.onnx import OnnxBackend
    from embedserve.backends.openvino import OpenVinoBackend
    from embedserve.backends.openvino_build import cached_openvino_int8, openvino_missing

    if precision not in ("fp32", "bf16", "int8"):
        raise ModelUnavailable(f"OpenVINO serves fp32, bf16 or int8, not {precision}")
    if precision == "bf16" and not cpu_supports_bf16():
        raise ModelUnavailable(
            "this CPU has no bf16 instructions (AVX512-BF16 or AMX); use fp32 or int8"
        )
    missing = openvino_missing(quantizer=precision == "int8")
    if missing:
        raise ModelUnavailable(f"--backend openvino: {missing}")
    cache = _cache_root(settings)
    try:
        fp32 = cached_onnx_model(
            source.files, "fp32", cache, source.id, pools_instruction=pools_instruction
        )
        model = fp32
        if precision == "int8":
            model = cached_openvino_int8(source.files, fp32, cache, source.id)
    except ModelUnavailable:
        raise
    except Exception as exc:
        raise ModelUnavailable(f"cannot build the {precision} model of {source.id}: {exc}") from exc
    backend = OpenVinoBackend(
        model,
        precision,  # type: ignore[arg-type]
        streams=_streams(settings),
        kernel_cache=settings.kernel_cache,
    )
    if precision != "fp32":
        report(precision, measure(OnnxBackend(fp32), backend, tokenizer))
    return backend


def _streams(settings: Settings) -> int:
    return settings.streams or default_streams(usable_cores())


def _cache_root(settings: Settings) -> Path:
    return Path(settings.cache_dir) if settings.cache_dir else default_cache_dir()


def _max_padding_tokens(name: str, backend: Backend, settings: Settings, on_gpu: bool) -> float:
    """The flag, or on a CPU what a forward pass's fixed cost is worth, timed now."""
    if settings.max_padding_tokens is not None:
        return settings.max_padding_tokens
    if on_gpu:
        return math.inf
    tokens = pass_cost_in_tokens(backend.embed)
    log.info(
        "%s: a pass costs what %.0f tokens do; batches take at most that padding", name, tokens
    )
    return tokens


def batch_limits(
    settings: Settings,
    *,
    on_gpu: bool,
    streams: int = 1,
    max_padding_tokens: float = math.inf,
    coarse_widths: bool = False,
) -> BatchLimits:
    """Batch sizes from the flags, or from the machine and the backend's `streams`. On a CPU,
    ~1024 padded tokens per thread of a stream: past that a pass's activations outgrow the
    core's cache and every token costs more (16 x 256 tokens ran 22% slower a token than
    1 x 256 on one thread here). A GPU wants large batches. `coarse_widths` for a backend that
    builds kernels per shape (`Backend.kernels_per_shape`)."""
    threads = max(1, usable_cores() // streams)
    tokens = 65536 if on_gpu else min(1024 * threads, 32768)
    return BatchLimits(
        max_batch_tokens=settings.max_batch_tokens or tokens,
        max_batch_size=settings.max_batch_size or (256 if on_gpu else 64),
        max_padding=settings.max_padding
        if settings.max_padding is not None
        else (0.5 if on_gpu else 0.15),
        max_padding_tokens=max_padding_tokens,
        coarse_widths=coarse_widths,
        max_wait_s=(settings.max_wait_ms if settings.max_wait_ms is not None else 2.0 * on_gpu)
        / 1000,
        max_queued=settings.max_queued or 8 * settings.max_inputs,
        timeout_s=settings.request_timeout_s,
    )


def build_registry(settings: Settings, loader: Loader | None = None) -> ModelRegistry:
    """Resolve every configured model (fails fast with one clear line) without loading them."""
    load = loader or partial(load_service, settings=settings)
    models = [ServedModel(resolve(spec.ref), load, spec) for spec in settings.models]
    return ModelRegistry(models, strict=settings.strict_model, default=settings.default_model)


def serve(settings: Settings) -> None:
    import uvicorn

    tokenize_on_calling_threads()
    registry = build_registry(settings)
    if settings.preload:
        for model in registry.models:
            model.load()
    else:
        log.info("models load on first use (--pre_load_embedding_model=False)")
    app = create_app(settings, registry)
    _warn_if_open(settings)
    names = ", ".join(m.id for m in registry.models)
    log.info("serving %s on http://%s:%d/v1", names, settings.host, settings.port)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        access_log=False,  # ours carries the request id (api/observe.py)
        log_config=None,
        timeout_graceful_shutdown=math.ceil(settings.drain_timeout_s),
    )
    server = _DrainingServer(config, app.state.embedserve)
    for sig in (signal.SIGINT, signal.SIGTERM):
        # uvicorn restores the handlers it found when it stops, then raises the signal that
        # stopped it again: into these, so that a drained stop goes on to close the models
        # and exits 0.
        signal.signal(sig, server.handle_exit)
    server.run()
    for model in registry.models:
        if model.loaded is not None:
            model.loaded.close()
    log.info("stopped")


class _DrainingServer(uvicorn_server.Server):
    """uvicorn's server, which on SIGTERM/SIGINT stops accepting and waits for in-flight
    requests (up to --drain-timeout); here readiness also turns 503 at once."""

    def __init__(self, config: Any, state: Any) -> None:
        super().__init__(config)
        self._state = state

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if not self._state.draining:
            log.info("signal %d: draining in-flight requests, then stopping", sig)
        self._state.draining = True
        super().handle_exit(sig, frame)


def _warn_if_open(settings: Settings) -> None:
    loopback = settings.host in ("127.0.0.1", "localhost", "::1")
    if not loopback and not settings.api_keys:
        log.warning(
            "listening on %s without an API key: anyone who can reach this port can use it; "
            "set --api-key (or EMBEDSERVE_API_KEYS)",
            settings.host,
        )
