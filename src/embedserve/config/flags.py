"""The `serve` command's flags, generated from the settings' declarations (h2oGPT's startup
flags among their spellings), plus the few inputs that only the command line has."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from embedserve.config.declare import AT_LEAST_1, Bound, Described, boolean
from embedserve.config.settings import MODEL_FIELDS, SETTINGS

MODEL_OPS = "model_ops"
"""Where the per-model flags record what they said, in order: [(field, value), ...]."""


@dataclass(frozen=True)
class CommandLineOnly:
    """A flag that is not a setting: where settings come from, or an h2oGPT spelling that
    adds to or is folded into the settings."""

    dest: str
    flags: tuple[str, ...]
    help: str
    env: str | None = None
    action: str = "store"  # "store", "append" or "boolean"
    metavar: str | None = None
    type: type = str
    bound: Bound | None = None


def command_line_flag(dest: str) -> str:
    """How messages name a command-line-only input: its first flag."""
    return next(flag.flags[0] for flag in COMMAND_LINE_ONLY if flag.dest == dest)


COMMAND_LINE_ONLY = (
    CommandLineOnly(
        "config",
        ("--config",),
        "a TOML, YAML or JSON file of settings and models; flags and variables override it",
        env="EMBEDSERVE_CONFIG",
        metavar="FILE",
    ),
    CommandLineOnly(
        "api_key_files",
        ("--api-key-file",),
        "a file of keys: one per line, or a JSON list (repeatable)",
        action="append",
        metavar="FILE",
    ),
    CommandLineOnly(
        "h2ogpt_api_keys",
        ("--h2ogpt_api_keys",),
        "h2oGPT's form of keys: a list like \"['k1','k2']\", or a JSON file holding one",
        action="append",
        metavar="KEYS",
    ),
    CommandLineOnly(
        "use_openai_embedding",
        ("--use_openai_embedding",),
        "serve --openai_model from the upstream (key in $OPENAI_API_KEY) instead of the default "
        "model, or beside the --model ones",
        action="boolean",
    ),
    CommandLineOnly(
        "ray",
        ("--ray",),
        "serve as a Ray Serve deployment, --host/--port being its proxy's (pip install "
        '"embedserve[ray]")',
        action="boolean",
    ),
    CommandLineOnly(
        "ray_address",
        ("--ray-address",),
        "with --ray: local (a cluster on this machine, stopped with the server), auto (the "
        "running cluster) or a cluster's address (default: local)",
        metavar="ADDRESS",
    ),
    CommandLineOnly(
        "replicas",
        ("--replicas",),
        "with --ray: a fixed number of replicas (default: 1)",
        metavar="N",
        type=int,
        bound=AT_LEAST_1,
    ),
    CommandLineOnly(
        "min_replicas",
        ("--min-replicas",),
        "with --ray: autoscaled on ongoing requests, from this many replicas",
        metavar="A",
        type=int,
        bound=AT_LEAST_1,
    ),
    CommandLineOnly(
        "max_replicas",
        ("--max-replicas",),
        "with --ray: autoscaled up to this many replicas",
        metavar="B",
        type=int,
        bound=AT_LEAST_1,
    ),
    CommandLineOnly(
        "langchain_mode",
        ("--langchain_mode",),
        "accepted for h2oGPT compatibility; embedserve does not need it",
    ),
)


JOB_SETTINGS = frozenset(d.name for d in SETTINGS if d.declared.job)
"""The settings a job without HTTP reads (`embedserve embed`): the model and its engine."""


def add_flags(parser: argparse.ArgumentParser, only: frozenset[str] | None = None) -> None:
    """Every setting's flags (or `only` these, and --config), the per-model flags and the
    command-line-only ones. A flag not given leaves no attribute, so that the environment and
    a config file can fill it."""
    for described in SETTINGS:
        if described.kind != "models" and (only is None or described.name in only):
            _add_setting(parser, described)
    for described in MODEL_FIELDS:
        action = _NewModel if described.name == "ref" else _ModelField
        value: dict[str, Any] = {"metavar": described.declared.metavar or described.name.upper()}
        if described.kind == "bool":
            value = {"type": boolean_flag, "nargs": "?", "const": True, "metavar": "BOOL"}
        elif described.declared.parse is not None:
            value["type"] = _parsed(described.declared.parse)
        parser.add_argument(
            *described.flags,
            dest=MODEL_OPS,
            action=action,
            field=described.name,
            help=help_text(described),
            default=argparse.SUPPRESS,
            **value,
        )
    for flag in COMMAND_LINE_ONLY:
        if only is not None and flag.dest != "config":
            continue
        options: dict[str, Any] = {"dest": flag.dest, "help": flag.help}
        if flag.action == "boolean":
            options |= {"type": boolean_flag, "nargs": "?", "const": True, "metavar": "BOOL"}
        else:
            options |= {"action": flag.action, "metavar": flag.metavar}
            if flag.action == "store":
                options["type"] = _bounded(flag.type, flag.bound) if flag.bound else flag.type
        parser.add_argument(*flag.flags, default=argparse.SUPPRESS, **options)


def _add_setting(parser: argparse.ArgumentParser, described: Described) -> None:
    options: dict[str, Any] = {"dest": described.name, "default": argparse.SUPPRESS}
    kind = described.kind
    if kind == "bool":
        options |= {"type": boolean_flag, "nargs": "?", "const": True, "metavar": "BOOL"}
    elif kind == "strings":
        options |= {"action": "append", "metavar": described.declared.metavar}
    elif kind == "choice":
        options |= {"choices": described.choices}
    else:
        convert: Callable[[str], Any] = {"int": int, "float": float, "str": str}[kind]
        if described.declared.parse is not None:
            convert = _parsed(described.declared.parse)
        options |= {"type": _or_none(convert) if described.optional else convert}
        options["metavar"] = described.declared.metavar
    parser.add_argument(*described.flags, help=help_text(described), **options)
    if described.declared.negative:
        parser.add_argument(
            described.declared.negative,
            dest=described.name,
            action="store_const",
            const=False,
            default=argparse.SUPPRESS,
            help=f"the same as {described.flags[0]}=false",
        )


def _bounded(convert: Callable[[str], Any], bound: Bound) -> Callable[[str], Any]:
    """A number checked against its declared bound as argparse reads it."""

    def parse(text: str) -> Any:
        value = convert(text)
        if not bound.ok(value):
            raise argparse.ArgumentTypeError(f"must be {bound.text}, got {value}")
        return value

    return parse


def _parsed(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    """A declared parser, its ValueError said as argparse says a bad value."""

    def convert(text: str) -> Any:
        try:
            return parse(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    return convert


def _or_none(convert: Callable[[str], Any]) -> Callable[[str], Any]:
    """A setting that may be unset takes "none" on the command line as in the environment."""

    def parse(text: str) -> Any:
        return None if text.strip().lower() in ("none", "null") else convert(text)

    parse.__name__ = convert.__name__  # argparse names the type in "invalid int value"
    return parse


def help_text(described: Described) -> str:
    """The declared help and the default, as --help and the docs show them."""
    return f"{described.declared.help} (default: {shown_default(described)})"


def shown_default(described: Described) -> str:
    if described.declared.shown_default is not None:
        return described.declared.shown_default
    default = described.default
    if isinstance(default, bool):
        return "true" if default else "false"
    if isinstance(default, tuple):
        return ", ".join(map(str, default)) or "none"
    return "none" if default is None else str(default)


def boolean_flag(text: str) -> bool:
    try:
        return boolean(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


class _NewModel(argparse.Action):
    """--model starts a served model. The first one replaces the models from elsewhere (the
    packaged one, the environment's or a config file's list); later ones add to it."""

    def __init__(self, *args: Any, field: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.field = field

    def __call__(self, parser: Any, namespace: Any, value: Any, option: Any = None) -> None:
        ops = getattr(namespace, MODEL_OPS, [])
        if ops and all(field != "ref" for field, _ in ops):
            parser.error(
                "--name, --alias and the instruction flags go after the --model they describe"
            )
        setattr(namespace, MODEL_OPS, [*ops, (self.field, value)])


class _ModelField(_NewModel):
    """--name, --alias and the instruction flags describe the latest model (before any
    --model: the last of the models from elsewhere)."""

    def __call__(self, parser: Any, namespace: Any, value: Any, option: Any = None) -> None:
        ops = getattr(namespace, MODEL_OPS, [])
        setattr(namespace, MODEL_OPS, [*ops, (self.field, value)])
