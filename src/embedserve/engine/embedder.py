"""One served model's pipeline: inputs -> token ids -> batched forward -> unit vectors.

Tokenization runs in the default thread pool and the forward pass in one dedicated inference
thread, so the event loop never computes and requests overlap their tokenization with
another's inference.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Literal

import numpy as np

from embedserve.backends.base import Backend
from embedserve.engine.openai_tokens import OpenAITokenDecoder
from embedserve.engine.tokenizer import ModelTokenizer
from embedserve.errors import InvalidInput

Item = str | Sequence[int]
TokenIdMode = Literal["tiktoken", "native", "reject"]


@dataclass(frozen=True)
class Embeddings:
    vectors: np.ndarray
    """float32 [n_inputs, dimension], unit length, in input order."""

    prompt_tokens: int
    """Tokens the model processed (after truncation, special tokens included), summed."""


class Embedder:
    def __init__(
        self,
        tokenizer: ModelTokenizer,
        backend: Backend,
        *,
        token_ids: TokenIdMode = "tiktoken",
        max_batch_size: int = 32,
    ) -> None:
        self.tokenizer = tokenizer
        self.backend = backend
        self.token_ids = token_ids
        self.max_batch_size = max_batch_size
        self._openai_tokens = OpenAITokenDecoder() if token_ids == "tiktoken" else None
        self._inference = ThreadPoolExecutor(1, thread_name_prefix="embedserve-inference")

    @property
    def dimension(self) -> int:
        return self.backend.dimension

    @property
    def max_tokens(self) -> int:
        return self.tokenizer.max_tokens

    async def embed(
        self, items: Sequence[Item], *, truncate: bool = True, dimensions: int | None = None
    ) -> Embeddings:
        self._check_dimensions(dimensions)
        loop = asyncio.get_running_loop()
        sequences = await loop.run_in_executor(None, self.tokenize, items, truncate)
        pooled = await loop.run_in_executor(self._inference, self.forward, sequences)
        return Embeddings(_unit(pooled, dimensions), sum(map(len, sequences)))

    def embed_sync(self, items: Sequence[Item], *, truncate: bool = True) -> Embeddings:
        sequences = self.tokenize(items, truncate)
        return Embeddings(_unit(self.forward(sequences), None), sum(map(len, sequences)))

    def tokenize(self, items: Sequence[Item], truncate: bool) -> list[list[int]]:
        """Framed token ids per input. Items are all text or all token-id sequences."""
        texts = {i: item for i, item in enumerate(items) if isinstance(item, str)}
        id_lists = {i: item for i, item in enumerate(items) if not isinstance(item, str)}
        contents = self._token_id_contents(id_lists) if id_lists else {}
        if texts:
            contents.update(
                zip(texts, self.tokenizer.content_ids(list(texts.values())), strict=True)
            )
        return [
            self.tokenizer.frame(contents[i], truncate=truncate, index=i) for i in range(len(items))
        ]

    def forward(self, sequences: list[list[int]]) -> np.ndarray:
        """Pooled vectors in input order; batches are formed from length-sorted sequences."""
        order = sorted(range(len(sequences)), key=lambda i: len(sequences[i]))
        out = np.empty((len(sequences), self.dimension), dtype=np.float32)
        for start in range(0, len(order), self.max_batch_size):
            rows = order[start : start + self.max_batch_size]
            ids, mask = _pad([sequences[i] for i in rows], self.tokenizer.pad_id)
            out[rows] = self.backend.embed(ids, mask)
        return out

    def _token_id_contents(self, id_lists: dict[int, Sequence[int]]) -> dict[int, list[int]]:
        if self.token_ids == "reject":
            raise InvalidInput(
                "this server does not accept token-id inputs (started with --token-ids reject); "
                "send text instead",
                param="input",
                code="token_ids_not_accepted",
            )
        if self._openai_tokens is not None:
            texts = self._openai_tokens.decode(list(id_lists.values()), list(id_lists))
            return dict(zip(id_lists, self.tokenizer.content_ids(texts), strict=True))
        for index, ids in id_lists.items():
            self.tokenizer.check_native(ids, index)
        return {i: list(ids) for i, ids in id_lists.items()}

    def _check_dimensions(self, dimensions: int | None) -> None:
        if dimensions is not None and not 1 <= dimensions <= self.dimension:
            raise InvalidInput(
                f"'dimensions' must be between 1 and {self.dimension} for this model, "
                f"got {dimensions}",
                param="dimensions",
                code="invalid_dimensions",
            )


def _pad(sequences: list[list[int]], pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    width = max(map(len, sequences))
    ids = np.full((len(sequences), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(sequences), width), dtype=np.int64)
    for row, seq in enumerate(sequences):
        ids[row, : len(seq)] = seq
        mask[row, : len(seq)] = 1
    return ids, mask


def _unit(vectors: np.ndarray, dimensions: int | None) -> np.ndarray:
    """Keep the first `dimensions` components and scale each row to unit length."""
    kept = vectors[:, :dimensions] if dimensions else vectors
    norms = np.linalg.norm(kept, axis=1, keepdims=True)
    return np.ascontiguousarray(kept / np.maximum(norms, 1e-12), dtype=np.float32)
