"""Settings: one frozen object, built from flags, EMBEDSERVE_* variables or a config file (or by
a test) and handed to every layer. Each setting is declared once, here (see declare.py)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from embedserve.config import batch_defaults
from embedserve.config.declare import (
    ABOVE_0,
    AT_LEAST_0,
    AT_LEAST_1,
    SHARE,
    Described,
    describe,
    setting,
)
from embedserve.config.quantities import parse_bytes, parse_duration

TokenIdMode = Literal["tiktoken", "native", "reject"]
Precision = Literal["fp32", "int8", "bf16", "fp16"]
"""What a model computes in; each backend computes in some of these."""
PrecisionSetting = Literal["auto", "fp32", "int8", "bf16", "fp16"]
"""--precision: one of the Precisions, or auto (the fastest proven exact)."""
LogFormat = Literal["text", "json"]
LogLevel = Literal["debug", "info", "warning", "error"]

DEFAULT_PORT = 5000  # h2oGPT's port: base_url="http://localhost:5000/v1" works unchanged.


@dataclass(frozen=True)
class ModelSpec:
    """One served model. On the command line its fields follow the --model they describe; in a
    config file they are the keys of a [[models]] table."""

    ref: str | None = setting(
        None,
        "a local sentence-transformers folder, a Hugging Face hub id, or openai:<model> (passed "
        "through to --openai_base_url); repeat to serve several",
        flags=("--model", "--hf_embedding_model"),
        key="model",
        metavar="MODEL",
        shown_default="the packaged all-MiniLM-L6-v2",
    )
    name: str | None = setting(
        None, "served name of the model (responses, /v1/models)", shown_default="its id"
    )
    aliases: tuple[str, ...] = setting(
        (), "another name requests may use for it (repeatable)", flags=("--alias",)
    )
    query_instruction: str | None = setting(
        None,
        "text put before queries (input_type=query)",
        shown_default="the model's own prompts, else its family's (bge, e5, instructor)",
    )
    document_instruction: str | None = setting(
        None, "text put before documents (the default input_type)", shown_default="as for queries"
    )
    trust_remote_code: bool = setting(
        False,
        "run the code the model's folder ships (its config's auto_map, custom modules: "
        "jina-embeddings-v2/v3, gte-multilingual, older nomic repos); without it such a model "
        "is refused",
    )
    pinned: bool = setting(
        False, "under --memory-budget, never unloaded to make room for another model"
    )
    keep_alive_s: float | None = setting(
        None,
        "unload the model after it has been idle this long (5m, 1h, seconds; negative: never)",
        flags=("--model-keep-alive",),
        key="keep_alive",
        parse=parse_duration,
        metavar="DURATION",
        shown_default="--keep-alive",
    )


@dataclass(frozen=True)
class Settings:
    models: tuple[ModelSpec, ...] = setting(
        (ModelSpec(),),
        "the served models; see the per-model table below",
        flags=(),  # --model and its per-model flags (ModelSpec)
        env="EMBEDSERVE_MODEL",
        shown_default="the packaged all-MiniLM-L6-v2",
    )
    default_model: str | None = setting(
        None,
        "with several embedding models, the one serving requests that name none of them (else 404)",
        job=True,
    )
    default_reranker: str | None = setting(
        None,
        "with several rerankers, the one serving rerank requests that name none of them (else "
        "the only reranker, else the default embedding model, scoring by cosine)",
    )
    host: str = setting("127.0.0.1", "interface to bind; the default keeps the server private")
    port: int = setting(DEFAULT_PORT, "TCP port to listen on", flags=("--port", "--openai_port"))
    preload: bool = setting(
        True,
        "load and warm the models before the port accepts traffic; false loads each on first use",
        flags=("--pre_load_embedding_model", "--preload"),
    )
    memory_budget: int | None = setting(
        None,
        "resident memory the models may hold together (6GiB, 800MB, bytes): each loads on its "
        "first request, evicting the least recently used idle ones to fit",
        parse=parse_bytes,
        metavar="SIZE",
        shown_default="none: every model loads at start-up and stays",
    )
    keep_alive_s: float | None = setting(
        None,
        "unload a model idle this long (5m, 1h, seconds; negative: never); it loads again on "
        "its next request",
        flags=("--keep-alive",),
        key="keep_alive",
        env="EMBEDSERVE_KEEP_ALIVE",
        parse=parse_duration,
        metavar="DURATION",
        shown_default="never",
    )
    embedding_cache: int = setting(
        0,
        "bytes of pooled vectors kept to answer repeated texts without computing them again "
        "(exactly the vectors computed before; least recently used dropped); 0: off",
        parse=parse_bytes,
        bound=AT_LEAST_0,
        metavar="SIZE",
    )
    device: str = setting("auto", "auto (CUDA when present), cpu, cuda or cuda:N", job=True)
    backend: str = setting(
        "auto",
        "onnx (ONNX Runtime: CPU fp32 and int8), openvino (CPU int8, bf16, fp32), torch (GPUs, "
        "models that cannot be exported), or auto (backends/registry.py)",
        job=True,
    )
    precision: PrecisionSetting = setting(
        "auto",
        "auto: the fastest precision proven exact at start-up (cosine >= 0.9999 to fp32 on "
        "probe texts): on a CPU bf16 where it computes bf16 natively, else fp32; on a GPU fp16, "
        "then bf16, then fp32. int8 (CPU) is faster still, measured against fp32 at start-up",
        job=True,
    )
    streams: int | None = setting(
        None,
        "forward passes the CPU runs at once, each on its share of the cores; 1 runs every pass "
        "on every core",
        bound=AT_LEAST_1,
        shown_default="1 below 4 cores, 2 on 4-11, cores / 4 above",
        job=True,
    )
    kernel_cache: int | None = setting(
        None,
        "kernels OpenVINO keeps for the batch shapes it has met (each a few MiB a stream); a "
        "shape that fell out is rebuilt",
        bound=AT_LEAST_0,
        shown_default="300 (bf16, fp32), 1000 (int8, whose kernels take longer to build)",
        job=True,
    )
    cache_dir: str | None = setting(
        None,
        "where ONNX and OpenVINO builds and assembled models are kept",
        shown_default="~/.cache/embedserve",
        job=True,
    )
    data_dir: str | None = setting(
        None,
        "where the Batch API keeps its files and its database (created on first use)",
        shown_default="~/.local/share/embedserve",
    )
    max_file_bytes: int = setting(
        200 * 1024 * 1024,
        "largest file POST /v1/files takes; larger ones get 413",
        bound=AT_LEAST_1,
    )
    batch_workers: int = setting(
        1,
        "batches run at once, behind the online requests; 0 runs none (files and batches are "
        "still accepted)",
        bound=AT_LEAST_0,
    )
    batch_max_inputs: int = setting(
        50_000,
        "embedding inputs one batch may carry over all its requests (OpenAI's limit by default)",
        bound=AT_LEAST_1,
    )
    file_retention_days: float | None = setting(
        None,
        "days an uploaded or output file is kept before it is deleted",
        bound=ABOVE_0,
        shown_default="until deleted",
    )
    strict_model: bool = setting(False, "unknown `model` names get 404 instead of the default")
    token_ids: TokenIdMode = setting(
        "tiktoken",
        "token-id inputs are OpenAI cl100k_base ids (tiktoken), the model's own ids (native), "
        "or refused (reject)",
    )
    truncate: bool = setting(
        True,
        "truncate over-long inputs to the model's maximum; off, they get a 400 (a request's "
        "`truncate` field wins)",
        negative="--no-truncate",
    )
    max_inputs: int = setting(2048, "inputs one request may carry", bound=AT_LEAST_1)
    max_body_bytes: int = setting(
        8 * 1024 * 1024, "largest request body; larger ones get 413", bound=AT_LEAST_1
    )
    max_batch_tokens: int | None = setting(
        None,
        "padded tokens (longest sequence x rows) in one forward pass",
        bound=AT_LEAST_1,
        shown_default=batch_defaults.shown("max_batch_tokens"),
        job=True,
    )
    max_batch_size: int | None = setting(
        None,
        "sequences in one forward pass",
        bound=AT_LEAST_1,
        shown_default=batch_defaults.shown("max_batch_size"),
        job=True,
    )
    max_padding: float | None = setting(
        None,
        "largest share of a batch that may be padding",
        bound=SHARE,
        shown_default=batch_defaults.shown("max_padding"),
        job=True,
    )
    max_padding_tokens: float | None = setting(
        None,
        "most padding tokens in one batch",
        bound=AT_LEAST_0,
        shown_default="CPU: what a forward pass's fixed cost is worth, timed at start; GPU: none",
        job=True,
    )
    max_wait_ms: float | None = setting(
        None,
        "how long a batch that is not full waits for more sequences while every stream computes "
        "(with a stream free it starts at once); inf: until a stream frees",
        bound=AT_LEAST_0,
        shown_default=batch_defaults.shown("max_wait_ms"),
        job=True,
    )
    max_queued: int | None = setting(
        None,
        "sequences waiting per model before requests get 429",
        bound=AT_LEAST_1,
        shown_default=batch_defaults.shown("max_queued"),
    )
    openai_base_url: str = setting(
        "https://api.openai.com/v1",
        "the OpenAI-compatible upstream of openai:<model> models; its key comes from "
        "$OPENAI_API_KEY only",
        flags=("--openai_base_url", "--openai-base-url"),
        job=True,
    )
    openai_model: str = setting(
        "text-embedding-3-small",
        "the upstream model --use_openai_embedding serves",
        flags=("--openai_model", "--openai-model"),
    )
    openai_timeout_s: float = setting(
        30.0,
        "seconds one upstream call may take before it is retried or a 504",
        bound=ABOVE_0,
        job=True,
    )
    openai_max_inputs: int = setting(
        2048, "inputs per upstream call; larger requests are split", bound=AT_LEAST_1, job=True
    )
    api_keys: tuple[str, ...] = setting(
        (),
        "accept this key as 'Authorization: Bearer KEY' (repeatable; the keys of every source, "
        "key files included, are gathered); with none, no key is asked for",
        flags=("--api-key",),
        gathers=True,
        secret=True,
        metavar="KEY",
        shown_default="none",
    )
    public_probes: bool = setting(
        True,
        "/health, /ready and /metrics answer without a key (--private-probes: they ask too)",
        negative="--private-probes",
    )
    web_page: bool = setting(
        True,
        "serve the web page (the playground and the server view) at GET / (--no-web-page: "
        "the API only)",
        negative="--no-web-page",
    )
    cors_origins: tuple[str, ...] = setting(
        (),
        "a browser origin allowed to call the API, or * (repeatable)",
        flags=("--cors-origin",),
        metavar="ORIGIN",
        shown_default="none",
    )
    request_timeout_s: float = setting(
        30.0,
        "seconds a request may wait with none of its inputs computing (queued behind others, "
        "before its first pass or between two); past it a 503 with Retry-After, and its waiting "
        "inputs are dropped before they cost compute. A request's own compute is not waiting",
        bound=ABOVE_0,
    )
    max_request_tokens: int | None = setting(
        300_000,
        "tokens one request may embed, summed over its inputs after truncation (400 past it; "
        "OpenAI's limit by default): a bigger request belongs in several, or in a batch",
        bound=AT_LEAST_1,
    )
    drain_timeout_s: float = setting(
        30.0, "seconds in-flight requests get to finish on SIGTERM/SIGINT", bound=AT_LEAST_0
    )
    log_format: LogFormat = setting(
        "text", "log lines (text) or one JSON object a line (json)", job=True
    )
    log_level: LogLevel = setting("info", "logging level of embedserve and uvicorn", job=True)
    access_log: bool = setting(True, "log one line per HTTP request", negative="--no-access-log")
    otlp_endpoint: str | None = setting(
        None,
        "an OpenTelemetry collector's OTLP/HTTP URL (http://collector:4318): a trace per request, "
        'its tokenize, queue, compute and serialize as spans (pip install "embedserve[otel]")',
        metavar="URL",
        shown_default="$OTEL_EXPORTER_OTLP_ENDPOINT, else no traces",
    )

    def __post_init__(self) -> None:
        """Values out of their range or choices are one clear error, whatever set them."""
        for described in SETTINGS:
            described.check(getattr(self, described.name))


SETTINGS: list[Described] = describe(Settings)
MODEL_FIELDS: list[Described] = describe(ModelSpec)
