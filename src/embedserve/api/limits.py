"""Request-body size limits, enforced while the body streams in (Content-Length or not)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from embedserve.api.errors import ApiError, error_response, from_domain
from embedserve.errors import EmbedServeError


@dataclass(frozen=True)
class StreamedLimit:
    """A path whose route streams its body (an upload, to disk) under a limit of its own: the
    most bytes it may read, and the route's error past them."""

    max_bytes: int
    refusal: Callable[[], EmbedServeError]


class BodyLimit:
    """Bodies are read whole (under `max_bytes`) before the route sees them, except on
    `streamed` paths, whose bodies pass through as they come, counted against their own limit."""

    def __init__(
        self, app: ASGIApp, max_bytes: int, streamed: Mapping[str, StreamedLimit] | None = None
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.streamed = dict(streamed or {})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        own = self.streamed.get(scope["path"])
        if own is not None:
            await self._streamed(own, scope, receive, send)
            return
        if _declared(scope) > self.max_bytes:
            await self._reject(scope, receive, send)
            return
        messages: list[Message] = []
        size = 0
        while True:
            message = await receive()
            messages.append(message)
            size += len(message.get("body", b""))
            if size > self.max_bytes:
                await self._reject(scope, receive, send)
                return
            if message["type"] != "http.request" or not message.get("more_body"):
                break

        async def replay() -> Message:
            return messages.pop(0) if messages else await receive()

        await self.app(scope, replay, send)

    async def _streamed(
        self, limit: StreamedLimit, scope: Scope, receive: Receive, send: Send
    ) -> None:
        """A body declared over the limit is refused unread; one that goes over it as it streams
        fails the app's read with the refusal, which the app's route answers (or, if the app
        lets it through, this does)."""
        if _declared(scope) > limit.max_bytes:
            await error_response(scope, from_domain(limit.refusal()))(scope, receive, send)
            return
        seen = 0
        refusal = limit.refusal()  # this request's: only it is answered here

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > limit.max_bytes:
                raise refusal
            return message

        try:
            await self.app(scope, counted, send)
        except EmbedServeError as exc:
            if exc is not refusal:
                raise
            await error_response(scope, from_domain(exc))(scope, receive, send)

    async def _reject(self, scope: Scope, receive: Receive, send: Send) -> None:
        error = ApiError(
            413,
            f"the request body is larger than this server's limit of {self.max_bytes} bytes "
            f"(--max-body-bytes); send fewer or shorter inputs per request",
            code="request_too_large",
        )
        await error_response(scope, error)(scope, receive, send)


def _declared(scope: Scope) -> int:
    """The body's declared length, or -1 where none (or no number) is declared."""
    declared = dict(scope["headers"]).get(b"content-length", b"")
    return int(declared) if declared.isdigit() else -1
