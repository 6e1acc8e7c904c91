"""Sizes and durations as flags, variables, config files and Ollama's keep_alive spell them."""

from __future__ import annotations

import pytest

from embedserve.cli import parse_settings
from embedserve.config.quantities import parse_bytes, parse_duration
from embedserve.errors import ConfigError


@pytest.mark.parametrize(
    ("text", "size"),
    [("6GiB", 6 * 2**30), ("1.5 GB", 1_500_000_000), ("512mib", 512 * 2**20), ("1000", 1000)],
)
def test_sizes(text: str, size: int) -> None:
    assert parse_bytes(text) == size


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("5m", 300),
        ("1h30m", 5400),
        ("250ms", 0.25),
        ("90", 90),
        ("0", 0),
        ("-1", -1),
        ("-5m", -300),
    ],
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["lots", "5 parsecs", "", "m5", "5mm"])
def test_what_is_neither_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="expected a duration"):
        parse_duration(text)
    with pytest.raises(ValueError, match="expected a size"):
        parse_bytes(text)


@pytest.mark.parametrize("text", ["inf", "-inf", "nan"])
def test_a_duration_is_finite(text: str) -> None:
    with pytest.raises(ValueError, match="finite"):
        parse_duration(text)


def test_the_budget_and_keep_alives_from_flags_and_variables() -> None:
    settings = parse_settings(
        [
            "serve",
            "--memory-budget",
            "6GiB",
            "--model",
            "m",
            "--pinned",
            "--model-keep-alive",
            "1h",
        ],
        {"EMBEDSERVE_KEEP_ALIVE": "5m"},
    )
    assert settings.memory_budget == 6 * 2**30
    assert settings.keep_alive_s == 300
    (model,) = settings.models
    assert model.pinned
    assert model.keep_alive_s == 3600
    with pytest.raises(ConfigError, match=r"EMBEDSERVE_MEMORY_BUDGET.*expected a size"):
        parse_settings(["serve"], {"EMBEDSERVE_MEMORY_BUDGET": "lots"})
