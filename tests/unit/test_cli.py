import re

import pytest

from embedserve.cli import parse_settings
from embedserve.config import ModelSpec, Settings


def parse(*argv: str) -> Settings:
    return parse_settings(["serve", *argv], {})


def test_defaults_match_h2ogpt() -> None:
    settings = parse()
    assert (settings.host, settings.port, settings.preload) == ("127.0.0.1", 5000, True)
    assert settings.models == (ModelSpec(),)
    assert settings.token_ids == "tiktoken"
    assert settings.truncate


def test_h2ogpt_flags_are_accepted() -> None:
    settings = parse(
        "--hf_embedding_model=/models/x",
        "--pre_load_embedding_model=False",
        "--langchain_mode=UserData",
        "--openai_port=5001",
        "--use_openai_embedding=False",
    )
    assert (settings.models[0].ref, settings.preload, settings.port) == ("/models/x", False, 5001)


@pytest.mark.parametrize(("text", "value"), [("True", True), ("0", False), ("no", False)])
def test_fire_style_booleans(text: str, value: bool) -> None:
    assert parse(f"--pre_load_embedding_model={text}").preload is value


def test_use_openai_embedding_serves_the_upstream_model() -> None:
    settings = parse("--use_openai_embedding", "--openai_base_url", "http://127.0.0.1:9/v1")
    assert settings.models == (ModelSpec(ref="openai:text-embedding-3-small"),)
    assert settings.openai_base_url == "http://127.0.0.1:9/v1"


def test_several_models_with_names_aliases_and_instructions() -> None:
    settings = parse(
        "--model",
        "/m/a",
        "--name",
        "a",
        "--alias",
        "text-embedding-3-small",
        "--alias",
        "x",
        "--hf_embedding_model",
        "/m/b",
        "--query-instruction",
        "q: ",
        "--document-instruction",
        "",
        "--default-model",
        "a",
    )
    assert settings.models == (
        ModelSpec(ref="/m/a", name="a", aliases=("text-embedding-3-small", "x")),
        ModelSpec(ref="/m/b", query_instruction="q: ", document_instruction=""),
    )
    assert settings.default_model == "a"


def test_model_flags_describe_the_default_model_until_a_model_is_given() -> None:
    assert parse("--alias", "text-embedding-3-small").models == (
        ModelSpec(aliases=("text-embedding-3-small",)),
    )
    with pytest.raises(SystemExit):
        parse("--alias", "lost", "--model", "/m/a")  # would silently drop the alias


def test_config_file_sets_models_and_settings_and_flags_override(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from embedserve.cli import parse_settings

    toml = tmp_path / "embedserve.toml"
    toml.write_text(
        'default_model = "minilm"\nprecision = "int8"\nport = 6000\n'
        '[[models]]\nmodel = "all-MiniLM-L6-v2"\nname = "minilm"\n'
        'aliases = ["text-embedding-3-small"]\n'
        '[[models]]\nmodel = "/m/bge"\nquery_instruction = "q: "\n'
    )
    settings = parse_settings(["serve", "--config", str(toml), "--port", "7000"])
    assert settings.models == (
        ModelSpec(ref="all-MiniLM-L6-v2", name="minilm", aliases=("text-embedding-3-small",)),
        ModelSpec(ref="/m/bge", query_instruction="q: "),
    )
    assert (settings.default_model, settings.precision, settings.port) == ("minilm", "int8", 7000)
    yaml = tmp_path / "embedserve.yaml"
    yaml.write_text("models:\n  - /m/a\n  - model: /m/b\n    name: b\n")
    assert parse_settings(["serve", "--config", str(yaml)]).models == (
        ModelSpec(ref="/m/a"),
        ModelSpec(ref="/m/b", name="b"),
    )


@pytest.mark.parametrize(
    ("name", "text", "fragment"),
    [
        ("bad.toml", "prot = 1\n", "unknown setting(s) prot"),
        ("bad.toml", "[[models]]\nmodel = 'x'\nnmae = 'y'\n", "models[0] has unknown key(s) nmae"),
        ("bad.toml", "port = \n", "is not valid TOML"),
        ("bad.yaml", "models: [a, \n", "is not valid YAML"),
        ("bad.ini", "x", "use a .toml, .yaml"),
    ],
)
def test_bad_config_files_are_one_clear_error(tmp_path, name, text, fragment) -> None:  # type: ignore[no-untyped-def]
    from embedserve.cli import main, parse_settings
    from embedserve.errors import ConfigError

    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(ConfigError, match=re.escape(fragment)):
        parse_settings(["serve", "--config", str(path)])
    assert main(["serve", "--config", str(path)]) == 2


def test_models_on_the_command_line_replace_those_of_the_config_file(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from embedserve.cli import parse_settings

    toml = tmp_path / "c.toml"
    toml.write_text('[[models]]\nmodel = "/m/from-file"\n')
    settings = parse_settings(["serve", "--config", str(toml), "--model", "/m/cli", "--name", "c"])
    assert settings.models == (ModelSpec(ref="/m/cli", name="c"),)


def test_use_openai_embedding_adds_to_configured_models(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from embedserve.cli import parse_settings

    toml = tmp_path / "c.toml"
    toml.write_text('[[models]]\nmodel = "/m/from-file"\n')
    settings = parse_settings(["serve", "--config", str(toml), "--use_openai_embedding"])
    assert [m.ref for m in settings.models] == ["/m/from-file", "openai:text-embedding-3-small"]


def test_embedserve_environment_variables_set_defaults_under_the_flags() -> None:
    from embedserve.cli import parse_settings

    env = {
        "EMBEDSERVE_PORT": "8080",
        "EMBEDSERVE_PRELOAD": "false",
        "EMBEDSERVE_PRECISION": "int8",
        "EMBEDSERVE_TRUNCATE": "0",
        "EMBEDSERVE_CORS_ORIGINS": "https://a.example, https://b.example",
        "EMBEDSERVE_MODEL": "/m/a,/m/b",
        "EMBEDSERVE_REQUEST_TIMEOUT_S": "2.5",
        "EMBEDSERVE_LOG_FORMAT": "json",
    }
    settings = parse_settings(["serve", "--port", "9000"], env)
    assert settings.port == 9000  # a flag wins over the environment
    assert settings.preload is False
    assert settings.precision == "int8"
    assert settings.truncate is False
    assert settings.cors_origins == ("https://a.example", "https://b.example")
    assert settings.models == (ModelSpec(ref="/m/a"), ModelSpec(ref="/m/b"))
    assert settings.request_timeout_s == 2.5
    assert settings.log_format == "json"
    assert parse_settings(["serve"], {}).port == 5000


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"EMBEDSERVE_PORT": "eighty"}, "EMBEDSERVE_PORT='eighty' is not a valid value"),
        ({"EMBEDSERVE_PRECISION": "fp8"}, "is not one of auto, fp32, int8, bf16, fp16"),
        ({"EMBEDSERVE_PRELOAD": "maybe"}, "not a valid value"),
    ],
)
def test_bad_environment_values_are_named(env: dict[str, str], message: str) -> None:
    from embedserve.cli import parse_settings
    from embedserve.errors import ConfigError

    with pytest.raises(ConfigError, match=message):
        parse_settings(["serve"], env)


def test_streams_is_a_positive_whole_number() -> None:
    from embedserve.cli import parse_settings
    from embedserve.errors import ConfigError
    from embedserve.machine import default_streams

    assert parse_settings(["serve", "--streams", "3"], {}).streams == 3
    with pytest.raises(ConfigError, match="--streams must be at least 1, got 0"):
        parse_settings(["serve", "--streams", "0"], {})
    assert [default_streams(n) for n in (1, 2, 4, 8, 16, 64)] == [1, 1, 2, 2, 4, 16]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--max-batch-size", "0"], "--max-batch-size must be at least 1, got 0"),
        (["--max-batch-tokens", "-5"], "--max-batch-tokens must be at least 1, got -5"),
        (["--max-queued", "0"], "--max-queued must be at least 1, got 0"),
        (["--max-padding", "1.5"], "--max-padding must be a share from 0 to 1, got 1.5"),
        (["--max-padding-tokens", "-1"], "--max-padding-tokens must be at least 0, got -1"),
        (["--max-wait-ms", "-2"], "--max-wait-ms must be at least 0, got -2"),
        (["--request-timeout", "0"], "--request-timeout must be more than 0, got 0"),
    ],
)
def test_sizes_budgets_and_waits_out_of_range_are_one_clear_error(
    argv: list[str], message: str
) -> None:
    from embedserve.cli import parse_settings
    from embedserve.errors import ConfigError

    with pytest.raises(ConfigError) as caught:
        parse_settings(["serve", *argv], {})
    assert caught.value.message == message


def test_environment_and_config_values_are_held_to_the_same_ranges(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from embedserve.cli import parse_settings
    from embedserve.errors import ConfigError

    with pytest.raises(ConfigError, match="--max-queued must be at least 1, got 0"):
        parse_settings(["serve"], {"EMBEDSERVE_MAX_QUEUED": "0"})
    config = tmp_path / "embedserve.toml"
    config.write_text("max_batch_size = -1\n")
    with pytest.raises(ConfigError, match="--max-batch-size must be at least 1, got -1"):
        parse_settings(["serve", "--config", str(config)], {})


def test_kernel_cache_defaults_by_precision_and_is_checked() -> None:
    from embedserve.cli import parse_settings
    from embedserve.errors import ConfigError

    assert parse_settings(["serve"], {}).kernel_cache is None  # 300, or 1000 for int8
    assert parse_settings(["serve"], {"EMBEDSERVE_KERNEL_CACHE": "5000"}).kernel_cache == 5000
    with pytest.raises(ConfigError, match="--kernel-cache must be at least 0, got -1"):
        parse_settings(["serve", "--kernel-cache", "-1"], {})
