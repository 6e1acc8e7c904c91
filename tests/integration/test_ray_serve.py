"""`embedserve serve --ray` on a local Ray cluster started by the server, inside the test's own
temp folder: the same contract through Ray Serve's proxy on 127.0.0.1, and on SIGTERM no Ray
process left behind."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.conftest import cosines, reference_vectors
from tests.processes import ray_processes, start_command

pytest.importorskip("ray")
pytestmark = [pytest.mark.slow, pytest.mark.process]


def test_the_app_on_ray_serve_replicas(tmp_path: Path, ray_dir: Path, reference) -> None:  # type: ignore[no-untyped-def]
    process, base, log = start_command(
        tmp_path,
        ["-m", "embedserve", "serve", "--ray", "--replicas", "2"],
        env={"RAY_TMPDIR": str(ray_dir)},
    )
    try:
        deadline = time.monotonic() + 240
        while True:
            assert process.poll() is None, log.read_text()[-4000:]
            assert time.monotonic() < deadline, log.read_text()[-4000:]
            try:
                ready = httpx.get(f"{base}/ready", timeout=2).status_code == 200
            except httpx.TransportError:
                ready = False
            if ready and "2 replica(s), 1 CPU(s) each" in log.read_text():
                break  # both replicas up, and the deployment says so
            time.sleep(0.5)
        texts = ["a river in flood", "the invoice was paid", "naïve café 東京"]
        response = httpx.post(f"{base}/v1/embeddings", json={"input": texts}, timeout=30)
        assert response.status_code == 200, response.text
        got = np.array([d["embedding"] for d in response.json()["data"]], dtype=np.float32)
        assert cosines(got, reference_vectors(reference, texts)).min() >= 0.9999
        bad = httpx.post(f"{base}/v1/embeddings", json={"input": []}, timeout=30)
        assert bad.status_code == 400
        assert bad.json()["error"]["type"] == "invalid_request_error"
        models = httpx.get(f"{base}/v1/models", timeout=30).json()
        assert models["data"][0]["id"] == "sentence-transformers/all-MiniLM-L6-v2"
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=90)
        except Exception:
            process.kill()
            raise
    assert process.returncode == 0, log.read_text()[-4000:]
    deadline = time.monotonic() + 30
    while ray_processes(ray_dir) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not ray_processes(ray_dir), "Ray processes outlived the server"
