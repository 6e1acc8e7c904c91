"""Models on demand under --memory-budget, keep-alive, Ollama's keep_alive and /api/ps, against
real server processes: fakes of a known size (tests/ballast_server.py) for the budget's
accounting, the packaged model for memory that really returns."""

from __future__ import annotations

import concurrent.futures
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import psutil
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.processes import start, start_command, stop, wait_until_listening

pytestmark = pytest.mark.slow

SLOW_TEXT = "slow " * 100  # over 64 tokens: the ballast server's pass takes SLOW_S on it
BALLAST_MIB = 100
BUDGET = f"{BALLAST_MIB * 2 + 110}MiB"
"""Two of the three models: the first load in a process also carries ~40 MiB of one-time
memory (the tokenizers' library, thread pools), the next ones ~13 MiB beside their ballast; the
three share a build, so the second is expected at the first's size until it has loaded."""


def ballast_server(tmp_path: Path, *flags: str) -> tuple[Callable[[], None], str]:
    """A server of three fake models (a, b, c), each ~BALLAST_MIB when loaded."""
    models: list[str] = []
    for name in ("a", "b", "c"):
        models += ["--model", str(_minilm_folder()), "--name", name]
        if name == "a" and "--pinned" in flags:
            models.append("--pinned")
    extra = [flag for flag in flags if flag != "--pinned"]
    args = ["-m", "tests.ballast_server", "serve", *models, "--cache-dir", str(tmp_path), *extra]
    env = {"BALLAST_MIB": str(BALLAST_MIB), "SLOW_S": "3", "LOAD_S": "0.3"}
    process, base, log = start_command(tmp_path, args, env)
    wait_until_listening(process, base, log)
    return lambda: stop(process), base


def _minilm_folder() -> Path:
    from embedserve.models.source import resolve

    return resolve(None).files


@pytest.fixture
def two_of_three(tmp_path: Path) -> Iterator[str]:
    """A budget that holds two of the three models."""
    stopper, base = ballast_server(tmp_path, "--memory-budget", BUDGET)
    yield base
    stopper()


def embed(base: str, model: str, text: str = "hello", **more: object) -> httpx.Response:
    return httpx.post(
        f"{base}/v1/embeddings", json={"model": model, "input": text, **more}, timeout=60
    )


def loaded(base: str) -> set[str]:
    """The loaded models, as /v1/models, /api/ps and the metrics each say: all three agree
    once no load or unload is under way (asked again, briefly, while one is)."""
    for _ in range(100):
        cards = httpx.get(f"{base}/v1/models").json()["data"]
        by_cards = {card["id"] for card in cards if card["loaded"]}
        by_ps = {m["name"] for m in httpx.get(f"{base}/api/ps").json()["models"]}
        ready = {m for m in "abc" if metric(base, "embedserve_model_ready", model=m) == 1}
        if by_cards == by_ps == ready:
            return by_cards
        time.sleep(0.05)
    raise AssertionError(f"/v1/models {by_cards}, /api/ps {by_ps}, metrics {ready} disagree")


def metric(base: str, name: str, **labels: str) -> float:
    text = httpx.get(f"{base}/metrics").text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    raise AssertionError(f"no sample {name} {labels}")


def wait_for(condition: Callable[[], bool], seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "the state never came"
        time.sleep(0.05)


def test_a_budget_of_two_loads_on_demand_and_evicts_the_least_recently_used(
    two_of_three: str,
) -> None:
    base = two_of_three
    cards = httpx.get(f"{base}/v1/models").json()["data"]
    assert [(c["id"], c["loaded"]) for c in cards] == [("a", False), ("b", False), ("c", False)]
    assert all(c["memory_bytes"] > 50 * 2**20 for c in cards)  # estimated from the weights
    assert httpx.get(f"{base}/ready").status_code == 200  # each loads on its first request

    # concurrent first requests share one load
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda _: embed(base, "a"), range(8)))
    assert [r.status_code for r in answers] == [200] * 8
    assert metric(base, "embedserve_model_loads_total", model="a") == 1
    assert loaded(base) == {"a"}

    assert embed(base, "b").status_code == 200
    assert loaded(base) == {"a", "b"}
    assert embed(base, "a").status_code == 200  # a is now the more recently used
    assert embed(base, "c").status_code == 200
    assert loaded(base) == {"a", "c"}  # b, the least recently used, made room
    assert metric(base, "embedserve_model_evictions_total", model="b") == 1
    assert embed(base, "b").status_code == 200  # loads again, evicting a
    assert loaded(base) == {"b", "c"}
    assert metric(base, "embedserve_model_loads_total", model="b") == 2

    cards = {c["id"]: c for c in httpx.get(f"{base}/v1/models").json()["data"]}
    measured = cards["b"]["memory_bytes"]
    assert BALLAST_MIB * 2**20 <= measured < (BALLAST_MIB + 40) * 2**20  # measured, not guessed
    assert metric(base, "embedserve_model_memory_bytes", model="b") == measured
    assert metric(base, "embedserve_model_memory_bytes", model="a") == 0
    assert metric(base, "embedserve_memory_budget_bytes") == (BALLAST_MIB * 2 + 110) * 2**20


def test_busy_and_pinned_models_stay_and_what_cannot_fit_gets_503(tmp_path: Path) -> None:
    stopper, base = ballast_server(tmp_path, "--pinned", "--memory-budget", BUDGET)
    try:
        assert embed(base, "a").status_code == 200  # a: pinned, and the least recently used
        assert embed(base, "b").status_code == 200
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            slow = pool.submit(embed, base, "b", SLOW_TEXT)
            wait_for(lambda: metric(base, "embedserve_model_requests_in_flight", model="b") == 1)
            refused = embed(base, "c")
            assert refused.status_code == 503
            assert refused.headers["Retry-After"].isdigit()
            error = refused.json()["error"]
            assert error["code"] == "memory_budget"
            assert "310.0 MiB" in error["message"]
            assert "a (" in error["message"]
            assert "pinned" in error["message"]
            assert "b (" in error["message"]
            assert "busy" in error["message"]
            assert loaded(base) == {"a", "b"}
            assert slow.result().status_code == 200  # the request it kept was answered
        assert embed(base, "c").status_code == 200  # b is idle now: it makes room, a stays
        assert loaded(base) == {"a", "c"}
    finally:
        stopper()


def test_keep_alive_unloads_idle_models_and_ollama_sets_it_per_request(tmp_path: Path) -> None:
    stopper, base = ballast_server(tmp_path, "--keep-alive", "1s")
    try:
        for model in "abc":  # no budget: each loaded at start-up
            assert metric(base, "embedserve_model_loads_total", model=model) == 1
        wait_for(lambda: loaded(base) == set())  # idle past the keep-alive
        assert httpx.get(f"{base}/ready").status_code == 200  # unloaded, not failed

        ollama = f"{base}/api/embed"
        answer = httpx.post(ollama, json={"model": "a", "input": "hi", "keep_alive": "10m"})
        assert answer.status_code == 200
        assert answer.json()["load_duration"] > 0
        (entry,) = httpx.get(f"{base}/api/ps").json()["models"]
        assert entry["name"] == "a"
        assert entry["size"] >= BALLAST_MIB * 2**20
        expires = time.mktime(time.strptime(entry["expires_at"], "%Y-%m-%dT%H:%M:%SZ"))
        assert 500 < expires - time.mktime(time.gmtime()) <= 600  # its own 10m, not the 1s
        time.sleep(1.5)  # past the server's keep-alive: a stays by its request's
        assert loaded(base) == {"a"}

        answer = httpx.post(ollama, json={"model": "b", "input": "hi", "keep_alive": 0})
        assert answer.status_code == 200
        wait_for(lambda: loaded(base) == {"a"})  # b unloaded right after its request
        httpx.post(ollama, json={"model": "a", "input": [], "keep_alive": 0})  # `ollama stop`
        assert loaded(base) == set()
        assert metric(base, "embedserve_model_unloads_total", model="a") == 2
        assert metric(base, "embedserve_model_evictions_total", model="a") == 0

        bad = httpx.post(ollama, json={"model": "a", "input": "hi", "keep_alive": "soon"})
        assert bad.status_code == 400
        assert "keep_alive" in bad.json()["error"]
    finally:
        stopper()


def test_the_process_gives_the_memory_back_when_a_real_model_unloads(tmp_path: Path) -> None:
    process, base, log = start(tmp_path, "--cache-dir", str(tmp_path / "cache"))
    try:
        wait_until_listening(process, base, log)
        resident = psutil.Process(process.pid).memory_info
        after_unloads = []
        for _ in range(2):  # the first load also brings the runtime's one-time memory in
            answer = httpx.post(f"{base}/api/embed", json={"input": ["warm"] * 16}, timeout=300)
            assert answer.status_code == 200
            (card,) = httpx.get(f"{base}/v1/models").json()["data"]
            before = resident().rss
            httpx.post(f"{base}/api/embed", json={"input": [], "keep_alive": 0})
            wait_for(lambda: not httpx.get(f"{base}/v1/models").json()["data"][0]["loaded"])
            after_unloads.append(resident().rss)
        freed = before - after_unloads[-1]
        assert freed > card["memory_bytes"] / 2, (freed, card["memory_bytes"])
        assert after_unloads[1] < after_unloads[0] + 32 * 2**20  # nothing kept cycle on cycle
    finally:
        stop(process)
