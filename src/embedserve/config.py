"""Settings: one frozen object built by the CLI (or tests) and handed to every layer."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from embedserve.errors import ConfigError

TokenIdMode = Literal["tiktoken", "native", "reject"]
Precision = Literal["auto", "fp32", "int8", "bf16", "fp16"]
BackendKind = Literal["auto", "onnx", "openvino", "torch"]
LogFormat = Literal["text", "json"]

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 5000  # h2oGPT's port: base_url="http://localhost:5000/v1" works unchanged.
DEFAULT_MAX_BODY_BYTES = 8 * 1024 * 1024
DEFAULT_KERNEL_CACHE = 1000


def cpu_supports_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX512-BF16 or AMX)."""
    flags = ""
    with contextlib.suppress(OSError):
        flags = Path("/proc/cpuinfo").read_text()
    return " avx512_bf16" in flags or " amx_bf16" in flags


def usable_cores() -> int:
    """Cores this process may run on (a container's CPU set, not the host's CPU count)."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def default_streams(cores: int) -> int:
    """CPU forward passes to run at once. Two single-threaded passes on two cores outran one
    two-threaded pass by 5-20% (more for small batches): an embedding model's matrices are small
    and a pass split over threads waits at every op. Above 8 cores, streams of 4 threads keep a
    lone request's latency low."""
    return 1 if cores < 2 else max(2, cores // 4)


@dataclass(frozen=True)
class ModelSpec:
    """One served model, as the command line or a test describes it."""

    ref: str | None = None
    """Local sentence-transformers folder, hub id, or "openai:<model>" (pass-through to the
    OpenAI-compatible upstream); None is the packaged all-MiniLM-L6-v2."""

    name: str | None = None
    """Served name (responses, /v1/models); None uses the model's id."""

    aliases: tuple[str, ...] = ()
    """Other names requests may use for it, e.g. "text-embedding-3-small"."""

    query_instruction: str | None = None
    """Text put before queries; None takes the model's own prompts or its family's default."""

    document_instruction: str | None = None
    """Text put before documents; None as for queries."""


@dataclass(frozen=True)
class Settings:
    models: tuple[ModelSpec, ...] = (ModelSpec(),)
    """The served models; the packaged all-MiniLM-L6-v2 unless told otherwise."""

    default_model: str | None = None
    """With several models, the one that serves requests naming none of them (else 404)."""

    host: str = DEFAULT_HOST
    """Interface to bind. The default keeps the server private to this machine."""

    port: int = DEFAULT_PORT
    """TCP port to listen on."""

    preload: bool = True
    """Load and warm the model before the port accepts traffic; False loads it on first use."""

    device: str = "auto"
    """"auto" (CUDA when present, else CPU), "cpu", "cuda", "cuda:1", ..."""

    backend: BackendKind = "auto"
    """"onnx" (ONNX Runtime, the CPU default for fp32), "openvino" (CPU int8 and bf16, the
    default for them when embedserve[openvino] is installed), "torch" (GPUs, models that cannot
    be exported), or "auto"."""

    precision: Precision = "auto"
    """"fp32" (exact; the CPU default), "int8" (OpenVINO static or ONNX Runtime dynamic
    quantization), "bf16" (CPUs with AVX512-BF16/AMX, or GPUs), "fp16" (GPUs; the GPU
    default), or "auto"."""

    streams: int | None = None
    """Forward passes the CPU engine runs at once, each on its share of the cores; None derives
    it from the machine (default_streams). The GPU runs one."""

    cache_dir: str | None = None
    """Where ONNX and OpenVINO builds are cached; None is $EMBEDSERVE_CACHE_DIR or
    ~/.cache/embedserve."""

    strict_model: bool = False
    """Reject requests whose `model` is not a served name (404) instead of serving the default."""

    token_ids: TokenIdMode = "tiktoken"
    """How token-id inputs are read: OpenAI cl100k_base ids ("tiktoken"), the model's own
    vocabulary ("native"), or refused ("reject")."""

    truncate: bool = True
    """Truncate over-long inputs to the model's maximum; False makes them a 400 (a request's
    `truncate` field overrides this)."""

    max_inputs: int = 2048
    """Most inputs one request may carry."""

    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    """Largest request body accepted; larger bodies get 413."""

    max_batch_tokens: int | None = None
    """Most padded tokens (longest sequence x rows) in one forward pass; None derives it from
    the machine (runtime.batch_limits)."""

    max_batch_size: int | None = None
    """Most sequences in one forward pass; None derives it from the machine."""

    max_padding: float | None = None
    """Largest share of a batch that may be padding; None derives it from the machine (a CPU
    pays for every padded token, a GPU prefers big batches)."""

    kernel_cache: int = DEFAULT_KERNEL_CACHE
    """Kernels OpenVINO keeps for the input shapes it has met (its CPU_RUNTIME_CACHE_CAPACITY).
    Each batch shape needs its own (~2-4 MiB a stream); a miss rebuilds them. With batches on
    coarse widths (batcher.coarse_width) 1000 holds the shapes a load keeps meeting: 2000
    served int8 no faster, for ~0.1 GiB more."""

    max_padding_tokens: float | None = None
    """Most padding tokens in one batch; None derives it: on a CPU, what one forward pass's
    fixed cost is worth, timed at start; no limit on a GPU."""

    max_wait_ms: float | None = None
    """How long a batch that is not full waits for more sequences; None derives it: 0 on a CPU
    (batches are bounded by padding, so waiting only adds latency), 2 ms on a GPU."""

    max_queued: int | None = None
    """Most sequences waiting per model before requests get 429; None is 8 x max_inputs."""

    openai_base_url: str = "https://api.openai.com/v1"
    """Upstream for "openai:<model>" models (--use_openai_embedding): any OpenAI-compatible API.
    Its key comes from the OPENAI_API_KEY environment variable, never from a flag or a file."""

    openai_model: str = "text-embedding-3-small"
    """Upstream model that --use_openai_embedding serves."""

    openai_timeout_s: float = 30.0
    """How long one upstream call may take before it is retried or answered 504."""

    openai_max_inputs: int = 2048
    """Most inputs per upstream call; larger requests are split."""

    api_keys: tuple[str, ...] = field(default=(), repr=False)
    """Keys accepted as `Authorization: Bearer <key>`; none means no key is asked for. From
    --api-key, --api-key-file, h2oGPT's --h2ogpt_api_keys and $EMBEDSERVE_API_KEYS."""

    public_probes: bool = True
    """/health, /ready and /metrics answer without a key (for probes and scrapers)."""

    cors_origins: tuple[str, ...] = ()
    """Browser origins allowed to call the API ("*" for any); none by default."""

    request_timeout_s: float = 30.0
    """How long a request's inputs may wait in the queue; past it the request gets 503 with
    Retry-After and its inputs are dropped before they cost compute."""

    max_request_tokens: int | None = None
    """Most tokens one request may embed, summed over its inputs (400 past it); None: no
    limit beyond --max-inputs x the model's maximum length."""

    drain_timeout_s: float = 30.0
    """On SIGTERM/SIGINT, how long in-flight requests may take to finish before the exit."""

    log_format: LogFormat = "text"
    """"text" lines, or "json" objects (one per line, with the request id)."""

    log_level: str = "info"
    """Logging level for embedserve and uvicorn."""

    access_log: bool = True
    """Log one line per HTTP request."""

    def __post_init__(self) -> None:
        """Sizes, budgets and waits out of their range are one clear error, whatever set them."""
        for names, bound, ok in _BOUNDS:
            for name in names:
                value = getattr(self, name)
                if value is not None and not ok(value):
                    flag = "--" + name.removesuffix("_s").replace("_", "-")
                    raise ConfigError(f"{flag} must be {bound}, got {value:g}")


_BOUNDS: list[tuple[tuple[str, ...], str, Callable[[float], bool]]] = [
    (
        (
            "streams",
            "max_inputs",
            "max_body_bytes",
            "max_batch_tokens",
            "max_batch_size",
            "max_queued",
            "openai_max_inputs",
            "max_request_tokens",
        ),
        "at least 1",
        lambda v: v >= 1,
    ),
    (
        ("max_padding_tokens", "max_wait_ms", "drain_timeout_s", "kernel_cache"),
        "at least 0",
        lambda v: v >= 0,
    ),
    (("max_padding",), "a share from 0 to 1", lambda v: 0 <= v <= 1),
    (("request_timeout_s", "openai_timeout_s"), "more than 0", lambda v: v > 0),
]
