"""TEI's, Ollama's and Cohere's wire formats and the integer encodings, on a real server
process, driven by the real client libraries (ollama, cohere, chromadb's TEI client) and raw
posts: the same vectors as /v1/embeddings and sentence-transformers, each format's own errors."""

from __future__ import annotations

import base64
import warnings
from collections.abc import Iterator

import httpx
import numpy as np
import pytest

from tests.conftest import REAL_SENTENCES, cosines, reference_vectors
from tests.processes import start, stop, wait_until_listening

pytestmark = pytest.mark.process

MODEL = "sentence-transformers/all-MiniLM-L6-v2"
TEXTS = REAL_SENTENCES[:6]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    process, base, log = start(tmp_path_factory.mktemp("server"), "--max-inputs", "8")
    wait_until_listening(process, base, log)
    yield base
    stop(process)


def openai_vectors(server: str, texts: list[str], **options: object) -> np.ndarray:
    response = httpx.post(f"{server}/v1/embeddings", json={"input": texts, **options})
    assert response.status_code == 200, response.text
    return np.array([d["embedding"] for d in response.json()["data"]], dtype=np.float32)


def quantize_embeddings(vectors: np.ndarray, precision: str, ranges: object = None) -> np.ndarray:
    with warnings.catch_warnings():  # its import path moves between versions, with a warning
        warnings.simplefilter("ignore", DeprecationWarning)
        from sentence_transformers.quantization import quantize_embeddings as quantize
    return np.asarray(quantize(vectors, precision, ranges=ranges))


def test_tei_embed_and_root_equal_the_openai_route(server: str, reference) -> None:  # type: ignore[no-untyped-def]
    want = openai_vectors(server, TEXTS)
    assert cosines(want, reference_vectors(reference, TEXTS)).min() >= 0.9999
    for path in ("/embed", "/"):
        response = httpx.post(f"{server}{path}", json={"inputs": TEXTS})
        assert response.status_code == 200
        assert np.allclose(np.array(response.json()), want, atol=1e-6)
    one = httpx.post(f"{server}/embed", json={"inputs": TEXTS[0]}).json()
    assert np.allclose(one, want[:1], atol=1e-6)  # a string is a list of one
    query = httpx.post(f"{server}/embed", json={"inputs": TEXTS, "prompt_name": "query"}).json()
    assert np.allclose(query, openai_vectors(server, TEXTS, input_type="query"), atol=1e-6)
    short = httpx.post(f"{server}/embed", json={"inputs": TEXTS, "dimensions": 64}).json()
    assert np.allclose(short, openai_vectors(server, TEXTS, dimensions=64), atol=1e-6)


def test_normalize_false_returns_the_pooled_vector(server: str, reference) -> None:  # type: ignore[no-untyped-def]
    """MiniLM's stack ends in a Normalize module; without it its pooled vectors are not unit
    length, and TEI's normalize=false (ours too, on every route) returns them as they are."""
    from sentence_transformers import SentenceTransformer

    pooled_only = SentenceTransformer(modules=list(reference)[:-1], device="cpu")
    assert type(list(reference)[-1]).__name__ == "Normalize"
    want = pooled_only.encode(TEXTS, convert_to_numpy=True)
    tei = np.array(httpx.post(f"{server}/embed", json={"inputs": TEXTS, "normalize": False}).json())
    openai = openai_vectors(server, TEXTS, normalize=False)
    assert np.abs(np.linalg.norm(tei, axis=1) - 1).min() > 0.1  # really not normalized
    # the default's precision is bf16 where the CPU has it: exact by the project's bar
    assert cosines(tei, want).min() >= 0.9999
    assert np.allclose(np.linalg.norm(tei, axis=1), np.linalg.norm(want, axis=1), rtol=2e-3)
    assert np.allclose(openai, tei, atol=1e-6)


def test_truncation_from_the_left_keeps_the_end(server: str, reference) -> None:  # type: ignore[no-untyped-def]
    long = "filler words that go on. " * 120 + "The ending names a cathedral in Cologne."
    tokenizer = reference.tokenizer
    tail_ids = tokenizer(long, add_special_tokens=False)["input_ids"][-254:]
    tail = tokenizer.decode(tail_ids)
    left = httpx.post(
        f"{server}/embed", json={"inputs": long, "truncate": True, "truncation_direction": "Left"}
    ).json()
    right = httpx.post(f"{server}/embed", json={"inputs": long, "truncate": True}).json()
    assert cosines(np.array(left), reference_vectors(reference, [tail])).min() >= 0.999
    assert cosines(np.array(left), np.array(right)).max() < 0.99
    openai_left = openai_vectors(server, [long], truncation_direction="left")
    assert np.allclose(openai_left, left, atol=1e-6)


def test_tei_tokenize_lists_ids_text_and_byte_offsets(server: str, reference) -> None:  # type: ignore[no-untyped-def]
    text = "naïve café in Zürich"
    tokens = httpx.post(f"{server}/tokenize", json={"inputs": [text]}).json()[0]
    assert [t["id"] for t in tokens] == reference.tokenizer(text)["input_ids"]
    assert tokens[0] == {"id": 101, "text": "[CLS]", "special": True, "start": None, "stop": None}
    assert tokens[-1]["text"] == "[SEP]"
    assert tokens[-1]["special"]
    data = text.encode()
    for token in tokens[1:-1]:
        assert not token["special"]
        assert data[token["start"] : token["stop"]].decode() == token["text"]
    assert "".join(t["text"] for t in tokens[1:-1]) == text.replace(" ", "")
    bare = httpx.post(f"{server}/tokenize", json={"inputs": text, "add_special_tokens": False})
    assert [t["id"] for t in bare.json()[0]] == [t["id"] for t in tokens[1:-1]]


def test_tei_info_describes_the_served_model(server: str) -> None:
    info = httpx.get(f"{server}/info").json()
    assert info["model_id"] == MODEL
    assert info["model_type"] == {"embedding": {"pooling": "mean"}}
    assert info["max_input_length"] == 256
    assert info["max_client_batch_size"] == 8  # --max-inputs
    served = httpx.get(f"{server}/v1/models").json()["data"][0]["precision"]  # bf16 by CPU
    assert info["model_dtype"] == {"fp32": "float32", "bf16": "bfloat16"}[served]
    assert isinstance(info["version"], str)


def test_tei_errors_take_teis_shape(server: str) -> None:
    empty = httpx.post(f"{server}/embed", json={"inputs": []})
    assert empty.status_code == 400
    assert empty.json() == {"error": "'inputs' must not be empty", "error_type": "Empty"}
    for body in ({"inputs": [1, 2]}, {"input": "x"}, {"inputs": "x", "prompt_name": "nope"}):
        bad = httpx.post(f"{server}/embed", json=body)
        assert bad.status_code == 422
        assert bad.json()["error_type"] == "Validation"
        assert "inputs" in bad.json()["error"] or "prompt_name" in bad.json()["error"]
    many = httpx.post(f"{server}/embed", json={"inputs": ["a"] * 9})
    assert many.status_code == 422
    assert "limit of 8 per request" in many.json()["error"]
    long = httpx.post(f"{server}/embed", json={"inputs": "word " * 600, "truncate": False})
    assert long.status_code == 422
    assert "maximum of 256" in long.json()["error"]


def test_chromas_tei_client_reads_our_embed_route(server: str) -> None:
    from chromadb.utils.embedding_functions import HuggingFaceEmbeddingServer

    client = HuggingFaceEmbeddingServer(url=f"{server}/embed")
    got = np.array(client(TEXTS), dtype=np.float32)
    assert np.allclose(got, openai_vectors(server, TEXTS), atol=1e-6)


def test_the_ollama_client_embeds_and_lists(server: str) -> None:
    import ollama

    client = ollama.Client(host=server)
    response = client.embed(model="all-minilm:latest", input=TEXTS)
    assert np.allclose(np.array(response.embeddings), openai_vectors(server, TEXTS), atol=1e-6)
    assert response.prompt_eval_count
    assert response.prompt_eval_count > len(TEXTS)
    assert response.total_duration
    assert response.total_duration > 0
    one = client.embed(model="all-minilm", input=TEXTS[0], dimensions=32)
    assert np.allclose(one.embeddings, openai_vectors(server, TEXTS[:1], dimensions=32), atol=1e-6)
    legacy = client.embeddings(model="all-minilm", prompt=TEXTS[0])
    assert np.allclose(legacy.embedding, openai_vectors(server, TEXTS[:1])[0], atol=1e-6)
    assert client.embed(model="all-minilm", input=[]).embeddings == []
    assert [m.model for m in client.list().models] == [MODEL]
    with pytest.raises(ollama.ResponseError) as refused:
        client.embed(model="all-minilm", input="word " * 600, truncate=False)
    assert refused.value.status_code == 400
    assert "maximum of 256" in refused.value.error
    bad = httpx.post(f"{server}/api/embed", json={"model": "m", "input": [3]})
    assert bad.status_code == 400
    assert bad.json() == {"error": "'input' must be a string or an array of strings"}


def test_the_cohere_client_gets_every_embedding_type(server: str) -> None:
    import cohere

    client = cohere.ClientV2(api_key="unused", base_url=server)
    types = ["float", "int8", "uint8", "binary", "ubinary", "base64"]
    response = client.embed(
        texts=TEXTS, model=MODEL, input_type="search_query", embedding_types=types
    )
    want = openai_vectors(server, TEXTS, input_type="query")
    embeddings = response.embeddings
    floats = np.array(embeddings.float_, dtype=np.float32)
    assert np.allclose(floats, want, atol=1e-6)
    assert response.meta
    assert response.meta.billed_units
    assert response.meta.billed_units.input_tokens
    assert response.meta.billed_units.input_tokens > 6
    ranges = np.array(httpx.get(f"{server}/v1/models/{MODEL}").json()["quantization_ranges"])
    assert ranges.shape == (2, 384)
    assert (ranges[0] < ranges[1]).all()
    assert np.array_equal(np.array(embeddings.int8), quantize_embeddings(floats, "int8", ranges))
    assert np.array_equal(np.array(embeddings.uint8), quantize_embeddings(floats, "uint8", ranges))
    assert np.array_equal(np.array(embeddings.binary), quantize_embeddings(floats, "binary"))
    assert np.array_equal(np.array(embeddings.ubinary), quantize_embeddings(floats, "ubinary"))
    decoded = [np.frombuffer(base64.b64decode(row), dtype="<f4") for row in embeddings.base64 or []]
    assert np.allclose(decoded, floats)
    document = client.embed(
        texts=TEXTS, model=MODEL, input_type="search_document", embedding_types=["float"]
    )
    assert np.allclose(document.embeddings.float_ or [], openai_vectors(server, TEXTS), atol=1e-6)
    with pytest.raises(cohere.BadRequestError) as refused:
        client.embed(texts=[], model=MODEL, input_type="search_query", embedding_types=["float"])
    assert refused.value.body == {"message": "'texts' must not be empty"}


def test_the_openai_client_asks_for_integer_encodings(server: str) -> None:
    from openai import OpenAI

    client = OpenAI(base_url=f"{server}/v1", api_key="unused")
    floats = openai_vectors(server, TEXTS)
    ubinary = client.embeddings.create(input=TEXTS, model=MODEL, encoding_format="ubinary")  # type: ignore[arg-type]
    bits = np.array([d.embedding for d in ubinary.data])
    assert bits.shape == (len(TEXTS), 384 // 8)
    assert np.array_equal(bits, quantize_embeddings(floats, "ubinary"))
    raw = httpx.post(f"{server}/v1/embeddings", json={"input": TEXTS, "encoding_format": "int8"})
    ranges = np.array(httpx.get(f"{server}/v1/models/{MODEL}").json()["quantization_ranges"])
    int8 = np.array([d["embedding"] for d in raw.json()["data"]])
    assert np.array_equal(int8, quantize_embeddings(floats, "int8", ranges))
    odd = httpx.post(
        f"{server}/v1/embeddings",
        json={"input": "x", "encoding_format": "binary", "dimensions": 100},
    )
    assert odd.status_code == 400
    assert "multiple of 8" in odd.json()["error"]["message"]
    short = httpx.post(
        f"{server}/v1/embeddings",
        json={"input": TEXTS, "encoding_format": "int8", "dimensions": 64},
    ).json()
    cut = openai_vectors(server, TEXTS, dimensions=64)
    cut_ranges = httpx.get(f"{server}/v1/models/{MODEL}", params={"dimensions": 64}).json()
    cut_ranges = np.array(cut_ranges["quantization_ranges"])
    assert cut_ranges.shape == (2, 64)
    assert not np.allclose(cut_ranges, ranges[:, :64])  # the cut vectors are renormalized
    short_int8 = np.array([d["embedding"] for d in short["data"]])
    assert np.array_equal(short_int8, quantize_embeddings(cut, "int8", cut_ranges))
    too_many = httpx.get(f"{server}/v1/models/{MODEL}", params={"dimensions": 385})
    assert too_many.status_code == 400
    assert too_many.json()["error"]["param"] == "dimensions"


def test_cohere_truncate_none_refuses_and_start_keeps_the_end(server: str) -> None:
    long = "filler words that go on. " * 120 + "The ending names a cathedral in Cologne."
    body = {"texts": [long], "model": MODEL, "input_type": "search_document"}
    refused = httpx.post(f"{server}/v2/embed", json={**body, "truncate": "NONE"})
    assert refused.status_code == 400
    assert set(refused.json()) == {"message"}
    assert "tokens" in refused.json()["message"]
    start = httpx.post(f"{server}/v2/embed", json={**body, "truncate": "START"})
    end = httpx.post(f"{server}/v2/embed", json={**body, "truncate": "END"})
    vectors = {
        name: np.array(answer.json()["embeddings"]["float"], dtype=np.float32)
        for name, answer in (("start", start), ("end", end))
    }
    assert np.allclose(
        vectors["start"], openai_vectors(server, [long], truncation_direction="left"), atol=1e-6
    )
    assert np.allclose(vectors["end"], openai_vectors(server, [long]), atol=1e-6)
    assert cosines(vectors["start"], vectors["end"]).max() < 0.99
