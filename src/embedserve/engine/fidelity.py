"""How far a precision other than fp32 strays from the fp32 graph, measured at start-up on a
probe set of every kind of input; and the bar that makes a mode "exact"."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from embedserve.backends.base import Backend
from embedserve.backends.packing import PackedBatch, fill_rows, lay_out, packed_passes
from embedserve.engine.batcher import pad
from embedserve.engine.vectors import scaled_rows
from embedserve.models.tokenizer import ModelTokenizer

log = logging.getLogger(__name__)

_LONG = (
    "The committee reviewed the proposal in detail, weighing the costs of construction, the "
    "expected demand over the next decade, the environmental assessments and the objections "
    "raised at the public hearings, before it voted to send the plan back for revision. "
)
REAL_TEXT = [
    # real sentences, short and medium, a little code and two other languages: the bar of an
    # explicitly chosen faster mode (BARS) is judged on these
    "The quick brown fox jumps over the lazy dog.",
    "What is the capital of France?",
    "Paris is the capital and most populous city of France.",
    "How do I reset my password if I no longer have access to my email?",
    "Photosynthesis converts light energy into chemical energy stored in glucose.",
    "The central bank raised interest rates by a quarter of a percentage point on Tuesday.",
    "I loved this movie, the acting was superb and the soundtrack unforgettable.",
    "Terrible service. We waited an hour and the food arrived cold.",
    "Mount Everest is Earth's highest mountain above sea level.",
    "Symptoms of the flu include fever, cough, sore throat and fatigue.",
    "The mitochondria is the powerhouse of the cell.",
    "Quarterly revenue grew 12% year over year, driven by cloud subscriptions.",
    "To install the package, run pip install and restart the kernel.",
    "She sells seashells by the seashore.",
    "A transformer encoder maps a sequence of tokens to contextual vectors.",
    "Return policy: items can be returned within 30 days with a receipt.",
    "Breaking: heavy rain expected across the northern regions this weekend, "
    "with flood warnings issued for several rivers and advice to avoid unnecessary travel.",
    "The patient was prescribed 500 mg of amoxicillin three times daily for seven days.",
    "Neural networks learn representations by adjusting weights through backpropagation, "
    "minimizing a loss function over many examples drawn from the training distribution.",
    "def add(a, b):\n    return a + b",
    "SELECT name, email FROM customers WHERE signup_date > '2024-01-01';",
    "Der schnelle braune Fuchs springt über den faulen Hund.",
    "La tour Eiffel a été construite pour l'Exposition universelle de 1889.",
    "hello",
]
PROBE_TEXTS = [
    *REAL_TEXT,
    # long inputs, truncated to the model's maximum
    _LONG * 12,
    "word " * 600,
    "data science " * 300,
    # code
    "for (int i = 0; i < n; ++i) { total += values[i] * weights[i]; }",
    '{"id": 42, "tags": ["alpha", "beta"], "active": true}',
    # other scripts
    "東京は日本の首都であり、世界有数の大都市です。",
    "Москва — столица России и крупнейший город страны.",
    "नमस्ते, आप कैसे हैं?",
    "مرحبا بكم في المكتبة العامة",
    "naïve café, Zürich, 東京, Москва, 🙂🚀",
    # near-empty and odd
    "",
    " ",
    "a",
    "?",
    "🙂",
    "https://example.com/path?q=1&r=two#frag",
]

EXACT = 0.9999
"""The cosine to fp32 every probe text must reach for a mode to count as exact."""

# Each explicitly chosen mode must stay this close to fp32 (mean, min cosine over REAL_TEXT).
BARS = {"int8": (0.99, 0.98), "bf16": (0.999, 0.995), "fp16": (0.9999, 0.999)}


@dataclass(frozen=True)
class Fidelity:
    mean: float
    min: float
    texts: int = len(PROBE_TEXTS)

    @property
    def exact(self) -> bool:
        return self.min >= EXACT

    def summary(self) -> str:
        return f"mean {self.mean:.6f}, min {self.min:.6f} over {self.texts} probe texts"


def measure(
    reference: Backend,
    candidate: Backend,
    tokenizer: ModelTokenizer,
    texts: Sequence[str] = PROBE_TEXTS,
) -> Fidelity:
    """Cosines of the candidate's vectors to the reference's on every probe text (batched by
    length, so the long ones do not pad the short). A candidate that runs packed batches gets
    them as it is served: every probe text packed beside others in rows of the longest's
    width."""
    sequences = sorted(tokenizer.encode(texts), key=len)
    packed = packed_passes(candidate)
    expected, got = [], []
    for group in _by_length(sequences):
        ids, mask = pad(group, tokenizer.pad_id)
        expected.append(reference.embed(ids, mask))
        if packed is None:
            got.append(candidate.embed(ids, mask))
    a = scaled_rows(np.concatenate(expected))
    b = scaled_rows(_packed(packed[0], sequences) if packed else np.concatenate(got))
    every = (a * b).sum(axis=1)
    return Fidelity(mean=float(every.mean()), min=float(every.min()), texts=len(every))


_GROUP_TOKENS = 1024
"""Padded tokens a probe pass may hold: the long probe texts are not padded beside short ones
(groups of 8 padded Qwen3-Embedding's 2,158 probe tokens to 4,664, 20 s of its first start)."""


def _by_length(sequences: list[list[int]]) -> list[list[list[int]]]:
    """`sequences` (sorted by length) in groups of at most 8 and _GROUP_TOKENS padded tokens
    (a longer sequence alone)."""
    groups: list[list[list[int]]] = []
    for sequence in sequences:
        last = groups[-1] if groups else None
        if last and len(last) < 8 and (len(last) + 1) * len(sequence) <= _GROUP_TOKENS:
            last.append(sequence)
        else:
            groups.append([sequence])
    return groups


def _packed(run: Callable[[PackedBatch], np.ndarray], sequences: list[list[int]]) -> np.ndarray:
    """Vectors of `sequences` (sorted by length) from packed passes, in their order."""
    longest_first = sequences[::-1]
    width = len(longest_first[0])
    rows = fill_rows([len(s) for s in longest_first], width, len(sequences))
    vectors = run(lay_out([[longest_first[i] for i in row] for row in rows], width))
    out = np.empty_like(vectors)
    out[[len(sequences) - 1 - i for row in rows for i in row]] = vectors
    return out


def report(precision: str, fidelity: Fidelity) -> bool:
    """Log the figures; shout when the mode misses its bar. True when it meets it."""
    mean_bar, min_bar = BARS.get(precision, (EXACT, EXACT))
    ok = fidelity.mean >= mean_bar and fidelity.min >= min_bar
    line = (
        f"precision {precision}: cosine vs fp32 {fidelity.summary()} (bar: mean >= {mean_bar}, "
        f"min >= {min_bar})"
    )
    if ok:
        log.info(line)
    else:
        log.error(
            "!" * 20 + " " + line + ": BELOW THE BAR, embeddings may hurt retrieval " + "!" * 20
        )
    return ok


class Verdicts:
    """Probe verdicts kept beside the builds (`<cache>/verdicts/`), keyed by everything that
    decides them, so that a warm start does not probe again unless something changed."""

    def __init__(self, cache_root: Path) -> None:
        self.folder = cache_root / "verdicts"

    @staticmethod
    def key(*parts: object) -> str:
        texts = hashlib.sha256(json.dumps([PROBE_TEXTS, EXACT]).encode()).hexdigest()
        return hashlib.sha256(json.dumps([texts, *map(str, parts)]).encode()).hexdigest()

    def get(self, key: str) -> Fidelity | None:
        try:
            found = json.loads((self.folder / f"{key[:32]}.json").read_text())
            if found.pop("key") == key:
                return Fidelity(**found)
        except (OSError, ValueError, KeyError, TypeError):
            pass
        return None

    def put(self, key: str, fidelity: Fidelity) -> None:
        """Keep a verdict; one that cannot be written (a read-only cache) is only probed again
        next time."""
        target = self.folder / f"{key[:32]}.json"
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            partial = target.with_suffix(f".{os.getpid()}.tmp")
            partial.write_text(json.dumps({"key": key, **asdict(fidelity)}))
            partial.replace(target)
        except OSError as exc:
            log.warning("cannot keep the probe's verdict in %s (%s)", self.folder, exc)
