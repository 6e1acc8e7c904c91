"""Model loading, for the server, a bulk job or a Ray actor alike: settings in, served models
out. Resolves each model's files, picks and builds its backend (backends/registry.py), proves
a faster precision against fp32, sizes its batches and warms it up. No HTTP here."""

from __future__ import annotations

import hashlib
import importlib.metadata
import logging
import os
from collections.abc import Sequence
from dataclasses import replace
from functools import partial
from pathlib import Path

import numpy as np

from embedserve import __version__, machine
from embedserve.backends.base import Backend
from embedserve.backends.onnx_build import ExportFailed, export_key
from embedserve.backends.packed_export import packed_key, serves_packed
from embedserve.backends.registry import BACKENDS, Choice, choose, known, resolve_device
from embedserve.backends.spec import BackendSpec
from embedserve.config import Settings
from embedserve.engine.embedder import Embedder
from embedserve.engine.fidelity import (
    EXACT,
    PROBE_TEXTS,
    REAL_TEXT,
    Fidelity,
    Verdicts,
    measure,
    report,
)
from embedserve.engine.instructions import is_instructor
from embedserve.engine.quantization import Calibration, calibration_key
from embedserve.engine.registry import Loader, ModelRegistry, ServedModel, Service
from embedserve.engine.reranker import Reranker
from embedserve.engine.sizing import batch_limits, described, max_padding_tokens
from embedserve.engine.static_embedder import StaticEmbedder
from embedserve.engine.vectors import layer_norms_before_cut
from embedserve.errors import ModelUnavailable
from embedserve.models.cache import (
    default_cache_dir,
    graph_digest,
    remember_digests_in,
    tokenizer_digest,
)
from embedserve.models.metadata import read_metadata
from embedserve.models.pair_tokenizer import PairTokenizer
from embedserve.models.source import ModelSource, onnx_file, resolve
from embedserve.models.tokenizer import ModelTokenizer, tokenize_on_calling_threads

log = logging.getLogger("embedserve")

_WARM_UP = ["warm-up", "a longer warm-up sentence " * 8]


def build_registry(settings: Settings, loader: Loader | None = None) -> ModelRegistry:
    """Resolve every configured model (failing fast, with one clear line) without loading."""
    tokenize_on_calling_threads()
    known(settings.backend)
    cache = cache_root(settings)
    remember_digests_in(cache)
    load = loader or partial(load_service, settings=settings)
    models = [
        ServedModel(resolve(spec.ref, cache, trust_remote_code=spec.trust_remote_code), load, spec)
        for spec in settings.models
    ]
    return ModelRegistry(
        models,
        strict=settings.strict_model,
        default=settings.default_model,
        default_reranker=settings.default_reranker,
    )


def build_key(source: ModelSource, settings: Settings) -> str:
    """What determines what a model's load builds, and so its size and its vectors: its id,
    its files (each one's name, size and modification time: cheap enough for the event loop,
    where a digest of gigabytes of weights is not) or its upstream, and the settings that
    choose its engine."""
    if source.upstream is not None:
        files: object = f"openai:{source.upstream}"
    else:
        folder = source.files
        files = sorted(
            (str(path.relative_to(folder)), stat.st_size, stat.st_mtime_ns)
            for path in folder.rglob("*")
            if path.is_file() and (stat := path.stat())
        )
    engine = (settings.backend, settings.precision, settings.device, settings.streams)
    # the id too: some choices follow it (INSTRUCTOR's pooling, nomic's Matryoshka cut)
    identity = (source.id, files, engine, __version__)
    return hashlib.sha256(repr(identity).encode()).hexdigest()[:24]


def cache_root(settings: Settings) -> Path:
    return Path(settings.cache_dir) if settings.cache_dir else default_cache_dir()


def load_service(source: ModelSource, settings: Settings) -> Service:
    """A served model: an upstream API for "openai:<model>", else the local model (an embedder,
    or a reranker for a cross-encoder)."""
    if source.upstream is None:
        metadata = read_metadata(source.files)
        if metadata.task == "rerank":
            return load_reranker(source, settings)
        if metadata.static is not None:
            return load_static(source, settings)
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
    if metadata.static is not None:
        raise ModelUnavailable(f"{source.id} is a static model: load it with load_static")
    pools_instruction = metadata.pools_prompt and not is_instructor(source.id)
    if not pools_instruction:
        log.info("%s: instruction tokens are read but left out of pooling (INSTRUCTOR)", source.id)
    tokenizer = ModelTokenizer(source.files / metadata.tokenizer, metadata.max_tokens)
    backend, choice, selection = build_backend(
        source, tokenizer, settings, cores, pools_instruction
    )
    log.info("%s: %s", source.id, selection)
    on_gpu = choice.device.startswith("cuda")
    limits = batch_limits(
        settings,
        on_gpu=on_gpu,
        cores=cores,
        streams=backend.streams,
        max_padding_tokens=max_padding_tokens(source.id, backend, settings, on_gpu),
        coarse_widths=backend.kernels_per_shape,
    )
    log.info("%s: %s", source.id, described(limits))
    embedder = Embedder(
        tokenizer,
        backend,
        token_ids=settings.token_ids,
        limits=limits,
        pools_instruction=pools_instruction,
        selection=selection,
    )
    embedder.layer_norm_before_cut = layer_norms_before_cut(source.id)
    embedder.embed_sync(_WARM_UP)
    key = calibration_key(
        export_key(source.files, pools_instruction),
        tokenizer_digest(source.files),
        tokenizer.max_tokens,
        choice.name,
        choice.precision,
        [importlib.metadata.version(p) for p in choice.entry.packages],
    )
    embedder.calibration = Calibration(cache_root(settings), key)
    return embedder


def load_static(source: ModelSource, settings: Settings) -> StaticEmbedder:
    """A static model: its token table, looked up and averaged in numpy (fp32, on the CPU);
    no build, nothing to prove against fp32."""
    from embedserve.backends.static import StaticBackend, load_table

    metadata = read_metadata(source.files)
    after = [m.rsplit(".", 1)[-1] for m in metadata.modules[1:]]
    if set(after) - {"Normalize"}:
        raise ModelUnavailable(
            f"{source.id}: a static embedding followed by {after} is not served (only a "
            f"Normalize may follow it)"
        )
    asked = [
        f"--{name} {value}"
        for name, value, served in (
            ("backend", settings.backend, ("auto",)),
            ("precision", settings.precision, ("auto", "fp32")),
        )
        if value not in served
    ]
    if asked:
        raise ModelUnavailable(
            f"{source.id} is a static model, served as a table lookup in fp32 on the CPU "
            f"(drop {' and '.join(asked)} for it)"
        )
    assert metadata.static is not None
    tokenizer = ModelTokenizer(source.files / metadata.tokenizer, metadata.max_tokens, static=True)
    backend = StaticBackend(load_table(source.files / metadata.static))
    selection = "a static model: a table lookup and mean in numpy, fp32, computed inline"
    log.info("%s: %s (%d tokens x %d)", source.id, selection, *backend.table.shape)
    embedder = StaticEmbedder(tokenizer, backend, token_ids=settings.token_ids, selection=selection)
    embedder.layer_norm_before_cut = layer_norms_before_cut(source.id)
    key = calibration_key(
        graph_digest(source.files),
        tokenizer_digest(source.files),
        tokenizer.max_tokens,
        "static",
        np.__version__,
    )
    embedder.calibration = Calibration(cache_root(settings), key)
    return embedder


def load_reranker(source: ModelSource, settings: Settings, cores: int | None = None) -> Reranker:
    """A cross-encoder with one label, exported to ONNX and served in fp32 by ONNX Runtime
    (its scores are checked against the export's at build; other precisions are not proven
    for scores)."""
    cores = cores or machine.cores()
    metadata = read_metadata(source.files)
    if metadata.labels > 1:
        raise ModelUnavailable(
            f"{source.id} is a classifier with {metadata.labels} labels; a reranker has one "
            f"(a relevance score)"
        )
    if settings.precision not in ("auto", "fp32") or settings.backend not in ("auto", "onnx"):
        raise ModelUnavailable(
            f"{source.id} is a reranker: it is served in fp32 by ONNX Runtime (drop "
            f"--precision {settings.precision} / --backend {settings.backend} for it)"
        )
    tokenizer = PairTokenizer(source.files / "tokenizer.json", metadata.max_tokens)
    spec = BackendSpec(
        files=source.files,
        model_id=source.id,
        precision="fp32",
        device="cpu",
        cores=cores,
        streams=streams_for(source, settings, cores),
        cache_root=cache_root(settings),
        kernel_cache=settings.kernel_cache,
        trust_remote_code=source.trust_remote_code,
    )
    try:
        backend = BACKENDS["onnx"].build(spec)
    except ExportFailed as exc:
        raise ModelUnavailable(f"cannot export the reranker {source.id}: {exc}") from exc
    limits = batch_limits(
        settings,
        on_gpu=False,
        cores=cores,
        streams=backend.streams,
        max_padding_tokens=max_padding_tokens(source.id, backend, settings, on_gpu=False),
    )
    log.info("%s: %s", source.id, described(limits))
    selection = "a reranker (cross-encoder): fp32 on ONNX Runtime"
    log.info("%s: %s", source.id, selection)
    reranker = Reranker(
        tokenizer, backend, model_id=source.id, limits=limits, selection=selection,
        raw=metadata.activation == "identity",
    )  # fmt: skip
    reranker.rerank_sync("warm-up", ["a warm-up document"])
    return reranker


def build_backend(
    source: ModelSource,
    tokenizer: ModelTokenizer,
    settings: Settings,
    cores: int,
    pools_instruction: bool = True,
) -> tuple[Backend, Choice, str]:
    """The first backend the registry's rules offer that builds (and, for a precision that
    --precision auto must prove exact, that the probe finds exact), with a sentence saying why
    it serves. A precision other than fp32 is measured against fp32 on a probe set and the
    figures logged; auto's verdicts are kept with the builds (fidelity.Verdicts)."""
    known(settings.backend)
    device = resolve_device(settings.device, settings.backend)
    shipped = onnx_file(source.files) is not None
    choices = choose(
        settings.backend, device, settings.precision, onnx_only=source.id if shipped else None
    )
    verdicts = Verdicts(cache_root(settings))
    ruled_out = ""  # why the choice before did not serve
    unexportable = False  # the export failed: every backend that runs it would fail alike
    for index, choice in enumerate(choices):
        why = choice.why or ruled_out
        if unexportable and choice.entry.exports and not shipped:
            continue
        label = f"{choice.precision} on {choice.entry.label or choice.name}"
        spec = BackendSpec(
            files=source.files,
            model_id=source.id,
            precision=choice.precision,
            device=choice.device,
            cores=cores,
            streams=streams_for(source, settings, cores),
            cache_root=cache_root(settings),
            kernel_cache=settings.kernel_cache,
            pools_instruction=pools_instruction,
            trust_remote_code=source.trust_remote_code,
        )
        key = _verdict_key(choice, spec, tokenizer) if choice.exact else ""
        known_verdict = verdicts.get(key) if key else None
        if known_verdict is not None and not known_verdict.exact:
            ruled_out = f"{label} is not exact here ({known_verdict.summary()}, measured before)"
            log.info("%s: %s", source.id, ruled_out)
            continue
        try:
            backend = choice.entry.build(spec)
        except ModelUnavailable:
            raise
        except Exception as exc:
            what = f"the {choice.precision} {choice.name} backend of {source.id}"
            if not _has_next(choices, index, unexportable or isinstance(exc, ExportFailed)):
                raise ModelUnavailable(f"cannot build {what}: {exc}") from exc
            log.warning("cannot build %s (%s); trying the next", what, exc)
            ruled_out = f"{label} could not be built ({exc})"
            unexportable = unexportable or isinstance(exc, ExportFailed)
            continue
        asked = f"precision {settings.precision}: {label}"
        if choice.exact:
            fidelity = known_verdict or _probe(backend, spec, choice, tokenizer)
            if known_verdict is None:
                verdicts.put(key, fidelity)
            if not fidelity.exact:
                ruled_out = f"{label} fell short of fp32 on a probe text ({fidelity.summary()})"
                log.warning("%s: %s; trying the next mode", source.id, ruled_out)
                continue
            measured = "measured before" if known_verdict else "measured now"
            return (
                backend,
                choice,
                (
                    f"{asked}: {why}, and every probe text is within {EXACT} of fp32 "
                    f"({fidelity.summary()}, {measured})"
                ),
            )
        if choice.precision != "fp32" and choice.entry.reference:
            report(choice.precision, _probe(backend, spec, choice, tokenizer, REAL_TEXT))
        return backend, choice, f"{asked}: {why}" if why else asked
    raise ModelUnavailable(f"no backend could serve {source.id}: {ruled_out}")


ONE_STREAM_BYTES = 1 << 30
"""A model whose weights are larger runs one stream on every core by default: its matrices are
big enough to keep the cores busy in one pass (two streams gave 15% more tokens/s on
Qwen3-Embedding-0.6B's shape), and a second compiled copy of its weights for a lone request on
every core would cost gigabytes."""


def streams_for(source: ModelSource, settings: Settings, cores: int) -> int:
    if settings.streams:
        return settings.streams
    weights = sum(
        p.stat().st_size
        for p in source.files.rglob("*")
        if p.suffix in (".safetensors", ".bin", ".onnx", ".onnx_data") and p.is_file()
    )
    if weights > ONE_STREAM_BYTES:
        return 1
    return machine.default_streams(cores)


def _has_next(choices: list[Choice], index: int, unexportable: bool) -> bool:
    """Whether a choice after `index` is left to try."""
    return any(not (unexportable and c.entry.exports) for c in choices[index + 1 :])


def _probe(
    backend: Backend,
    spec: BackendSpec,
    choice: Choice,
    tokenizer: ModelTokenizer,
    texts: Sequence[str] = PROBE_TEXTS,
) -> Fidelity:
    """The backend's vectors against its reference backend's fp32 ones, on the probe texts."""
    assert choice.entry.reference is not None
    reference_spec = replace(spec, precision="fp32", streams=1, short_lived=True)
    reference = BACKENDS[choice.entry.reference].build(reference_spec)
    try:
        return measure(reference, backend, tokenizer, texts)
    finally:
        del reference
        machine.return_freed_heap()


def _verdict_key(choice: Choice, spec: BackendSpec, tokenizer: ModelTokenizer) -> str:
    """What decides whether a mode is exact for a model: the fp32 graph it computes (our export
    and what made it), the tokenizer and the length the probe texts are cut to, the engines and
    their versions (the candidate's and its reference's), the packed graph where it serves, the
    CPU."""
    entries = [choice.entry] + (
        [BACKENDS[choice.entry.reference]] if choice.entry.reference else []
    )
    versions = [importlib.metadata.version(p) for entry in entries for p in entry.packages]
    packed = choice.name == "openvino" and serves_packed(spec.files, spec.pools_instruction)
    return Verdicts.key(
        export_key(spec.files, spec.pools_instruction),
        packed_key(spec.files) if packed else "padded",
        tokenizer_digest(spec.files),
        tokenizer.max_tokens,
        choice.name,
        choice.precision,
        versions,
        machine.cpu_identity(),
        _gpu_name(choice.device),
    )


def _gpu_name(device: str) -> str:
    """The GPU a verdict was measured on ('' on the CPU): another GPU may round otherwise."""
    if not device.startswith("cuda"):
        return ""
    import torch  # the GPU path runs on torch: it is loaded already

    return str(torch.cuda.get_device_name(torch.device(device)))
