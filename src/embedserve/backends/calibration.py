"""Real text for calibrating int8 activations, made offline and deterministically from the
standard library's documentation strings: whole paragraphs, first sentences and two-word
snippets, so short queries and long passages both set the ranges. None of it is in the
start-up probe set that measures the result."""

from __future__ import annotations

import importlib
import inspect
import random
import warnings
from collections.abc import Iterable

CALIBRATION_MODULES = (
    "base64",
    "bisect",
    "calendar",
    "codecs",
    "configparser",
    "contextlib",
    "copy",
    "dataclasses",
    "decimal",
    "difflib",
    "enum",
    "fractions",
    "gettext",
    "gzip",
    "hashlib",
    "heapq",
    "html.parser",
    "inspect",
    "io",
    "ipaddress",
    "itertools",
    "locale",
    "mimetypes",
    "pickle",
    "queue",
    "random",
    "selectors",
    "shlex",
    "signal",
    "smtplib",
    "socket",
    "statistics",
    "string",
    "struct",
    "tempfile",
    "textwrap",
    "typing",
    "unicodedata",
    "uuid",
    "xml.etree.ElementTree",
)


def docstring_paragraphs(modules: Iterable[str]) -> list[str]:
    """Every paragraph of three words or more in the documentation strings of `modules` and
    their members, whitespace collapsed, deduplicated and sorted."""
    paragraphs: set[str] = set()
    with warnings.catch_warnings():  # reading typing's deprecated aliases (typing.io) warns
        warnings.simplefilter("ignore", DeprecationWarning)
        for name in modules:
            for _, member in inspect.getmembers(importlib.import_module(name)):
                if callable(member) or inspect.ismodule(member):
                    for block in (inspect.getdoc(member) or "").split("\n\n"):
                        text = " ".join(block.split())
                        if len(text.split()) >= 3:
                            paragraphs.add(text)
    return sorted(paragraphs)


def calibration_texts(paragraphs: int = 200) -> list[str]:
    """`paragraphs` whole paragraphs, then half as many first sentences and as many two-word
    snippets, from further paragraphs."""
    pool = docstring_paragraphs(CALIBRATION_MODULES)
    random.Random(0).shuffle(pool)
    whole = pool[:paragraphs]
    rest = pool[paragraphs : 2 * paragraphs]
    half = len(rest) // 2
    sentences = [p.split(". ")[0] for p in rest[:half]]
    snippets = [" ".join(p.split()[:2]) for p in rest[half:]]
    return whole + sentences + snippets
