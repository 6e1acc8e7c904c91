"""Under plain uvicorn the app wraps the host's stop-signal handlers: readiness turns to
`draining` and the host's own handler still runs."""

from __future__ import annotations

import signal
from types import FrameType

from embedserve.api.state import AppState
from embedserve.asgi import drain_on_stop_signals, uvicorn_supervisor
from embedserve.config import Settings


class HostHandler:
    """What uvicorn's Server.handle_exit stands for: records the signals it was given."""

    def __init__(self) -> None:
        self.got: list[int] = []

    def __call__(self, number: int, frame: FrameType | None) -> None:
        self.got.append(number)


def test_a_stop_signal_marks_draining_and_reaches_the_hosts_handler() -> None:
    state = AppState(Settings(), None, None)  # type: ignore[arg-type]
    host = HostHandler()
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        for sig in saved:
            signal.signal(sig, host)
        drain_on_stop_signals(state)
        assert not state.draining
        # The handlers are called as the interpreter would (raising real signals in a test
        # process that holds Ray's and the engines' native threads is not safe; the process
        # test under uvicorn sends real ones).
        installed = {}
        for sig in saved:
            handler = signal.getsignal(sig)
            assert callable(handler)
            assert handler is not host
            installed[sig] = handler
        installed[signal.SIGTERM](signal.SIGTERM, None)
        assert state.draining
        assert host.got == [signal.SIGTERM]
        installed[signal.SIGINT](signal.SIGINT, None)
        assert host.got == [signal.SIGTERM, signal.SIGINT]
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)


def test_outside_uvicorns_supervisor_there_is_none_to_stop() -> None:
    assert uvicorn_supervisor() is None  # pytest's process: no multiprocessing parent
