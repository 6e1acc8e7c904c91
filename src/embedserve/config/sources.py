"""Where settings come from, in order of precedence: flags, then EMBEDSERVE_* variables, then a
config file (--config or $EMBEDSERVE_CONFIG), then the declared defaults."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from embedserve.config.environment import read_environment
from embedserve.config.files import read_config
from embedserve.config.flags import MODEL_OPS
from embedserve.config.keys import collect_keys
from embedserve.config.settings import SETTINGS, ModelSpec, Settings

log = logging.getLogger("embedserve")


def settings_from_environment(environ: Mapping[str, str]) -> Settings:
    """Settings with no command line: the variables, over $EMBEDSERVE_CONFIG's file."""
    return settings_from(argparse.Namespace(), environ)


def settings_from(args: argparse.Namespace, environ: Mapping[str, str]) -> Settings:
    """Settings from parsed `serve` flags (only the flags given are set on `args`)."""
    given = vars(args)
    config = given.get("config") or environ.get("EMBEDSERVE_CONFIG")
    sources = [
        read_config(Path(config)) if config else {},
        read_environment(environ),
        {d.name: given[d.name] for d in SETTINGS if d.name in given},
    ]
    values: dict[str, Any] = {}
    for source in sources:  # later sources win, but lists that gather add up
        for described in SETTINGS:
            if described.name not in source:
                continue
            value = source[described.name]
            value = tuple(value) if isinstance(value, list) else value
            if described.declared.gathers:
                value = (*values.get(described.name, ()), *value)
            values[described.name] = value
    models = _with_model_flags(values.get("models", Settings().models), given.get(MODEL_OPS, []))
    if given.get("use_openai_embedding"):  # instead of the packaged default, or beside others
        upstream = ModelSpec(ref=f"openai:{values.get('openai_model', Settings.openai_model)}")
        models = (*models, upstream) if models != Settings().models else (upstream,)
    if given.get("langchain_mode"):
        log.info(
            "--langchain_mode=%s accepted for h2oGPT compatibility; embedserve does not need it",
            given["langchain_mode"],
        )
    values["models"] = models
    values["api_keys"] = collect_keys(
        values.get("api_keys", ()), given.get("api_key_files", []), given.get("h2ogpt_api_keys", [])
    )
    return Settings(**values)


def _with_model_flags(
    models: tuple[ModelSpec, ...], ops: Sequence[tuple[str, Any]]
) -> tuple[ModelSpec, ...]:
    """Apply --model (the first replaces `models`, later ones add) and the flags describing
    the latest model, in the order given."""
    result = list(models)
    replaced = False
    for field, value in ops:
        if field == "ref":
            result = [*(result if replaced else []), ModelSpec(ref=value)]
            replaced = True
            continue
        latest = result[-1]
        if field == "aliases":
            value = (*latest.aliases, value)
        result[-1] = replace(latest, **{field: value})
    return tuple(result)
