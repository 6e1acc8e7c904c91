"""The Batch API's state for one app: its store, opened at start-up where the data folder has
one (so that unfinished batches resume) and created on first use otherwise (a server that never
sees a batch writes nothing), and the runner that works through the batches."""

from __future__ import annotations

import os
from pathlib import Path

from embedserve.batches.runner import BatchRunner, Execute
from embedserve.batches.store import Store
from embedserve.config import Settings
from embedserve.serving.metrics import Metrics


def default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "embedserve"


class Batches:
    def __init__(self, settings: Settings, execute: Execute, metrics: Metrics) -> None:
        self.settings = settings
        self.folder = Path(settings.data_dir) if settings.data_dir else default_data_dir()
        self.execute = execute
        self.metrics = metrics
        self._store: Store | None = None
        self.runner: BatchRunner | None = None

    def start(self) -> None:
        """Resume what the data folder holds, if it holds anything (in the running loop)."""
        if Store.exists(self.folder):
            self.store()

    def store(self) -> Store:
        if self._store is None:
            self._store = Store(self.folder)
            self.metrics.batches.clear()
            if self.settings.batch_workers:
                self.runner = BatchRunner(
                    self._store,
                    self.execute,
                    self.settings.batch_workers,
                    on_request=self.metrics.batch_request,
                    max_inputs=self.settings.batch_max_inputs,
                )
                self.runner.start()
        return self._store

    def retention_s(self) -> int | None:
        days = self.settings.file_retention_days
        return int(days * 86400) if days else None

    def count(self) -> None:
        """Batches by status into the metrics (before they are rendered)."""
        if self._store is not None:
            self.metrics.count_batches(self._store.count_by_status())

    async def close(self) -> None:
        """Stop the runner and close the store (an app started again opens them again)."""
        if self.runner is not None:
            await self.runner.close()
            self.runner = None
        if self._store is not None:
            self._store.close()
            self._store = None
