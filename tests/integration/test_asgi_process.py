"""The app under plain uvicorn (`uvicorn --factory embedserve.asgi:create_app`), configured by
EMBEDSERVE_* variables and an EMBEDSERVE_CONFIG file: the same API as `embedserve serve`, with
the models loaded in each worker's lifespan and closed when it stops."""

from __future__ import annotations

import asyncio
import shutil
import signal
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import psutil
import pytest

from tests.conftest import REAL_SENTENCES, cosines, reference_vectors
from tests.processes import start_command, stop, wait_for_compute, wait_until_listening

pytestmark = pytest.mark.process

FACTORY = ["-m", "uvicorn", "--factory", "embedserve.asgi:create_app", "--host", "127.0.0.1"]


def configured(tmp_path: Path) -> dict[str, str]:
    config = tmp_path / "embedserve.toml"
    config.write_text(
        '[[models]]\nmodel = "all-MiniLM-L6-v2"\nname = "minilm"\naliases = ["small"]\n'
    )
    return {"EMBEDSERVE_CONFIG": str(config), "EMBEDSERVE_MAX_INPUTS": "4"}


async def embed_concurrently(base: str, requests: list[list[str]]) -> list[httpx.Response]:
    async with httpx.AsyncClient(base_url=base, timeout=60) as client:
        calls = [
            client.post("/v1/embeddings", json={"input": t, "model": "small"}) for t in requests
        ]
        return await asyncio.gather(*calls)


def stopped(process, log: Path) -> str:  # type: ignore[no-untyped-def]
    """SIGTERM, and the log once it exited; uvicorn re-raises the signal after a graceful
    shutdown (its own exit), a supervisor of workers exits 0."""
    process.send_signal(signal.SIGTERM)
    code = process.wait(timeout=60)
    text = log.read_text()
    assert code in (0, -signal.SIGTERM), text[-3000:]
    assert "Application shutdown complete" in text
    return text


def test_uvicorn_factory_serves_the_api_with_models_loaded_in_the_lifespan(  # type: ignore[no-untyped-def]
    tmp_path: Path, reference
) -> None:
    process, base, log = start_command(tmp_path, FACTORY, configured(tmp_path))
    try:
        wait_until_listening(process, base, log)
        assert httpx.get(f"{base}/ready").status_code == 200  # loaded before it listened
        (card,) = httpx.get(f"{base}/v1/models").json()["data"]
        assert (card["id"], card["aliases"], card["ready"]) == ("minilm", ["small"], True)
        responses = asyncio.run(embed_concurrently(base, [REAL_SENTENCES[:4]] * 8))
        for response in responses:
            assert response.status_code == 200
            got = np.array([d["embedding"] for d in response.json()["data"]], dtype=np.float32)
            assert cosines(got, reference_vectors(reference, REAL_SENTENCES[:4])).min() >= 0.9999
        too_many = httpx.post(f"{base}/v1/embeddings", json={"input": ["a"] * 5})
        assert too_many.status_code == 400  # EMBEDSERVE_MAX_INPUTS reached the app
        assert too_many.json()["error"]["code"] == "too_many_inputs"
    except BaseException:
        stop(process)
        raise
    text = stopped(process, log)
    assert text.index("model minilm ready") < text.index("Application startup complete")
    assert "model minilm closed" in text
    assert "Traceback" not in text


def test_two_uvicorn_workers_each_load_serve_and_close(tmp_path: Path, reference) -> None:  # type: ignore[no-untyped-def]
    process, base, log = start_command(tmp_path, [*FACTORY, "--workers", "2"], configured(tmp_path))
    try:
        wait_until_listening(process, base, log)
        deadline = time.monotonic() + 120
        while log.read_text().count("Application startup complete") < 2:  # both loaded
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.2)
        requests = [[f"{i}: {text}"] for i, text in enumerate(REAL_SENTENCES * 2)]
        responses = asyncio.run(embed_concurrently(base, requests))
        assert [r.status_code for r in responses] == [200] * len(requests)
        got = np.array([r.json()["data"][0]["embedding"] for r in responses], dtype=np.float32)
        want = reference_vectors(reference, [texts[0] for texts in requests])
        assert cosines(got, want).min() >= 0.9999
    except BaseException:
        stop(process)
        raise
    text = stopped(process, log)
    assert text.count("model minilm ready") == 2  # one load in each worker's lifespan
    assert text.count("model minilm closed") == 2
    assert len(set(_worker_pids(text))) == 2


def _worker_pids(log: str) -> list[str]:
    return [
        line.rsplit("[", 1)[1].rstrip("]")
        for line in log.splitlines()
        if "Started server process" in line
    ]


@pytest.mark.parametrize(
    ("env", "fragment"),
    [
        ({"EMBEDSERVE_MODEL": "./no/such"}, "model folder './no/such' does not exist"),
        ({"EMBEDSERVE_PRECISION": "fp8"}, "EMBEDSERVE_PRECISION='fp8' is not one of"),
        ({"EMBEDSERVE_MODEL": "@broken"}, "cannot be served"),  # fails in the lifespan
    ],
)
def test_uvicorn_workers_that_cannot_start_say_why_and_the_supervisor_exits_non_zero(
    tmp_path: Path, env: dict[str, str], fragment: str
) -> None:
    if env.get("EMBEDSERVE_MODEL") == "@broken":  # found, but its weights cannot be read
        env = {"EMBEDSERVE_MODEL": str(broken_model(tmp_path))}
    process, _, log = start_command(tmp_path, [*FACTORY, "--workers", "2"], env)
    workers = children_of(process.pid)
    code = process.wait(timeout=300)
    text = log.read_text()
    assert code != 0, text[-3000:]  # uvicorn's own supervisor would exit 0
    assert f"embedserve cannot start: {fragment}" in text or fragment in text, text[-3000:]
    assert "stopping uvicorn's supervisor" in text
    assert "Traceback" not in text
    for worker in workers:  # no worker serves on without its supervisor
        worker.wait(timeout=60)
    alone, _, single_log = start_command(tmp_path, FACTORY, env)
    assert alone.wait(timeout=300) == 3  # one worker: uvicorn's start-up failure code
    assert fragment in single_log.read_text()


def broken_model(tmp_path: Path) -> Path:
    from embedserve.models.source import resolve

    folder = tmp_path / "broken"
    shutil.copytree(resolve(None).files, folder)
    (folder / "model.safetensors").write_bytes(b"not safetensors")
    return folder


def children_of(pid: int) -> list[psutil.Process]:
    """The supervisor's child processes, once it has started its two workers (or exited)."""
    parent, found = psutil.Process(pid), list[psutil.Process]()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(found) < 2:
        try:
            found = parent.children()
        except psutil.NoSuchProcess:
            break
        time.sleep(0.05)
    return found


def test_under_plain_uvicorn_a_stop_signal_turns_readiness_to_draining(tmp_path: Path) -> None:
    process, base, log = start_command(tmp_path, FACTORY)
    try:
        wait_until_listening(process, base, log)
        texts = [f"{i} " + "long words here " * 80 for i in range(96)]  # seconds of compute
        result: dict[str, httpx.Response] = {}
        request = threading.Thread(
            target=lambda: result.setdefault(
                "r", httpx.post(f"{base}/v1/embeddings", json={"input": texts}, timeout=120)
            )
        )
        request.start()
        wait_for_compute(base)
    except BaseException:
        stop(process)
        raise
    text = stopped(process, log)
    request.join(120)
    assert "draining in-flight requests" in text
    assert result["r"].status_code == 200  # the request in flight was drained, not dropped
