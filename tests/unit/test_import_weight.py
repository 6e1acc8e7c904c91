"""Serving on ONNX Runtime or OpenVINO never needs torch: the app, the loader and the tests'
own helpers import without it (torch loads only to export a model, or for its backend)."""

from __future__ import annotations

import subprocess
import sys


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
