"""Rerank on a real server process: a cross-encoder in sentence-transformers' format (made by
the suite from the packaged MiniLM) scores as CrossEncoder.predict does, through /v1/rerank,
/rerank (Cohere/Jina's and TEI's shapes) and /v2/rerank (the cohere client); an embedding model
asked to rerank scores by cosine and says so."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from embedserve.models.source import ModelSource
from tests.generated import minilm_cross_encoder
from tests.processes import start, stop, wait_until_listening

pytestmark = pytest.mark.process

QUERY = "How do I renew my passport?"
DOCUMENTS = [
    "Passports can be renewed online or at a post office with a recent photo.",
    "The museum opens at nine and closes at five on weekdays.",
    "Renewal forms must be signed and sent with the old passport. " * 80,  # past the maximum
    "Cats sleep for most of the day.",
    "",
]


@pytest.fixture(scope="module")
def cross_encoder(tmp_path_factory: pytest.TempPathFactory, minilm: ModelSource) -> Path:
    return minilm_cross_encoder(tmp_path_factory.mktemp("cross-encoder"), minilm.files)


@pytest.fixture(scope="module")
def predicted(cross_encoder: Path) -> dict[str, np.ndarray]:
    from sentence_transformers import CrossEncoder

    model = CrossEncoder(str(cross_encoder), device="cpu")
    pairs = [(QUERY, d) for d in DOCUMENTS]
    return {
        "scores": np.asarray(model.predict(pairs, batch_size=32)),
        "logits": np.asarray(model.predict(pairs, batch_size=32, activation_fn=lambda x: x)),
    }


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, cross_encoder: Path) -> Iterator[str]:
    args = ["--model", "all-MiniLM-L6-v2", "--model", str(cross_encoder), "--name", "ce"]
    process, base, log = start(tmp_path_factory.mktemp("server"), *args, "--max-inputs", "16")
    wait_until_listening(process, base, log)
    yield base
    stop(process)


def scores_in_order(results: list[dict], key: str = "relevance_score") -> np.ndarray:  # type: ignore[type-arg]
    by_index = {r["index"]: r[key] for r in results}
    return np.array([by_index[i] for i in range(len(by_index))], dtype=np.float32)


def test_scores_equal_cross_encoder_predict(server: str, predicted) -> None:  # type: ignore[no-untyped-def]
    response = httpx.post(
        f"{server}/v1/rerank",
        json={"query": QUERY, "documents": DOCUMENTS, "return_documents": True},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model"] == "ce"
    assert body["scored_by"] == "cross-encoder"
    assert np.abs(scores_in_order(body["results"]) - predicted["scores"]).max() <= 1e-4
    ranked = [r["relevance_score"] for r in body["results"]]
    assert ranked == sorted(ranked, reverse=True)
    assert all(r["document"] == {"text": DOCUMENTS[r["index"]]} for r in body["results"])
    assert body["usage"]["total_tokens"] > 512  # the long pair counts its 512 tokens
    raw = httpx.post(
        f"{server}/v1/rerank", json={"query": QUERY, "documents": DOCUMENTS, "raw_scores": True}
    ).json()
    assert np.abs(scores_in_order(raw["results"]) - predicted["logits"]).max() <= 1e-4


def test_a_batch_of_pairs_scores_as_one_pair_at_a_time(server: str) -> None:
    together = httpx.post(f"{server}/v1/rerank", json={"query": QUERY, "documents": DOCUMENTS})
    alone = [
        httpx.post(f"{server}/v1/rerank", json={"query": QUERY, "documents": [d]}).json()
        for d in DOCUMENTS
    ]
    one_by_one = np.array([a["results"][0]["relevance_score"] for a in alone])
    assert np.abs(scores_in_order(together.json()["results"]) - one_by_one).max() <= 1e-5


def test_top_n_and_object_documents(server: str, predicted) -> None:  # type: ignore[no-untyped-def]
    documents = [{"text": d} for d in DOCUMENTS]
    body = httpx.post(
        f"{server}/rerank", json={"query": QUERY, "documents": documents, "top_n": 2}
    ).json()
    best = np.argsort(-predicted["scores"])[:2].tolist()
    assert [r["index"] for r in body["results"]] == best
    assert "document" not in body["results"][0]


def test_teis_rerank_shape(server: str, predicted) -> None:  # type: ignore[no-untyped-def]
    rows = httpx.post(
        f"{server}/rerank", json={"query": QUERY, "texts": DOCUMENTS, "return_text": True}
    ).json()
    assert [r["index"] for r in rows] == np.argsort(-predicted["scores"], kind="stable").tolist()
    assert np.abs(scores_in_order(rows, "score") - predicted["scores"]).max() <= 1e-4
    assert all(r["text"] == DOCUMENTS[r["index"]] for r in rows)
    raw = httpx.post(
        f"{server}/rerank", json={"query": QUERY, "texts": DOCUMENTS, "raw_scores": True}
    ).json()
    assert np.abs(scores_in_order(raw, "score") - predicted["logits"]).max() <= 1e-4
    refused = httpx.post(
        f"{server}/rerank", json={"query": QUERY, "texts": DOCUMENTS, "truncate": False}
    )
    assert refused.status_code == 422
    assert refused.json()["error_type"] == "Validation"
    assert "documents[2]" in refused.json()["error"]
    empty = httpx.post(f"{server}/rerank", json={"query": QUERY, "texts": []})
    assert empty.status_code == 400
    assert empty.json()["error_type"] == "Empty"


def test_the_cohere_client_reranks(server: str, predicted) -> None:  # type: ignore[no-untyped-def]
    import cohere

    client = cohere.ClientV2(api_key="unused", base_url=server)
    response = client.rerank(model="ce", query=QUERY, documents=DOCUMENTS, top_n=3)
    assert [r.index for r in response.results] == np.argsort(-predicted["scores"])[:3].tolist()
    got = np.array([r.relevance_score for r in response.results])
    assert np.abs(got - np.sort(predicted["scores"])[::-1][:3]).max() <= 1e-4
    with pytest.raises(cohere.BadRequestError) as refused:
        client.rerank(model="ce", query=QUERY, documents=[])
    assert refused.value.body == {"message": "'documents' must not be empty"}


def test_an_embedding_model_reranks_by_cosine(server: str) -> None:
    body = httpx.post(
        f"{server}/v1/rerank",
        json={"model": "all-MiniLM-L6-v2", "query": QUERY, "documents": DOCUMENTS[:4]},
    ).json()
    assert body["scored_by"] == "cosine"
    vectors = httpx.post(
        f"{server}/v1/embeddings",
        json={"model": "all-MiniLM-L6-v2", "input": [QUERY, *DOCUMENTS[:4]]},
    ).json()["data"]
    matrix = np.array([v["embedding"] for v in vectors])
    want = matrix[1:] @ matrix[0]
    assert np.allclose(scores_in_order(body["results"]), want, atol=1e-5)
    assert body["results"][0]["index"] == 0  # the passport sentence


def test_routing_by_task_and_a_reranker_asked_to_embed(server: str) -> None:
    models = {m["id"]: m for m in httpx.get(f"{server}/v1/models").json()["data"]}
    assert models["ce"]["task"] == "rerank"
    assert models["sentence-transformers/all-MiniLM-L6-v2"]["task"] == "embed"
    # no model named: each route's task picks its model
    embedded = httpx.post(f"{server}/v1/embeddings", json={"input": "x"}).json()
    assert embedded["model"] == "sentence-transformers/all-MiniLM-L6-v2"
    info = httpx.get(f"{server}/info").json()
    assert info["model_type"] == {"embedding": {"pooling": "mean"}}
    refused = httpx.post(f"{server}/v1/embeddings", json={"input": "x", "model": "ce"})
    assert refused.status_code == 400
    assert "is a reranker" in refused.json()["error"]["message"]
    bad = httpx.post(f"{server}/v1/rerank", json={"query": QUERY, "documents": [1]})
    assert bad.status_code == 400
    assert "documents[0] must be a string" in bad.json()["error"]["message"]


@pytest.mark.parametrize(
    "options", [{"precision": "int8"}, {"precision": "bf16"}, {"backend": "openvino"}]
)
def test_a_reranker_refuses_what_its_scores_are_not_proven_in(
    cross_encoder: Path, options: dict[str, str]
) -> None:
    from embedserve.config import Settings
    from embedserve.engine.loading import load_reranker
    from embedserve.errors import ModelUnavailable
    from embedserve.models.source import resolve

    with pytest.raises(ModelUnavailable, match="it is served in fp32 by ONNX Runtime"):
        load_reranker(resolve(str(cross_encoder)), Settings(**options))  # type: ignore[arg-type]
