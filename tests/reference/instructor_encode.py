"""Run inside the INSTRUCTOR reference venv: encode [instruction, text] pairs with the
InstructorEmbedding package. Arguments: model folder, pairs JSON file, output .npy file."""

import json
import sys

import numpy as np
import sentence_transformers
from InstructorEmbedding import INSTRUCTOR

assert sentence_transformers.__version__ == "2.2.2", sentence_transformers.__version__
folder, pairs_file, out = sys.argv[1:4]
with open(pairs_file, encoding="utf-8") as f:
    pairs = json.load(f)
model = INSTRUCTOR(folder, device="cpu")
np.save(out, model.encode(pairs, batch_size=4))
