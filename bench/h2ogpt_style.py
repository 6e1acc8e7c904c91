"""An h2oGPT-style embeddings endpoint, the baseline: one SentenceTransformer.encode per
request in a synchronous FastAPI route (run in FastAPI's thread pool), as h2oGPT serves it."""

from __future__ import annotations

import sys

import uvicorn
from fastapi import FastAPI
from pydantic import BaseModel
from sentence_transformers import SentenceTransformer

model = SentenceTransformer(sys.argv[1], device="cpu")
app = FastAPI()


class Request(BaseModel):
    input: str | list[str]
    model: str | None = None


@app.post("/v1/embeddings")
def embeddings(request: Request) -> dict:  # type: ignore[type-arg]
    texts = [request.input] if isinstance(request.input, str) else request.input
    vectors = model.encode(texts, normalize_embeddings=True)
    data = [
        {"object": "embedding", "embedding": v.tolist(), "index": i} for i, v in enumerate(vectors)
    ]
    return {
        "object": "list",
        "data": data,
        "model": "h2ogpt-style",
        "usage": {"prompt_tokens": 0, "total_tokens": 0},
    }


@app.get("/health")
def health() -> dict:  # type: ignore[type-arg]
    return {"status": "ok"}


if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[2]), log_level="warning", access_log=False)
