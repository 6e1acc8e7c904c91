"""Command line: `embedserve serve [flags]`, over EMBEDSERVE_* variables, over a --config
file. Accepts h2oGPT's startup flags as aliases (flags.py)."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any

from embedserve.config import ModelSpec, Settings
from embedserve.config_file import read_config
from embedserve.errors import ConfigError, EmbedServeError
from embedserve.flags import boolean, parsers
from embedserve.keys import collect_keys
from embedserve.logs import configure as configure_logging

log = logging.getLogger("embedserve")


def build_parser() -> argparse.ArgumentParser:
    return parsers()[0]


def settings_from_args(args: argparse.Namespace) -> Settings:
    if args.use_openai_embedding:  # instead of the packaged default, or beside chosen models
        upstream = ModelSpec(ref=f"openai:{args.openai_model}")
        chosen = args.models != Settings().models
        args.models = (*args.models, upstream) if chosen else (upstream,)
    if args.langchain_mode:
        log.info(
            "--langchain_mode=%s accepted for h2oGPT compatibility; embedserve does not need it",
            args.langchain_mode,
        )
    args.api_keys = collect_keys(args.api_keys, args.api_key_files, args.h2ogpt_api_keys)
    args.cors_origins = tuple(args.cors_origins)
    return Settings(**{f.name: getattr(args, f.name) for f in fields(Settings)})


def parse_settings(argv: Sequence[str], environ: Mapping[str, str] | None = None) -> Settings:
    """Settings from a command line (the command included), over EMBEDSERVE_* variables, over
    a --config file, over the defaults."""
    parser, serve = parsers()
    args = parser.parse_args(argv)
    if args.config:
        serve.set_defaults(**read_config(Path(args.config)))
    from_env = env_defaults(serve, os.environ if environ is None else environ)
    if args.config or from_env:
        serve.set_defaults(**from_env)
        args = parser.parse_args(argv)
    return settings_from_args(args)


ENV_PREFIX = "EMBEDSERVE_"


def env_defaults(serve: argparse.ArgumentParser, environ: Mapping[str, str]) -> dict[str, Any]:
    """EMBEDSERVE_<SETTING> variables (EMBEDSERVE_PORT=8080, EMBEDSERVE_PRECISION=int8, ...),
    read as their flags read them; repeatable flags (EMBEDSERVE_API_KEYS, ..._CORS_ORIGINS)
    take comma-separated values. EMBEDSERVE_MODEL takes comma-separated models."""
    actions = {a.dest: a for a in serve._actions}
    values: dict[str, Any] = {}
    if environ.get(ENV_PREFIX + "MODEL"):
        refs = [r.strip() for r in environ[ENV_PREFIX + "MODEL"].split(",") if r.strip()]
        values["models"] = tuple(ModelSpec(ref=r) for r in refs)
    for field in fields(Settings):
        name = ENV_PREFIX + field.name.upper()
        if name not in environ or field.name == "models":
            continue
        values[field.name] = _env_value(name, environ[name], actions[field.name])
    return values


def _env_value(name: str, raw: str, action: argparse.Action) -> Any:
    try:
        if action.nargs == 0 or action.type is boolean:  # store_true/false flags and booleans
            value: Any = boolean(raw)
        elif isinstance(action.default, list):  # repeatable flags: comma-separated
            value = [part.strip() for part in raw.split(",") if part.strip()]
        else:
            value = action.type(raw) if callable(action.type) else raw
    except (ValueError, argparse.ArgumentTypeError):
        raise ConfigError(f"{name}={raw!r} is not a valid value") from None
    if action.choices is not None and value not in action.choices:
        choices = ", ".join(map(str, action.choices))
        raise ConfigError(f"{name}={raw!r} is not one of {choices}")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or (argv[0].startswith("-") and argv[0] not in ("-h", "--help", "--version")):
        argv.insert(0, "serve")  # `embedserve --hf_embedding_model=...` works like h2oGPT
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        settings = parse_settings(argv)
    except EmbedServeError as exc:
        print(f"embedserve: error: {exc.message}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level, settings.log_format)
    from embedserve.runtime import serve

    try:
        serve(settings)
    except EmbedServeError as exc:
        print(f"embedserve: error: {exc.message}", file=sys.stderr)
        return 2
    return 0
