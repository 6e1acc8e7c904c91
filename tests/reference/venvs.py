"""Venvs of pinned packages beside ours (built once, cached under ~/.cache/embedserve-tests):
the pins are installed there without their dependencies; everything else is read from this
environment, after the venv's own packages."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import sysconfig
from pathlib import Path


def reference_python(name: str, pins: tuple[str, ...]) -> Path:
    """The interpreter of the venv `name` holding `pins`, built if it is not there yet."""
    ours = sysconfig.get_paths()["purelib"]
    # The venv reads this environment's packages by path: one venv per environment, or a venv
    # built from a clone since deleted finds no numpy.
    key = hashlib.sha256(json.dumps([pins, sys.version, ours]).encode()).hexdigest()[:12]
    root = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "embedserve-tests"
    venv = root / f"{name}-{key}"
    python = venv / "bin" / "python"
    if not (venv / "ready").exists():
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
        pip = [str(python), "-m", "pip", "install", "-q", "--no-deps", *pins]
        subprocess.run(pip, check=True, timeout=600)
        site = subprocess.run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
        (Path(site) / "zz_embedserve_tests.pth").write_text(ours + "\n")
        (venv / "ready").touch()
    return python
