"""The internal shapes every wire format parses into and formats out of: one request to embed,
one result."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
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


@dataclass(frozen=True)
class Embedded:
    """The answer to an EmbedRequest."""

    model: str
    """The served name of the model that embedded it."""

    vectors: np.ndarray
    """float32 [inputs, dimension], in input order."""

    prompt_tokens: int
    """Tokens the model processed (after truncation, special tokens included), summed."""
