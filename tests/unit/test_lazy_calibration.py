"""int8 ranges are measured when first asked for, not at load: through the model's own batched
path, once for concurrent asks, kept for the next start."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np

from embedserve.engine.quantization import Calibration
from embedserve.models.source import ModelSource
from tests.fakes import EchoBackend, client_for, fake_embedder, registry_with

CALIBRATION_TEXTS = 200


async def test_ranges_are_measured_on_the_first_int8_request(
    minilm: ModelSource, tmp_path: Path
) -> None:
    backend = EchoBackend()
    embedder = fake_embedder(minilm, backend)
    embedder.calibration = Calibration(tmp_path, "build-key")
    async with client_for(registry_with(minilm, embedder)) as client:
        listed = (await client.get("/v1/models")).json()["data"][0]
        assert listed["quantization_ranges"] is None  # listing measures nothing
        assert backend.batches == []
        asks = [
            client.post("/v1/embeddings", json={"input": ["a b", "c"], "encoding_format": "int8"})
            for _ in range(3)
        ]
        answers = await asyncio.gather(*asks)
        assert [a.status_code for a in answers] == [200, 200, 200]
        rows = sum(rows for rows, _width in backend.batches)
        assert rows == CALIBRATION_TEXTS + 3 * 2  # one measurement for three concurrent asks
        card = (await client.get(f"/v1/models/{minilm.id}")).json()["quantization_ranges"]
        listed = (await client.get("/v1/models")).json()["data"][0]["quantization_ranges"]
        assert listed == card
        assert sum(rows for rows, _width in backend.batches) == rows  # not measured again
    kept = np.load(next((tmp_path / "quantization").glob("*.npy")))
    assert kept.shape == (CALIBRATION_TEXTS, 8)
    again = Calibration(tmp_path, "build-key")  # the next start reads them
    assert again.known is not None
    assert again.known.ranges().tolist() == card
