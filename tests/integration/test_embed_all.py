"""TEI's /embed_all: every token's vector, unpooled, as sentence-transformers' token embeddings
are; where the served graph has none, a clear refusal in TEI's shape."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from embedserve.config import Settings
from embedserve.engine.embedder import Embedder
from embedserve.engine.loading import load_embedder, load_static
from embedserve.engine.registry import ModelRegistry, ServedModel
from embedserve.models.source import ModelSource, resolve
from tests.conftest import REAL_SENTENCES
from tests.fakes import client_for, registry_with
from tests.generated import tiny_static_model

TEXTS = [*REAL_SENTENCES[:3], "word " * 300]  # the last one past MiniLM's 256 tokens


@pytest.fixture(scope="module")
def packed(minilm: ModelSource) -> Iterator[Embedder]:
    """MiniLM on OpenVINO in fp32: served from the packed graph, which ends before pooling."""
    embedder = load_embedder(minilm, Settings(backend="openvino", precision="fp32"))
    yield embedder
    embedder.close()


async def test_token_vectors_equal_sentence_transformers(  # type: ignore[no-untyped-def]
    packed: Embedder, minilm: ModelSource, reference
) -> None:
    want = reference.encode(TEXTS, output_value="token_embeddings")
    async with client_for(registry_with(minilm, packed)) as client:
        answer = await client.post("/embed_all", json={"inputs": TEXTS})
        one = await client.post("/embed_all", json={"inputs": TEXTS[0]})
        query = await client.post("/embed_all", json={"inputs": "x", "prompt_name": "query"})
    assert answer.status_code == 200, answer.text
    got = [np.array(rows, dtype=np.float32) for rows in answer.json()]
    assert [len(g) for g in got] == [len(w) for w in want]  # special tokens included, truncated
    assert len(got[-1]) == 256
    for g, w in zip(got, want, strict=True):
        w = w.numpy()
        cosines = (g * w).sum(axis=1) / np.linalg.norm(g, axis=1) / np.linalg.norm(w, axis=1)
        assert cosines.min() >= 0.9999
        assert np.allclose(np.linalg.norm(g, axis=1), np.linalg.norm(w, axis=1), rtol=1e-3)
    assert np.allclose(one.json()[0], got[0], atol=1e-5)  # a string is a list of one
    assert query.status_code == 200  # MiniLM has no query instruction: the same two tokens
    assert len(query.json()[0]) == 3


async def test_a_padded_graph_refuses_in_teis_shape(minilm: ModelSource) -> None:
    padded = load_embedder(minilm, Settings(backend="onnx", precision="fp32"))
    try:
        async with client_for(registry_with(minilm, padded)) as client:
            refused = await client.post("/embed_all", json={"inputs": ["a", "b"]})
            empty = await client.post("/embed_all", json={"inputs": []})
    finally:
        padded.close()
    assert refused.status_code == 422  # TEI's status for a request it cannot serve
    body = refused.json()
    assert body["error_type"] == "Validation"
    assert "--backend openvino" in body["error"]
    assert empty.status_code == 400
    assert empty.json()["error_type"] == "Empty"


async def test_a_static_models_token_vectors_are_its_table_rows(
    minilm: ModelSource, tmp_path: Path
) -> None:
    folder = tiny_static_model(tmp_path, minilm.files)
    source = resolve(str(folder))
    static = load_static(source, Settings())
    model = ServedModel(source, lambda _s: static)
    model.load()
    async with client_for(ModelRegistry([model])) as client:
        answer = await client.post("/embed_all", json={"inputs": ["hello world"]})
    assert answer.status_code == 200, answer.text
    ids = static.tokenize(["hello world"], True)[0]
    assert np.allclose(answer.json()[0], static.table.table[ids], atol=1e-6)
