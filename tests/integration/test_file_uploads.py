"""Uploads to /v1/files in-process: a well-formed form is kept; what the client got wrong is a
400 that says what; a part of the server that is not installed is a 500 that says what to
install, never a 4xx that blames the request."""

from __future__ import annotations

import logging
from pathlib import Path

import httpx
import pytest
import tomllib

from embedserve.api import files_routes
from embedserve.config import Settings
from embedserve.models.source import ModelSource
from tests.fakes import EchoBackend, client_for, fake_embedder, registry_with

LINE = b'{"custom_id": "a", "method": "POST", "url": "/v1/embeddings", "body": {"input": "x"}}\n'


def uploads(minilm: ModelSource, tmp_path: Path) -> httpx.AsyncClient:
    registry = registry_with(minilm, fake_embedder(minilm, EchoBackend()))
    return client_for(registry, Settings(data_dir=str(tmp_path / "data")))


async def test_a_multipart_upload_is_kept(minilm: ModelSource, tmp_path: Path) -> None:
    async with uploads(minilm, tmp_path) as client:
        sent = await client.post(
            "/v1/files", files={"file": ("r.jsonl", LINE)}, data={"purpose": "batch"}
        )
        assert sent.status_code == 200, sent.text
        file_id = sent.json()["id"]
        assert sent.json()["bytes"] == len(LINE)
        content = await client.get(f"/v1/files/{file_id}/content")
    assert content.content == LINE


async def test_a_body_that_is_not_a_form_is_told_to_send_one(
    minilm: ModelSource, tmp_path: Path
) -> None:
    async with uploads(minilm, tmp_path) as client:
        sent = await client.post("/v1/files", json={"file": "r.jsonl", "purpose": "batch"})
    assert sent.status_code == 400
    assert "multipart/form-data" in sent.json()["error"]["message"]
    assert "application/json" in sent.json()["error"]["message"]


async def test_a_broken_form_is_a_400_about_the_form(minilm: ModelSource, tmp_path: Path) -> None:
    headers = {"content-type": "multipart/form-data; boundary=xyz"}
    body = b"--xyz\r\nContent-Type: text/plain\r\n\r\nbatch\r\n--xyz--\r\n"  # a part without a name
    async with uploads(minilm, tmp_path) as client:
        sent = await client.post("/v1/files", content=body, headers=headers)
    assert sent.status_code == 400
    message = sent.json()["error"]["message"]
    assert message.startswith("the upload is not a valid multipart form")
    assert '"name"' in message
    assert "JSON" not in message


async def test_without_python_multipart_an_upload_is_the_servers_fault(
    minilm: ModelSource,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setattr(files_routes, "MULTIPART_INSTALLED", False)
    with caplog.at_level(logging.ERROR):
        async with uploads(minilm, tmp_path) as client:
            sent = await client.post(
                "/v1/files", files={"file": ("r.jsonl", LINE)}, data={"purpose": "batch"}
            )
    assert sent.status_code == 500
    error = sent.json()["error"]
    assert (error["type"], error["code"]) == ("server_error", "missing_dependency")
    assert "python-multipart" in error["message"]
    logged = [r.getMessage() for r in caplog.records if "python-multipart" in r.getMessage()]
    assert len(logged) == 1
    assert "/v1/files" in logged[0]


def test_the_install_carries_python_multipart() -> None:
    """The package's own dependencies name it: the test extras must not be what brings it."""
    pyproject = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())
    assert any(d.startswith("python-multipart") for d in pyproject["project"]["dependencies"])
