"""The internal shapes every wire format parses into and formats out of: one request to embed,
one result."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

InputType = Literal["query", "document", "passage"]


@dataclass(frozen=True)
class EmbedRequest:
    """What one API request asks to embed, whatever its wire format."""

    inputs: Sequence[str] | Sequence[Sequence[int]]
    """Texts, or token-id sequences (OpenAI cl100k_base ids unless --token-ids native)."""

    model: str | None = None
    """The model the request names; None: the default model."""

    input_type: InputType = "document"
    """"query" gets the model's query instruction; "document" or "passage" its document one."""

    prompt_name: str | None = None
    """One of the model's own prompts by name (EmbeddingGemma's "Clustering", ...), or an
    input type's name; put before each input in place of `input_type`'s instruction."""

    truncate: bool | None = None
    """Truncate over-long inputs (None: the server's --truncate) or refuse them."""

    truncate_left: bool = False
    """Truncate an over-long input's start instead of its end."""

    dimensions: int | None = None
    """Keep the first N components."""

    normalize: bool = True
    """Unit-length vectors; False returns the model's own output."""

    background: bool = False
    """Batch work (the Batch API's): behind every online request."""

    encodings: tuple[str, ...] = ()
    """Integer encodings to return besides the floats (int8, uint8, binary, ubinary)."""

    keep_alive_s: float | None = None
    """How long the model stays loaded once idle after this request (Ollama's keep_alive;
    0 unloads it at once, negative keeps it); None: its configured keep-alive."""


@dataclass(frozen=True)
class Embedded:
    """The answer to an EmbedRequest."""

    model: str
    """The served name of the model that embedded it."""

    vectors: np.ndarray
    """float32 [inputs, dimension], in input order."""

    prompt_tokens: int
    """Tokens the model processed (after truncation, special tokens included), summed."""

    encoded: Mapping[str, np.ndarray] = field(default_factory=dict)
    """The vectors in each integer encoding the request asked for."""

    def rows(self, encoding: str) -> np.ndarray:
        """The vectors in `encoding` ("float" and "base64": the floats)."""
        return self.encoded.get(encoding, self.vectors)


@dataclass(frozen=True)
class RerankRequest:
    """What one rerank request asks, whatever its wire format."""

    query: str
    documents: Sequence[str]
    model: str | None = None
    """The model the request names; None: the default reranker (else embedding model)."""

    top_n: int | None = None
    """Keep the N best."""

    raw: bool = False
    """A cross-encoder's logits instead of its activation's scores."""

    truncate: bool | None = None
    """Cut over-long pairs (None: the server's --truncate) or refuse them."""

    truncate_left: bool = False


@dataclass(frozen=True)
class Reranked:
    """The answer to a RerankRequest."""

    model: str
    scores: np.ndarray
    """float32 [documents], in document order."""

    order: list[int]
    """Document indices, best first (the top_n best where asked)."""

    prompt_tokens: int
    scored_by: Literal["cross-encoder", "cosine"]
    """A reranker's scores, or an embedding model's cosine of query and document."""
