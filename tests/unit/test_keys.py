"""API keys from flags, files, h2oGPT's --h2ogpt_api_keys and EMBEDSERVE_API_KEYS."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from embedserve.cli import parse_settings
from embedserve.config.keys import collect_keys
from embedserve.errors import ConfigError


def test_keys_from_every_source_once_in_order(tmp_path: Path) -> None:
    lines = tmp_path / "keys.txt"
    lines.write_text("# team keys\nk-file-1\n\nk-file-2\n")
    listed = tmp_path / "keys.json"
    listed.write_text(json.dumps(["k-json", "k-flag"]))
    keys = collect_keys(
        ["k-flag"],
        [str(lines)],
        ["['k-h2o-1', \"k-h2o-2\"]", str(listed)],
    )
    assert keys == (
        "k-flag",
        "k-file-1",
        "k-file-2",
        "k-h2o-1",
        "k-h2o-2",
        "k-json",
    )


def test_a_single_h2ogpt_key_is_taken_as_it_is() -> None:
    assert collect_keys(h2ogpt_values=["just-one"]) == ("just-one",)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"keys": ["  "]}, "empty"),
        ({"key_files": ["/nonexistent/keys"]}, "cannot read"),
        ({"h2ogpt_values": ["[1, 2]"]}, "list of key strings"),
        ({"h2ogpt_values": ["[unclosed"]}, "not a list"),
    ],
)
def test_bad_key_sources_fail_with_a_reason_that_never_shows_a_key(kwargs, message) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ConfigError, match=message) as caught:
        collect_keys(**kwargs)
    assert "secret" not in caught.value.message


def test_cli_flags_and_environment_gather_keys_and_settings_never_print_them(
    tmp_path: Path,
) -> None:
    key_file = tmp_path / "k"
    key_file.write_text("secret-file\n")
    argv = ["serve", "--api-key", "secret-a", "--api-key-file", str(key_file)]
    argv += ["--h2ogpt_api_keys", "['secret-b']"]
    settings = parse_settings(argv, {"EMBEDSERVE_API_KEYS": "secret-env-1, secret-env-2"})
    assert sorted(settings.api_keys) == [
        "secret-a",
        "secret-b",
        "secret-env-1",
        "secret-env-2",
        "secret-file",
    ]
    assert "secret" not in repr(settings)
