"""How a route hands its work to the serving layer and its answer to the client: the work is
cancelled (its queued sequences freed) when the client goes away, and a large body is
serialized off the event loop."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

import orjson
from fastapi import Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError
from starlette.responses import Response

from embedserve import stages
from embedserve.api.encoding import JSONBytes, render_json
from embedserve.errors import ClientGone

T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)
_INLINE_FLOATS = 32_768  # bodies with more numbers than this are serialized on a thread


async def unless_client_leaves(request: Request, work: Coroutine[Any, Any, T]) -> T:
    """Run `work` in this task, cancelling it if the client disconnects first (one watcher
    task beside it, not a task for the work too and a wait over both)."""
    task = asyncio.current_task()
    assert task is not None
    gone = False

    async def watch() -> None:
        nonlocal gone
        await _disconnected(request)
        gone = True
        task.cancel()

    watcher = asyncio.ensure_future(watch())
    try:
        return await work
    except asyncio.CancelledError:
        if not gone:
            raise  # cancelled from outside (the server stopping): not ours to answer
        if hasattr(task, "uncancel") and task.uncancel() > 0:
            raise  # Python 3.11+: cancelled from outside too, which must reach its canceller
        raise ClientGone("the client disconnected before its answer was ready") from None
    finally:
        watcher.cancel()


async def _disconnected(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def json_response(content: Any, numbers: int, status_code: int = 200) -> Response:
    """`content` as JSON; `numbers` (how many floats it holds) decides where it is rendered."""
    recording = stages.current()
    started_ns = stages.now_if(recording)
    response: Response
    if numbers < _INLINE_FLOATS:
        response = JSONBytes(content, status_code=status_code)
    else:
        body = await asyncio.to_thread(render_json, content)
        response = Response(body, status_code=status_code, media_type="application/json")
    if recording is not None:
        recording.add("serialize", started_ns, floats=numbers)
    return response


async def json_body(request: Request) -> Any:
    """The request's JSON body, for a route that chooses its body model by the body's fields."""
    try:
        return orjson.loads(await request.body())
    except orjson.JSONDecodeError as exc:
        problem = {"type": "json_invalid", "loc": ("body",), "msg": "", "ctx": {"error": str(exc)}}
        raise RequestValidationError([problem]) from None


def validated(model: type[M], payload: Any) -> M:
    """`payload` as `model`, its problems answered as FastAPI's own body validation is."""
    try:
        return model.model_validate(payload)
    except ValidationError as exc:
        raise RequestValidationError(exc.errors()) from None
