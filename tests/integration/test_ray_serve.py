"""`embedserve serve --ray` on a local Ray cluster started by the server, inside the test's own
temp folder: the same contract through Ray Serve's proxy on 127.0.0.1, an engine replica killed
mid-request answered with an envelope and replaced, autoscaling under load, and on SIGTERM (also
one during start-up) no Ray process left behind."""

from __future__ import annotations

import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import psutil
import pytest

from tests.conftest import cosines, reference_vectors
from tests.processes import ray_processes, start_command

pytest.importorskip("ray")
pytestmark = [pytest.mark.slow, pytest.mark.process]

ENGINE_REPLICA = "ServeReplica:embedserve:engine"
MAX_FILE_BYTES = 12 * 2**20  # above the 8 MiB of --max-body-bytes: uploads have their own
LONG_TEXT = " ".join(["the river rose over the old stone bridge and the town watched"] * 30)


@dataclass
class RayServer:
    process: subprocess.Popen[bytes]
    base: str
    log: Path
    ray_dir: Path

    def output(self) -> str:
        return self.log.read_text()[-4000:]

    def wait_for(self, ready: Callable[[], bool], seconds: float, what: str) -> None:
        deadline = time.monotonic() + seconds
        while not ready():
            assert self.process.poll() is None, self.output()
            assert time.monotonic() < deadline, (
                f"{what} not within {seconds:.0f} s\n{self.output()}"
            )
            time.sleep(0.5)

    def engine_replicas(self) -> list[psutil.Process]:
        found = []
        for child in psutil.Process(self.process.pid).children(recursive=True):
            try:
                if ENGINE_REPLICA in " ".join(child.cmdline()):
                    found.append(child)
            except psutil.NoSuchProcess:
                continue
        return found

    def embeds(self) -> bool:
        try:
            response = httpx.post(f"{self.base}/v1/embeddings", json={"input": "ok"}, timeout=10)
        except httpx.TransportError:
            return False
        return response.status_code == 200

    def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=90)
        finally:
            if self.process.poll() is None:
                self.process.kill()

    def assert_no_ray_left(self) -> None:
        deadline = time.monotonic() + 30
        while ray_processes(self.ray_dir) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert not ray_processes(self.ray_dir), "Ray processes outlived the server"


@contextmanager
def launch(tmp_path: Path, *flags: str) -> Iterator[RayServer]:
    """`serve --ray FLAGS` with its Ray files in a short folder of its own; killed if a test
    leaves it running."""
    ray_dir = Path(tempfile.mkdtemp(prefix="ray-", dir="/tmp"))  # socket paths must stay short
    process, base, log = start_command(
        tmp_path,
        ["-m", "embedserve", "serve", "--ray", *flags],
        env={"RAY_TMPDIR": str(ray_dir)},
    )
    server = RayServer(process, base, log, ray_dir)
    try:
        yield server
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=30)
        shutil.rmtree(ray_dir, ignore_errors=True)


def serving(server: RayServer, described: str) -> bool:
    """The deployment is up (the log says so) and answers through the proxy."""
    return f"through Ray Serve: {described}" in server.log.read_text() and server.embeds()


@pytest.fixture(scope="module")
def two_replicas(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RayServer]:
    folder = tmp_path_factory.mktemp("ray-serve")
    flags = ["--replicas", "2", "--max-file-bytes", str(MAX_FILE_BYTES), "--data-dir", str(folder)]
    with launch(folder, *flags) as server:
        server.wait_for(lambda: serving(server, "2 replica(s), 1 CPU(s) each"), 240, "2 replicas")
        yield server


def test_the_app_on_ray_serve_replicas(two_replicas: RayServer, reference) -> None:  # type: ignore[no-untyped-def]
    base = two_replicas.base
    texts = ["a river in flood", "the invoice was paid", "naïve café 東京"]
    response = httpx.post(f"{base}/v1/embeddings", json={"input": texts}, timeout=30)
    assert response.status_code == 200, response.text
    got = np.array([d["embedding"] for d in response.json()["data"]], dtype=np.float32)
    assert cosines(got, reference_vectors(reference, texts)).min() >= 0.9999
    bad = httpx.post(f"{base}/v1/embeddings", json={"input": []}, timeout=30)
    assert bad.status_code == 400
    assert bad.json()["error"]["type"] == "invalid_request_error"
    too_big = httpx.post(f"{base}/v1/embeddings", content=b"x" * (2**25), timeout=30)
    assert too_big.status_code == 413, too_big.text  # refused by the front, in the envelope
    assert too_big.json()["error"]["code"] == "request_too_large"
    missing = httpx.get(f"{base}/v1/nothing-here", timeout=30)
    assert missing.status_code == 404
    assert "no route" in missing.json()["error"]["message"]
    line = (
        b'{"custom_id": "r", "method": "POST", "url": "/v1/embeddings", "body": {"input": "x"}}\n'
    )
    upload = line * (10 * 2**20 // len(line))  # over --max-body-bytes, under --max-file-bytes
    stored = httpx.post(
        f"{base}/v1/files",
        files={"file": ("in.jsonl", upload)},
        data={"purpose": "batch"},
        timeout=60,
    )
    assert stored.status_code == 200, stored.text
    assert stored.json()["bytes"] == len(upload)
    for chunked in (False, True):  # declared too large, or found so while reading
        form = httpx.Request(
            "POST",
            f"{base}/v1/files",
            files={"file": ("big.jsonl", line * (13 * 2**20 // len(line)))},
            data={"purpose": "batch"},
        )
        body = form.read()
        headers = {"content-type": form.headers["content-type"]}
        pieces = (body[i : i + 2**20] for i in range(0, len(body), 2**20))
        refused = httpx.post(
            f"{base}/v1/files", content=pieces if chunked else body, headers=headers, timeout=60
        )
        assert refused.status_code == 413, refused.text
        assert refused.json()["error"]["code"] == "file_too_large"
    models = httpx.get(f"{base}/v1/models", timeout=30).json()
    assert models["data"][0]["id"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert len(two_replicas.engine_replicas()) == 2


def test_a_replica_killed_mid_request_is_answered_in_the_envelope_and_replaced(
    two_replicas: RayServer,
) -> None:
    killed = two_replicas.engine_replicas()
    assert len(killed) == 2
    answers: list[httpx.Response | Exception] = []

    def post() -> None:  # long enough that it is still computing when its replica dies
        try:
            body = {"input": [f"{i} {LONG_TEXT}" for i in range(96)]}
            answers.append(httpx.post(f"{two_replicas.base}/v1/embeddings", json=body, timeout=120))
        except Exception as exc:
            answers.append(exc)

    clients = [threading.Thread(target=post) for _ in range(6)]
    for client in clients:
        client.start()
    time.sleep(1.5)
    for replica in killed:
        replica.kill()
    for client in clients:
        client.join(timeout=150)
    assert len(answers) == 6, "a request hung on a dead replica"
    assert all(isinstance(a, httpx.Response) for a in answers), answers
    lost = [a for a in answers if isinstance(a, httpx.Response) and a.status_code != 200]
    assert lost, "every request finished before the replicas died: the test proved nothing"
    for answer in lost:
        assert answer.status_code == 503, answer.text
        assert answer.headers["retry-after"] == "1"
        assert answer.json()["error"]["code"] == "replica_lost"
    two_replicas.wait_for(two_replicas.embeds, 180, "a replaced replica serving")
    two_replicas.wait_for(lambda: len(two_replicas.engine_replicas()) == 2, 180, "2 replicas")
    assert not {p.pid for p in killed} & {p.pid for p in two_replicas.engine_replicas()}


def test_sigterm_stops_the_deployment_and_every_ray_process(two_replicas: RayServer) -> None:
    assert two_replicas.stop() == 0, two_replicas.output()
    two_replicas.assert_no_ray_left()


def test_replicas_are_added_under_load(tmp_path: Path) -> None:
    with launch(tmp_path, "--min-replicas", "1", "--max-replicas", "2") as server:
        server.wait_for(lambda: serving(server, "1 to 2 replicas, autoscaled"), 240, "1 replica")
        assert len(server.engine_replicas()) == 1
        done = threading.Event()
        statuses: list[int] = []

        def client() -> None:  # well over the 8 requests in flight a replica is meant to hold
            with httpx.Client(base_url=server.base, timeout=60) as http:
                while not done.is_set():
                    body = {"input": [f"{len(statuses)} {LONG_TEXT}"] * 8}
                    statuses.append(http.post("/v1/embeddings", json=body).status_code)

        clients = [threading.Thread(target=client) for _ in range(24)]
        for thread in clients:
            thread.start()
        try:
            server.wait_for(lambda: len(server.engine_replicas()) == 2, 120, "a second replica")
        finally:
            done.set()
            for thread in clients:
                thread.join(timeout=90)
        assert statuses
        assert set(statuses) == {200}, sorted(set(statuses))
        assert server.stop() == 0, server.output()
        server.assert_no_ray_left()


def test_sigterm_during_start_up_stops_cleanly(tmp_path: Path) -> None:
    with launch(tmp_path, "--replicas", "1") as server:
        server.wait_for(lambda: "deploying on Ray Serve" in server.log.read_text(), 120, "start")
        assert server.stop() == 0, server.output()
        assert "stopping before the deployment was up" in server.log.read_text(), server.output()
        server.assert_no_ray_left()
