"""A second wire format for the same operation needs nothing outside the api package: this
test-only one (not shipped) is a few lines over the serving layer, with its own error shape,
and gets the same models, policy, limits, keys and metrics as the OpenAI route."""

from __future__ import annotations

from typing import Any

import httpx
import numpy as np
from fastapi import Request
from pydantic import BaseModel

from embedserve.api.app import create_app, route_table
from embedserve.api.calls import json_response, unless_client_leaves
from embedserve.api.errors import ApiError
from embedserve.api.wire import WireFormat, state_of
from embedserve.config import ModelSpec, Settings
from embedserve.engine.registry import ModelRegistry, ServedModel
from embedserve.models.source import ModelSource
from embedserve.serving.requests import EmbedRequest
from tests.fakes import EchoBackend, fake_embedder


def plain_error(error: ApiError) -> dict[str, Any]:
    return {"failure": error.message, "status": error.status}


class PlainError(BaseModel):
    failure: str
    status: int


PLAIN = WireFormat("Plain", error_shape=plain_error, error_model=PlainError)
router = PLAIN.router()


class SentencesBody(BaseModel):
    sentences: list[str]
    query: bool = False


@router.post("/test/encode", responses=PLAIN.responses)
async def encode(body: SentencesBody, request: Request) -> Any:
    wanted = EmbedRequest(body.sentences, input_type="query" if body.query else "document")
    result = await unless_client_leaves(request, state_of(request).serving.embed(wanted))
    return await json_response({"vectors": result.vectors.tolist()}, result.vectors.size)


def client_with_the_test_format(minilm: ModelSource, **settings: Any) -> httpx.AsyncClient:
    spec = ModelSpec(query_instruction="query: ")
    model = ServedModel(minilm, lambda s: fake_embedder(s, EchoBackend(), token_ids="native"), spec)
    model.load()
    app = create_app(Settings(**settings), ModelRegistry([model]))
    app.include_router(router)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    return httpx.AsyncClient(transport=transport, base_url="http://test")


async def test_it_embeds_as_the_openai_route_does(minilm: ModelSource) -> None:
    texts = ["first text", "a second, longer text"]
    async with client_with_the_test_format(minilm) as client:
        vectors = {}
        for query in (False, True):
            ours = await client.post("/test/encode", json={"sentences": texts, "query": query})
            input_type = "query" if query else "document"
            openai = await client.post(
                "/v1/embeddings", json={"input": texts, "input_type": input_type}
            )
            assert ours.status_code == 200
            vectors[query] = np.array(ours.json()["vectors"])
            want = np.array([d["embedding"] for d in openai.json()["data"]])
            assert np.allclose(vectors[query], want)
    assert not np.allclose(vectors[False], vectors[True])  # the serving layer's instruction


async def test_its_errors_take_its_own_shape_and_the_servers_policy(minilm: ModelSource) -> None:
    key = "sk-wire-format"
    async with client_with_the_test_format(minilm, max_inputs=2, api_keys=(key,)) as client:
        auth = {"Authorization": f"Bearer {key}"}
        too_many = await client.post("/test/encode", json={"sentences": ["a"] * 3}, headers=auth)
        assert too_many.status_code == 400
        assert too_many.json()["status"] == 400
        assert "limit of 2 per request" in too_many.json()["failure"]
        invalid = await client.post("/test/encode", json={"texts": ["a"]}, headers=auth)
        assert invalid.status_code == 400
        assert invalid.json() == {"failure": "'sentences' is required", "status": 400}
        refused = await client.post("/test/encode", json={"sentences": ["a"]})  # before routing
        assert refused.status_code == 401
        assert set(refused.json()) == {"failure", "status"}
        openai = await client.post("/v1/embeddings", json={"input": ["a"] * 3}, headers=auth)
        assert openai.json()["error"]["code"] == "too_many_inputs"  # each route its own shape
        ok = await client.post("/test/encode", json={"sentences": ["a", "b"]}, headers=auth)
        assert ok.status_code == 200
        metrics = (await client.get("/metrics")).text
    assert 'embedserve_requests_total{route="/test/encode",status="401"} 1.0' in metrics
    assert 'embedserve_requests_total{route="/test/encode",status="200"} 1.0' in metrics
    assert 'embedserve_inputs_total{model="sentence-transformers/all-MiniLM-L6-v2"} 2.0' in metrics


def test_each_format_documents_its_own_error_body() -> None:
    paths = route_table().openapi()["paths"]
    owners = {
        ("/v1/embeddings", "post"): "ErrorResponse",
        ("/v1/rerank", "post"): "ErrorResponse",
        ("/v1/files", "post"): "ErrorResponse",
        ("/embed", "post"): "TeiError",
        ("/rerank", "post"): "TeiError",
        ("/api/embed", "post"): "OllamaError",
        ("/v2/embed", "post"): "CohereError",
        ("/v2/rerank", "post"): "CohereError",
    }
    for (path, method), model in owners.items():
        responses = paths[path][method]["responses"]
        for status in ("400", "401", "429", "500", "503"):
            schema = responses[status]["content"]["application/json"]["schema"]
            assert schema["$ref"] == f"#/components/schemas/{model}", (path, status)
    assert "422" in paths["/embed"]["post"]["responses"]  # TEI's own status for a bad body
