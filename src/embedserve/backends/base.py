"""The backend interface: padded token ids in, one pooled vector per row out."""

from __future__ import annotations

from typing import Protocol

import numpy as np


class Backend(Protocol):
    """Runs a model's forward pass. Knows nothing of HTTP, requests or tokenization."""

    @property
    def dimension(self) -> int:
        """Length of the vectors `embed` returns."""
        ...

    def embed(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        """Pooled embeddings, float32 [batch, dimension], for int64 [batch, seq] inputs."""
        ...
