"""How far a faster precision mode strays from fp32, measured at start-up on real sentences."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from embedserve.backends.base import Backend
from embedserve.engine.batcher import pad
from embedserve.engine.embedder import scaled_rows
from embedserve.models.tokenizer import ModelTokenizer

log = logging.getLogger(__name__)

PROBE_TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "What is the capital of France?",
    "Paris is the capital and most populous city of France.",
    "How do I reset my password if I no longer have access to my email?",
    "Photosynthesis converts light energy into chemical energy stored in glucose.",
    "The central bank raised interest rates by a quarter of a percentage point on Tuesday.",
    "def add(a, b):\n    return a + b",
    "SELECT name, email FROM customers WHERE signup_date > '2024-01-01';",
    "I loved this movie, the acting was superb and the soundtrack unforgettable.",
    "Terrible service. We waited an hour and the food arrived cold.",
    "Mount Everest is Earth's highest mountain above sea level.",
    "Symptoms of the flu include fever, cough, sore throat and fatigue.",
    "Der schnelle braune Fuchs springt über den faulen Hund.",
    "La tour Eiffel a été construite pour l'Exposition universelle de 1889.",
    "The mitochondria is the powerhouse of the cell.",
    "Quarterly revenue grew 12% year over year, driven by cloud subscriptions.",
    "To install the package, run pip install and restart the kernel.",
    "She sells seashells by the seashore.",
    "A transformer encoder maps a sequence of tokens to contextual vectors.",
    "Return policy: items can be returned within 30 days with a receipt.",
    "hello",
    "Breaking: heavy rain expected across the northern regions this weekend, "
    "with flood warnings issued for several rivers and advice to avoid unnecessary travel.",
    "The patient was prescribed 500 mg of amoxicillin three times daily for seven days.",
    "Neural networks learn representations by adjusting weights through backpropagation, "
    "minimizing a loss function over many examples drawn from the training distribution.",
]

# Each faster mode must stay this close to fp32 (mean, min cosine over the probe texts).
BARS = {"int8": (0.99, 0.98), "bf16": (0.999, 0.995), "fp16": (0.9999, 0.999)}


@dataclass(frozen=True)
class Fidelity:
    mean: float
    min: float


def measure(reference: Backend, candidate: Backend, tokenizer: ModelTokenizer) -> Fidelity:
    ids, mask = pad(tokenizer.encode(PROBE_TEXTS), tokenizer.pad_id)
    a, b = scaled_rows(reference.embed(ids, mask)), scaled_rows(candidate.embed(ids, mask))
    cos = (a * b).sum(axis=1)
    return Fidelity(mean=float(cos.mean()), min=float(cos.min()))


def report(precision: str, fidelity: Fidelity) -> bool:
    """Log the figures; shout when the mode misses its bar. True when it meets it."""
    mean_bar, min_bar = BARS.get(precision, (0.9999, 0.9999))
    ok = fidelity.mean >= mean_bar and fidelity.min >= min_bar
    line = (
        f"precision {precision}: cosine vs fp32 on {len(PROBE_TEXTS)} probe texts "
        f"mean {fidelity.mean:.5f}, min {fidelity.min:.5f} (bar: mean >= {mean_bar}, "
        f"min >= {min_bar})"
    )
    if ok:
        log.info(line)
    else:
        log.error(
            "!" * 20 + " " + line + ": BELOW THE BAR, embeddings may hurt retrieval " + "!" * 20
        )
    return ok
