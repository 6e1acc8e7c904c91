"""What a backend factory is asked to build."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, get_args

from embedserve.config import Precision


@dataclass(frozen=True)
class BackendSpec:
    """What a factory is asked to build: one model's backend, at one precision, on one device."""

    files: Path
    model_id: str
    precision: Precision
    device: str
    cores: int
    """Cores this process may use, counted once (machine.cores) and shared out by the backend."""

    streams: int
    """Forward passes the caller may run at once."""

    cache_root: Path
    kernel_cache: int | None = None
    """OpenVINO's kernel cache entries; None: its default for the precision."""

    pools_instruction: bool = True
    """False: the graph must read UNPOOLED marks (INSTRUCTOR models)."""

    trust_remote_code: bool = False
    """The model's folder ships code that loading it runs, and the user allowed it."""

    short_lived: bool = False
    """Built for one measurement (the start-up probe's reference) and dropped after it: its
    memory must go with it, not stay in an arena that serving shares."""

    def precision_of(self, computes: Any) -> Any:
        """The precision, checked against the Literal of those a backend computes in (its
        constructor's type): the registry's rules keep others away, and this says so if not."""
        if self.precision not in get_args(computes):
            allowed = ", ".join(get_args(computes))
            raise ValueError(f"{self.model_id}: asked for {self.precision}; computes in {allowed}")
        return self.precision
