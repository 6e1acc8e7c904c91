"""The INSTRUCTOR reference: the InstructorEmbedding package, which needs sentence-transformers
2.2.2 and the transformers and huggingface-hub of its time, in a venv of its own (built once,
cached under ~/.cache). Those packages are installed there; the heavy ones they merely use
(torch, numpy, safetensors, ...) are read from this environment, after the venv's own."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np

from tests.reference.venvs import reference_python

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
    return reference_python("instructor", PINS)


def instructor_vectors(folder: Path, pairs: list[list[str]], scratch: Path) -> np.ndarray:
    """INSTRUCTOR(folder).encode(pairs): [[instruction, text], ...] -> unit vectors."""
    pairs_file, out = scratch / "pairs.json", scratch / "vectors.npy"
    pairs_file.write_text(json.dumps(pairs))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    command = [str(instructor_python()), str(_ENCODE), str(folder), str(pairs_file), str(out)]
    subprocess.run(command, check=True, timeout=300, env=env)
    vectors: np.ndarray = np.load(out)
    return vectors
