"""The web page end to end, in a real headless Chromium against a real server process (MiniLM
and a cross-encoder, behind an API key): the heatmap's values are the cosines of the API's own
vectors, the ranking and the reranked ranking are in the API's order, token counts and
truncation are the tokenizer's, the compare view marks exactly the positions that moved, the
copied curl request is the request, a wrong key shows the server's 401 envelope, and the server
view's figures move under load. Every request the browser makes is checked to stay on
127.0.0.1, and screenshots at laptop and phone widths are written to test-artifacts/."""

from __future__ import annotations

import json
import math
import os
import re
import shlex
import struct
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import numpy as np
import pytest

from embedserve.models.source import ModelSource
from tests.browser import ARGS, chromium
from tests.generated import minilm_cross_encoder
from tests.processes import start, stop, wait_until_listening

pytestmark = pytest.mark.process

KEY = "sk-page-test-0123456789"
MODEL = "sentence-transformers/all-MiniLM-L6-v2"
QUERY = "How do I renew my passport?"
TEXTS = [
    "A passport can be renewed online or at a post office with a recent photo.",
    "The museum opens at nine and closes at five on weekdays.",
    "Renewal forms must be signed and sent together with the old passport. " * 30,  # truncated
    "Cats sleep for most of the day.",
    "Visa applications take about two weeks to process.",
    "Bring two passport photos and your birth certificate to the office.",
    "The train to the airport leaves every twenty minutes.",
]
ARTIFACTS = Path(
    os.environ.get("EMBEDSERVE_TEST_ARTIFACTS", Path(__file__).parents[2] / "test-artifacts")
)
LAPTOP = {"width": 1366, "height": 900}
PHONE = {"width": 390, "height": 844}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, minilm: ModelSource) -> Iterator[str]:
    cross_encoder = minilm_cross_encoder(tmp_path_factory.mktemp("cross-encoder"), minilm.files)
    args = ["--model", "all-MiniLM-L6-v2", "--model", str(cross_encoder), "--name", "ce"]
    tmp = tmp_path_factory.mktemp("server")
    args += ["--api-key", KEY, "--data-dir", str(tmp / "data")]
    process, base, log = start(tmp, *args)
    wait_until_listening(process, base, log)
    yield base
    stop(process)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    path = chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=path, args=ARGS)
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Any, server: str) -> Iterator[Any]:
    with watched_page(browser, viewport=LAPTOP) as tab:
        yield tab


@contextmanager
def watched_page(browser: Any, **options: Any) -> Iterator[Any]:
    """A fresh page whose every request is recorded; non-local ones are refused and fail the
    test, as do errors in the page's own code and Content-Security-Policy violations."""
    context = browser.new_context(**options)
    tab = context.new_page()
    requests: list[str] = []
    problems: list[str] = []
    context.route("**/*", lambda route: _local_only(route, requests))
    tab.on("pageerror", lambda error: problems.append(f"page error: {error}"))
    tab.on(
        "console",
        lambda m: problems.append(m.text) if "Content Security Policy" in m.text else None,
    )
    try:
        yield tab
    finally:
        context.close()
    hosts = {urlsplit(url).hostname for url in requests if not url.startswith("data:")}
    assert requests
    assert hosts == {"127.0.0.1"}, hosts
    assert not problems, problems


def _local_only(route: Any, requests: list[str]) -> None:
    url = route.request.url
    requests.append(url)
    if url.startswith("data:") or urlsplit(url).hostname == "127.0.0.1":
        route.continue_()
    else:
        route.abort()


def api(server: str, path: str, body: dict[str, Any]) -> Any:
    answer = httpx.post(
        f"{server}{path}", json=body, headers={"Authorization": f"Bearer {KEY}"}, timeout=60
    )
    assert answer.status_code == 200, answer.text
    return answer.json()


def vectors(
    server: str, texts: list[str], input_type: str, encoding: str, dimensions: int | None = None
) -> list[list[float]]:
    body: dict[str, Any] = {
        "model": MODEL,
        "input": texts,
        "input_type": input_type,
        "encoding_format": encoding,
    }
    if dimensions is not None:
        body["dimensions"] = dimensions
    return rows_of(api(server, "/v1/embeddings", body), encoding)


def rows_of(answer: dict[str, Any], encoding: str) -> list[list[float]]:
    """An embeddings answer's vectors in input order; binary's packed sign bits (each byte
    minus 128) as +1/-1."""
    rows = [d["embedding"] for d in sorted(answer["data"], key=lambda d: d["index"])]
    if encoding == "binary":
        rows = [
            [1 if bit else -1 for bit in np.unpackbits((np.array(r) + 128).astype(np.uint8))]
            for r in rows
        ]
    return rows


def cosine(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    return dot / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))


def ranking(scores: list[float]) -> list[int]:
    return sorted(range(len(scores)), key=lambda i: (-scores[i], i))


def open_page(page: Any, server: str, key: str = KEY) -> None:
    page.goto(f"{server}/")
    page.wait_for_selector("#key-panel:not([hidden])")  # /v1/models answered 401: asks for it
    page.fill("#api-key", key)
    page.press("#api-key", "Enter")


def embed(page: Any, texts: list[str], query: str, encoding: str = "float") -> dict[str, Any]:
    """Embed from the page; the answers it got, by the input_type of their request (vectors
    depend on the batch they were computed in, so a check compares with what the page got)."""
    answers: dict[str, Any] = {}

    def keep(response: Any) -> None:
        if response.request.method == "POST" and response.url.endswith("/v1/embeddings"):
            answers[json.loads(response.request.post_data).get("input_type", "")] = response

    page.wait_for_selector(f'#model-a option[value="{MODEL}"]', state="attached")
    page.fill("#texts", "\n".join(texts))
    page.fill("#query", query)
    page.select_option("#enc-a", encoding)
    page.evaluate("document.getElementById('heatmap').replaceChildren()")
    page.on("response", keep)
    page.click("#embed")
    page.wait_for_selector("#heatmap rect.cell", timeout=60_000)
    page.remove_listener("response", keep)
    return {kind: response.json() for kind, response in answers.items()}


def shown_ranking(page: Any, column: int) -> list[int]:
    return [
        int(i)
        for i in page.eval_on_selector_all(
            f"#rankings .column:nth-child({column}) li.rank",
            "items => items.map(i => i.dataset.index)",
        )
    ]


@pytest.mark.parametrize("encoding", ["float", "int8", "binary"])
def test_heatmap_ranking_tokens_and_rerank_are_the_apis_own(
    page: Any, server: str, encoding: str
) -> None:
    open_page(page, server)
    answers = embed(page, TEXTS, QUERY, encoding)

    cells = page.eval_on_selector_all(
        "#heatmap rect.cell",
        "cells => cells.map(c => [+c.dataset.row, +c.dataset.col, +c.dataset.value])",
    )
    assert len(cells) == len(TEXTS) ** 2
    said = {"float": "vectors as the API returned", "int8": "int8 codes", "binary": "sign bits"}
    assert said[encoding] in page.inner_text("#heatmap-of")
    docs = rows_of(answers.pop("document"), encoding)
    fresh = vectors(server, TEXTS, "document", encoding)  # the API's, in a batch of their own
    assert min(cosine(a, b) for a, b in zip(docs, fresh, strict=True)) >= 0.99
    for row, col, value in cells:
        assert value == pytest.approx(cosine(docs[row], docs[col]), abs=1e-9), (row, col)
    # Hovering a cell tells its value.
    page.hover('#heatmap rect.cell[data-row="0"][data-col="2"]')
    assert re.search(
        rf"Text 1 \u00d7 text 3: {cosine(docs[0], docs[2]):.4f}", page.inner_text("#cell-value")
    )
    page.focus('#heatmap rect.cell[data-row="4"][data-col="1"]')  # and on keyboard focus
    assert re.search(
        rf"Text 5 \u00d7 text 2: {cosine(docs[4], docs[1]):.4f}", page.inner_text("#cell-value")
    )

    (query_answer,) = answers.values()
    query = rows_of(query_answer, encoding)[0]
    scores = [cosine(query, d) for d in docs]
    assert shown_ranking(page, 1) == ranking(scores)
    api_scores = [cosine(vectors(server, [QUERY], "query", encoding)[0], d) for d in docs]
    assert scores == pytest.approx(api_scores, abs=0.01)  # the API's vectors, batched otherwise
    reranked = api(server, "/v1/rerank", {"model": "ce", "query": QUERY, "documents": TEXTS})
    assert shown_ranking(page, 2) == [r["index"] for r in reranked["results"]]

    tokens = api(server, "/tokenize", {"inputs": TEXTS, "model": MODEL, "prompt_name": "document"})
    rows = page.eval_on_selector_all(
        "#tokens tbody tr", "rows => rows.map(r => [r.dataset.tokens, r.dataset.truncated])"
    )
    assert rows == [[str(len(t)), str(len(t) > 256).lower()] for t in tokens]
    assert [r[1] for r in rows].count("true") == 1  # the long text, and only it

    usage = page.inner_text('[data-figure="usage-A"]')
    counted = api(server, "/v1/embeddings", {"input": [*TEXTS, QUERY]})["usage"]
    assert usage == f"{counted['prompt_tokens']} prompt tokens"


def test_the_copied_curl_command_is_the_request_the_page_made(page: Any, server: str) -> None:
    open_page(page, server)
    embed(page, TEXTS[:3], QUERY, "int8")
    command = page.inner_text("#code-curl").split("\n\n")[0].replace("\\\n", " ")
    words = shlex.split(command)
    assert words[:2] == ["curl", f"{server}/v1/embeddings"]
    assert "Authorization: Bearer $EMBEDSERVE_API_KEY" in words  # the key itself never shown
    body = json.loads(words[words.index("-d") + 1])
    assert body == {
        "model": MODEL,
        "input": TEXTS[:3],
        "encoding_format": "int8",
        "input_type": "document",
    }
    python = page.inner_text("#code-python")
    assert 'encoding_format="int8"' in python
    assert KEY not in python
    assert KEY not in command


def test_compare_marks_exactly_the_positions_that_changed(page: Any, server: str) -> None:
    open_page(page, server)
    page.check("#compare")
    page.select_option("#enc-b", "binary")
    page.fill("#dims-b", "16")
    embed(page, TEXTS, QUERY)

    first = vectors(server, TEXTS, "document", "float")
    second = vectors(server, TEXTS, "document", "binary", dimensions=16)
    a = ranking([cosine(vectors(server, [QUERY], "query", "float")[0], d) for d in first])
    q = vectors(server, [QUERY], "query", "binary", dimensions=16)[0]
    b = ranking([cosine(q, d) for d in second])
    assert a != b, "the two settings must rank differently for this test to mean anything"
    assert shown_ranking(page, 1) == a
    assert shown_ranking(page, 2) == b
    marks = page.eval_on_selector_all(
        "#rankings .column:nth-child(2) li.rank",
        "items => items.map(i => [i.classList.contains('moved'), +i.dataset.moved])",
    )
    assert marks == [
        [a.index(index) != position, a.index(index) - position] for position, index in enumerate(b)
    ]


def test_a_wrong_key_shows_the_servers_401_envelope_and_the_key_stays_in_memory(
    page: Any, server: str
) -> None:
    expected = httpx.get(f"{server}/v1/models", headers={"Authorization": "Bearer sk-wrong"})
    open_page(page, server, key="sk-wrong")
    # the keyless first request's 401 ("no API key") showed before: wait for the wrong key's
    page.wait_for_function(
        "message => document.getElementById('error-body').textContent.includes(message)",
        arg=expected.json()["error"]["message"],
    )
    assert page.is_visible("#error")
    assert "401" in page.inner_text("#error-title")
    shown = json.loads(page.inner_text("#error-body"))
    assert shown == expected.json()
    assert shown["error"]["code"] == "invalid_api_key"
    # Then the right key: the page works, and the key is nowhere but the page's memory.
    page.fill("#api-key", KEY)
    page.press("#api-key", "Enter")
    page.wait_for_selector(f'#model-a option[value="{MODEL}"]', state="attached")
    assert page.is_hidden("#error")
    assert page.input_value("#api-key") == ""  # not left in the form
    stored = page.evaluate(
        "JSON.stringify([localStorage, sessionStorage, document.cookie, location.href])"
    )
    assert KEY not in stored
    assert KEY not in page.content()


def test_server_view_shows_the_models_and_its_figures_move_under_load(
    page: Any, server: str
) -> None:
    open_page(page, server)
    page.focus("#tab-playground")
    page.keyboard.press("ArrowRight")  # keyboard-usable tabs
    assert page.is_visible("#server")
    assert page.is_hidden("#playground")
    page.wait_for_selector(f'#models tr[data-model="{MODEL}"]')
    cells = page.eval_on_selector_all(
        f'#models tr[data-model="{MODEL}"] td', "cells => cells.map(c => c.textContent)"
    )
    served = httpx.get(f"{server}/v1/models", headers={"Authorization": f"Bearer {KEY}"})
    served = served.json()["data"][0]  # its engine depends on the CPU
    memory = f"{round(served['memory_bytes'] / 2**20)} MiB"
    engine = [served["backend"], served["precision"]]
    assert cells == [MODEL, "embed", *engine, "384", memory, "ready"]
    page.wait_for_selector('figure[data-metric="inputs/s"]')
    before = page.get_attribute('figure[data-metric="inputs/s"]', "data-value")

    stop_load = threading.Event()

    def load() -> None:
        with httpx.Client(headers={"Authorization": f"Bearer {KEY}"}, timeout=30) as client:
            for n in range(400):  # bounded: 4 inputs/request until the page shows the traffic
                if stop_load.is_set():
                    return
                four = TEXTS[:2] + TEXTS[3:5]
                if n % 2:  # TEI's embed is on POST /, a path the page's own GET / shares
                    client.post(f"{server}/", json={"inputs": four})
                else:
                    client.post(f"{server}/v1/embeddings", json={"input": four})

    thread = threading.Thread(target=load)
    thread.start()
    try:
        page.wait_for_function(
            """() => ['inputs/s', 'requests/s', 'p50 latency', 'p99 latency'].every(name => {
                const v = +document.querySelector(`figure[data-metric="${name}"]`).dataset.value;
                return Number.isFinite(v) && v > 0; })""",
            timeout=30_000,
        )
    finally:
        stop_load.set()
        thread.join(timeout=60)

    def figure(name: str) -> float:
        return float(page.get_attribute(f'figure[data-metric="{name}"]', "data-value"))

    assert before in (None, "NaN") or float(before) == 0
    assert figure("inputs/s") == pytest.approx(4 * figure("requests/s"), rel=0.35)
    assert 0 < figure("p50 latency") <= figure("p99 latency") < 5_000


def test_the_server_view_polls_every_2_s_while_shown_and_not_once_left(
    page: Any, server: str
) -> None:
    open_page(page, server)
    for _ in range(6):  # in and out while its first scrape is still in flight
        page.click("#tab-server")
        page.click("#tab-playground")
    page.click("#tab-server")
    scrapes: list[float] = []
    page.on(
        "request",
        lambda r: scrapes.append(time.monotonic()) if r.url.endswith("/metrics") else None,
    )
    page.wait_for_timeout(7_000)
    assert 3 <= len(scrapes) <= 4, scrapes  # one loop: every 2 s
    page.click("#tab-playground")
    page.wait_for_timeout(300)
    left = len(scrapes)
    page.wait_for_timeout(4_500)
    assert len(scrapes) == left  # and none once it is left


def test_server_view_shows_a_running_batch_with_its_progress(page: Any, server: str) -> None:
    from openai import OpenAI

    client = OpenAI(base_url=f"{server}/v1", api_key=KEY, max_retries=0)
    lines = [
        {
            "custom_id": f"r{n}",
            "method": "POST",
            "url": "/v1/embeddings",
            "body": {"input": [f"{n} {TEXTS[2]}"] * 4},
        }
        for n in range(300)
    ]
    content = "\n".join(json.dumps(line) for line in lines).encode()
    upload = client.files.create(file=("page.jsonl", content), purpose="batch")
    batch = client.batches.create(
        input_file_id=upload.id, endpoint="/v1/embeddings", completion_window="24h"
    )
    try:
        open_page(page, server)
        page.click("#tab-server")
        item = f'#batches li[data-batch="{batch.id}"]'
        page.wait_for_function(
            f"""() => {{ const bar = document.querySelector('{item} progress');
                return bar && +bar.value > 0 && +bar.value < +bar.max; }}""",
            timeout=60_000,
        )
        assert page.get_attribute(f"{item} progress", "max") == "300"
        assert "in_progress" in page.inner_text(item)
        assert page.is_hidden("#batches-none")
    finally:
        client.batches.cancel(batch.id)
    page.wait_for_selector(item, state="detached", timeout=30_000)  # gone once it stops
    assert page.is_visible("#batches-none")


@pytest.mark.parametrize(
    ("name", "viewport", "scheme"), [("laptop", LAPTOP, "light"), ("phone", PHONE, "dark")]
)
def test_readable_at_laptop_and_phone_widths_light_and_dark(
    browser: Any, server: str, name: str, viewport: dict[str, int], scheme: str
) -> None:
    with watched_page(browser, viewport=viewport, color_scheme=scheme) as page:
        open_page(page, server)
        page.check("#compare")
        page.select_option("#enc-b", "binary")
        embed(page, TEXTS, QUERY)
        # Nothing wider than the screen but the heatmap, which scrolls in its own box.
        assert page.evaluate("document.documentElement.scrollWidth") <= viewport["width"]
        background = page.evaluate("getComputedStyle(document.documentElement).backgroundColor")
        dark = sum(int(c) for c in re.findall(r"\d+", background)[:3]) < 200
        assert dark == (scheme == "dark"), background
        ARTIFACTS.mkdir(exist_ok=True)
        shot = ARTIFACTS / f"page-{name}.png"
        page.screenshot(path=str(shot), full_page=True)
        page.click("#tab-server")
        page.wait_for_selector('figure[data-metric="p99 latency"]')
        page.screenshot(path=str(ARTIFACTS / f"page-{name}-server.png"), full_page=True)
        width = struct.unpack(">I", shot.read_bytes()[16:20])[0]  # the PNG header's width
        assert width == viewport["width"]
