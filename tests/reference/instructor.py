"""The INSTRUCTOR reference: the InstructorEmbedding package, which needs sentence-transformers
2.2.2 and the transformers and huggingface-hub of its time, in a venv of its own (built once,
cached under ~/.cache). Those packages are installed there; the heavy ones they merely use
(torch, numpy, safetensors, ...) are read from this environment, after the venv's own."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import numpy as np

PINS = (
    "InstructorEmbedding==1.0.1",
    "sentence-transformers==2.2.2",
    "transformers==4.40.2",
    "tokenizers==0.19.1",
    "huggingface-hub==0.23.5",
)
_ENCODE = Path(__file__).with_name("instructor_encode.py")


def instructor_python() -> Path:
    """The reference venv's interpreter, building the venv if it is not there yet."""
    ours = sysconfig.get_paths()["purelib"]
    # The venv reads this environment's packages by path: one venv per environment, or a venv
    # built from a clone since deleted finds no numpy.
    key = hashlib.sha256(json.dumps([PINS, sys.version, ours]).encode()).hexdigest()[:12]
    root = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "embedserve-tests"
    venv = root / f"instructor-{key}"
    python = venv / "bin" / "python"
    if not (venv / "ready").exists():
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
        pip = [str(python), "-m", "pip", "install", "-q", "--no-deps", *PINS]
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


def instructor_vectors(folder: Path, pairs: list[list[str]], scratch: Path) -> np.ndarray:
    """INSTRUCTOR(folder).encode(pairs): [[instruction, text], ...] -> unit vectors."""
    pairs_file, out = scratch / "pairs.json", scratch / "vectors.npy"
    pairs_file.write_text(json.dumps(pairs))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    command = [str(instructor_python()), str(_ENCODE), str(folder), str(pairs_file), str(out)]
    subprocess.run(command, check=True, timeout=300, env=env)
    vectors: np.ndarray = np.load(out)
    return vectors
