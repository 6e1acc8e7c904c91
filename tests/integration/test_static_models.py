"""Static embedding models (static-retrieval-mrl, model2vec's potion) served as a table lookup
in numpy, equal to sentence-transformers' StaticEmbedding on every text: empty, whitespace,
past the tokenizer's truncation, with the model's query prompt, and in mixed-length requests."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from embedserve.backends.static import StaticBackend
from embedserve.config import Settings
from embedserve.engine.embedder import EmbedOptions
from embedserve.engine.loading import load_static
from embedserve.errors import ModelUnavailable
from embedserve.models.source import ModelSource, resolve
from tests.conftest import REAL_SENTENCES, VARIED_TEXTS
from tests.generated import tiny_static_model

TEXTS = [*VARIED_TEXTS, *REAL_SENTENCES, "word " * 300 + "tail"]
LAYOUTS = ["sentence-transformers", "model2vec"]


@pytest.fixture(scope="module", params=LAYOUTS)
def static_folder(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, minilm: ModelSource
) -> Path:
    return tiny_static_model(tmp_path_factory.mktemp("static"), minilm.files, request.param)


def reference(folder: Path, texts: list[str], prompt: str | None = None) -> np.ndarray:
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(folder), device="cpu")
    return np.asarray(model.encode(texts, normalize_embeddings=True, prompt=prompt))


async def test_a_static_model_gives_sentence_transformers_vectors(static_folder: Path) -> None:
    embedder = load_static(resolve(str(static_folder)), Settings())
    try:
        assert isinstance(embedder.backend, StaticBackend)
        served = await embedder.embed(TEXTS)
        np.testing.assert_allclose(served.vectors, reference(static_folder, TEXTS), atol=1e-5)
        queries = await embedder.embed(REAL_SENTENCES[:4], EmbedOptions(instruction="query: "))
        want = reference(static_folder, REAL_SENTENCES[:4], prompt="query: ")
        np.testing.assert_allclose(queries.vectors, want, atol=1e-5)
        assert served.prompt_tokens == sum(
            len(ids) for ids in embedder.tokenize(TEXTS, truncate=True)
        )
    finally:
        embedder.close()


async def test_a_static_model_reads_as_far_as_its_tokenizer_truncates(
    static_folder: Path, tmp_path: Path
) -> None:
    """The borrowed tokenizer truncates at 128 tokens, which StaticEmbedding honours; without a
    truncation in its tokenizer, a static model reads every token, far past 512."""
    embedder = load_static(resolve(str(static_folder)), Settings())
    base = "word " * 200
    try:
        assert embedder.max_tokens == 128
        vectors = (await embedder.embed([base + "alpha", base + "omega", "omega " + base])).vectors
        assert np.allclose(vectors[0], vectors[1])  # past the 128th token: not read
        assert not np.allclose(vectors[0], vectors[2])
    finally:
        embedder.close()
    unbounded = tmp_path / "unbounded"
    shutil.copytree(static_folder, unbounded)
    tokenizer = next(unbounded.rglob("tokenizer.json"))
    tokenizer.write_text(json.dumps({**json.loads(tokenizer.read_text()), "truncation": None}))
    embedder = load_static(resolve(str(unbounded)), Settings())
    try:
        texts = ["word " * 700 + "alpha", "word " * 700 + "omega"]
        served = (await embedder.embed(texts)).vectors
        assert not np.allclose(served[0], served[1])
        np.testing.assert_allclose(served, reference(unbounded, texts), atol=1e-5)
    finally:
        embedder.close()


def test_a_static_model_refuses_a_precision_it_does_not_have(static_folder: Path) -> None:
    with pytest.raises(ModelUnavailable, match="static model, served as a table lookup"):
        load_static(resolve(str(static_folder)), Settings(precision="int8"))
