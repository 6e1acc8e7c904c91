"""Sizes ("6GiB", "512MB", bytes) and durations ("5m", "1h30m", seconds) as people write them
on a command line, in a config file or in Ollama's `keep_alive`."""

from __future__ import annotations

import math
import re

_SIZE_UNITS = {
    "": 1,
    "b": 1,
    "k": 1000,
    "kb": 1000,
    "m": 1000**2,
    "mb": 1000**2,
    "g": 1000**3,
    "gb": 1000**3,
    "t": 1000**4,
    "tb": 1000**4,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
    "tib": 1024**4,
}
_SIZE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*")

# Go's time.ParseDuration units, as Ollama reads keep_alive ("5m", "1h30m", "-1s")
_DURATION_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1, "m": 60, "h": 3600}
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")


def parse_bytes(text: str) -> int:
    """Bytes from "6GiB", "1.5 GB", "512MiB" or a plain number of bytes."""
    match = _SIZE.fullmatch(text)
    unit = match.group(2).lower() if match else None
    size = float(match.group(1)) * _SIZE_UNITS[unit] if match and unit in _SIZE_UNITS else None
    if size is None or not math.isfinite(size):
        raise ValueError(f"expected a size like 6GiB, 512MB or a number of bytes, got {text!r}")
    return int(size)


def parse_duration(text: str) -> float:
    """Seconds from "5m", "1h30m", "90s", "250ms" or a plain number of seconds; a negative
    duration ("-1") means forever, as in Ollama's keep_alive."""
    stripped = text.strip()
    sign = -1.0 if stripped.startswith("-") else 1.0
    body = stripped.lstrip("+-")
    try:
        seconds = sign * float(body)
    except ValueError:
        parts = _DURATION_PART.findall(body)
        if not body or "".join(number + unit for number, unit in parts) != body:
            raise ValueError(
                f"expected a duration like 5m, 1h30m, 90s or seconds, got {text!r}"
            ) from None
        seconds = sign * sum(float(number) * _DURATION_UNITS[unit] for number, unit in parts)
    if not math.isfinite(seconds):
        raise ValueError(f"expected a finite duration, got {text!r}")
    return seconds


def shown_bytes(size: float) -> str:
    """A size as people read it: 1.5 GiB, 300 MiB."""
    for unit, scale in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{int(size)} B"
