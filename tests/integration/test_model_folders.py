"""Model folders: ONNX folders served without export; folders that cannot be served refused."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from embedserve.backends.onnx import OnnxBackend
from embedserve.config import Settings
from embedserve.engine.loading import load_embedder, load_service
from embedserve.errors import ModelUnavailable
from embedserve.models.source import ModelSource, resolve
from tests.conftest import REAL_SENTENCES, VARIED_TEXTS, cosines, reference_vectors
from tests.generated import (
    hub_style_onnx_folder,
    remote_code_model,
    sharded,
    tiny_cls_dense_model,
)

pytestmark = pytest.mark.slow  # builds and exports models


@pytest.fixture(scope="module")
def onnx_folder(tmp_path_factory: pytest.TempPathFactory, minilm: ModelSource) -> Path:
    return hub_style_onnx_folder(tmp_path_factory.mktemp("onnx"), minilm.files)


def test_an_onnx_folder_is_served_as_it_is(onnx_folder, reference, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from embedserve.backends import onnx_build

    monkeypatch.setattr(onnx_build, "_export", lambda *a: pytest.fail("no export expected"))
    embedder = load_embedder(resolve(str(onnx_folder)), Settings())
    assert isinstance(embedder.backend, OnnxBackend)
    texts = [*VARIED_TEXTS, *REAL_SENTENCES]
    got = embedder.embed_sync(texts).vectors
    assert cosines(got, reference_vectors(reference, texts)).min() >= 0.9999
    embedder.close()


def test_an_onnx_folder_is_served_on_a_machine_with_a_gpu_too(onnx_folder, reference) -> None:  # type: ignore[no-untyped-def]
    # On a GPU "auto" precision means fp16, which an ONNX folder does not have: the folder is
    # still served (in fp32 on the CPU), since the user asked for nothing it cannot do.
    embedder = load_embedder(resolve(str(onnx_folder)), Settings(device="cuda"))
    got = embedder.embed_sync(REAL_SENTENCES).vectors
    assert cosines(got, reference_vectors(reference, REAL_SENTENCES)).min() >= 0.9999
    embedder.close()


def test_an_onnx_folder_with_a_dense_layer_is_refused_with_the_reason(
    onnx_folder: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "with-dense"
    shutil.copytree(onnx_folder, folder)
    modules = json.loads((folder / "modules.json").read_text())
    modules.insert(
        2, {"idx": 2, "name": "2", "path": "2_Dense", "type": "sentence_transformers.models.Dense"}
    )
    (folder / "modules.json").write_text(json.dumps(modules))
    with pytest.raises(ModelUnavailable, match="Dense layer after pooling but only ONNX weights"):
        load_embedder(resolve(str(folder)), Settings())


def test_a_folder_without_weights_is_refused(minilm: ModelSource, tmp_path: Path) -> None:
    folder = tmp_path / "no-weights"
    folder.mkdir()
    shutil.copy(minilm.files / "tokenizer.json", folder / "tokenizer.json")
    with pytest.raises(ModelUnavailable, match="has no weights"):
        resolve(str(folder))


def test_int8_of_an_onnx_folder_is_refused(onnx_folder) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ModelUnavailable, match="ships only an ONNX model"):
        load_embedder(resolve(str(onnx_folder)), Settings(precision="int8"))


def test_pooling_modes_ignore_padding() -> None:
    from embedserve.backends.pooling import pool

    tokens = np.array(
        [[[1.0, 2.0], [3.0, 4.0], [100.0, 100.0]], [[5.0, 1.0], [7.0, 9.0], [0.0, 3.0]]]
    )
    mask = np.array([[1, 1, 0], [1, 1, 1]])
    assert pool(tokens, mask, "mean").tolist() == [[2.0, 3.0], [4.0, 13 / 3]]
    assert pool(tokens, mask, "cls").tolist() == [[1.0, 2.0], [5.0, 1.0]]
    assert pool(tokens, mask, "max").tolist() == [[3.0, 4.0], [7.0, 9.0]]
    assert pool(tokens, mask, "lasttoken").tolist() == [[3.0, 4.0], [0.0, 3.0]]
    with pytest.raises(ValueError, match="not supported"):
        pool(tokens, mask, "weightedmean")


def test_pooling_leaves_out_unpooled_tokens_but_not_the_last() -> None:
    from embedserve.backends.base import UNPOOLED
    from embedserve.backends.pooling import pool

    tokens = np.array([[[100.0, 100.0], [1.0, 2.0], [3.0, 4.0], [9.0, 9.0]]])
    mask = np.array([[UNPOOLED, 1, 1, 0]])
    assert pool(tokens, mask, "mean").tolist() == [[2.0, 3.0]]
    assert pool(tokens, mask, "max").tolist() == [[3.0, 4.0]]
    assert pool(tokens, mask, "lasttoken").tolist() == [[3.0, 4.0]]


def test_unpooled_marks_mean_the_same_in_hub_onnx_folders_and_torch(onnx_folder, minilm) -> None:  # type: ignore[no-untyped-def]
    """For a hub ONNX folder numpy pools without the marked tokens; the torch stack attends to
    them and pools without them: the two must agree. (The 0/1 mask fed to hub graphs is
    defensive: this export reads any non-zero as attended, older ones may not.)"""
    from embedserve.backends.base import UNPOOLED
    from embedserve.backends.torch import TorchBackend
    from embedserve.engine.batcher import pad
    from embedserve.models.tokenizer import ModelTokenizer

    tokenizer = ModelTokenizer(minilm.files / "tokenizer.json", 256)
    sequences = tokenizer.encode(["query: how do I renew a passport", "query: dogs on trains"])
    ids, mask = pad(sequences, tokenizer.pad_id, [4, 4])
    assert (mask == UNPOOLED).sum() == 8
    hub = OnnxBackend(onnx_folder / "onnx" / "model.onnx", pooling="mean").embed(ids, mask)
    stack = TorchBackend(minilm.files).embed(ids, mask)
    plain = TorchBackend(minilm.files).embed(ids, np.minimum(mask, 1))
    assert cosines(hub, stack).min() >= 0.9999
    assert cosines(plain, stack).max() < 0.999  # the marks change the vectors


@pytest.mark.parametrize(
    "settings",
    [Settings(), Settings(backend="onnx"), Settings(backend="openvino", precision="fp32"),
     Settings(backend="torch")],
    ids=["default", "onnx", "openvino-fp32", "torch"],
)  # fmt: skip
def test_sharded_weights_are_served_by_every_backend(
    minilm: ModelSource, tmp_path: Path, settings: Settings
) -> None:
    from sentence_transformers import SentenceTransformer

    folder = tiny_cls_dense_model(tmp_path, minilm.files, pooling="mean", dense=False)
    split = sharded(folder, tmp_path)
    assert len(list(split.glob("model-*-of-*.safetensors"))) > 1
    embedder = load_embedder(resolve(str(split)), settings)
    try:
        texts = [*VARIED_TEXTS, *REAL_SENTENCES]
        want = SentenceTransformer(str(split), device="cpu").encode(
            texts, normalize_embeddings=True
        )
        assert cosines(embedder.embed_sync(texts).vectors, want).min() >= 0.9999
    finally:
        embedder.close()


def test_a_folder_with_code_is_refused_without_trust_remote_code(
    minilm: ModelSource, tmp_path: Path
) -> None:
    folder = remote_code_model(tmp_path, minilm.files)
    with pytest.raises(ModelUnavailable) as refused:
        resolve(str(folder))
    message = refused.value.message
    assert "--trust-remote-code" in message
    assert "modeling_shifted.py" in message
    assert "configuration_shifted.py" in message


@pytest.mark.parametrize(
    "settings", [Settings(), Settings(backend="onnx"), Settings(backend="torch")],
    ids=["default", "onnx", "torch"],
)  # fmt: skip
def test_with_trust_remote_code_the_folders_code_is_exported_and_served(
    minilm: ModelSource, tmp_path: Path, settings: Settings
) -> None:
    from sentence_transformers import SentenceTransformer

    folder = remote_code_model(tmp_path, minilm.files)
    embedder = load_service(resolve(str(folder), trust_remote_code=True), settings)
    try:
        texts = [*VARIED_TEXTS, *REAL_SENTENCES]
        remote = SentenceTransformer(str(folder), device="cpu", trust_remote_code=True)
        want = remote.encode(texts, normalize_embeddings=True)
        plain = SentenceTransformer(str(tmp_path / "tiny-bert-mean"), device="cpu")
        served = embedder.embed_sync(texts).vectors  # type: ignore[union-attr]
        assert cosines(served, want).min() >= 0.9999
        assert cosines(served, plain.encode(texts, normalize_embeddings=True)).min() < 0.999
    finally:
        embedder.close()  # type: ignore[union-attr]
