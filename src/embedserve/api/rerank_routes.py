"""Rerank in the shape Cohere (v1), Jina, Infinity and LiteLLM share: POST /v1/rerank. A
reranker scores the pairs; an embedding model scores by cosine, and the response says which."""

from __future__ import annotations

from fastapi import Request

from embedserve.api.calls import unless_client_leaves
from embedserve.api.encoding import JSONBytes
from embedserve.api.reranking import RerankBody, RerankResponse
from embedserve.api.wire import OPENAI, state_of

router = OPENAI.router("Rerank")  # OpenAI's error envelope, as every /v1 route


@router.post(
    "/v1/rerank",
    response_model=RerankResponse,
    responses=OPENAI.responses,
    summary="Rerank documents for a query (Cohere / Jina shape)",
)
async def rerank(body: RerankBody, request: Request) -> JSONBytes:
    result = await unless_client_leaves(request, state_of(request).serving.rerank(body.request()))
    return JSONBytes(body.answer(result))
