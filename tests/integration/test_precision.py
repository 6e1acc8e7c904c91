"""Every precision mode against sentence-transformers, on the real packaged model."""

from __future__ import annotations

import numpy as np
import pytest

from embedserve.backends.torch import cpu_supports_bf16
from embedserve.config import Settings
from embedserve.engine.embedder import Embedder
from embedserve.models.source import ModelSource
from embedserve.runtime import load_embedder
from tests.conftest import REAL_SENTENCES, VARIED_TEXTS, cosines, reference_vectors


def embed(embedder: Embedder, texts: list[str]) -> np.ndarray:
    return embedder.embed_sync(texts).vectors


def test_default_is_onnx_fp32_and_exact(embedder: Embedder, reference) -> None:  # type: ignore[no-untyped-def]
    from embedserve.backends.onnx import OnnxBackend

    assert isinstance(embedder.backend, OnnxBackend)
    for texts in (VARIED_TEXTS, REAL_SENTENCES):
        assert cosines(embed(embedder, texts), reference_vectors(reference, texts)).min() >= 0.9999


def test_int8_meets_its_bar_on_real_text(minilm: ModelSource, reference, caplog) -> None:  # type: ignore[no-untyped-def]
    caplog.set_level("INFO")
    int8 = load_embedder(minilm, Settings(precision="int8"))
    cos = cosines(embed(int8, REAL_SENTENCES), reference_vectors(reference, REAL_SENTENCES))
    assert cos.mean() >= 0.99
    assert cos.min() >= 0.98
    assert any("precision int8: cosine vs fp32" in r.getMessage() for r in caplog.records)
    int8.close()


@pytest.mark.skipif(not cpu_supports_bf16(), reason="this CPU has no bf16 instructions")
def test_bf16_on_cpu(minilm: ModelSource, reference) -> None:  # type: ignore[no-untyped-def]
    bf16 = load_embedder(minilm, Settings(precision="bf16"))
    cos = cosines(embed(bf16, VARIED_TEXTS), reference_vectors(reference, VARIED_TEXTS))
    assert cos.mean() >= 0.999
    assert cos.min() >= 0.995
    bf16.close()


def test_torch_fp32_backend_is_exact(minilm: ModelSource, reference) -> None:  # type: ignore[no-untyped-def]
    from embedserve.backends.torch import TorchBackend

    torch_fp32 = load_embedder(minilm, Settings(backend="torch", precision="fp32"))
    assert isinstance(torch_fp32.backend, TorchBackend)
    cos = cosines(embed(torch_fp32, VARIED_TEXTS), reference_vectors(reference, VARIED_TEXTS))
    assert cos.min() >= 0.9999
    torch_fp32.close()


def test_precisions_that_cannot_run_here_fail_clearly(minilm: ModelSource) -> None:
    from embedserve.errors import ModelUnavailable

    with pytest.raises(ModelUnavailable, match="fp16 needs a CUDA GPU"):
        load_embedder(minilm, Settings(precision="fp16", device="cpu"))
    with pytest.raises(ModelUnavailable, match="int8 runs on ONNX Runtime"):
        load_embedder(minilm, Settings(precision="int8", backend="torch"))
