"""A wire format, declared once: its name, the error body it answers with (the function that
writes it and the pydantic model that documents it) and its status table. Its router and the
error responses its routes document are made from the declaration, so a wire format is one
module of parsing and formatting that decides no policy (CONTRIBUTING: "Add a wire format")."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from fastapi import APIRouter, Request
from fastapi.routing import APIRoute
from pydantic import BaseModel

from embedserve.api.errors import ErrorShape, ErrorStatus, openai_error, own_status
from embedserve.api.openai_protocol import ErrorResponse
from embedserve.api.state import AppState

CLIENT_AND_SERVER_ERRORS = (400, 401, 404, 413, 415, 429, 500, 503)
"""The statuses every route may answer with: its body, its key, its size, load, faults."""


class WireRoute(APIRoute):
    """A route of one wire format: its errors take `error_shape`, with `error_status`."""

    error_shape: ClassVar[ErrorShape] = staticmethod(openai_error)
    error_status: ClassVar[ErrorStatus] = staticmethod(own_status)


@dataclass(frozen=True)
class WireFormat:
    """How one wire format answers errors; `router()` makes its routes answer that way."""

    name: str
    """The format's tag in the API docs."""

    error_shape: ErrorShape = openai_error
    error_model: type[BaseModel] = ErrorResponse
    error_status: ErrorStatus = own_status
    """The status it answers an ApiError with (TEI answers a body it cannot use with 422)."""

    statuses: tuple[int, ...] = CLIENT_AND_SERVER_ERRORS

    def router(self, tag: str | None = None, **options: Any) -> APIRouter:
        """An APIRouter whose routes answer errors in this format (tagged `tag`, else its name)."""
        shaped = {
            "error_shape": staticmethod(self.error_shape),
            "error_status": staticmethod(self.error_status),
        }
        route_class = type(f"{self.name}Route", (WireRoute,), shaped)
        return APIRouter(route_class=route_class, tags=[tag or self.name], **options)

    @property
    def responses(self) -> dict[int | str, dict[str, Any]]:
        """The error responses its routes document: each status with the format's body."""
        return {status: {"model": self.error_model} for status in self.statuses}


OPENAI = WireFormat("OpenAI")
"""OpenAI's envelope: every /v1 route's, and the one for a path no format claims."""


def state_of(request: Request) -> AppState:
    """The app's state: its settings, its serving layer, whether it drains."""
    state: AppState = request.app.state.embedserve
    return state
