"""The exact embedding cache, against a real server process on the packaged model: a repeated
text is answered from the cache with the very vector computed before, in every encoding and
cut; what changes the vector (the instruction, the truncation) misses; the bytes stay within
--embedding-cache."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from embedserve.api.batches_routes import run_line
from embedserve.api.encoding import render_json
from embedserve.config import Settings
from embedserve.models.source import ModelSource
from embedserve.serving.policy import Serving
from tests.fakes import EchoBackend, fake_embedder, registry_with
from tests.processes import start, stop, wait_until_listening

CACHE_BYTES = 48 * 1024


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tmp_path: Path = tmp_path_factory.mktemp("cache")
    process, base, log = start(
        tmp_path, "--embedding-cache", "48KiB", "--query-instruction", "query: "
    )
    try:
        wait_until_listening(process, base, log)
        yield base
    finally:
        stop(process)


def counts(base: str) -> dict[str, float]:
    text = httpx.get(f"{base}/metrics").text
    wanted = {
        "embedserve_embedding_cache_hits_total": "hits",
        "embedserve_embedding_cache_misses_total": "misses",
        "embedserve_embedding_cache_bytes": "bytes",
        "embedserve_embedding_cache_entries": "entries",
        "embedserve_batch_size_sum": "rows computed",
    }
    return {
        wanted[s.name]: s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name in wanted
    }


def embed(base: str, texts: list[str], **more: object) -> list[object]:
    answer = httpx.post(f"{base}/v1/embeddings", json={"input": texts, **more}, timeout=60)
    assert answer.status_code == 200, answer.text
    return [row["embedding"] for row in answer.json()["data"]]


@pytest.mark.slow
def test_a_repeated_text_is_the_same_vector_from_the_cache_in_every_encoding(server: str) -> None:
    texts = ["the cache keeps this one", "and this one too"]
    start = counts(server)
    first = embed(server, texts)
    after_first = counts(server)
    assert after_first["misses"] - start["misses"] == 2
    assert after_first["hits"] == start["hits"]

    assert embed(server, texts) == first  # the very floats
    packed = embed(server, texts, encoding_format="base64")
    decoded = [np.frombuffer(base64.b64decode(str(row)), dtype=np.float32) for row in packed]
    assert np.array_equal(decoded, np.asarray(first, dtype=np.float32))
    cut = embed(server, texts, dimensions=64)
    assert embed(server, texts, dimensions=64) == cut
    full = np.asarray(first)[:, :64]
    assert np.allclose(
        np.asarray(cut), full / np.linalg.norm(full, axis=1, keepdims=True), atol=1e-6
    )
    quantized = embed(server, texts, encoding_format="int8")
    assert embed(server, texts, encoding_format="int8") == quantized
    hits = counts(server)["hits"] - after_first["hits"]
    assert hits == 2 * 6  # every request after the first found both texts

    before = counts(server)
    twice = embed(server, ["once more", "once more"])  # a repeat within a request: one compute
    assert twice[0] == twice[1]
    assert counts(server)["rows computed"] - before["rows computed"] == 1


@pytest.mark.slow
def test_what_changes_the_vector_misses(server: str) -> None:
    text = ["a text asked three ways " * 3]
    embed(server, text)
    before = counts(server)
    as_query = embed(server, text, input_type="query")  # "query: " before it
    refused_truncation = embed(server, text, truncate=False)
    after = counts(server)
    assert after["misses"] - before["misses"] == 2
    assert as_query != embed(server, text)
    assert refused_truncation == embed(server, text)  # short: the same vector, its own entry


@pytest.mark.slow
def test_the_cache_holds_its_bytes_and_drops_the_least_recently_used(server: str) -> None:
    texts = [f"text number {i} of many" for i in range(60)]
    for i in range(0, 60, 10):
        embed(server, texts[i : i + 10])
    held = counts(server)
    assert 0 < held["bytes"] <= CACHE_BYTES
    assert held["entries"] < 60  # 384 floats and the text each: ~25 fit
    before = counts(server)
    embed(server, texts[-1:])  # among the most recent: kept
    embed(server, texts[:1])  # the least recent: dropped
    after = counts(server)
    assert after["hits"] - before["hits"] == 1
    assert after["misses"] - before["misses"] == 1


async def test_batch_api_lines_go_through_the_cache(minilm: ModelSource) -> None:
    backend = EchoBackend()
    registry = registry_with(minilm, fake_embedder(minilm, backend))
    serving = Serving.build(Settings(embedding_cache=1 << 20), registry)
    body = {"input": ["a line of a batch", "and its neighbour"], "model": "m"}
    first = await run_line(serving, body)
    passes = len(backend.batches)
    again = await run_line(serving, body)
    assert first[0] == again[0] == 200
    assert render_json(first[1]) == render_json(again[1])  # the same floats
    assert len(backend.batches) == passes  # answered without a pass
    assert serving.metrics.collector.get_sample_value("embedserve_embedding_cache_hits_total") == 2
