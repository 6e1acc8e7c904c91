"""What runs inside Ray Serve's replicas for `serve --ray`. Two deployments: the engine replicas,
each running the whole app (models, batcher, limits, keys, metrics) on its share of the cores,
and a light front that Ray's HTTP proxy sends every request to and that forwards it to an
engine replica through a handle. The front exists for the replica that dies: Ray's proxy
answers a request in flight on a dead replica with a bare text 500, where the front answers it
in the route's own error shape."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

from starlette.applications import Starlette
from starlette.routing import Mount
from starlette.types import Message, Receive, Scope, Send

from embedserve import machine
from embedserve.api.app import create_app, route_table
from embedserve.api.errors import ApiError, error_response, fault
from embedserve.api.files_routes import UPLOAD_PATH, upload_limit
from embedserve.api.limits import BodyLimit
from embedserve.config import Settings

log = logging.getLogger("embedserve")

APP = "embedserve"
ENGINE = "engine"
FRONT = "front"

# What of a request's ASGI scope crosses to the engine replica (the rest is not picklable or
# belongs to the front's own app).
_SCOPE_KEYS = (
    "type",
    "asgi",
    "http_version",
    "method",
    "scheme",
    "path",
    "raw_path",
    "query_string",
    "root_path",
    "headers",
    "client",
    "server",
)


@dataclass(frozen=True)
class Forwarded:
    scope: dict[str, Any]
    body: bytes


@dataclass(frozen=True)
class Answered:
    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes


class EngineReplica:
    """One engine replica: the app with its lifespan entered (models loaded and warmed) before
    Ray counts the replica as started, and left (batcher drained, models closed) when Ray stops
    it."""

    async def __init__(self, settings: Settings, cores: int) -> None:  # type: ignore[misc]
        machine.use_at_most(cores)
        self.app = create_app(settings)
        self._lifespan = self.app.router.lifespan_context(self.app)
        await self._lifespan.__aenter__()

    async def forward(self, request: Forwarded) -> Answered:
        """Run one HTTP request through the app in this process."""
        pending = [{"type": "http.request", "body": request.body, "more_body": False}]
        started: dict[str, Any] = {}
        chunks: list[bytes] = []

        async def receive() -> Message:
            if pending:
                return pending.pop()
            await asyncio.Event().wait()  # no disconnect to report: the call is cancelled instead
            raise AssertionError("unreachable")

        async def send(message: Message) -> None:
            if message["type"] == "http.response.start":
                started.update(message)
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))

        await self.app(dict(request.scope), receive, send)
        return Answered(started["status"], list(started.get("headers", [])), b"".join(chunks))

    async def __del__(self) -> None:
        await self._lifespan.__aexit__(None, None, None)


class Front:
    """The front's ASGI app: the body read under the server's limit, the request forwarded to an
    engine replica, and a replica lost mid-request answered as a 503 the client can retry."""

    def __init__(self, settings: Settings) -> None:
        from ray import serve

        self.engine = serve.get_deployment_handle(ENGINE, app_name=APP)
        self.routes = route_table()
        self.limited = BodyLimit(
            self._forward,
            max_bytes=settings.max_body_bytes,
            streamed={UPLOAD_PATH: upload_limit(settings)},
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # The route table, not the front's own app, decides the error shape of a path.
        scope = {key: scope[key] for key in _SCOPE_KEYS if key in scope}
        await self.limited({**scope, "app": self.routes}, receive, send)

    async def _forward(self, scope: Scope, receive: Receive, send: Send) -> None:
        body = bytearray()  # under BodyLimit's limit for the path
        while True:
            message = await receive()
            body += message.get("body", b"")
            if message["type"] != "http.request" or not message.get("more_body"):
                break
        forwarded = Forwarded({k: v for k, v in scope.items() if k != "app"}, bytes(body))
        try:
            answer: Answered = await self.engine.forward.remote(forwarded)
        except Exception as exc:
            await self._failed(scope, exc)(scope, receive, send)
            return
        await send(
            {"type": "http.response.start", "status": answer.status, "headers": answer.headers}
        )
        await send({"type": "http.response.body", "body": answer.body})

    def _failed(self, scope: Scope, exc: Exception) -> Any:
        from ray.exceptions import ActorUnavailableError, RayActorError
        from ray.serve.exceptions import BackPressureError, DeploymentUnavailableError

        if isinstance(exc, (RayActorError, ActorUnavailableError)):
            log.warning(
                "an engine replica stopped during %s %s: %s", scope["method"], scope["path"], exc
            )
            message = (
                "the replica serving this request stopped before it answered; Ray Serve is "
                "replacing it, retry the request"
            )
            return error_response(scope, _unavailable(message, "replica_lost"))
        if isinstance(exc, (BackPressureError, DeploymentUnavailableError)):
            return error_response(
                scope, _unavailable(f"no replica can take this request: {exc}", "no_replica")
            )
        return fault(scope, exc)


def _unavailable(message: str, code: str) -> ApiError:
    return ApiError(503, message, "service_unavailable", code=code, headers={"Retry-After": "1"})


def front_app(settings: Settings) -> Starlette:
    """Built in each front replica (Starlette answers the lifespan Serve runs on it)."""
    return Starlette(routes=[Mount("/", app=Front(settings))])
