"""Serving on ONNX Runtime or OpenVINO never needs torch: the app, the loader and the tests'
own helpers import without it (torch loads only to export a model, or for its backend)."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest


def test_the_app_the_loader_and_the_test_helpers_import_without_torch() -> None:
    code = (
        "import sys\n"
        "import embedserve.api.app, embedserve.engine.loading, embedserve.cli\n"
        "import tests.conftest, tests.fakes\n"
        "heavy = sorted(m for m in ('torch', 'sentence_transformers', 'transformers') "
        "if m in sys.modules)\n"
        "print(heavy)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


@pytest.mark.process
def test_a_serving_process_on_the_cpu_never_imports_torch(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A real `embedserve serve` on the default model, started, asked, stopped: what its
    sys.modules held at exit."""
    import httpx

    from tests.processes import free_port, stop

    seen = tmp_path / "modules.txt"
    port = free_port()
    code = (
        "import atexit, runpy, sys\n"
        "def kept():\n"
        "    heavy = ('torch', 'sentence_transformers', 'transformers')\n"
        f"    open({str(seen)!r}, 'w').write(repr(sorted(m for m in heavy if m in sys.modules)))\n"
        "atexit.register(kept)\n"
        f"sys.argv = ['embedserve', 'serve', '--port', '{port}']\n"
        "runpy.run_module('embedserve', run_name='__main__')\n"
    )
    server = subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.DEVNULL)
    try:
        base = f"http://127.0.0.1:{port}"
        for _ in range(600):
            try:
                if httpx.get(f"{base}/ready", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert server.poll() is None, "the server exited"
            time.sleep(0.3)
        answer = httpx.post(f"{base}/v1/embeddings", json={"input": "a query"}, timeout=30)
        assert answer.status_code == 200
    finally:
        stop(server)
    assert server.returncode == 0
    assert seen.read_text() == "[]"
