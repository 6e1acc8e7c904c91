"""A route's work is cancelled when its client goes (ClientGone, a 499 in the log), and a
cancellation from outside (the server stopping) reaches whoever asked for it, even when the
client goes in the same turn of the loop."""

from __future__ import annotations

import asyncio
import sys

import pytest
from starlette.requests import Request

from embedserve.api.calls import unless_client_leaves
from embedserve.errors import ClientGone


def request_that_leaves(gone: asyncio.Event) -> Request:
    """A request whose client disconnects when `gone` is set."""

    async def receive() -> dict[str, object]:
        await gone.wait()
        return {"type": "http.disconnect"}

    return Request({"type": "http", "method": "POST", "headers": []}, receive)


async def test_the_work_is_cancelled_when_the_client_goes() -> None:
    gone, cancelled = asyncio.Event(), asyncio.Event()

    async def work() -> str:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return "never"

    route = asyncio.ensure_future(unless_client_leaves(request_that_leaves(gone), work()))
    await asyncio.sleep(0.01)
    gone.set()
    with pytest.raises(ClientGone):
        await asyncio.wait_for(route, 5)
    assert cancelled.is_set()  # the work stopped (its queued sequences freed)


async def test_the_answer_comes_when_the_client_stays() -> None:
    async def work() -> str:
        await asyncio.sleep(0.01)
        return "vectors"

    assert await unless_client_leaves(request_that_leaves(asyncio.Event()), work()) == "vectors"


@pytest.mark.skipif(sys.version_info < (3, 11), reason="3.10 counts no cancellations")
async def test_a_cancellation_from_outside_is_not_taken_for_the_client_leaving() -> None:
    """The server stops (the route's task cancelled) in the same turn as the client goes: the
    cancellation must reach the server, not turn into ClientGone."""
    gone = asyncio.Event()

    async def work() -> str:
        await asyncio.sleep(30)
        return "never"

    route = asyncio.ensure_future(unless_client_leaves(request_that_leaves(gone), work()))
    await asyncio.sleep(0.01)
    gone.set()  # the watcher cancels the route on its next step...
    await asyncio.sleep(0)
    route.cancel()  # ...and the server does too, before the route has run again
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(route, 5)
