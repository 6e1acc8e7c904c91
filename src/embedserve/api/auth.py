"""API keys: `Authorization: Bearer <key>` on every route (health, readiness and metrics too
with --private-probes; the web page's own files excepted, which carry no data). Keys are
compared as SHA-256 digests with hmac.compare_digest against every configured key, so neither a
key's content nor its length shows in the timing."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable

from starlette.types import ASGIApp, Receive, Scope, Send

from embedserve.api.errors import ApiError, error_response
from embedserve.api.page_routes import is_page

PROBES = frozenset({"/health", "/ready", "/metrics"})


class ApiKeyAuth:
    def __init__(
        self,
        app: ASGIApp,
        keys: Iterable[str],
        public_probes: bool = True,
        public_page: bool = True,
    ) -> None:
        self.app = app
        self._digests = [hashlib.sha256(k.encode()).digest() for k in keys]
        self._open = PROBES if public_probes else frozenset()
        self._page = public_page

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self._digests or self._is_open(scope):
            await self.app(scope, receive, send)
            return
        key = bearer(scope)
        if key is not None and self.accepts(key):
            await self.app(scope, receive, send)
            return
        message = (
            "no API key: send it as 'Authorization: Bearer <key>'"
            if key is None
            else "the API key is not valid"
        )
        error = ApiError(
            401, message, code="invalid_api_key", headers={"WWW-Authenticate": "Bearer"}
        )
        await error_response(scope, error)(scope, receive, send)

    def _is_open(self, scope: Scope) -> bool:
        path = scope["path"]
        return path in self._open or (self._page and is_page(scope["method"], path))

    def accepts(self, key: str) -> bool:
        digest = hashlib.sha256(key.encode("utf-8", "surrogateescape")).digest()
        matched = False
        for known in self._digests:  # no early exit: every key is compared
            matched |= hmac.compare_digest(digest, known)
        return matched


def bearer(scope: Scope) -> str | None:
    for name, value in scope["headers"]:
        if name == b"authorization":
            scheme, _, key = value.decode("latin-1").partition(" ")
            return key.strip() if scheme.lower() == "bearer" and key.strip() else None
    return None
