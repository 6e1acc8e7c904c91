"""ONE table from error kind to HTTP status, and the handlers that answer every error in the
shape of the wire format whose route it reached (the OpenAI envelope where none is known)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.types import Scope

from embedserve import errors
from embedserve.api.encoding import JSONBytes
from embedserve.api.routing import allowed_methods, route_for

log = logging.getLogger(__name__)

# error class -> (status, OpenAI error type); a subclass takes its nearest listed ancestor's.
# An EmbedServeError listed nowhere is a fault of ours: a 500, never a 400.
STATUS: dict[type[errors.EmbedServeError], tuple[int, str]] = {
    errors.InvalidInput: (400, "invalid_request_error"),
    errors.ModelNotFound: (404, "invalid_request_error"),
    errors.NotFound: (404, "invalid_request_error"),
    errors.TooLarge: (413, "invalid_request_error"),
    errors.Overloaded: (429, "rate_limit_error"),
    errors.QueueTimeout: (503, "service_unavailable"),
    errors.OverBudget: (503, "service_unavailable"),
    errors.ClientGone: (499, "client_closed_request"),
    errors.UpstreamUnavailable: (502, "upstream_error"),
    errors.UpstreamTimeout: (504, "upstream_timeout"),  # logged only: nobody reads it
    errors.ModelNotReady: (503, "service_unavailable"),
    errors.ModelUnavailable: (503, "service_unavailable"),
    errors.MissingDependency: (500, "server_error"),
}
_HTTP_TYPES = {401: "authentication_error", 404: "not_found_error", 405: "invalid_request_error"}


@dataclass(frozen=True)
class ApiError:
    """An error to answer, before a wire format gives it its shape."""

    status: int
    message: str
    kind: str = "invalid_request_error"
    """OpenAI's error type: invalid_request_error, rate_limit_error, server_error, ..."""

    param: str | None = None
    code: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)


ErrorShape = Callable[[ApiError], Any]
"""A wire format's error body for an ApiError."""

ErrorStatus = Callable[[ApiError], int]
"""A wire format's status for an ApiError (TEI answers a bad body with 422, not 400)."""


def own_status(error: ApiError) -> int:
    return error.status


def openai_error(error: ApiError) -> dict[str, Any]:
    """OpenAI's envelope: {"error": {"message", "type", "param", "code"}}."""
    return {
        "error": {
            "message": error.message,
            "type": error.kind,
            "param": error.param,
            "code": error.code,
        }
    }


def error_response(scope: Scope, error: ApiError) -> JSONBytes:
    """`error` in the shape of the wire format whose route `scope` reached (or would)."""
    route = route_for(scope)
    shape: ErrorShape = getattr(route, "error_shape", openai_error)
    status: ErrorStatus = getattr(route, "error_status", own_status)
    response = JSONBytes(shape(error), status_code=status(error))
    response.headers.update(error.headers)
    return response


def from_domain(exc: errors.EmbedServeError) -> ApiError:
    """The status and type of a domain error, from the table."""
    for cls in type(exc).__mro__:
        if cls in STATUS:
            status, kind = STATUS[cls]
            headers = {}
            if isinstance(exc, errors.Overloaded):
                headers["Retry-After"] = str(exc.retry_after)
            return ApiError(status, exc.message, kind, exc.param, exc.code, headers)
    raise LookupError(type(exc).__name__)


def install(app: FastAPI) -> None:
    app.add_exception_handler(errors.EmbedServeError, _domain)  # type: ignore[arg-type]
    app.add_exception_handler(RequestValidationError, _validation)  # type: ignore[arg-type]
    app.add_exception_handler(HTTPException, _http)  # type: ignore[arg-type]
    app.add_exception_handler(Exception, _fault)


async def _domain(request: Request, exc: errors.EmbedServeError) -> JSONBytes:
    try:
        error = from_domain(exc)
    except LookupError:
        return fault(request.scope, exc)
    if error.status == 500:  # ours, and the message says what to do about it: one line
        log.error("%s %s: %s", request.method, request.url.path, error.message)
    return error_response(request.scope, error)


async def _validation(request: Request, exc: RequestValidationError) -> JSONBytes:
    return error_response(request.scope, validation_error(request, exc))


def validation_error(request: Request, exc: RequestValidationError) -> ApiError:
    """What was wrong with the body, as one message a client can act on (never FastAPI's 422)."""
    content_type = request.headers.get("content-type", "application/json")
    if "json" not in content_type.lower():
        return ApiError(
            415,
            f"the request body must be JSON, sent with Content-Type: application/json "
            f"(got {content_type!r}; with curl add -H 'Content-Type: application/json')",
            code="unsupported_media_type",
        )
    return body_error(exc.errors())


def body_error(problems: Sequence[Any]) -> ApiError:
    """The first of pydantic's problems with a JSON body, as one message."""
    first: dict[str, Any] = problems[0]
    if first.get("type") == "json_invalid":
        return ApiError(
            400,
            f"the request body is not valid JSON ({first.get('ctx', {}).get('error', 'error')})",
            code="invalid_json",
        )
    loc = [str(part) for part in first.get("loc", ()) if part != "body"]
    param = loc[0] if loc else None
    if first.get("type") == "missing":
        message = f"'{'.'.join(loc)}' is required" if loc else "a JSON object body is required"
    elif first.get("type") in _WHOLE_MESSAGES:  # ours, naming the fields (one, or several)
        message = first.get("msg", "invalid value")
    elif not loc:
        message = "the request body must be a JSON object"
    else:
        message = f"'{'.'.join(loc)}': {first.get('msg', 'invalid value')}"
    code = "empty_input" if first.get("type") == "empty_input" else "invalid_value"
    return ApiError(400, message, param=param, code=code)


_WHOLE_MESSAGES = ("invalid_input", "empty_input")
"""Our validators' error types, whose messages name the field themselves."""


async def _http(request: Request, exc: HTTPException) -> JSONBytes:
    if exc.status_code == 404:
        message = f"no route {request.method} {request.url.path}; see /docs for the API"
    elif exc.status_code == 405:
        message = f"method {request.method} is not allowed on {request.url.path}"
    elif exc.status_code == 400:  # FastAPI could not parse the body (e.g. nested too deeply)
        error = ApiError(
            400,
            "the request body could not be parsed as JSON (malformed or nested too deeply)",
            code="invalid_json",
        )
        return error_response(request.scope, error)
    else:
        message = str(exc.detail)
    kind = _HTTP_TYPES.get(exc.status_code, "invalid_request_error")
    headers = dict(exc.headers or {})
    if exc.status_code == 405:  # every method the path takes, not only the first route's
        headers["Allow"] = ", ".join(allowed_methods(request.scope))
    error = ApiError(exc.status_code, message, kind, headers=headers)
    return error_response(request.scope, error)


async def _fault(request: Request, exc: Exception) -> JSONBytes:
    return fault(request.scope, exc)


def fault(scope: Scope, exc: Exception) -> JSONBytes:
    """Log an unexpected error once, with its traceback; answer a 500 without it."""
    log.error(
        "internal error on %s %s: %s",
        scope.get("method"),
        scope.get("path"),
        exc,
        exc_info=(type(exc), exc, exc.__traceback__),
    )
    error = ApiError(
        500,
        "the server had an error processing your request; it has been logged",
        "server_error",
        code="internal_error",
    )
    return error_response(scope, error)
