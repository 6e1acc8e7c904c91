"""Packed batches on OpenVINO: texts side by side in a row give sentence-transformers' vectors,
for BERT and the RoBERTa family (positions from the padding id); a model that cannot be packed,
or whose packed graph does not prove exact at build, is served padded, and that verdict is kept
with the builds. In fp32, so that every CPU runs it (bf16 serves packed the same way where the
CPU has it: test_default_precision's fidelity test then covers it)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from embedserve.backends import packed_export
from embedserve.backends.packing import PackedBatch
from embedserve.config import Settings
from embedserve.engine.embedder import Embedder
from embedserve.engine.loading import load_embedder
from embedserve.models.source import ModelSource, resolve
from tests.conftest import REAL_SENTENCES, VARIED_TEXTS, cosines, reference_vectors
from tests.generated import tiny_cls_dense_model

pytestmark = pytest.mark.slow  # exports models

# two streams, so that a lone batch runs on every core and others on a stream
OPENVINO_FP32 = Settings(precision="fp32", backend="openvino", streams=2)


def watch_packed_passes(embedder: Embedder) -> list[PackedBatch]:
    """The packed batches the embedder's passes (on a stream or on every core) get from here on."""
    seen: list[PackedBatch] = []
    batcher = embedder.batcher

    def spied(run: Callable[[PackedBatch], np.ndarray]) -> Callable[[PackedBatch], np.ndarray]:
        def spy(batch: PackedBatch) -> np.ndarray:
            seen.append(batch)
            return run(batch)

        return spy

    batcher._run = spied(batcher._run)
    assert batcher._every_core_pass is not None
    batcher._every_core_pass = spied(batcher._every_core_pass)
    return seen


async def served(embedder: Embedder, texts: list[str]) -> np.ndarray:
    """Vectors as a request gets them: through the batcher, which packs."""
    return (await embedder.embed(texts)).vectors


def texts_of_every_length() -> list[str]:
    long = " ".join(REAL_SENTENCES)
    return [*VARIED_TEXTS, *REAL_SENTENCES, "ok", ".", long, long[:300], *VARIED_TEXTS[::-1]]


async def test_packed_minilm_gives_sentence_transformers_vectors(  # type: ignore[no-untyped-def]
    minilm: ModelSource, reference
) -> None:
    embedder = load_embedder(minilm, OPENVINO_FP32)
    assert embedder.backend.packs  # type: ignore[attr-defined]
    passes = watch_packed_passes(embedder)
    texts = texts_of_every_length()
    got = await served(embedder, texts)
    embedder.close()
    assert cosines(got, reference_vectors(reference, texts)).min() >= 0.99999
    # several texts shared rows: the vectors above came from packed rows, not one text a row
    assert any(len(batch.spans) > len(batch.ids) for batch in passes)


@pytest.mark.parametrize("architecture", ["bert", "xlm-roberta"])
async def test_a_family_packs_with_its_own_positions(
    architecture: str, minilm: ModelSource, tmp_path: Path
) -> None:
    from sentence_transformers import SentenceTransformer

    folder = tiny_cls_dense_model(tmp_path, minilm.files, "mean", architecture, dense=False)
    embedder = load_embedder(resolve(str(folder)), OPENVINO_FP32)
    assert embedder.backend.packs  # type: ignore[attr-defined]
    passes = watch_packed_passes(embedder)
    texts = texts_of_every_length()
    got = await served(embedder, texts)
    embedder.close()
    expected = SentenceTransformer(str(folder), device="cpu").encode(texts)
    assert cosines(got, np.asarray(expected)).min() >= 0.99999
    assert any(len(batch.spans) > len(batch.ids) for batch in passes)


async def test_a_dense_layer_after_pooling_is_packed_and_run_after_pooling(
    minilm: ModelSource, tmp_path: Path
) -> None:
    """CLS pooling, then Dense (tanh): the packed graph's token vectors are pooled, then the
    Dense layer runs on them (dense_head.py), as sentence-transformers runs it."""
    from sentence_transformers import SentenceTransformer

    folder = tiny_cls_dense_model(tmp_path, minilm.files)
    assert packed_export.not_packable(folder) is None
    served = load_embedder(resolve(str(folder)), OPENVINO_FP32)
    try:
        assert served.backend.packs  # type: ignore[attr-defined]
        texts = [*VARIED_TEXTS, *REAL_SENTENCES]
        got = np.concatenate([(await served.embed([t])).vectors for t in texts])
        want = SentenceTransformer(str(folder), device="cpu").encode(
            texts, normalize_embeddings=True
        )
        assert cosines(got, want).min() >= 0.9999
    finally:
        served.close()


def test_a_dense_layer_this_side_cannot_run_is_served_padded(
    minilm: ModelSource, tmp_path: Path
) -> None:
    import json

    folder = tiny_cls_dense_model(tmp_path, minilm.files)
    config = folder / "2_Dense" / "config.json"
    gelu = {**json.loads(config.read_text()), "activation_function": "torch.nn.modules.GELU"}
    config.write_text(json.dumps(gelu))
    assert "activation GELU" in (packed_export.not_packable(folder) or "")


@pytest.mark.parametrize(
    ("fault", "reason"),
    [
        ("_differs", "cosine 0.9"),
        ("_export", "could not be exported (this transformer takes no position_ids)"),
    ],
)
async def test_a_packed_graph_that_fails_is_refused_once_and_served_padded(  # type: ignore[no-untyped-def]
    fault: str, reason: str, minilm: ModelSource, reference, monkeypatch, caplog, tmp_path: Path
) -> None:
    calls: list[object] = []

    def failing(*args: object) -> str:
        calls.append(args)
        if fault == "_export":
            raise TypeError("this transformer takes no position_ids")
        return "packed texts gave other vectors than sentence-transformers' (cosine 0.9)"

    monkeypatch.setattr(packed_export, fault, failing)
    settings = Settings(precision="fp32", backend="openvino", cache_dir=str(tmp_path))
    caplog.set_level("WARNING")
    first = load_embedder(minilm, settings)
    assert not first.backend.packs  # type: ignore[attr-defined]
    assert first.kind == "openvino"  # served padded, not by another engine
    assert any("served padded" in m and reason in m for m in caplog.messages)
    got = await served(first, REAL_SENTENCES)
    first.close()
    assert cosines(got, reference_vectors(reference, REAL_SENTENCES)).min() >= 0.99999
    assert len(calls) == 1
    again = load_embedder(minilm, settings)  # the refusal is kept with the builds
    assert not again.backend.packs  # type: ignore[attr-defined]
    again.close()
    assert len(calls) == 1
