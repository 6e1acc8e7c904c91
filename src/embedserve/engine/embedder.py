"""One served model's pipeline: inputs -> token ids -> batched forward -> unit vectors.

Tokenization runs in the default thread pool, overlapping other requests' inference; the
forward passes run in the model's batcher, which merges sequences from all requests.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

import numpy as np

from embedserve.backends.base import Backend
from embedserve.engine.batcher import Batcher, BatchLimits, pad
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


class EmbeddingService(Protocol):
    """What a served model offers the HTTP layer: a local model or an upstream API."""

    kind: str
    precision: str | None

    @property
    def dimension(self) -> int | None: ...

    @property
    def max_tokens(self) -> int: ...

    async def embed(
        self,
        items: Sequence[Item],
        *,
        truncate: bool = True,
        dimensions: int | None = None,
        instruction: str = "",
    ) -> Embeddings: ...

    def close(self) -> None: ...


class Embedder:
    """A local model: tokenizer, batcher and backend."""

    def __init__(
        self,
        tokenizer: ModelTokenizer,
        backend: Backend,
        *,
        token_ids: TokenIdMode = "tiktoken",
        limits: BatchLimits | None = None,
        pools_instruction: bool = True,
        max_request_tokens: int | None = None,
    ) -> None:
        """`pools_instruction=False`: the instruction's tokens are read but left out of pooling
        (INSTRUCTOR models)."""
        self.tokenizer = tokenizer
        self.pools_instruction = pools_instruction
        self.max_request_tokens = max_request_tokens
        self.backend = backend
        self.token_ids = token_ids
        self._openai_tokens = OpenAITokenDecoder() if token_ids == "tiktoken" else None
        self.kind = backend.kind
        self.precision: str | None = backend.precision
        self.batcher = Batcher(
            backend.embed,
            backend.dimension,
            tokenizer.pad_id,
            limits or BatchLimits(),
            workers=backend.streams,
            every_core_pass=backend.every_core_pass,
            max_width=tokenizer.max_tokens,
        )

    @property
    def dimension(self) -> int:
        return self.backend.dimension

    @property
    def max_tokens(self) -> int:
        return self.tokenizer.max_tokens

    async def embed(
        self,
        items: Sequence[Item],
        *,
        truncate: bool = True,
        dimensions: int | None = None,
        instruction: str = "",
    ) -> Embeddings:
        """Unit vectors for `items`; `instruction` is put before each (as text, or as the
        model's tokens of it for native token ids), as sentence-transformers' `prompt` does."""
        self._check_dimensions(dimensions)
        loop = asyncio.get_running_loop()
        sequences = await loop.run_in_executor(None, self.tokenize, items, truncate, instruction)
        self._check_request_tokens(sequences)
        unpooled = None
        if instruction and not self.pools_instruction:
            unpooled = [self.tokenizer.unpooled_span(instruction)] * len(sequences)
        pooled = await self.batcher.submit(sequences, unpooled)
        return Embeddings(unit_rows(pooled, dimensions), sum(map(len, sequences)))

    def embed_sync(self, items: Sequence[Item], *, truncate: bool = True) -> Embeddings:
        """One direct forward pass, outside the batcher: for warm-up and start-up probes."""
        sequences = self.tokenize(items, truncate)
        pooled = self.backend.embed(*pad(sequences, self.tokenizer.pad_id))
        return Embeddings(unit_rows(pooled, None), sum(map(len, sequences)))

    def close(self) -> None:
        self.batcher.close()

    def tokenize(
        self, items: Sequence[Item], truncate: bool, instruction: str = ""
    ) -> list[list[int]]:
        """Framed token ids per input. Items are all text or all token-id sequences."""
        texts = {
            i: self._instructed(instruction, t) for i, t in enumerate(items) if isinstance(t, str)
        }
        id_lists = {i: item for i, item in enumerate(items) if not isinstance(item, str)}
        contents = self._token_id_contents(id_lists, instruction) if id_lists else {}
        if texts:
            contents.update(
                zip(texts, self.tokenizer.content_ids(list(texts.values())), strict=True)
            )
        return [
            self.tokenizer.frame(contents[i], truncate=truncate, index=i) for i in range(len(items))
        ]

    def _token_id_contents(
        self, id_lists: dict[int, Sequence[int]], instruction: str
    ) -> dict[int, list[int]]:
        if self.token_ids == "reject":
            raise InvalidInput(
                "this server does not accept token-id inputs (started with --token-ids reject); "
                "send text instead",
                param="input",
                code="token_ids_not_accepted",
            )
        if self._openai_tokens is not None:
            texts = self._openai_tokens.decode(list(id_lists.values()), list(id_lists))
            texts = [self._instructed(instruction, text) for text in texts]
            return dict(zip(id_lists, self.tokenizer.content_ids(texts), strict=True))
        for index, ids in id_lists.items():
            self.tokenizer.check_native(ids, index)
        prefix = self.tokenizer.content_ids([instruction])[0] if instruction else []
        return {i: prefix + list(ids) for i, ids in id_lists.items()}

    def _instructed(self, instruction: str, text: str) -> str:
        # INSTRUCTOR strips the text before joining; sentence-transformers strips the join.
        return instruction + (text if self.pools_instruction else text.strip())

    def _check_request_tokens(self, sequences: list[list[int]]) -> None:
        total = sum(map(len, sequences))
        if self.max_request_tokens is not None and total > self.max_request_tokens:
            raise InvalidInput(
                f"the request holds {total} tokens, more than this server's limit of "
                f"{self.max_request_tokens} per request; split it into several requests",
                param="input",
                code="too_many_tokens",
            )

    def _check_dimensions(self, dimensions: int | None) -> None:
        if dimensions is not None and not 1 <= dimensions <= self.dimension:
            raise InvalidInput(
                f"'dimensions' must be between 1 and {self.dimension} for this model, "
                f"got {dimensions}",
                param="dimensions",
                code="invalid_dimensions",
            )


def unit_rows(vectors: np.ndarray, dimensions: int | None = None) -> np.ndarray:
    """Keep the first `dimensions` components and scale each row to unit length."""
    kept = vectors[:, :dimensions] if dimensions else vectors
    norms = np.linalg.norm(kept, axis=1, keepdims=True)
    return np.ascontiguousarray(kept / np.maximum(norms, 1e-12), dtype=np.float32)
