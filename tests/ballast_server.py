"""A real server process whose models are fakes of a known size: `python -m tests.ballast_server
serve <embedserve's flags>`. Each load allocates BALLAST_MIB of resident memory (freed when the
model is) after LOAD_S seconds; a pass over an input longer than 64 tokens takes SLOW_S
seconds, so that a test can hold a request in flight. Settings, app and uvicorn are the real
ones: only the models' loader is fake."""

from __future__ import annotations

import os
import sys
import time

import numpy as np
import uvicorn

from embedserve.api.app import create_app
from embedserve.cli import parse
from embedserve.engine.loading import build_registry
from embedserve.engine.registry import Service
from embedserve.logs import configure
from embedserve.models.source import ModelSource
from tests.fakes import EchoBackend, fake_embedder

BALLAST_MIB = int(os.environ.get("BALLAST_MIB", "100"))
LOAD_S = float(os.environ.get("LOAD_S", "0.3"))
SLOW_S = float(os.environ.get("SLOW_S", "3"))


class BallastBackend(EchoBackend):
    """An echo backend holding BALLAST_MIB of touched memory; slow on long inputs."""

    def __init__(self) -> None:
        super().__init__()
        self.ballast = np.ones(BALLAST_MIB * 2**20 // 8)  # ones: every page is resident

    def embed(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        if input_ids.shape[1] > 64:
            time.sleep(SLOW_S)
        return super().embed(input_ids, attention_mask)


def load(source: ModelSource) -> Service:
    time.sleep(LOAD_S)  # a load long enough for concurrent first requests to meet in it
    return fake_embedder(source, BallastBackend())


def main() -> None:
    _, settings = parse(sys.argv[1:])
    configure(settings.log_level, settings.log_format)
    app = create_app(settings, build_registry(settings, loader=load))
    uvicorn.run(app, host=settings.host, port=settings.port, log_config=None)


if __name__ == "__main__":
    main()
