"""`dimensions` cuts as each model's card does: plainly, or after a layer norm of the whole
vector where the family asks for it (nomic-embed-text-v1.5), in requests and int8 ranges."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

from embedserve.config import Settings
from embedserve.engine.embedder import Embedder, EmbedOptions
from embedserve.engine.loading import load_embedder
from embedserve.engine.vectors import layer_norms_before_cut, scaled_rows
from embedserve.models.source import ModelSource, resolve
from tests.conftest import REAL_SENTENCES


@pytest.mark.parametrize(
    ("model_id", "layer_norm"),
    [
        ("nomic-ai/nomic-embed-text-v1.5", True),
        ("/models/nomic-embed-text-v1.5", True),
        ("nomic-ai/nomic-embed-text-v1", False),  # not a Matryoshka model
        ("nomic-ai/nomic-embed-text-v2-moe", False),  # its card cuts plainly
        ("BAAI/bge-small-en-v1.5", False),
    ],
)
def test_the_layer_norm_is_nomic_v15s(model_id: str, layer_norm: bool) -> None:
    assert layer_norms_before_cut(model_id) is layer_norm


def card_recipe(full: np.ndarray, dimensions: int) -> np.ndarray:
    """nomic-embed-text-v1.5's model card, in torch."""
    import torch
    import torch.nn.functional as F

    vectors = F.layer_norm(torch.from_numpy(full), normalized_shape=(full.shape[1],))
    return F.normalize(vectors[:, :dimensions], p=2, dim=1).numpy()


def test_scaled_rows_follows_the_card() -> None:
    full = np.random.default_rng(0).normal(size=(5, 64)).astype(np.float32) + 0.3
    got = scaled_rows(full, 16, layer_norm=True)
    assert np.allclose(got, card_recipe(full, 16), atol=1e-6)
    assert not np.allclose(got, scaled_rows(full, 16), atol=1e-3)  # the mean matters
    assert np.array_equal(scaled_rows(full, layer_norm=True), scaled_rows(full))  # no cut


def test_a_nomic_v15_folder_cuts_after_the_layer_norm(minilm: ModelSource, tmp_path: Path) -> None:
    folder = tmp_path / "nomic-embed-text-v1.5"  # MiniLM's weights under nomic's name
    folder.mkdir()
    for path in minilm.files.iterdir():
        (folder / path.name).symlink_to(path)
    nomic = load_embedder(resolve(str(folder)), Settings())
    plain = load_embedder(minilm, Settings())
    try:
        assert nomic.layer_norm_before_cut
        assert not plain.layer_norm_before_cut

        async def vectors(embedder: Embedder, dimensions: int | None) -> np.ndarray:
            options = EmbedOptions(dimensions=dimensions)
            return (await embedder.embed(REAL_SENTENCES, options)).vectors

        full = asyncio.run(vectors(nomic, None))
        cut = asyncio.run(vectors(nomic, 128))
        assert np.allclose(cut, card_recipe(full, 128), atol=1e-5)
        assert np.allclose(asyncio.run(vectors(plain, 128)), scaled_rows(full, 128), atol=1e-5)
        assert np.allclose(asyncio.run(vectors(plain, None)), full, atol=1e-6)  # same weights
        ranges = asyncio.run(nomic.quantization_ranges(128))
        assert ranges is not None
        calibration = nomic.calibration
        assert calibration is not None
        assert calibration.known is not None
        want = card_recipe(calibration.known.pooled, 128)
        assert np.allclose(ranges, [want.min(axis=0), want.max(axis=0)], atol=1e-5)
    finally:
        nomic.close()
        plain.close()
