"""The real server process, driven by the real client libraries people use."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from embedserve.engine.openai_tokens import prepare_tiktoken_cache
from tests.conftest import VARIED_TEXTS, cosines, reference_vectors
from tests.processes import free_port, start, stop, wait_until_listening

pytestmark = pytest.mark.process


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    process, base, log = start(tmp_path_factory.mktemp("server"))
    wait_until_listening(process, base, log)
    yield base
    stop(process)


class Recorder:
    """Keeps the JSON bodies a client library sends, to check what it really put on the wire."""

    def __init__(self) -> None:
        self.bodies: list[dict] = []  # type: ignore[type-arg]

    def __call__(self, request: httpx.Request) -> None:
        self.bodies.append(json.loads(request.content))


def test_preloaded_server_is_ready_as_soon_as_it_listens(server: str) -> None:
    ready = httpx.get(f"{server}/ready")
    assert ready.status_code == 200
    assert ready.json()["status"] == "ready"


def test_openai_sdk_default_base64(server: str, reference) -> None:  # type: ignore[no-untyped-def]
    from openai import OpenAI

    recorder = Recorder()
    client = OpenAI(
        base_url=f"{server}/v1",
        api_key="unused",
        # openai 3 types its client as httpx2's; it drives an httpx one alike
        http_client=httpx.Client(event_hooks={"request": [recorder]}),  # type: ignore[arg-type]
    )
    result = client.embeddings.create(model="text-embedding-3-small", input=VARIED_TEXTS)
    assert recorder.bodies[-1]["encoding_format"] == "base64"  # the SDK's own default
    got = np.array([d.embedding for d in result.data], dtype=np.float32)
    assert cosines(got, reference_vectors(reference, VARIED_TEXTS)).min() >= 0.9999
    assert result.model == "sentence-transformers/all-MiniLM-L6-v2"
    assert result.usage.prompt_tokens > len(VARIED_TEXTS)


def test_openai_sdk_explicit_float_and_errors(server: str, reference) -> None:  # type: ignore[no-untyped-def]
    import openai

    client = openai.OpenAI(base_url=f"{server}/v1", api_key="unused", max_retries=0)
    result = client.embeddings.create(
        model="any", input="hello there", encoding_format="float", dimensions=128
    )
    assert len(result.data[0].embedding) == 128
    with pytest.raises(openai.BadRequestError) as info:
        client.embeddings.create(model="any", input=[])
    assert "must not be an empty array" in str(info.value)
    assert info.value.body["param"] == "input"  # type: ignore[index]


def test_langchain_defaults_send_token_arrays(  # type: ignore[no-untyped-def]
    server: str, reference, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from langchain_openai import OpenAIEmbeddings
    from pydantic import SecretStr

    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(prepare_tiktoken_cache(tmp_path / "client")))
    recorder = Recorder()
    embeddings = OpenAIEmbeddings(
        base_url=f"{server}/v1",
        api_key=SecretStr("unused"),
        http_client=httpx.Client(event_hooks={"request": [recorder]}),
    )
    texts = [t for t in VARIED_TEXTS if t.strip()]
    got = np.array(embeddings.embed_documents(texts), dtype=np.float32)
    sent = recorder.bodies[0]["input"]
    assert all(isinstance(i, list) and all(isinstance(t, int) for t in i) for i in sent)
    assert cosines(got, reference_vectors(reference, texts)).min() >= 0.9999
    query = np.array([embeddings.embed_query("what is a fox?")], dtype=np.float32)
    assert cosines(query, reference_vectors(reference, ["what is a fox?"]))[0] >= 0.9999


def test_llamaindex_openai_like(server: str, reference) -> None:  # type: ignore[no-untyped-def]
    from llama_index.embeddings.openai_like import OpenAILikeEmbedding

    model = OpenAILikeEmbedding(model_name="all-MiniLM-L6-v2", api_base=f"{server}/v1", api_key="x")
    texts = VARIED_TEXTS[:5]
    got = np.array(model.get_text_embedding_batch(texts), dtype=np.float32)
    assert cosines(got, reference_vectors(reference, texts)).min() >= 0.9999


def test_plain_http_envelopes(server: str) -> None:
    bad = httpx.post(
        f"{server}/v1/embeddings", content=b"{nope", headers={"content-type": "application/json"}
    )
    assert bad.status_code == 400
    assert bad.json()["error"]["code"] == "invalid_json"
    assert httpx.delete(f"{server}/v1/embeddings").status_code == 405
    assert httpx.get(f"{server}/v2/whatever").json()["error"]["type"] == "not_found_error"


def test_lazy_server_loads_on_first_use(tmp_path: Path, reference) -> None:  # type: ignore[no-untyped-def]
    process, base, log = start(
        tmp_path, "--pre_load_embedding_model=False", "--langchain_mode=UserData"
    )
    try:
        wait_until_listening(process, base, log)
        assert httpx.get(f"{base}/ready").status_code == 503
        with httpx.Client(timeout=120) as client:
            first = client.post(f"{base}/v1/embeddings", json={"input": "first use"})
        assert first.status_code == 200
        got = np.array([first.json()["data"][0]["embedding"]], dtype=np.float32)
        assert cosines(got, reference_vectors(reference, ["first use"]))[0] >= 0.9999
        assert httpx.get(f"{base}/ready").status_code == 200
    finally:
        stop(process)
    assert "langchain_mode=UserData accepted" in log.read_text()
    assert log.read_text().count("loading model") == 1


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--model", "acme/not-cached-anywhere"], "cannot fetch model 'acme/not-cached-anywhere'"),
        (["--use_openai_embedding=True"], "needs the upstream's key in OPENAI_API_KEY"),
        (["--hf_embedding_model", "./no/such/folder"], "does not exist"),
    ],
)
def test_startup_errors_are_one_clear_line(args: list[str], fragment: str) -> None:
    env = {k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY"} | {"HF_HUB_OFFLINE": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "embedserve", "serve", "--port", str(free_port()), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert done.returncode == 2
    lines = [line for line in done.stderr.splitlines() if line.startswith("embedserve: error:")]
    assert len(lines) == 1
    assert fragment in lines[0]
    assert "Traceback" not in done.stderr


async def test_32_concurrent_clients_over_real_sockets(server: str, reference) -> None:  # type: ignore[no-untyped-def]
    import asyncio

    requests = [
        [f"client {i} sentence {j} on subject {i % 6}" for j in range(i % 3 + 1)] for i in range(32)
    ]
    async with httpx.AsyncClient(base_url=server, timeout=60) as client:
        responses = await asyncio.gather(
            *(client.post("/v1/embeddings", json={"input": texts}) for texts in requests)
        )
    for texts, response in zip(requests, responses, strict=True):
        assert response.status_code == 200
        rows = sorted(response.json()["data"], key=lambda d: d["index"])
        got = np.array([r["embedding"] for r in rows], dtype=np.float32)
        assert cosines(got, reference_vectors(reference, texts)).min() >= 0.9999
