"""What a wire format declares to join the app: a router whose routes answer errors in its own
shape. A wire format is one module that parses its bodies into the serving layer's requests and
formats the results; it decides no policy."""

from __future__ import annotations

from typing import Any, ClassVar

from fastapi import APIRouter, Request
from fastapi.routing import APIRoute

from embedserve.api.errors import ErrorShape, ErrorStatus, openai_error, own_status
from embedserve.api.state import AppState


class WireRoute(APIRoute):
    """A route of one wire format: its errors take `error_shape`, with `error_status`."""

    error_shape: ClassVar[ErrorShape] = staticmethod(openai_error)
    error_status: ClassVar[ErrorStatus] = staticmethod(own_status)


def wire_router(
    error_shape: ErrorShape = openai_error, error_status: ErrorStatus = own_status, **options: Any
) -> APIRouter:
    """An APIRouter for a wire format whose errors are `error_shape(ApiError)`, answered with
    `error_status(ApiError)`."""
    shaped = {"error_shape": staticmethod(error_shape), "error_status": staticmethod(error_status)}
    route_class = type("WireRoute", (WireRoute,), shaped)
    return APIRouter(route_class=route_class, **options)


def state_of(request: Request) -> AppState:
    """The app's state: its settings, its serving layer, whether it drains."""
    state: AppState = request.app.state.embedserve
    return state
