"""The rerank body Cohere (v1), Jina, Infinity and LiteLLM share, which /v1/rerank takes (and
answers in Cohere v1's and Jina's shape) and the root's /rerank takes when a body has
`documents` (and answers in Infinity's); and the one writer of ranked rows every rerank answer
is made of."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, StrictBool

from embedserve.api.fields import RerankDocuments, TruncationDirection, cuts_left
from embedserve.serving.requests import Reranked, RerankRequest

Echo = Callable[[str], dict[str, Any]]
"""What a row carries of its document's text: {"document": {"text": ...}}, {"text": ...}."""


def ranked_rows(
    result: Reranked,
    score_key: str = "relevance_score",
    documents: list[str] | None = None,
    echo: Echo = lambda text: {"document": {"text": text}},
) -> list[dict[str, Any]]:
    """One row a document, best first: its index, its score under `score_key`, and (given the
    documents) what `echo` makes of its text."""
    rows = []
    for index in result.order:
        row: dict[str, Any] = {"index": index, score_key: float(result.scores[index])}
        if documents is not None:
            row |= echo(documents[index])
        rows.append(row)
    return rows


class RerankBody(RerankDocuments):
    """Body of POST /v1/rerank."""

    model_config = ConfigDict(
        extra="ignore",
        json_schema_extra={
            "example": {"query": "capital of France", "documents": ["Paris is...", "Berlin..."]}
        },
    )

    return_documents: StrictBool = Field(default=False, description="Echo each document.")
    raw_scores: StrictBool = Field(default=False, description="A reranker's logits.")
    truncate: StrictBool | None = Field(
        default=None, description="Cut over-long pairs (default: the server's setting)."
    )
    truncation_direction: TruncationDirection | None = Field(
        default=None, description="Which end of an over-long pair is cut."
    )

    def request(self) -> RerankRequest:
        return RerankRequest(
            query=self.query,
            documents=self.texts,
            model=self.model,
            top_n=self.top_n,
            raw=self.raw_scores,
            truncate=self.truncate,
            truncate_left=cuts_left(self.truncation_direction),
        )

    def infinity_answer(self, result: Reranked) -> dict[str, Any]:
        """The same in Infinity's shape, as its clients (LiteLLM's infinity/) parse it at the
        root's /rerank: each document a string, and `object`, `id`, `created`."""
        documents = self.texts if self.return_documents else None
        tokens = result.prompt_tokens
        return {
            "object": "rerank",
            "results": ranked_rows(result, documents=documents, echo=lambda t: {"document": t}),
            "model": result.model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            "id": f"infinity-{uuid.uuid4()}",
            "created": int(time.time()),
            "scored_by": result.scored_by,
        }

    def answer(self, result: Reranked) -> dict[str, Any]:
        """The response body for `result` (Cohere v1's and Jina's)."""
        documents = self.texts if self.return_documents else None
        return {
            "model": result.model,
            "results": ranked_rows(result, documents=documents),
            "usage": {"total_tokens": result.prompt_tokens},
            "scored_by": result.scored_by,
        }


class RerankResult(BaseModel):
    index: int
    relevance_score: float
    document: dict[str, str] | None = None


class RerankResponse(BaseModel):
    model: str
    results: list[RerankResult]
    usage: dict[str, int]
    scored_by: str = Field(description='"cross-encoder", or "cosine" for an embedding model.')
