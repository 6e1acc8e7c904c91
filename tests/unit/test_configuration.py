"""Settings are declared once: the docs' table, `serve --help`, the environment and config
files are all derived from the declarations, and agree."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from embedserve.cli import parse_settings
from embedserve.config.settings import SETTINGS, Settings
from embedserve.config.table import flag_names, page

DOCS = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"


def test_the_docs_table_is_what_the_declarations_generate() -> None:
    assert DOCS.read_text() == page(), (
        "docs/configuration.md is stale: python -m embedserve.config.table > docs/configuration.md"
    )


def test_serve_help_lists_every_declared_flag(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        parse_settings(["serve", "--help"], {})
    shown = set(re.findall(r"--[a-z0-9_-]+", capsys.readouterr().out))
    declared = set(flag_names())
    assert declared <= shown
    assert shown - declared == {"--help"}
    assert len(declared) > 40


def test_every_setting_has_a_flag_a_variable_and_the_declared_default() -> None:
    text = DOCS.read_text()
    for described in SETTINGS:
        assert f"`{described.env}`" in text
        assert described.flags or described.kind == "models"  # models: --model and its flags
    assert parse_settings(["serve"], {}) == Settings()  # nothing given: the declared defaults


@pytest.mark.parametrize(
    ("described", "raw"),
    [
        (d, raw)
        for d in SETTINGS
        for raw in {
            "bool": ["false"],
            "int": ["7"],
            "float": ["0.5"],
            "str": ["x"],
            "strings": ["a,b"],
            "choice": [],
            "models": [],
        }[d.kind]
    ],
    ids=lambda v: getattr(v, "name", v),
)
def test_each_variable_reaches_its_setting(described, raw) -> None:  # type: ignore[no-untyped-def]
    settings = parse_settings(["serve"], {described.env: raw})
    assert getattr(settings, described.name) == described.from_text(raw, "test")


@pytest.mark.parametrize(
    "described",
    [d for d in SETTINGS if d.optional and d.kind in ("int", "float")],
    ids=lambda d: d.name,
)
def test_a_setting_that_may_be_unset_takes_none_as_a_flag_and_a_variable(described) -> None:  # type: ignore[no-untyped-def]
    # a default of 300,000 request tokens is lifted with --max-request-tokens none
    flag = described.flags[0]
    assert getattr(parse_settings(["serve", flag, "none"], {}), described.name) is None
    assert getattr(parse_settings(["serve"], {described.env: "none"}), described.name) is None
    assert getattr(parse_settings(["serve", flag, "1"], {}), described.name) == 1


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('port = "eighty"', "port is not a valid value"),
        ("max_padding = true", "max_padding must be a number, got True"),
        ("truncate = 3", "truncate must be true or false, got 3"),
        ("api_keys = [1, 2]", "api_keys must be a list of strings"),
        ('precision = "fp8"', "is not one of auto, fp32, int8, bf16, fp16"),
        ("max_batch_size = 0", "--max-batch-size must be at least 1, got 0"),
        ("[[models]]\naliases = 5\n", "models[0].aliases must be a list of strings, got 5"),
    ],
)
def test_config_file_values_are_checked_against_their_declared_types(
    tmp_path: Path, text: str, message: str
) -> None:
    from embedserve.errors import ConfigError

    config = tmp_path / "embedserve.toml"
    config.write_text(text + "\n")
    with pytest.raises(ConfigError, match=re.escape(message)):
        parse_settings(["serve", "--config", str(config)], {})


def test_a_config_file_from_the_environment_and_flags_over_it(tmp_path: Path) -> None:
    config = tmp_path / "embedserve.yaml"
    config.write_text("port: 6000\nmax_inputs: 10\nstreams: null\n")
    env = {"EMBEDSERVE_CONFIG": str(config), "EMBEDSERVE_MAX_INPUTS": "20"}
    settings = parse_settings(["serve", "--port", "7000"], env)
    assert (settings.port, settings.max_inputs, settings.streams) == (7000, 20, None)
