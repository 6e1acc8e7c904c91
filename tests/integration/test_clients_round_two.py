"""The client libraries that failed in round two, unchanged, on a real server process: Cohere's
v2 `inputs` and its v1 embed (cohere.Client), Ollama's show, huggingface_hub's
sentence_similarity (TEI's similarity task at the root) and TEI's /similarity and /decode. Each
vector is /v1/embeddings' for the same text and input type; bad bodies get each format's own
4xx."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.conftest import REAL_SENTENCES, cosines
from tests.processes import start, stop, wait_until_listening

pytestmark = pytest.mark.process

MODEL = "sentence-transformers/all-MiniLM-L6-v2"
TEXTS = REAL_SENTENCES[:4]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    process, base, log = start(tmp_path_factory.mktemp("server"))
    wait_until_listening(process, base, log)
    yield base
    stop(process)


def openai_vectors(server: str, texts: list[str], input_type: str = "document") -> np.ndarray:
    body = {"input": texts, "input_type": input_type}
    answer = httpx.post(f"{server}/v1/embeddings", json=body)
    assert answer.status_code == 200, answer.text
    return np.array([d["embedding"] for d in answer.json()["data"]], dtype=np.float32)


def test_cohere_v2_inputs_embed_like_texts(server: str) -> None:
    import cohere

    client = cohere.ClientV2(api_key="unused", base_url=server)
    inputs = [{"content": [{"type": "text", "text": text}]} for text in TEXTS]
    got = client.embed(
        inputs=inputs,  # type: ignore[arg-type]
        model=MODEL,
        input_type="search_query",
        embedding_types=["float"],
    )
    vectors = np.array(got.embeddings.float_, dtype=np.float32)
    assert cosines(vectors, openai_vectors(server, TEXTS, "query")).min() >= 0.9999
    with pytest.raises(cohere.BadRequestError) as image:
        client.embed(
            inputs=[{"content": [{"type": "image_url", "image_url": {"url": "data:,"}}]}],  # type: ignore[list-item]
            model=MODEL,
            input_type="search_document",
            embedding_types=["float"],
        )
    assert "embeds text only" in str(image.value.body)


def test_cohere_v1_client_embeds_floats_or_by_type(server: str) -> None:
    import cohere

    client = cohere.Client(api_key="unused", base_url=server)
    floats = client.embed(texts=TEXTS, model=MODEL, input_type="search_query")
    assert floats.response_type == "embeddings_floats"
    vectors = np.array(floats.embeddings, dtype=np.float32)
    assert cosines(vectors, openai_vectors(server, TEXTS, "query")).min() >= 0.9999
    typed = client.embed(texts=TEXTS, model=MODEL, embedding_types=["float", "int8"])
    assert typed.response_type == "embeddings_by_type"
    documents = np.array(typed.embeddings.float_, dtype=np.float32)
    assert cosines(documents, openai_vectors(server, TEXTS)).min() >= 0.9999
    assert len(typed.embeddings.int8 or []) == len(TEXTS)
    refused = httpx.post(f"{server}/v1/embed", json={"model": MODEL})
    assert refused.status_code == 400
    assert refused.json() == {"message": "'texts' is required"}


def test_cohere_v2_takes_texts_or_inputs_not_both(server: str) -> None:
    both = {"texts": ["a"], "inputs": [{"content": [{"type": "text", "text": "a"}]}]}
    neither: dict[str, object] = {"model": MODEL}
    for body, said in ((both, "got both"), (neither, "got neither")):
        answer = httpx.post(f"{server}/v2/embed", json=body)
        assert answer.status_code == 400
        assert said in answer.json()["message"]
    no_text = {"inputs": [{"content": [{"type": "text"}]}]}
    assert "string 'text'" in httpx.post(f"{server}/v2/embed", json=no_text).json()["message"]


def test_ollama_show_describes_the_model(server: str) -> None:
    import ollama

    client = ollama.Client(host=server)
    shown = client.show("all-MiniLM-L6-v2:latest")
    assert shown.details is not None
    assert shown.details.family == "bert"
    assert shown.details.parameter_size == "22.7M"
    assert shown.modelinfo is not None
    assert shown.modelinfo["bert.embedding_length"] == 384
    assert shown.modelinfo["bert.context_length"] == 256
    assert shown.capabilities == ["embedding"]
    with pytest.raises(ollama.ResponseError) as unknown:
        client.show("nomic-embed-text")
    assert unknown.value.status_code == 404
    missing = httpx.post(f"{server}/api/show", json={})
    assert missing.status_code == 400
    assert missing.json() == {"error": "'model' is required"}


def test_sentence_similarity_through_huggingface_hub_and_teis_route(
    server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from huggingface_hub import InferenceClient, constants

    # The suite runs with HF_HUB_OFFLINE=1, which blocks every request the library makes; the
    # client here reaches only the server on 127.0.0.1 (a URL as its model: no hub lookup).
    monkeypatch.setattr(constants, "is_offline_mode", lambda: False)

    source, others = TEXTS[0], TEXTS[1:]
    vectors = openai_vectors(server, [source, *others])
    want = vectors[1:] @ vectors[0]
    got = InferenceClient(model=server).sentence_similarity(source, other_sentences=others)
    assert np.allclose(got, want, atol=1e-4)
    body = {"inputs": {"source_sentence": source, "sentences": others}}
    direct = httpx.post(f"{server}/similarity", json=body)
    assert np.allclose(direct.json(), want, atol=1e-4)
    embedded = httpx.post(f"{server}/", json={"inputs": source})  # the root still embeds
    assert cosines(np.array(embedded.json(), dtype=np.float32), vectors[:1]).min() >= 0.9999
    bad = httpx.post(f"{server}/similarity", json={"inputs": {"source_sentence": source}})
    assert bad.status_code == 422
    assert bad.json()["error_type"] == "Validation"
    assert "sentences" in bad.json()["error"]


def test_teis_decode_undoes_tokenize(server: str) -> None:
    tokens = httpx.post(f"{server}/tokenize", json={"inputs": TEXTS[:2]}).json()
    ids = [[token["id"] for token in text] for text in tokens]
    decoded = httpx.post(f"{server}/decode", json={"ids": ids})
    assert decoded.status_code == 200
    again = httpx.post(f"{server}/tokenize", json={"inputs": decoded.json()}).json()
    assert [[token["id"] for token in text] for text in again] == ids  # the round trip
    kept = httpx.post(f"{server}/decode", json={"ids": ids[0], "skip_special_tokens": False})
    assert kept.json()[0].startswith("[CLS]")
    outside = httpx.post(f"{server}/decode", json={"ids": [1, 99_999_999]})
    assert outside.status_code == 422
    assert "ids[0] holds token id 99999999" in outside.json()["error"]


def test_langchain_cohere_embeds_queries_and_documents(server: str) -> None:
    from langchain_cohere import CohereEmbeddings
    from pydantic import SecretStr

    key = SecretStr("unused")
    embeddings = CohereEmbeddings(model=MODEL, base_url=server, cohere_api_key=key)  # type: ignore[call-arg]
    documents = np.array(embeddings.embed_documents(TEXTS), dtype=np.float32)
    assert cosines(documents, openai_vectors(server, TEXTS)).min() >= 0.9999
    query = np.array([embeddings.embed_query(TEXTS[0])], dtype=np.float32)
    assert cosines(query, openai_vectors(server, TEXTS[:1], "query")).min() >= 0.9999


def test_infinitys_root_routes_for_its_clients(server: str) -> None:
    import warnings

    with warnings.catch_warnings():  # langchain-community says it is being sunset, at import
        warnings.simplefilter("ignore", DeprecationWarning)
        from langchain_community.embeddings import InfinityEmbeddings

    embeddings = InfinityEmbeddings(model=MODEL, infinity_api_url=server)
    got = np.array(embeddings.embed_documents(TEXTS), dtype=np.float32)
    assert cosines(got, openai_vectors(server, TEXTS)).min() >= 0.9999
    listed = httpx.get(f"{server}/models").json()
    assert listed["object"] == "list"
    assert listed["data"][0]["id"] == MODEL
    assert listed["data"][0]["capabilities"] == ["embed"]
    body = {"query": "a pet", "documents": ["the stock market", "my dog"], "return_documents": True}
    ranked = httpx.post(f"{server}/rerank", json=body).json()
    assert ranked["object"] == "rerank"
    assert [r["document"] for r in ranked["results"]] == ["my dog", "the stock market"]
    assert ranked["usage"]["total_tokens"] == ranked["usage"]["prompt_tokens"] > 0
    classify = httpx.post(f"{server}/classify", json={"input": ["a"]})
    assert classify.status_code == 400
    assert classify.json()["error"]["code"] == "model_cannot_classify"
    refused = httpx.post(f"{server}/embeddings", json={"input": []})
    assert refused.status_code == 400
    assert refused.json()["error"]["param"] == "input"


def test_litellm_infinity_provider_embeds_and_reranks(
    server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # LiteLLM fetches a model-cost map from the internet at import unless told to use its own
    monkeypatch.setenv("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    import litellm

    got = litellm.embedding(model=f"infinity/{MODEL}", input=TEXTS, api_base=server)
    vectors = np.array([row["embedding"] for row in got.data], dtype=np.float32)
    assert cosines(vectors, openai_vectors(server, TEXTS)).min() >= 0.9999
    ranked = litellm.rerank(
        model=f"infinity/{MODEL}",
        query="a pet",
        documents=["the stock market", "my dog"],
        api_base=server,
        return_documents=True,
    )
    results = ranked.results or []
    assert [r["index"] for r in results] == [1, 0]
    assert results[0]["document"]["text"] == "my dog"


def test_infinitys_own_generated_client(server: str) -> None:
    """infinity_client pins httpx < 0.28, so it runs from a venv of its own. It sends
    `dimensions: 0` (all of them, to Infinity) and `modality: "text"` with every embedding."""
    import json
    import subprocess

    from tests.reference.venvs import reference_python

    python = reference_python("infinity-client", ("infinity_client==0.0.78", "httpx==0.27.2"))
    script = Path(__file__).parent.parent / "reference" / "infinity_calls.py"
    done = subprocess.run(
        [str(python), str(script), server], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    parsed = json.loads(done.stdout)
    assert parsed["embedding_type"] == "OpenAIEmbeddingResult"
    texts = ["Paris is the capital of France.", "The quick brown fox."]
    got = np.array(parsed["vectors"], dtype=np.float32)
    assert got.shape == (2, 384)  # dimensions 0: every component
    assert cosines(got, openai_vectors(server, texts)).min() >= 0.9999
    assert parsed["models"] == [[MODEL, ["embed"]]]
    assert parsed["rerank_type"] == "ReRankResult"
    assert [row[2] for row in parsed["ranked"]] == texts  # Infinity's shape: document a string
    image = httpx.post(f"{server}/embeddings", json={"input": "x", "modality": "image"})
    assert image.status_code == 400
    assert "modality" in image.json()["error"]["message"]
    negative = httpx.post(f"{server}/embeddings", json={"input": "x", "dimensions": -1})
    assert negative.status_code == 400
    assert negative.json()["error"]["param"] == "dimensions"
