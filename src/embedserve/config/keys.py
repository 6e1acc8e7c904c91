"""API keys from every place a user may put them: flags, key files and h2oGPT's
--h2ogpt_api_keys (a list, or a JSON file holding one). $EMBEDSERVE_API_KEYS and a config
file's `api_keys` reach the --api-key list as every setting does (sources.py)."""

from __future__ import annotations

import ast
import json
from collections.abc import Iterable
from pathlib import Path

from embedserve.errors import ConfigError


def collect_keys(
    keys: Iterable[str] = (),
    key_files: Iterable[str] = (),
    h2ogpt_values: Iterable[str] = (),
) -> tuple[str, ...]:
    """Every configured key once, in order. Blank keys are refused: they would match anyone
    sending an empty bearer token."""
    found = list(keys)
    for name in key_files:
        found += read_key_file(Path(name))
    for value in h2ogpt_values:
        found += _h2ogpt_keys(value)
    cleaned = [k.strip() for k in found]
    if any(not k for k in cleaned):
        raise ConfigError("an API key is empty; remove it (an empty key would let anyone in)")
    return tuple(dict.fromkeys(cleaned))


def read_key_file(path: Path) -> list[str]:
    """A JSON list of keys (h2oGPT's format), or one key per line (# comments allowed)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read the API key file {path}: {exc.strerror}") from None
    if text.lstrip().startswith("["):
        try:
            keys = json.loads(text)
        except ValueError:
            raise ConfigError(f"the API key file {path} is not a valid JSON list") from None
        return _strings(keys, str(path))
    lines = (line.strip() for line in text.splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def _h2ogpt_keys(value: str) -> list[str]:
    """h2oGPT takes a list (python-fire parses `['a','b']`) or the path of a JSON file."""
    if Path(value).is_file():
        return read_key_file(Path(value))
    if value.lstrip().startswith("["):
        try:
            return _strings(ast.literal_eval(value), "--h2ogpt_api_keys")
        except (ValueError, SyntaxError):
            raise ConfigError("--h2ogpt_api_keys is not a list of keys nor a file") from None
    return [value]


def _strings(value: object, where: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(k, str) for k in value):
        raise ConfigError(f"{where} must hold a list of key strings")
    return value
