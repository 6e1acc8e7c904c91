"""The `serve` command's flags, h2oGPT's startup flags among them as aliases."""

from __future__ import annotations

import argparse
from dataclasses import replace
from typing import Any

from embedserve import __version__
from embedserve.config import (
    DEFAULT_HOST,
    DEFAULT_KERNEL_CACHE,
    DEFAULT_MAX_BODY_BYTES,
    DEFAULT_PORT,
    ModelSpec,
    Settings,
)


def boolean(text: str) -> bool:
    """h2oGPT (python-fire) style booleans: --flag=False, --flag=0, --flag=no."""
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off", "none"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


class _NewModel(argparse.Action):
    """--model starts a served model. The first one replaces the models of the defaults (the
    packaged model, or a --config file's list); later ones add to it."""

    def __call__(self, parser: Any, namespace: Any, value: Any, option: Any = None) -> None:
        if getattr(namespace, "_described_defaults", False):
            parser.error(
                "--name, --alias and the instruction flags go after the --model they describe"
            )
        earlier = namespace.models if getattr(namespace, "_models_given", False) else ()
        namespace._models_given = True
        namespace.models = (*earlier, ModelSpec(ref=value))


class _ModelField(argparse.Action):
    """--name, --alias and the instruction flags describe the latest model (before any --model:
    the last of the defaults)."""

    def __init__(self, *args: Any, field: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.field = field

    def __call__(self, parser: Any, namespace: Any, value: Any, option: Any = None) -> None:
        if not getattr(namespace, "_models_given", False):
            namespace._described_defaults = True
        *earlier, latest = namespace.models
        if self.field == "aliases":
            value = (*latest.aliases, value)
        namespace.models = (*earlier, replace(latest, **{self.field: value}))


def parsers() -> tuple[argparse.ArgumentParser, argparse.ArgumentParser]:
    """The command line parser and its `serve` subparser (which a --config file feeds)."""
    parser = argparse.ArgumentParser(
        prog="embedserve",
        description="OpenAI-compatible text embeddings server (h2oGPT's /v1/embeddings contract); "
        "accepts h2oGPT's startup flags as aliases.",
    )
    parser.add_argument("--version", action="version", version=f"embedserve {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the OpenAI-compatible embeddings server")
    add = serve.add_argument
    add(
        "--model",
        "--hf_embedding_model",
        dest="models",
        action=_NewModel,
        metavar="MODEL",
        help="serve a local sentence-transformers folder or Hugging Face hub id; repeat to "
        "serve several (default: the packaged sentence-transformers/all-MiniLM-L6-v2). "
        "--name, --alias and the instruction flags apply to the --model before them",
    )
    add(
        "--name",
        dest="models",
        action=_ModelField,
        field="name",
        help="served name of the model (default: its id)",
    )
    add(
        "--alias",
        dest="models",
        action=_ModelField,
        field="aliases",
        help="another name requests may use for the model (repeatable)",
    )
    add(
        "--query-instruction",
        dest="models",
        action=_ModelField,
        field="query_instruction",
        help="text put before queries (input_type=query); default: the model's own prompts "
        "or its family's (bge, e5, instructor)",
    )
    add(
        "--document-instruction",
        dest="models",
        action=_ModelField,
        field="document_instruction",
        help="text put before documents (the default input_type)",
    )
    add(
        "--config",
        default=None,
        metavar="FILE",
        help="TOML, YAML or JSON file with settings and models; flags given here override it",
    )
    add(
        "--default-model",
        default=None,
        help="with several models, the one serving requests that name none of them",
    )
    add("--host", default=DEFAULT_HOST, help="interface to bind (default %(default)s)")
    add(
        "--port",
        "--openai_port",
        dest="port",
        type=int,
        default=DEFAULT_PORT,
        help="port (default %(default)s, h2oGPT's)",
    )
    add(
        "--pre_load_embedding_model",
        "--preload",
        dest="preload",
        type=boolean,
        nargs="?",
        const=True,
        default=True,
        help="load the model before accepting traffic (default true); false loads on first use",
    )
    add(
        "--use_openai_embedding",
        type=boolean,
        nargs="?",
        const=True,
        default=False,
        help="serve the upstream model --openai_model (key in OPENAI_API_KEY) instead of the "
        "default local model, or beside the --model ones",
    )
    add(
        "--openai_base_url",
        "--openai-base-url",
        dest="openai_base_url",
        default=Settings.openai_base_url,
        help="OpenAI-compatible upstream (default %(default)s)",
    )
    add(
        "--openai_model",
        "--openai-model",
        dest="openai_model",
        default=Settings.openai_model,
        help="upstream model for --use_openai_embedding (default %(default)s)",
    )
    add(
        "--openai-timeout",
        dest="openai_timeout_s",
        type=float,
        default=Settings.openai_timeout_s,
        help="seconds per upstream call (default %(default)s)",
    )
    add(
        "--openai-max-inputs",
        dest="openai_max_inputs",
        type=int,
        default=Settings.openai_max_inputs,
        help="inputs per upstream call; larger requests are split (default %(default)s)",
    )
    add("--langchain_mode", default=None, help="accepted for h2oGPT compatibility; unused")
    add("--device", default="auto", help="auto (CUDA when present), cpu, cuda, cuda:N")
    add(
        "--backend",
        choices=["auto", "onnx", "openvino", "torch"],
        default="auto",
        help="onnx (ONNX Runtime, the CPU default for fp32), openvino (CPU int8 and bf16 when "
        "embedserve[openvino] is installed) or torch (GPUs, unexportable models)",
    )
    add(
        "--precision",
        choices=["auto", "fp32", "int8", "bf16", "fp16"],
        default="auto",
        help="fp32 is exact (CPU default); int8 (CPU) and bf16 are faster and are measured "
        "against fp32 at start-up; fp16 is the GPU default",
    )
    add(
        "--streams",
        type=int,
        default=None,
        help="forward passes the CPU runs at once, each on its share of the cores "
        "(default: from the machine, 2 on 2-8 cores); 1 runs every pass on every core",
    )
    add(
        "--kernel-cache",
        type=int,
        default=DEFAULT_KERNEL_CACHE,
        help="kernels OpenVINO keeps for the batch shapes it has met (int8, bf16); each shape "
        "takes ~2-4 MiB a stream, and a shape that has fallen out is rebuilt "
        "(default %(default)s)",
    )
    add(
        "--cache-dir",
        default=None,
        help="where ONNX and OpenVINO builds are cached "
        "(default $EMBEDSERVE_CACHE_DIR or ~/.cache/embedserve)",
    )
    add(
        "--strict-model",
        action="store_true",
        help="unknown `model` names get 404 instead of the served model",
    )
    add(
        "--token-ids",
        choices=["tiktoken", "native", "reject"],
        default="tiktoken",
        help="token-id inputs are OpenAI cl100k_base ids (default), the model's own ids, "
        "or refused",
    )
    add(
        "--no-truncate",
        dest="truncate",
        action="store_false",
        help="refuse over-long inputs (400) instead of truncating them",
    )
    add("--max-inputs", type=int, default=2048, help="inputs per request (default %(default)s)")
    add(
        "--max-body-bytes",
        type=int,
        default=DEFAULT_MAX_BODY_BYTES,
        help="largest request body in bytes (default %(default)s)",
    )
    add(
        "--max-batch-tokens",
        type=int,
        default=None,
        help="padded tokens per forward pass (default: from the machine)",
    )
    add(
        "--max-batch-size",
        type=int,
        default=None,
        help="sequences per forward pass (default: from the machine)",
    )
    add(
        "--max-padding",
        type=float,
        default=None,
        help="largest share of a batch that may be padding (default: 0.15 on CPU, 0.5 on GPU)",
    )
    add(
        "--max-padding-tokens",
        type=float,
        default=None,
        help="most padding tokens in one batch (default: on CPU, what a forward pass's fixed "
        "cost is worth, timed at start; no limit on GPU)",
    )
    add(
        "--max-wait-ms",
        type=float,
        default=None,
        help="how long a batch that is not full waits to fill (default: 0 on CPU, 2 on GPU)",
    )
    add(
        "--max-queued",
        type=int,
        default=None,
        help="sequences waiting per model before 429 (default 8 x --max-inputs)",
    )
    add(
        "--api-key",
        dest="api_keys",
        action="append",
        default=[],
        metavar="KEY",
        help="accept this key as 'Authorization: Bearer KEY' (repeatable; also "
        "$EMBEDSERVE_API_KEYS, comma-separated). With no key, none is asked for",
    )
    add(
        "--api-key-file",
        dest="api_key_files",
        action="append",
        default=[],
        metavar="FILE",
        help="file of keys: one per line, or a JSON list (repeatable)",
    )
    add(
        "--h2ogpt_api_keys",
        dest="h2ogpt_api_keys",
        action="append",
        default=[],
        metavar="KEYS",
        help="h2oGPT's form: a list like \"['k1','k2']\" or a JSON file holding one",
    )
    add(
        "--private-probes",
        dest="public_probes",
        action="store_false",
        help="/health, /ready and /metrics ask for a key too (default: open)",
    )
    add(
        "--cors-origin",
        dest="cors_origins",
        action="append",
        default=[],
        metavar="ORIGIN",
        help="browser origin allowed to call the API, e.g. https://app.example.com or * "
        "(repeatable; default none)",
    )
    add(
        "--request-timeout",
        dest="request_timeout_s",
        type=float,
        default=Settings.request_timeout_s,
        help="seconds a request may wait in the queue before a 503 (default %(default)s)",
    )
    add(
        "--max-request-tokens",
        type=int,
        default=None,
        help="tokens per request, summed over its inputs (default: no limit)",
    )
    add(
        "--drain-timeout",
        dest="drain_timeout_s",
        type=float,
        default=Settings.drain_timeout_s,
        help="seconds in-flight requests get to finish on SIGTERM (default %(default)s)",
    )
    add("--log-format", choices=["text", "json"], default="text", help="log lines or JSON")
    add("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    add(
        "--no-access-log",
        dest="access_log",
        action="store_false",
        help="do not log one line per request",
    )
    serve.set_defaults(models=Settings().models)
    return parser, serve
