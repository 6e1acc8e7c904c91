"""Per request: an id (the client's X-Request-ID when sane, else a new one) echoed in the
response and carried by every log line; Prometheus counts and latency by route and status;
one access-log line. Pure ASGI, so streaming and disconnects pass through untouched."""

from __future__ import annotations

import logging
import re
import time
import uuid

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from embedserve.api.errors import fault
from embedserve.api.routing import route_for
from embedserve.logs import REQUEST_ID
from embedserve.serving.metrics import Metrics

log = logging.getLogger("embedserve.access")
HEADER = "X-Request-ID"
_SANE_ID = re.compile(r"[A-Za-z0-9._:\-]{1,128}")


class RequestContext:
    def __init__(self, app: ASGIApp, metrics: Metrics, access_log: bool = True) -> None:
        self.app = app
        self.metrics = metrics
        self.access_log = access_log

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = _incoming_id(scope) or uuid.uuid4().hex
        token = REQUEST_ID.set(request_id)
        started = time.perf_counter()
        status = 500
        started_response = False

        async def send_with_id(message: Message) -> None:
            nonlocal status, started_response
            if message["type"] == "http.response.start":
                status = message["status"]
                started_response = True
                MutableHeaders(scope=message).append(HEADER, request_id)
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception as exc:
            if started_response:
                raise  # nothing left to answer with: the server closes the connection
            # Answered here, with the request id in the log line; re-raised, Starlette and
            # then uvicorn would log the same traceback twice more.
            await fault(scope, exc)(scope, receive, send_with_id)
        finally:
            elapsed = time.perf_counter() - started
            route = self._route(scope)
            self.metrics.requests.labels(route, str(status)).inc()
            self.metrics.latency.labels(route).observe(elapsed)
            if self.access_log:
                client = scope.get("client") or ("-", 0)
                log.info(
                    '%s "%s %s" %d %.1fms',
                    client[0],
                    scope["method"],
                    scope["path"],
                    status,
                    elapsed * 1000,
                )
            REQUEST_ID.reset(token)

    def _route(self, scope: Scope) -> str:
        """The route template (bounded label values), also for requests refused before
        routing (401, 413); "unmatched" for paths no route serves."""
        return str(getattr(route_for(scope), "path", "unmatched"))


def _incoming_id(scope: Scope) -> str | None:
    for name, value in scope["headers"]:
        if name == b"x-request-id":
            text = value.decode("latin-1")
            return text if _SANE_ID.fullmatch(text) else None
    return None
