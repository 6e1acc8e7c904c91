"""How much memory each model holds: measured when it loads (the process's resident memory
before and after, and at its peak while loading), remembered per build in the cache folder for
the next start, and estimated from its weights' files before it has ever loaded."""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

from embedserve.engine.registry import ServedModel

log = logging.getLogger("embedserve")

WEIGHT_KINDS = ((".safetensors",), (".bin",), (".onnx", ".onnx_data"), (".pt", ".pth"), (".gguf",))
"""The files of one copy of a model's weights, in the order a folder's copies are taken."""


class ModelSizes:
    """Sizes by build key, kept in `path` (a small JSON file; None keeps them in memory)."""

    def __init__(self, path: Path | None, key: Callable[[ServedModel], str]) -> None:
        self.path = path
        self._key = key
        self._keys: dict[ServedModel, str] = {}
        self._estimates: dict[ServedModel, int] = {}  # a folder read once, not each listing
        self._remembered: dict[str, dict[str, int]] = _read(path) if path else {}

    def size(self, model: ServedModel) -> int:
        """What its last load in this process measured, else what the last one remembered for
        its build measured, else an estimate. The first load in a process also carries the
        runtime's own one-time memory (its libraries, thread pools): counted while that load
        lasts, left out of the next one's measure."""
        if model.memory_bytes is not None:
            return model.memory_bytes
        remembered = self._remembered.get(self.key(model), {}).get("resident")
        if remembered is not None:
            return remembered
        if model not in self._estimates:
            self._estimates[model] = estimated_bytes(model)
        return self._estimates[model]

    def load_peak(self, model: ServedModel) -> int:
        """The most its load adds while it runs (reading and compiling the weights holds more
        than they take once loaded): measured, remembered, else its size."""
        peak = model.load_peak_bytes
        if peak is None:
            peak = self._remembered.get(self.key(model), {}).get("load_peak")
        return max(peak or 0, self.size(model))

    def key(self, model: ServedModel) -> str:
        if model not in self._keys:
            self._keys[model] = self._key(model)
        return self._keys[model]

    def measured(self, model: ServedModel) -> None:
        """Remember what `model`'s load measured, for its build's next load."""
        if model.memory_bytes is None:
            return
        key = self.key(model)
        sizes = {"resident": model.memory_bytes}
        if model.load_peak_bytes is not None:
            sizes["load_peak"] = model.load_peak_bytes
        if sizes == self._remembered.get(key):
            return
        self._remembered[key] = sizes
        if self.path is not None:
            _write(self.path, self._remembered)


def estimated_bytes(model: ServedModel) -> int:
    """A model never loaded here: the size of one copy of its weights (the folder's own files
    of the first kind it has, else its ONNX graph); an upstream's: nothing."""
    folder = model.source.folder
    if folder is None:
        return 0
    for place in (Path(folder), Path(folder) / "onnx"):
        files = [f for f in place.glob("*") if f.is_file()]
        for suffixes in WEIGHT_KINDS:
            found = [f.stat().st_size for f in files if f.suffix in suffixes]
            if found:
                return sum(found)
    return 0


def _read(path: Path) -> dict[str, dict[str, int]]:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:  # a damaged file costs estimates, not the server
        log.warning("model sizes in %s not read (%s): sizes are measured anew", path, exc)
        return {}
    return {
        str(key): {str(k): int(v) for k, v in sizes.items() if isinstance(v, int)}
        for key, sizes in data.items()
        if isinstance(sizes, dict)
    }


def _write(path: Path, sizes: dict[str, dict[str, int]]) -> None:
    """Atomically: a reader never sees half a file, two servers' writes never interleave."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False) as out:
            json.dump(sizes, out, indent=1, sort_keys=True)
        os.replace(out.name, path)
    except OSError as exc:
        log.warning("model sizes not kept in %s: %s", path, exc)
