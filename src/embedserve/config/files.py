"""Settings from a file (TOML, YAML or JSON): any setting, by its name, and the served models.

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
from pathlib import Path
from typing import Any

import tomllib

from embedserve.config.settings import MODEL_FIELDS, SETTINGS, ModelSpec
from embedserve.errors import ConfigError


def read_config(path: Path) -> dict[str, Any]:
    """Settings values from `path`, keyed as Settings' fields; `models` as ModelSpecs."""
    raw = _parse(path)
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a table of settings at the top level")
    known = {d.key: d for d in SETTINGS}
    unknown = sorted(set(raw) - set(known))
    if unknown:
        raise ConfigError(
            f"{path}: unknown setting(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
        )
    values: dict[str, Any] = {}
    for key, value in raw.items():
        described = known[key]
        if described.kind == "models":
            values[described.name] = _models(path, value)
        else:
            values[described.name] = described.from_data(value, f"{path}: {key}")
    return values


def _models(path: Path, entries: Any) -> tuple[ModelSpec, ...]:
    if isinstance(entries, (str, dict)):
        entries = [entries]
    if not isinstance(entries, list) or not entries:
        raise ConfigError(f"{path}: 'models' must be a non-empty list of models")
    return tuple(_model(path, index, entry) for index, entry in enumerate(entries))


def _model(path: Path, index: int, entry: Any) -> ModelSpec:
    if isinstance(entry, str):
        return ModelSpec(ref=entry)
    if not isinstance(entry, dict):
        raise ConfigError(f"{path}: models[{index}] must be a table or a model path/id")
    known = {d.key: d for d in MODEL_FIELDS}
    unknown = sorted(set(entry) - set(known))
    if unknown:
        raise ConfigError(f"{path}: models[{index}] has unknown key(s) {', '.join(unknown)}")
    values = {
        known[key].name: known[key].from_data(value, f"{path}: models[{index}].{key}")
        for key, value in entry.items()
    }
    return ModelSpec(**values)


def _parse(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read the config file {path}: {exc.strerror}") from exc
    import yaml  # here, not at module load: most starts read no config file

    try:
        if path.suffix == ".toml":
            return tomllib.loads(text)
        if path.suffix in (".yaml", ".yml"):
            return yaml.safe_load(text)
        if path.suffix == ".json":
            return json.loads(text)
    except (tomllib.TOMLDecodeError, ValueError, yaml.YAMLError) as exc:
        kind = "YAML" if isinstance(exc, yaml.YAMLError) else path.suffix[1:].upper()
        raise ConfigError(f"{path} is not valid {kind}: {exc}") from exc
    raise ConfigError(f"{path}: use a .toml, .yaml, .yml or .json file")
