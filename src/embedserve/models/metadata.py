"""Facts about a sentence-transformers folder, read from its own configuration files."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class ModelMetadata:
    max_tokens: int
    """Longest sequence the model reads, special tokens included."""

    dimension: int | None
    """Output dimension when the configuration states it (confirmed by the backend on load)."""

    pooling: str | None = None
    """How token vectors become one: "mean", "cls", "max", "lasttoken", ... (1_Pooling)."""

    prompts: dict[str, str] | None = None
    """The model's own prompts by name ("query", "document", ...), if it declares any."""

    modules: tuple[str, ...] = ()
    """The sentence-transformers module types, in order (modules.json)."""

    pools_prompt: bool = True
    """False when pooling must skip the instruction's tokens (INSTRUCTOR-style models)."""

    task: str = "embed"
    """"embed", or "rerank" for a cross-encoder (a *ForSequenceClassification model)."""

    labels: int = 0
    """A cross-encoder's output labels (one: a relevance score)."""

    activation: str = "sigmoid"
    """What a cross-encoder's CrossEncoder.predict applies to its logit: "sigmoid" (the
    default for one label) or "identity", as its configuration says."""

    static: str | None = None
    """The folder (relative) of a StaticEmbedding module, for a static model; else None."""

    tokenizer: str = "tokenizer.json"

    family: str | None = None
    """The architecture's name in transformers (config.json's model_type): "bert", "qwen3"..."""

    """The tokenizer file, relative to the folder (a static model keeps it in its module)."""


STATIC_MAX_TOKENS = 1_000_000
"""A static model reads every token of a text (sentence-transformers' StaticEmbedding has no
maximum length) unless its tokenizer truncates; --max-request-tokens still bounds a request."""


def read_metadata(folder: Path) -> ModelMetadata:
    st_config = _json(folder / "sentence_bert_config.json")
    tok_config = _json(folder / "tokenizer_config.json")
    hf_config = _json(folder / "config.json")
    static = _static_module(folder)
    tokenizer = f"{static}/tokenizer.json" if static not in (None, ".", "") else "tokenizer.json"
    max_tokens = (
        st_config.get("max_seq_length")
        or _sane(tok_config.get("model_max_length"))
        or hf_config.get("max_position_embeddings")
        or 512
    )
    if static is not None:  # what StaticEmbedding reads: the tokenizer's own truncation, if any
        truncation = _json(folder / tokenizer).get("truncation") or {}
        max_tokens = int(truncation.get("max_length") or STATIC_MAX_TOKENS)
    prompts = _json(folder / "config_sentence_transformers.json").get("prompts") or None
    architectures = hf_config.get("architectures") or []
    reranks = any(str(a).endswith("ForSequenceClassification") for a in architectures)
    return ModelMetadata(
        max_tokens=int(max_tokens),
        dimension=_dimension(folder),
        pooling=_pooling(folder),
        prompts={str(k): str(v) for k, v in prompts.items()} if isinstance(prompts, dict) else None,
        modules=tuple(str(m.get("type", "")) for m in _modules(folder)),
        pools_prompt=_pools_prompt(folder),
        task="rerank" if reranks else "embed",
        labels=len(hf_config.get("id2label") or {}) or int(hf_config.get("num_labels", 0) or 0),
        activation=_activation(hf_config),
        static=static,
        tokenizer=tokenizer,
        family=str(hf_config["model_type"]) if hf_config.get("model_type") else None,
    )


def parameter_count(folder: Path) -> int | None:
    """The weights in a folder's safetensors files, from each file's header (its first 8 bytes
    give the JSON header's length): no tensor is read. Asked for on demand (Ollama's
    /api/show), not at every read of the metadata. None: no safetensors file there."""
    total, found = 0, False
    for weights in sorted(folder.rglob("*.safetensors")):
        try:
            with weights.open("rb") as file:
                size = int.from_bytes(file.read(8), "little")
                header = json.loads(file.read(size)) if 0 < size < 100_000_000 else {}
        except (OSError, ValueError):
            continue
        for name, tensor in header.items():
            if name != "__metadata__" and isinstance(tensor, dict):
                found = True
                total += math.prod(tensor.get("shape") or [1])
    return total if found else None


def _static_module(folder: Path) -> str | None:
    """The folder of the StaticEmbedding module that starts the stack, if one does."""
    modules = _modules(folder)
    if modules and str(modules[0].get("type", "")).endswith(".StaticEmbedding"):
        return str(modules[0].get("path", "")) or "."
    return None


def _activation(hf_config: dict[str, Any]) -> str:
    """sentence-transformers keeps a cross-encoder's activation in its config.json (before v4
    under another key); only the identity changes the default sigmoid."""
    saved = (hf_config.get("sentence_transformers") or {}).get("activation_fn") or hf_config.get(
        "sbert_ce_default_activation_function"
    )
    return "identity" if saved and "Identity" in str(saved) else "sigmoid"


def _pools_prompt(folder: Path) -> bool:
    for module in _modules(folder):
        if module.get("type", "").endswith("Pooling"):
            return bool(
                _json(folder / module.get("path", "") / "config.json").get("include_prompt", True)
            )
    return True


def _modules(folder: Path) -> list[dict[str, Any]]:
    modules = _json(folder / "modules.json")
    return [m for m in modules if isinstance(m, dict)] if isinstance(modules, list) else []


def _pooling(folder: Path) -> str | None:
    for module in _modules(folder):
        if module.get("type", "").endswith("Pooling"):
            config = _json(folder / module.get("path", "") / "config.json")
            if config.get("pooling_mode"):
                return str(config["pooling_mode"])
            modes = [k.removeprefix("pooling_mode_") for k, v in config.items() if v is True]
            return "+".join(m.removesuffix("_tokens").removesuffix("_token") for m in modes) or None
    return None


def _dimension(folder: Path) -> int | None:
    dimension = None
    for module in _modules(folder):
        config = _json(folder / module.get("path", "") / "config.json")
        kind = module.get("type", "")
        if kind.endswith("Pooling"):
            dimension = config.get("word_embedding_dimension") or config.get(
                "embedding_dimension", dimension
            )
        elif kind.endswith("Dense"):
            dimension = config.get("out_features", dimension)
    return int(dimension) if dimension else None


def _sane(value: Any) -> int | None:
    # Tokenizer configs often say 1e30 for "no limit".
    return int(value) if isinstance(value, int) and 0 < value < 1_000_000 else None


def _json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def code_files(folder: Path) -> list[str]:
    """What in `folder` is code the model runs: the modules its configurations' `auto_map`
    name (config.json, tokenizer_config.json) and sentence-transformers modules that are not
    sentence-transformers' own, with the Python files the folder holds."""
    named: list[str] = []
    for config in ("config.json", "tokenizer_config.json"):
        auto_map = _json(folder / config).get("auto_map") or {}
        for target in auto_map.values() if isinstance(auto_map, dict) else ():
            for reference in target if isinstance(target, list) else [target]:
                if isinstance(reference, str):
                    named.append(f"{reference.rsplit('.', 1)[0]} ({config} auto_map)")
    for module in _modules(folder):
        kind = str(module.get("type", ""))
        if kind and not kind.startswith("sentence_transformers."):
            named.append(f"{kind} (modules.json)")
    files = sorted(str(p.relative_to(folder)) for p in folder.rglob("*.py") if p.is_file())
    return list(dict.fromkeys(named)) + files if named else []
