"""A request-body size limit, enforced while the body streams in (Content-Length or not)."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from embedserve.api.errors import ApiError, error_response


class BodyLimit:
    """Bodies are read whole (under the limit) before the route sees them, except on `streamed`
    paths, whose routes stream the body to disk under a limit of their own."""

    def __init__(
        self, app: ASGIApp, max_bytes: int, streamed: frozenset[str] = frozenset()
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.streamed = streamed

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self.streamed:
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
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

    async def _reject(self, scope: Scope, receive: Receive, send: Send) -> None:
        error = ApiError(
            413,
            f"the request body is larger than this server's limit of {self.max_bytes} bytes "
            f"(--max-body-bytes); send fewer or shorter inputs per request",
            code="request_too_large",
        )
        await error_response(scope, error)(scope, receive, send)
