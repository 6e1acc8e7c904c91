"""Two different models served at once, routed by name, each equal to its own reference."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import numpy as np
import pytest

from embedserve.config import ModelSpec, Settings
from embedserve.engine.embedder import Embedder
from embedserve.engine.loading import load_embedder
from embedserve.engine.registry import ModelRegistry, ServedModel
from embedserve.errors import ConfigError
from embedserve.models.source import ModelSource, resolve
from tests.conftest import REAL_SENTENCES, VARIED_TEXTS, cosines
from tests.fakes import client_for
from tests.generated import tiny_cls_dense_model

TEXTS = [*REAL_SENTENCES[:6], "", "word " * 200]  # the last is over the tiny model's 64 tokens


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory, minilm: ModelSource) -> ModelSource:
    return resolve(str(tiny_cls_dense_model(tmp_path_factory.mktemp("models"), minilm.files)))


@pytest.fixture(scope="module")
def tiny_reference(tiny: ModelSource):  # type: ignore[no-untyped-def]
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(tiny.files), device="cpu")


@pytest.fixture(scope="module")
def tiny_embedder(tiny: ModelSource) -> Embedder:
    return load_embedder(tiny, Settings())  # the real path: ONNX export of CLS + Dense


def two_models(
    minilm: ModelSource,
    embedder: Embedder,
    tiny: ModelSource,
    tiny_embedder: Embedder,
    default: str | None = None,
) -> ModelRegistry:
    spec = ModelSpec(name="tiny", aliases=("text-embedding-3-small",))
    models = [
        ServedModel(minilm, lambda _s: embedder),
        ServedModel(tiny, lambda _s: tiny_embedder, spec),
    ]
    for model in models:
        model.load()
    return ModelRegistry(models, default=default)


@pytest.fixture
def client(minilm, embedder, tiny, tiny_embedder) -> httpx.AsyncClient:  # type: ignore[no-untyped-def]
    return client_for(two_models(minilm, embedder, tiny, tiny_embedder))


async def post(client: httpx.AsyncClient, **body: object) -> np.ndarray:
    response = await client.post("/v1/embeddings", json=body)
    assert response.status_code == 200, response.text
    return np.array([d["embedding"] for d in response.json()["data"]], dtype=np.float32)


async def test_each_model_equals_its_own_reference(client, reference, tiny_reference) -> None:  # type: ignore[no-untyped-def]
    minilm = await post(client, input=TEXTS, model="sentence-transformers/all-MiniLM-L6-v2")
    tiny = await post(client, input=TEXTS, model="tiny")
    assert minilm.shape == (len(TEXTS), 384)
    assert tiny.shape == (len(TEXTS), 16)
    expected_minilm = reference.encode(TEXTS, normalize_embeddings=True)
    expected_tiny = tiny_reference.encode(TEXTS, normalize_embeddings=True, prompt_name="document")
    assert cosines(minilm, expected_minilm).min() >= 0.9999
    assert cosines(tiny, expected_tiny).min() >= 0.9999


async def test_queries_and_documents_get_their_instructions(client, tiny_reference) -> None:  # type: ignore[no-untyped-def]
    texts = REAL_SENTENCES[:5]
    query = await post(client, input=texts, model="tiny", input_type="query")
    document = await post(client, input=texts, model="tiny", input_type="document")
    default = await post(client, input=texts, model="tiny")
    for got, prompt in ((query, "query"), (document, "document"), (default, "document")):
        expected = tiny_reference.encode(texts, normalize_embeddings=True, prompt_name=prompt)
        assert cosines(got, expected).min() >= 0.9999
    # the instruction really changed the input (random weights move a CLS vector only a little,
    # still far above the ~1e-6 numerical noise of the same input)
    assert np.abs(query - document).max() > 1e-4


async def test_usage_counts_the_instruction_tokens(client) -> None:  # type: ignore[no-untyped-def]
    plain = await client.post(
        "/v1/embeddings", json={"input": "hello", "model": "all-MiniLM-L6-v2"}
    )
    query = await client.post(
        "/v1/embeddings", json={"input": "hello", "model": "tiny", "input_type": "query"}
    )
    assert plain.json()["usage"]["prompt_tokens"] == 3  # [CLS] hello [SEP]
    assert query.json()["usage"]["prompt_tokens"] == 5  # [CLS] query : hello [SEP]


async def test_token_arrays_get_the_instruction_too(client) -> None:  # type: ignore[no-untyped-def]
    import tiktoken

    ids = [tiktoken.get_encoding("cl100k_base").encode(t) for t in REAL_SENTENCES[:3]]
    by_ids = await post(client, input=ids, model="tiny", input_type="query")
    by_text = await post(client, input=REAL_SENTENCES[:3], model="tiny", input_type="query")
    assert cosines(by_ids, by_text).min() >= 0.99999


async def test_routing_by_name_alias_and_default(minilm, embedder, tiny, tiny_embedder) -> None:  # type: ignore[no-untyped-def]
    async with client_for(two_models(minilm, embedder, tiny, tiny_embedder)) as client:
        alias = await client.post(
            "/v1/embeddings", json={"input": "a", "model": "text-embedding-3-small"}
        )
        assert alias.json()["model"] == "tiny"
        unknown = await client.post("/v1/embeddings", json={"input": "a", "model": "nope"})
        assert unknown.status_code == 404
        message = unknown.json()["error"]["message"]
        assert "sentence-transformers/all-MiniLM-L6-v2" in message
        assert "tiny" in message
    registry = two_models(minilm, embedder, tiny, tiny_embedder, default="tiny")
    async with client_for(registry) as client:
        routed = await client.post("/v1/embeddings", json={"input": "a", "model": "nope"})
        assert routed.status_code == 200
        assert routed.json()["model"] == "tiny"


async def test_models_lists_both_with_their_facts(client) -> None:  # type: ignore[no-untyped-def]
    cards = {c["id"]: c for c in (await client.get("/v1/models")).json()["data"]}
    minilm, tiny = cards["sentence-transformers/all-MiniLM-L6-v2"], cards["tiny"]
    assert (minilm["dimension"], minilm["max_tokens"], minilm["pooling"]) == (384, 256, "mean")
    assert (tiny["dimension"], tiny["max_tokens"], tiny["pooling"]) == (16, 64, "cls")
    assert tiny["aliases"] == ["text-embedding-3-small"]
    for card in (minilm, tiny):  # what --precision auto chose, and why
        label = {"onnx": "ONNX Runtime", "openvino": "OpenVINO"}[card["backend"]]
        assert card["selection"].startswith(f"precision auto: {card['precision']} on {label}: ")
    assert (tiny["query_instruction"], tiny["document_instruction"]) == ("query: ", "passage: ")


def test_clashing_names_and_unknown_default_are_refused(minilm, tiny) -> None:  # type: ignore[no-untyped-def]
    def served(source: ModelSource, spec: ModelSpec) -> ServedModel:
        return ServedModel(source, lambda _s: None, spec)  # type: ignore[arg-type,return-value]

    with pytest.raises(ConfigError, match="given to two served models"):
        ModelRegistry(
            [served(minilm, ModelSpec(name="x")), served(tiny, ModelSpec(aliases=("x",)))]
        )
    with pytest.raises(ConfigError, match="not one of the served models"):
        ModelRegistry([served(minilm, ModelSpec()), served(tiny, ModelSpec())], default="zzz")


def test_cli_serves_two_models(tiny: ModelSource, tmp_path: Path) -> None:
    from embedserve.cli import parse_settings
    from embedserve.engine.loading import build_registry

    argv = ["serve", "--model", "all-MiniLM-L6-v2", "--model", str(tiny.files), "--name", "tiny"]
    registry = build_registry(parse_settings(argv, {}))
    assert [m.id for m in registry.models] == ["sentence-transformers/all-MiniLM-L6-v2", "tiny"]
    assert registry.default is None


@pytest.fixture(scope="module")
def mpnet() -> ModelSource:
    return resolve("all-mpnet-base-v2")  # assembled from its five packages into the cache


@pytest.mark.slow  # exports all-mpnet-base-v2
async def test_two_real_models_at_once_each_equal_to_sentence_transformers(  # type: ignore[no-untyped-def]
    minilm, embedder, reference, mpnet
) -> None:
    from sentence_transformers import SentenceTransformer

    mpnet_embedder = load_embedder(mpnet, Settings())  # MPNet through the whole-stack export
    assert mpnet_embedder.selection.startswith("precision auto: ")  # the fastest exact mode
    models = [
        ServedModel(minilm, lambda _s: embedder),
        ServedModel(mpnet, lambda _s: mpnet_embedder),
    ]
    for model in models:
        model.load()
    texts = [*TEXTS, *REAL_SENTENCES[6:], *VARIED_TEXTS]
    async with client_for(ModelRegistry(models)) as client:
        got_minilm, got_mpnet = await asyncio.gather(
            post(client, input=texts, model="all-MiniLM-L6-v2"),
            post(client, input=texts, model="sentence-transformers/all-mpnet-base-v2"),
        )
        listed = (await client.get("/v1/models")).json()["data"]
    mpnet_reference = SentenceTransformer(str(mpnet.files), device="cpu")
    assert got_mpnet.shape == (len(texts), 768)
    assert (
        cosines(got_mpnet, mpnet_reference.encode(texts, normalize_embeddings=True)).min() >= 0.9999
    )
    assert cosines(got_minilm, reference.encode(texts, normalize_embeddings=True)).min() >= 0.9999
    assert {m["id"]: m["dimension"] for m in listed} == {
        "sentence-transformers/all-MiniLM-L6-v2": 384,
        "sentence-transformers/all-mpnet-base-v2": 768,
    }
    mpnet_embedder.close()


@pytest.mark.parametrize(
    ("architecture", "pooling"), [("bert", "max"), ("bert", "lasttoken"), ("xlm-roberta", "mean")]
)
def test_other_poolings_and_architectures_go_through_the_export(  # type: ignore[no-untyped-def]
    architecture, pooling, minilm, tmp_path
) -> None:
    from sentence_transformers import SentenceTransformer

    folder = tiny_cls_dense_model(tmp_path, minilm.files, pooling, architecture)
    embedder = load_embedder(resolve(str(folder)), Settings())
    assert embedder.kind in ("onnx", "openvino")  # the exported stack, in fp32 or proven bf16
    assert embedder.selection.startswith("precision auto: ")
    texts = [*TEXTS, "short"]  # mixed lengths: padding must not leak into max or last token
    got = embedder.embed_sync(texts).vectors
    expected = SentenceTransformer(str(folder), device="cpu").encode(
        texts, normalize_embeddings=True, batch_size=len(texts)
    )
    assert cosines(got, expected).min() >= 0.9999
    embedder.close()
