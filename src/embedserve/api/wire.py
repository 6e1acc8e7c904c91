"""What a wire format declares to join the app: a router whose routes answer errors in its own
shape. A wire format is one module that parses its bodies into the serving layer's requests and
formats the results; it decides no policy."""

from __future__ import annotations

from typing import Any, ClassVar

from fastapi import APIRouter, Request
from fastapi.routing import APIRoute

from embedserve.api.errors import ErrorShape, openai_error
from embedserve.api.state import AppState


class WireRoute(APIRoute):
    """A route of one wire format: its errors take `error_shape`."""

    error_shape: ClassVar[ErrorShape] = staticmethod(openai_error)


def wire_router(error_shape: ErrorShape = openai_error, **options: Any) -> APIRouter:
    """An APIRouter for a wire format whose errors are `error_shape(ApiError)`."""
    route_class = type("WireRoute", (WireRoute,), {"error_shape": staticmethod(error_shape)})
    return APIRouter(route_class=route_class, **options)


def state_of(request: Request) -> AppState:
    """The app's state: its settings, its serving layer, whether it drains."""
    state: AppState = request.app.state.embedserve
    return state
