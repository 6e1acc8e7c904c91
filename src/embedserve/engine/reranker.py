"""A served cross-encoder: (query, document) pairs through the same batcher as embeddings,
under the same token budget, to one relevance score each (CrossEncoder.predict's)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from embedserve.backends.base import Backend
from embedserve.engine.batcher import BatchLimits, batcher_for, pad
from embedserve.engine.embedder import check_request_tokens
from embedserve.models.pair_tokenizer import PairTokenizer


@dataclass(frozen=True)
class Scores:
    scores: np.ndarray
    """float32 [documents], in document order: sigmoid of the logit, or the logit if raw."""

    prompt_tokens: int
    """Tokens of every pair as the model read them, summed."""


class Reranker:
    """A model that scores (query, document) pairs; it embeds nothing."""

    task = "rerank"

    def __init__(
        self,
        tokenizer: PairTokenizer,
        backend: Backend,
        *,
        model_id: str,
        limits: BatchLimits,
        selection: str = "",
        raw: bool = False,
    ) -> None:
        """`raw`: the model's activation is the identity (its scores are its logits)."""
        self.tokenizer = tokenizer
        self.raw = raw
        self.backend = backend
        self.model_id = model_id
        self.selection = selection
        self.kind = backend.kind
        self.precision: str | None = backend.precision
        self.batcher = batcher_for(backend, tokenizer.pad_id, limits, tokenizer.max_tokens)

    @property
    def dimension(self) -> int | None:
        return None

    @property
    def max_tokens(self) -> int:
        return self.tokenizer.max_tokens

    async def rerank(
        self,
        query: str,
        documents: Sequence[str],
        *,
        raw: bool = False,
        truncate: bool = True,
        left: bool = False,
        max_tokens: int | None = None,
    ) -> Scores:
        loop = asyncio.get_running_loop()
        pairs = await loop.run_in_executor(
            None, lambda: self.tokenizer.pairs(query, documents, truncate=truncate, left=left)
        )
        sequences = [p.ids for p in pairs]
        check_request_tokens(sequences, max_tokens, "documents")
        logits = await self.batcher.submit(sequences, second=[p.second for p in pairs])
        return Scores(_scores(logits, raw or self.raw), sum(map(len, sequences)))

    def rerank_sync(self, query: str, documents: Sequence[str], raw: bool = False) -> np.ndarray:
        """One direct pass, outside the batcher: for warm-up."""
        pairs = self.tokenizer.pairs(query, documents)
        ids, mask = pad(
            [p.ids for p in pairs], self.tokenizer.pad_id, second=[p.second for p in pairs]
        )
        return _scores(self.backend.embed(ids, mask), raw or self.raw)

    def close(self) -> None:
        self.batcher.close()

    async def aclose(self) -> None:
        await asyncio.to_thread(self.close)


def _scores(logits: np.ndarray, raw: bool) -> np.ndarray:
    """A one-label cross-encoder's score: CrossEncoder.predict's default activation (sigmoid),
    or the logit itself."""
    column = np.asarray(logits[:, 0], dtype=np.float32)
    return column if raw else (1 / (1 + np.exp(-column))).astype(np.float32)
