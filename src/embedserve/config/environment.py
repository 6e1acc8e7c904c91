"""Settings from EMBEDSERVE_<SETTING> variables (EMBEDSERVE_PORT=8080, EMBEDSERVE_PRECISION=int8,
...), read as their flags read them. Repeatable settings (EMBEDSERVE_API_KEYS,
EMBEDSERVE_CORS_ORIGINS) and EMBEDSERVE_MODEL take comma-separated values."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from embedserve.config.settings import SETTINGS, ModelSpec


def read_environment(environ: Mapping[str, str]) -> dict[str, Any]:
    """Settings values, keyed as Settings' fields, from the variables that are set."""
    values: dict[str, Any] = {}
    for described in SETTINGS:
        raw = environ.get(described.env, "")
        if not raw.strip():
            continue
        if described.kind == "models":
            refs = [ref.strip() for ref in raw.split(",") if ref.strip()]
            values[described.name] = tuple(ModelSpec(ref=ref) for ref in refs)
        else:
            values[described.name] = described.from_text(raw, f"{described.env}={raw!r}")
    return values
