"""Rerank in the shape Cohere (v1), Jina, Infinity and LiteLLM share: POST /v1/rerank (and
POST /rerank with `documents`, which TEI's routes hand here). A reranker scores the pairs; an
embedding model scores by cosine, and the response says which."""

from __future__ import annotations

from typing import Any

from fastapi import Request
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, field_validator
from pydantic_core import PydanticCustomError

from embedserve.api.calls import unless_client_leaves
from embedserve.api.encoding import JSONBytes
from embedserve.api.openai_protocol import TruncationDirection, check_unicode
from embedserve.api.openai_routes import ERRORS
from embedserve.api.wire import state_of, wire_router
from embedserve.serving.embeddings import Serving
from embedserve.serving.requests import Reranked, RerankRequest

router = wire_router(tags=["Rerank"])  # OpenAI's error envelope, as every /v1 route


def document_texts(value: Any, field: str = "documents") -> list[str]:
    """Documents as strings or {"text": ...} objects, as text; at least one."""
    if not isinstance(value, list):
        raise PydanticCustomError("invalid_input", f"'{field}' must be an array of texts")
    if not value:
        raise PydanticCustomError("empty_input", f"'{field}' must not be empty")
    texts = []
    for index, item in enumerate(value):
        text = item.get("text") if isinstance(item, dict) else item
        if not isinstance(text, str):
            raise PydanticCustomError(
                "invalid_input",
                f'{field}[{index}] must be a string or an object {{"text": "..."}}',
            )
        check_unicode(text, f"{field}[{index}]")
        texts.append(text)
    return texts


class RerankQuery(BaseModel):
    """The query of every rerank body."""

    model_config = ConfigDict(extra="ignore")

    query: str = Field(description="The query the documents are scored against.")

    @field_validator("query", mode="before")
    @classmethod
    def _check_query(cls, value: Any) -> Any:
        if isinstance(value, str):
            check_unicode(value, "'query'")
        return value


class RerankDocuments(RerankQuery):
    """What Cohere's (v1 and v2) and Jina's rerank bodies share."""

    model: str | None = Field(default=None, description="A served reranker or embedding model.")
    documents: list[str | dict[str, Any]] = Field(
        description='Texts, or objects {"text": ...}.', min_length=1
    )
    top_n: StrictInt | None = Field(
        default=None, json_schema_extra={"minimum": 1}, description="Keep the N best."
    )

    @field_validator("documents", mode="before")
    @classmethod
    def _check_documents(cls, value: Any) -> Any:
        return document_texts(value)

    @field_validator("top_n")
    @classmethod
    def _check_top_n(cls, value: int | None) -> int | None:
        if value is not None and value < 1:
            raise PydanticCustomError("invalid_input", f"'top_n' must be at least 1, got {value}")
        return value

    @property
    def texts(self) -> list[str]:
        return self.documents  # type: ignore[return-value]  # the validator made them text


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
            truncate_left=(self.truncation_direction or "right").lower() == "left",
        )


class RerankResult(BaseModel):
    index: int
    relevance_score: float
    document: dict[str, str] | None = None


class RerankResponse(BaseModel):
    model: str
    results: list[RerankResult]
    usage: dict[str, int]
    scored_by: str = Field(description='"cross-encoder", or "cosine" for an embedding model.')


@router.post(
    "/v1/rerank",
    response_model=RerankResponse,
    responses=ERRORS,
    summary="Rerank documents for a query (Cohere / Jina shape)",
)
async def rerank(body: RerankBody, request: Request) -> JSONBytes:
    return await reranked(body, request)


async def reranked(body: RerankBody, request: Request) -> JSONBytes:
    serving: Serving = state_of(request).serving
    result = await unless_client_leaves(request, serving.rerank(body.request()))
    return JSONBytes(rerank_body(result, body.texts if body.return_documents else None))


def rerank_body(result: Reranked, documents: list[str] | None) -> dict[str, Any]:
    results = []
    for index in result.order:
        row: dict[str, Any] = {"index": index, "relevance_score": float(result.scores[index])}
        if documents is not None:
            row["document"] = {"text": documents[index]}
        results.append(row)
    return {
        "model": result.model,
        "results": results,
        "usage": {"total_tokens": result.prompt_tokens},
        "scored_by": result.scored_by,
    }
