"""The page's files as the server ships them: open without a key (they carry no data) while
POST / stays TEI's keyed embed route, under a strict Content-Security-Policy, cached by ETag,
every file the page names present, and light. In-process, with a fake backend."""

from __future__ import annotations

import re
from importlib import resources

import pytest

from embedserve.api.page_routes import CSP
from embedserve.models.source import ModelSource
from tests.fakes import EchoBackend, client_for, fake_embedder, registry_with
from tests.integration.test_operations import KEY, app_client

SHIPPED_LIMIT = 300 * 1024


def page_files() -> dict[str, bytes]:
    folder = resources.files("embedserve.web")
    return {
        f.name: f.read_bytes()
        for f in folder.iterdir()
        if f.name.endswith((".html", ".js", ".css"))
    }


async def test_the_page_and_its_files_need_no_key_but_post_root_does(minilm: ModelSource) -> None:
    _, client = app_client(minilm, api_keys=(KEY,))
    async with client:
        page = await client.get("/")
        assert page.status_code == 200, page.text
        assert page.headers["content-type"].startswith("text/html")
        assert page.headers["content-security-policy"] == CSP
        assert "script-src 'self'" in CSP
        assert "unsafe-inline" not in CSP
        script = await client.get("/ui/main.js")
        assert script.status_code == 200
        assert script.headers["content-type"].startswith("text/javascript")
        # The page's data still needs the key: POST / is TEI's embed, with TEI's error shape.
        embed = await client.post("/", json={"inputs": "hello"})
        assert embed.status_code == 401
        assert embed.json()["error"].startswith("no API key")  # TEI's shape: no "code" field
        assert set(embed.json()) == {"error", "error_type"}
        models = await client.get("/v1/models")
        assert models.status_code == 401
        assert models.json()["error"]["code"] == "invalid_api_key"


async def test_files_revalidate_by_etag_and_unknown_names_are_404_envelopes(
    minilm: ModelSource,
) -> None:
    _, client = app_client(minilm)
    async with client:
        first = await client.get("/ui/page.css")
        etag = first.headers["etag"]
        again = await client.get("/ui/page.css", headers={"If-None-Match": etag})
        assert again.status_code == 304
        assert again.content == b""
        # as a proxy or a browser may send it: weak, in a list, or *
        for sent in (f"W/{etag}", f'"other", {etag}', "*"):
            revalidated = await client.get("/ui/page.css", headers={"If-None-Match": sent})
            assert revalidated.status_code == 304, sent
        changed = await client.get("/ui/page.css", headers={"If-None-Match": '"other"'})
        assert changed.status_code == 200
        page = await client.get("/")
        assert (
            await client.get("/", headers={"If-None-Match": page.headers["etag"]})
        ).status_code == 304
        for path in ("/ui/missing.js", "/ui/__init__.py", "/ui/..%2f__init__.py"):
            missing = await client.get(path)
            assert missing.status_code == 404, path
            assert "error" in missing.json()


async def test_no_web_page_leaves_the_api_only(minilm: ModelSource) -> None:
    _, client = app_client(minilm, api_keys=(KEY,), web_page=False)
    async with client:
        for path in ("/", "/ui/main.js"):
            refused = await client.get(path)
            assert refused.status_code == 401, path  # no longer open: no page to open
            shown = await client.get(path, headers={"Authorization": f"Bearer {KEY}"})
            assert shown.status_code in (404, 405), path
        assert (
            await client.get("/v1/models", headers={"Authorization": f"Bearer {KEY}"})
        ).is_success


def test_every_file_the_page_names_is_shipped_and_the_whole_is_light() -> None:
    files = page_files()
    named = set()
    for body in files.values():
        text = body.decode()
        named |= set(re.findall(r"""(?:src|href)="/ui/([\w.-]+)\"""", text))
        named |= set(re.findall(r"""from "\./([\w.-]+)\"""", text))
    assert named
    assert named <= set(files), named - set(files)
    assert {"index.html", "main.js"} <= set(files)
    assert sum(len(b) for b in files.values()) < SHIPPED_LIMIT
    for name, body in files.items():
        text = body.decode()
        # Nothing fetched from elsewhere; no inline code for the CSP to refuse.
        assert not re.search(r"""(src|href)=["']https?:""", text), name
        assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", text), name  # inline code
        assert not re.search(r"""\son[a-z]+\s*=\s*["']""", text), name  # inline handlers
        assert "javascript:" not in text, name
        assert " style=" not in text, name


@pytest.mark.parametrize("model", [None, "sentence-transformers/all-MiniLM-L6-v2"])
async def test_tokenize_takes_a_served_model_by_name(
    minilm: ModelSource, model: str | None
) -> None:
    client = client_for(registry_with(minilm, fake_embedder(minilm, EchoBackend()), strict=True))
    async with client:
        body = {"inputs": ["hello world"], "model": model}
        answer = await client.post("/tokenize", json=body)
        assert answer.status_code == 200, answer.text
        assert [t["text"] for t in answer.json()[0]] == ["[CLS]", "hello", "world", "[SEP]"]
        unknown = await client.post("/tokenize", json={"inputs": ["hi"], "model": "nope"})
        assert unknown.status_code == 404
        assert set(unknown.json()) == {"error", "error_type"}
