"""ONE table from error kind to HTTP status and OpenAI error envelope."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException

from embedserve import errors
from embedserve.api.encoding import JSONBytes

log = logging.getLogger(__name__)

# error class -> (status, OpenAI error type)
STATUS: dict[type[errors.EmbedServeError], tuple[int, str]] = {
    errors.InvalidInput: (400, "invalid_request_error"),
    errors.ModelNotFound: (404, "invalid_request_error"),
    errors.Overloaded: (429, "rate_limit_error"),
    errors.QueueTimeout: (503, "service_unavailable"),
    errors.ClientGone: (499, "client_closed_request"),
    errors.UpstreamUnavailable: (502, "upstream_error"),
    errors.UpstreamTimeout: (504, "upstream_timeout"),  # logged only: nobody reads it
    errors.ModelNotReady: (503, "service_unavailable"),
    errors.ModelUnavailable: (503, "service_unavailable"),
}
_HTTP_TYPES = {401: "authentication_error", 404: "not_found_error", 405: "invalid_request_error"}


def envelope(
    status: int, message: str, kind: str, param: str | None = None, code: str | None = None
) -> JSONBytes:
    body = {"error": {"message": message, "type": kind, "param": param, "code": code}}
    return JSONBytes(body, status_code=status)


def install(app: FastAPI) -> None:
    app.add_exception_handler(errors.EmbedServeError, _domain)  # type: ignore[arg-type]
    app.add_exception_handler(RequestValidationError, _validation)  # type: ignore[arg-type]
    app.add_exception_handler(HTTPException, _http)  # type: ignore[arg-type]
    app.add_exception_handler(Exception, _fault)


async def _domain(request: Request, exc: errors.EmbedServeError) -> JSONBytes:
    status, kind = STATUS.get(type(exc), (400, "invalid_request_error"))
    response = envelope(status, exc.message, kind, exc.param, exc.code)
    if isinstance(exc, errors.Overloaded):
        response.headers["Retry-After"] = str(exc.retry_after)
        reason = "timeout" if isinstance(exc, errors.QueueTimeout) else "queue_full"
        model = getattr(request.state, "model", "")
        request.app.state.embedserve.metrics.rejected.labels(model, reason).inc()
    return response


async def _validation(request: Request, exc: RequestValidationError) -> JSONBytes:
    content_type = request.headers.get("content-type", "application/json")
    if "json" not in content_type.lower():
        return envelope(
            415,
            f"the request body must be JSON, sent with Content-Type: application/json "
            f"(got {content_type!r}; with curl add -H 'Content-Type: application/json')",
            "invalid_request_error",
            code="unsupported_media_type",
        )
    first: dict[str, Any] = exc.errors()[0]
    if first.get("type") == "json_invalid":
        return envelope(
            400,
            f"the request body is not valid JSON ({first.get('ctx', {}).get('error', 'error')})",
            "invalid_request_error",
            code="invalid_json",
        )
    loc = [str(part) for part in first.get("loc", ()) if part != "body"]
    param = loc[0] if loc else None
    if first.get("type") == "missing":
        message = f"'{param}' is required" if param else "a JSON object body is required"
    elif not loc:
        message = "the request body must be a JSON object"
    else:
        message = first.get("msg", "invalid value")
        if first.get("type") != "invalid_input":
            message = f"'{'.'.join(loc)}': {message}"
    return envelope(400, message, "invalid_request_error", param, "invalid_value")


async def _http(request: Request, exc: HTTPException) -> JSONBytes:
    if exc.status_code == 404:
        message = f"no route {request.method} {request.url.path}; see /docs for the API"
    elif exc.status_code == 405:
        message = f"method {request.method} is not allowed on {request.url.path}"
    elif exc.status_code == 400:  # FastAPI could not parse the body (e.g. nested too deeply)
        return envelope(
            400,
            "the request body could not be parsed as JSON (malformed or nested too deeply)",
            "invalid_request_error",
            code="invalid_json",
        )
    else:
        message = str(exc.detail)
    kind = _HTTP_TYPES.get(exc.status_code, "invalid_request_error")
    response = envelope(exc.status_code, message, kind)
    response.headers.update(exc.headers or {})
    return response


async def _fault(request: Request, exc: Exception) -> JSONBytes:
    return fault(request.method, request.url.path, exc)


def fault(method: str, path: str, exc: Exception) -> JSONBytes:
    """Log an unexpected error once, with its traceback; answer a 500 envelope without it."""
    log.error(
        "internal error on %s %s: %s",
        method,
        path,
        exc,
        exc_info=(type(exc), exc, exc.__traceback__),
    )
    return envelope(
        500,
        "the server had an error processing your request; it has been logged",
        "server_error",
        code="internal_error",
    )
