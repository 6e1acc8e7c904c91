"""INSTRUCTOR models: the instruction is read by the model but left out of mean pooling, as the
InstructorEmbedding package (the reference, run in its own venv) does."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from embedserve.config import Settings
from embedserve.engine.embedder import Embedder
from embedserve.engine.instructions import FAMILY_DEFAULTS
from embedserve.engine.loading import load_embedder
from embedserve.engine.registry import ModelRegistry, ServedModel
from embedserve.models.source import ModelSource, resolve
from tests.conftest import REAL_SENTENCES, VARIED_TEXTS, cosines
from tests.fakes import client_for
from tests.generated import tiny_instructor_model
from tests.reference.instructor import instructor_vectors

pytestmark = pytest.mark.slow  # a reference venv, and exports

_, QUERY, DOCUMENT = next(f for f in FAMILY_DEFAULTS if "instructor" in f[0])
TEXTS = [*REAL_SENTENCES[:8], *VARIED_TEXTS, "  spaced out  ", "word " * 600]  # last: truncated


@pytest.fixture(scope="module")
def instructor(tmp_path_factory: pytest.TempPathFactory) -> ModelSource:
    corpus = [*REAL_SENTENCES, *VARIED_TEXTS, QUERY, DOCUMENT] * 4
    return resolve(str(tiny_instructor_model(tmp_path_factory.mktemp("models"), corpus)))


@pytest.fixture(scope="module")
def expected(instructor: ModelSource, tmp_path_factory: pytest.TempPathFactory) -> dict:  # type: ignore[type-arg]
    """InstructorEmbedding's vectors of TEXTS as queries and as documents."""
    pairs = [[QUERY, t] for t in TEXTS] + [[DOCUMENT, t] for t in TEXTS]
    vectors = instructor_vectors(instructor.files, pairs, tmp_path_factory.mktemp("reference"))
    return {"query": vectors[: len(TEXTS)], "document": vectors[len(TEXTS) :]}


@pytest.fixture(scope="module", params=["onnx", "torch", "openvino"])
def instructor_embedder(instructor: ModelSource, request: pytest.FixtureRequest) -> Embedder:
    return load_embedder(instructor, Settings(backend=request.param))


async def embed(embedder: Embedder, source: ModelSource, input_type: str) -> np.ndarray:
    model = ServedModel(source, lambda _s: embedder)
    model.load()
    async with client_for(ModelRegistry([model])) as client:
        response = await client.post(
            "/v1/embeddings", json={"input": TEXTS, "input_type": input_type}
        )
    assert response.status_code == 200, response.text
    return np.array([d["embedding"] for d in response.json()["data"]], dtype=np.float32)


@pytest.mark.parametrize("input_type", ["query", "document"])
async def test_equals_instructor_embedding(
    instructor_embedder: Embedder,
    instructor: ModelSource,
    expected: dict[str, np.ndarray],
    input_type: str,
) -> None:
    got = await embed(instructor_embedder, instructor, input_type)
    assert cosines(got, expected[input_type]).min() >= 0.9999


def test_pooling_the_instruction_would_give_other_vectors(
    instructor: ModelSource,
    expected: dict[str, np.ndarray],
) -> None:
    """What the test above tells apart: pooling the instruction's tokens too (what current
    sentence-transformers does unless told otherwise) gives clearly other vectors."""
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(instructor.files), device="cpu")
    pooled = model.encode([t.strip() for t in TEXTS], prompt=DOCUMENT)
    assert cosines(pooled, expected["document"]).min() < 0.99


def test_a_folder_that_says_include_prompt_false_pools_the_same_way(
    instructor: ModelSource,
    expected: dict[str, np.ndarray],
    tmp_path: Path,
) -> None:
    import json
    import shutil

    folder = tmp_path / "renamed-model"  # no "instructor" in its name: its config says it
    shutil.copytree(instructor.files, folder)
    config_file = folder / "1_Pooling" / "config.json"
    config_file.write_text(
        json.dumps({**json.loads(config_file.read_text()), "include_prompt": False})
    )
    embedder = load_embedder(resolve(str(folder)), Settings())
    assert not embedder.pools_instruction
    embedder.close()
