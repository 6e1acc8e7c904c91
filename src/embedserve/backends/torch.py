"""PyTorch backend: the model's own sentence-transformers module stack (transformer, pooling,
dense, normalize, as its modules.json says), fed pre-tokenized padded batches."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)


def pick_device(requested: str) -> str:
    import torch

    if requested != "auto":
        return requested
    return "cuda" if torch.cuda.is_available() else "cpu"


class TorchBackend:
    def __init__(self, folder: Path, device: str = "auto") -> None:
        import torch
        from sentence_transformers import SentenceTransformer

        self._torch = torch
        self.device = pick_device(device)
        self._model = SentenceTransformer(str(folder), device=self.device, local_files_only=True)
        self._model.eval()
        names = getattr(self._model.tokenizer, "model_input_names", [])
        self._token_types = "token_type_ids" in names
        get_dimension = (
            getattr(self._model, "get_embedding_dimension", None)
            or self._model.get_sentence_embedding_dimension
        )
        dimension = get_dimension()
        if not dimension:
            raise ValueError("the model does not state its embedding dimension")
        self._dimension = int(dimension)
        log.info("torch backend on %s (%d threads)", self.device, torch.get_num_threads())

    @property
    def dimension(self) -> int:
        return self._dimension

    def embed(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        torch = self._torch
        ids = torch.from_numpy(input_ids).to(self.device)
        features = {"input_ids": ids, "attention_mask": torch.from_numpy(attention_mask).to(ids)}
        if self._token_types:
            features["token_type_ids"] = torch.zeros_like(ids)
        with torch.inference_mode():
            pooled = self._model.forward(features)["sentence_embedding"]
        return np.asarray(pooled.float().cpu().numpy(), dtype=np.float32)
