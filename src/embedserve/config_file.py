"""Settings from a file (TOML, YAML or JSON): any server setting, and the served models.

default_model = "minilm"
precision = "int8"

[[models]]
model = "sentence-transformers/all-MiniLM-L6-v2"
name = "minilm"
aliases = ["text-embedding-3-small"]

[[models]]
model = "./models/bge-small-en-v1.5"
query_instruction = "Represent this sentence for searching relevant passages: "
"""

from __future__ import annotations

import json
from dataclasses import fields
from pathlib import Path
from typing import Any

import tomllib

from embedserve.config import ModelSpec, Settings
from embedserve.errors import ConfigError

_MODEL_KEYS = {
    "model": "ref",
    "name": "name",
    "aliases": "aliases",
    "query_instruction": "query_instruction",
    "document_instruction": "document_instruction",
}


def read_config(path: Path) -> dict[str, Any]:
    """Settings values from `path`, keyed as Settings' fields; `models` as ModelSpecs."""
    raw = _parse(path)
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a table of settings at the top level")
    known = {f.name for f in fields(Settings)}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ConfigError(
            f"{path}: unknown setting(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
        )
    values = dict(raw)
    if "models" in values:
        values["models"] = tuple(_model(path, i, m) for i, m in enumerate(values["models"] or []))
        if not values["models"]:
            raise ConfigError(f"{path}: 'models' is empty")
    return values


def _model(path: Path, index: int, entry: Any) -> ModelSpec:
    if isinstance(entry, str):
        return ModelSpec(ref=entry)
    if not isinstance(entry, dict):
        raise ConfigError(f"{path}: models[{index}] must be a table or a model path/id")
    unknown = sorted(set(entry) - set(_MODEL_KEYS))
    if unknown:
        raise ConfigError(f"{path}: models[{index}] has unknown key(s) {', '.join(unknown)}")
    values = {_MODEL_KEYS[k]: v for k, v in entry.items()}
    aliases = values.get("aliases", ())
    values["aliases"] = (aliases,) if isinstance(aliases, str) else tuple(aliases)
    return ModelSpec(**values)


def _parse(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read the config file {path}: {exc.strerror}") from exc
    try:
        if path.suffix == ".toml":
            return tomllib.loads(text)
        if path.suffix in (".yaml", ".yml"):
            import yaml

            return yaml.safe_load(text)
        if path.suffix == ".json":
            return json.loads(text)
    except (tomllib.TOMLDecodeError, ValueError) as exc:
        raise ConfigError(f"{path} is not valid {path.suffix[1:].upper()}: {exc}") from exc
    except Exception as exc:  # yaml.YAMLError, without importing yaml at module load
        raise ConfigError(f"{path} is not valid YAML: {exc}") from exc
    raise ConfigError(f"{path}: use a .toml, .yaml, .yml or .json file")
