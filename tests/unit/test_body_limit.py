"""The body-limit middleware: whole bodies under --max-body-bytes, and a streamed path (the
upload) under its own limit and in its own words, read as it comes and never past the limit."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from embedserve.api.limits import BodyLimit, StreamedLimit
from embedserve.errors import InvalidInput, TooLarge

UPLOAD = "/v1/files"
UPLOAD_LIMIT = StreamedLimit(100, lambda: TooLarge("too big to keep", code="file_too_large"))


class Client:
    """One request through BodyLimit, its body in `chunks`; what the app read, what went back."""

    def __init__(self, chunks: list[bytes], declared: int | None = None) -> None:
        self.chunks = chunks
        self.declared = declared
        self.received = 0  # body messages the middleware or the app took
        self.sent: list[Message] = []
        self.app_read: bytes | None = None

    async def receive(self) -> Message:
        self.received += 1
        more = self.received < len(self.chunks)
        return {"type": "http.request", "body": self.chunks[self.received - 1], "more_body": more}

    async def send(self, message: Message) -> None:
        self.sent.append(message)

    async def app(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Reads the whole body, then answers 200 with its length."""
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        self.app_read = body
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": str(len(body)).encode()})

    def run(self, path: str, app: ASGIApp | None = None) -> tuple[int, Any]:
        """The status and the answer: its JSON, or its bytes for a 200."""
        headers = (
            [] if self.declared is None else [(b"content-length", str(self.declared).encode())]
        )
        scope = {"type": "http", "method": "POST", "path": path, "headers": headers}
        limited = BodyLimit(app or self.app, max_bytes=50, streamed={UPLOAD: UPLOAD_LIMIT})
        asyncio.run(limited(scope, self.receive, self.send))
        status = self.sent[0]["status"]
        body = b"".join(m.get("body", b"") for m in self.sent[1:])
        return status, (orjson.loads(body) if status != 200 else body)


def test_a_body_under_the_limit_reaches_the_app_whole() -> None:
    client = Client([b"a" * 30, b"b" * 20])
    assert client.run("/v1/embeddings") == (200, b"50")
    assert client.app_read == b"a" * 30 + b"b" * 20


def test_a_body_over_the_limit_is_refused_before_the_app_sees_it() -> None:
    for client in (Client([b"a" * 30, b"b" * 30]), Client([b"a" * 51], declared=51)):
        status, body = client.run("/v1/embeddings")
        assert status == 413
        assert body["error"]["code"] == "request_too_large"
        assert client.app_read is None


def test_the_upload_path_takes_more_than_the_body_limit_up_to_its_own() -> None:
    client = Client([b"a" * 60, b"b" * 40])
    assert client.run(UPLOAD) == (200, b"100")


def test_an_upload_declared_over_its_limit_is_refused_unread_in_its_own_words() -> None:
    client = Client([b"a" * 101], declared=101)
    status, body = client.run(UPLOAD)
    assert status == 413
    assert body["error"] == {
        "message": "too big to keep",
        "type": "invalid_request_error",
        "param": None,
        "code": "file_too_large",
    }
    assert client.received == 0
    assert client.app_read is None


def test_an_upload_streaming_past_its_limit_stops_being_read_at_the_limit() -> None:
    client = Client([b"a" * 60, b"b" * 60, b"c" * 60])  # no Content-Length
    status, body = client.run(UPLOAD)
    assert status == 413
    assert body["error"]["code"] == "file_too_large"
    assert client.received == 2  # the third chunk is never read
    assert client.app_read is None


def test_an_apps_own_error_on_the_upload_path_is_not_taken_for_the_refusal() -> None:
    async def failing(scope: Scope, receive: Receive, send: Send) -> None:
        raise InvalidInput("not a form")

    with pytest.raises(InvalidInput):
        Client([b"x"]).run(UPLOAD, failing)
