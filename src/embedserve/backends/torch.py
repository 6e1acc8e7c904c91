"""PyTorch backend: the model's own sentence-transformers module stack (transformer, pooling,
dense, as its modules.json says; serving normalizes), fed pre-tokenized padded batches. Used on GPUs
(fp16/bf16), for bf16 on CPUs that support it, and for models that cannot be exported."""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import Any, Literal

import numpy as np

from embedserve.backends.base import UNPOOLED
from embedserve.errors import ModelUnavailable
from embedserve.machine import cpu_supports_bf16

log = logging.getLogger(__name__)

TorchPrecision = Literal["fp32", "bf16", "fp16"]


def gpu_present() -> bool:
    """True when an NVIDIA driver is loaded and torch sees a CUDA device (imports torch then)."""
    if not Path("/proc/driver/nvidia").exists():
        return False
    import torch

    return bool(torch.cuda.is_available())


class TorchBackend:
    kind = "torch"
    streams = 1
    kernels_per_shape = False
    every_core_pass = None  # its one stream runs on every core

    def __init__(
        self,
        folder: Path,
        device: str = "cpu",
        precision: TorchPrecision = "fp32",
        cores: int | None = None,
        trust_remote_code: bool = False,
    ) -> None:
        """`cores`: the threads torch computes on, on a CPU (its default ignores a container's
        CPU quota). `trust_remote_code`: run the code the folder ships."""
        import torch
        from sentence_transformers import SentenceTransformer

        self._torch = torch
        self.device = device
        self.precision = precision
        on_gpu = device.startswith("cuda")
        if cores and not on_gpu:
            torch.set_num_threads(cores)
        if precision == "fp16" and not on_gpu:
            raise ModelUnavailable(
                "fp16 needs a CUDA GPU; on a CPU use --precision fp32, bf16 or int8"
            )
        if precision == "bf16" and not on_gpu and not cpu_supports_bf16():
            raise ModelUnavailable(
                "this CPU has no bf16 instructions (AVX512-BF16 or AMX); use fp32 or int8"
            )
        model = SentenceTransformer(
            str(folder), device=device, local_files_only=True, trust_remote_code=trust_remote_code
        )
        self._model = without_normalize(model).eval()
        if on_gpu and precision != "fp32":
            self._model.to(torch.float16 if precision == "fp16" else torch.bfloat16)
        self._autocast = precision == "bf16" and not on_gpu
        names = getattr(self._model.tokenizer, "model_input_names", [])
        self._token_types = "token_type_ids" in names
        get_dimension = (
            getattr(self._model, "get_embedding_dimension", None)
            or self._model.get_sentence_embedding_dimension
        )
        dimension = get_dimension()
        if not dimension:
            raise ModelUnavailable(f"{folder} does not state its embedding dimension")
        self._dimension = int(dimension)
        log.info("torch backend: %s on %s (%d threads)", precision, device, torch.get_num_threads())

    @property
    def dimension(self) -> int:
        return self._dimension

    def embed(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        torch = self._torch
        ids = torch.from_numpy(input_ids).to(self.device)
        features = {"input_ids": ids, "attention_mask": torch.from_numpy(attention_mask).to(ids)}
        if self._token_types:
            features["token_type_ids"] = torch.zeros_like(ids)
        autocast: Any = (
            torch.autocast("cpu", dtype=torch.bfloat16)
            if self._autocast
            else contextlib.nullcontext()
        )
        with torch.inference_mode(), autocast:
            if (attention_mask == UNPOOLED).any():  # on the host: no device sync per batch
                pooled = pool_apart(self._model, features)
            else:
                pooled = self._model.forward(features)["sentence_embedding"]
        return np.asarray(pooled.float().cpu().numpy(), dtype=np.float32)


def without_normalize(model: Any) -> Any:
    """The stack without its trailing Normalize module, if it has one: a backend returns the
    pooled vector and serving normalizes it, so that `normalize: false` gets it as it is (TEI's
    option; sentence-transformers' normalize_embeddings=False would still normalize)."""
    last = len(model) - 1
    if last > 0 and type(model[last]).__name__ == "Normalize":
        del model[last]
    return model


def pool_apart(model: Any, features: dict[str, Any]) -> Any:
    """A sentence-transformers stack's embeddings, attending where the mask is > 0 but pooling
    only where it is 1: the transformer runs first, then the rest (pooling, dense) on a mask
    without the UNPOOLED tokens."""
    mask = features["attention_mask"]
    modules = list(model)
    features = modules[0]({**features, "attention_mask": (mask > 0).to(mask.dtype)})
    features["attention_mask"] = (mask == 1).to(mask.dtype)
    for module in modules[1:]:
        features = module(features)
    return features["sentence_embedding"]
