"""Benchmark texts, made offline and deterministically.

Short texts: query-like sentences. The mixed corpus: real English prose of varied length, the
paragraphs of the standard library's own documentation strings (a few words to several hundred
tokens, as a RAG ingestion job sends them).
"""

from __future__ import annotations

import random

from embedserve.backends.calibration import docstring_paragraphs

_SUBJECTS = ["the invoice", "my account", "the train", "our API", "this recipe", "the patient"]
_VERBS = ["was delayed", "needs review", "looks broken", "works again", "was updated", "is missing"]
_TAILS = ["today", "after the update", "for the third time", "since Monday", "in production"]


def short_texts(count: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [
        f"Why {rng.choice(_SUBJECTS)} {rng.choice(_VERBS)} {rng.choice(_TAILS)} #{i}"
        for i in range(count)
    ]


_MODULES = [
    "argparse",
    "asyncio",
    "collections",
    "csv",
    "datetime",
    "email",
    "functools",
    "http.client",
    "json",
    "logging",
    "os",
    "pathlib",
    "re",
    "shutil",
    "sqlite3",
    "subprocess",
    "tarfile",
    "threading",
    "unittest",
    "urllib.request",
    "zipfile",
]


def mixed_corpus(count: int, seed: int = 0) -> list[str]:
    unique = docstring_paragraphs(_MODULES)
    rng = random.Random(seed)
    rng.shuffle(unique)
    out = unique[:count]
    while len(out) < count:  # join paragraphs into longer passages if the docs run short
        out.append(" ".join(rng.sample(unique, 3)))
    return out


def documents(count: int, seed: int = 0) -> list[str]:
    """An ingestion corpus of any size: the docstring paragraphs, then passages of one to three
    of them, so lengths stay mixed (a sentence to past the model's maximum) however many."""
    unique = docstring_paragraphs(_MODULES)
    rng = random.Random(seed)
    out = list(unique[:count])
    while len(out) < count:
        out.append(" ".join(rng.sample(unique, rng.choice((1, 1, 2, 3)))))
    return out
