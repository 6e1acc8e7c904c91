"""How a setting is declared: once, on its dataclass field, with its type (the annotation),
default, bounds, help and spellings. Flags, EMBEDSERVE_* variables, config-file keys and the
docs' tables are all read off these declarations (`describe`)."""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from embedserve.errors import ConfigError

DECLARED = "embedserve.setting"
ENV_PREFIX = "EMBEDSERVE_"


@dataclass(frozen=True)
class Bound:
    text: str
    ok: Callable[[float], bool]


AT_LEAST_1 = Bound("at least 1", lambda v: v >= 1)
AT_LEAST_0 = Bound("at least 0", lambda v: v >= 0)
ABOVE_0 = Bound("more than 0", lambda v: v > 0)
SHARE = Bound("a share from 0 to 1", lambda v: 0 <= v <= 1)


@dataclass(frozen=True)
class Declared:
    help: str
    """One or two sentences: shown by --help and in docs/configuration.md."""

    flags: tuple[str, ...] | None = None
    """Command-line spellings; None derives one: --<name>, dashed, less a trailing _s."""

    negative: str | None = None
    """A flag that turns a boolean setting off (--no-truncate)."""

    bound: Bound | None = None
    """The range a number must be in."""

    env: str | None = None
    """The environment variable; None derives EMBEDSERVE_<NAME>."""

    key: str | None = None
    """The config-file key; None is the field's name."""

    shown_default: str | None = None
    """How a default that is derived at run time (None) is shown."""

    gathers: bool = False
    """A list gathered from every source (flags, environment, file), not overridden by them."""

    metavar: str | None = None

    job: bool = False
    """`embedserve embed` takes it too: it chooses the model or its engine, not HTTP."""

    parse: Callable[[str], Any] | None = None
    """How a string spells the value where it is not a plain number ("6GiB", "5m")."""


def setting(default: Any, help: str, *, secret: bool = False, **options: Any) -> Any:
    """A dataclass field declared as a setting (see `Declared` for the options); a `secret`
    one is left out of the settings' repr."""
    declared = Declared(help, **options)
    return dataclasses.field(default=default, repr=not secret, metadata={DECLARED: declared})


Kind = Literal["bool", "int", "float", "str", "choice", "strings", "models"]


@dataclass(frozen=True)
class Described:
    """A declared field with what its declaration and annotation imply."""

    name: str
    default: Any
    declared: Declared
    kind: Kind
    optional: bool
    choices: tuple[str, ...] = ()

    @property
    def flags(self) -> tuple[str, ...]:
        if self.declared.flags is not None:
            return self.declared.flags
        return ("--" + self.name.removesuffix("_s").replace("_", "-"),)

    @property
    def flag(self) -> str:
        """The spelling messages name: the first dashed flag, else the first flag."""
        dashed = [f for f in (*self.flags, self.declared.negative or "") if "_" not in f and f]
        return (dashed or [*self.flags, self.name])[0]

    @property
    def env(self) -> str:
        return self.declared.env or ENV_PREFIX + self.name.upper()

    @property
    def key(self) -> str:
        return self.declared.key or self.name

    def check(self, value: Any) -> None:
        """One clear error for a value out of its range or choices, whatever set it."""
        if value is None:
            return
        if self.choices and value not in self.choices:
            raise ConfigError(
                f"{self.flag} must be one of {', '.join(self.choices)}, got {value!r}"
            )
        bound = self.declared.bound
        if bound is not None and not bound.ok(value):
            raise ConfigError(f"{self.flag} must be {bound.text}, got {value:g}")

    def from_text(self, text: str, where: str) -> Any:
        """The value a string stands for (an environment variable, a flag, a YAML scalar)."""
        if self.optional and text.strip().lower() in ("", "none", "null"):
            return None
        try:
            if self.declared.parse is not None:
                return self.declared.parse(text)
            if self.kind == "bool":
                return boolean(text)
            if self.kind == "int":
                return int(text)
            if self.kind == "float":
                return float(text)
        except ValueError as exc:
            reason = f": {exc}" if self.declared.parse is not None else ""
            raise ConfigError(f"{where} is not a valid value{reason}") from None
        if self.kind == "strings":
            return tuple(part.strip() for part in text.split(",") if part.strip())
        if self.kind == "choice" and text not in self.choices:
            raise ConfigError(f"{where} is not one of {', '.join(self.choices)}")
        return text

    def from_data(self, value: Any, where: str) -> Any:
        """The value a config file's entry stands for, checked against the declared type."""
        if value is None and self.optional:
            return None
        if self.kind == "models":
            raise TypeError("models are read by config.files, one ModelSpec each")
        if isinstance(value, str) and self.kind not in ("str", "choice", "strings"):
            return self.from_text(value, where)
        expected: tuple[type, ...] = {
            "bool": (bool,),
            "int": (int,),
            "float": (int, float),
            "str": (str,),
            "choice": (str,),
            "strings": (list, tuple, str),
        }[self.kind]
        fits = isinstance(value, expected)
        if not fits or (self.kind in ("int", "float") and isinstance(value, bool)):
            raise ConfigError(f"{where} must be {_KIND_TEXT[self.kind]}, got {value!r}")
        if self.kind == "choice":
            return self.from_text(value, where)
        if self.kind == "strings":
            items = [value] if isinstance(value, str) else list(value)
            if not all(isinstance(item, str) for item in items):
                raise ConfigError(f"{where} must be a list of strings, got {value!r}")
            return tuple(items)
        return float(value) if self.kind == "float" else value


_KIND_TEXT = {
    "bool": "true or false",
    "int": "a whole number",
    "float": "a number",
    "str": "a string",
    "choice": "one of the listed strings",
    "strings": "a list of strings",
}


def describe(cls: type) -> list[Described]:
    """Every declared field of a settings dataclass, in declaration order."""
    hints = typing.get_type_hints(cls)
    described = []
    for field in dataclasses.fields(cls):
        declared = field.metadata.get(DECLARED)
        if declared is None:
            continue
        kind, optional, choices = _kind(hints[field.name])
        described.append(Described(field.name, field.default, declared, kind, optional, choices))
    return described


def _kind(annotation: Any) -> tuple[Kind, bool, tuple[str, ...]]:
    args = typing.get_args(annotation)
    optional = typing.get_origin(annotation) in (typing.Union, types.UnionType) and (
        type(None) in args
    )
    if optional:
        (annotation,) = [a for a in args if a is not type(None)]
    origin = typing.get_origin(annotation)
    if origin is Literal:
        return "choice", optional, tuple(str(a) for a in typing.get_args(annotation))
    if origin is tuple:
        item = typing.get_args(annotation)[0]
        return ("strings" if item is str else "models"), optional, ()
    simple: dict[Any, Kind] = {bool: "bool", int: "int", float: "float", str: "str"}
    return simple[annotation], optional, ()


def boolean(text: str) -> bool:
    """h2oGPT (python-fire) style booleans: --flag=False, --flag=0, --flag=no."""
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off", "none"):
        return False
    raise ValueError(f"expected true or false, got {text!r}")
