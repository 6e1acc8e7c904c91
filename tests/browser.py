"""A real headless Chromium for the page's tests: Debian's `chromium`, driven by Playwright
(whose own browser download cannot run on these machines). Where it is missing and the suite
runs as root on Debian (CI, a fresh machine), it is installed with apt-get, so that the README's
one test command still does it all; elsewhere the browser tests skip, saying how to install it."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

# Chromium's own background traffic off: nothing but the page's requests leaves the browser.
ARGS = [
    "--no-sandbox",
    "--headless",
    "--disable-gpu",
    "--disable-quic",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-dev-shm-usage",
]
INSTALL = "apt-get install -y chromium"


def chromium() -> str:
    """The path of a Chromium to drive, installing Debian's where the suite may."""
    found = shutil.which("chromium")
    if found:
        return found
    if os.geteuid() == 0 and shutil.which("apt-get"):
        quiet = {"DEBIAN_FRONTEND": "noninteractive", **os.environ}
        for command in (["apt-get", "update", "-qq"], [*INSTALL.split(), "-qq"]):
            done = subprocess.run(command, env=quiet, capture_output=True, timeout=900)
            if done.returncode != 0:
                pytest.fail(f"{' '.join(command)} failed:\n{done.stderr.decode()[-2000:]}")
        found = shutil.which("chromium")
        if found:
            return found
    pytest.skip(f"no chromium for the browser tests: `{INSTALL}` (Debian) installs it")
