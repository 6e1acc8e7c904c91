from __future__ import annotations

import atexit
import itertools
import os
import shutil
import tempfile
import threading
import weakref

# Tests never reach a model hub: everything loads from packaged files.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# One ONNX export per test session, shared by in-process tests and the server processes; the
# tests' own tiktoken (LangChain's, the references') reads its data from there too.
os.environ["EMBEDSERVE_CACHE_DIR"] = tempfile.mkdtemp(prefix="embedserve-test-cache-")
os.environ["TIKTOKEN_CACHE_DIR"] = os.path.join(os.environ["EMBEDSERVE_CACHE_DIR"], "tiktoken")
# The Batch API's default data folder: never the user's own, where a server would resume batches.
os.environ["XDG_DATA_HOME"] = os.path.join(os.environ["EMBEDSERVE_CACHE_DIR"], "data")

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from embedserve.config import Settings
from embedserve.engine.batcher import Batcher
from embedserve.engine.embedder import Embedder
from embedserve.engine.openai_tokens import prepare_tiktoken_cache
from embedserve.models.source import ModelSource, resolve

prepare_tiktoken_cache()
atexit.register(shutil.rmtree, os.environ["EMBEDSERVE_CACHE_DIR"], ignore_errors=True)


# Every batcher a test makes is closed when the scope that made it ends (the test, its module,
# the session), and none of their threads may outlive the session: a leaked batcher is two or
# more threads for the rest of the run (hundreds were seen), and a thread left at the end means
# a batcher that does not stop when closed.
_BATCHERS: weakref.WeakValueDictionary[int, Batcher] = weakref.WeakValueDictionary()
_MADE = itertools.count(1)
_batcher_init = Batcher.__init__


def _tracked_init(self: Batcher, *args: object, **kwargs: object) -> None:
    _batcher_init(self, *args, **kwargs)  # type: ignore[arg-type]
    _BATCHERS[next(_MADE)] = self


Batcher.__init__ = _tracked_init  # type: ignore[method-assign]


def _mark() -> int:
    """A number below every batcher made from now on."""
    return next(_MADE)


def _close_batchers_made_after(mark: int) -> None:
    for number, batcher in sorted(_BATCHERS.items()):
        if number > mark:
            batcher.close()


@pytest.fixture(autouse=True, scope="session")
def _no_batcher_thread_outlives_the_session() -> Iterator[None]:
    mark = _mark()
    yield
    _close_batchers_made_after(mark)
    left = [t.name for t in threading.enumerate() if t.name.startswith("embedserve-")]
    assert not left, f"batcher threads still running after the session: {left}"


@pytest.fixture(autouse=True, scope="module")
def _module_closes_its_batchers() -> Iterator[None]:
    mark = _mark()
    yield
    _close_batchers_made_after(mark)


@pytest.fixture(autouse=True)
def _test_closes_its_batchers() -> Iterator[None]:
    mark = _mark()
    yield
    _close_batchers_made_after(mark)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test that starts a real process is slow too."""
    for item in items:
        if item.get_closest_marker("process"):
            item.add_marker(pytest.mark.slow)


def pytest_collection_finish(session: pytest.Session) -> None:
    """Torch (~2 s, ~700 MB) only for a run with slow tests: a quick one loads it only where a
    test compares with sentence-transformers or exports a model."""
    if any(item.get_closest_marker("slow") for item in session.items):
        # With torch loaded, ONNX builds run in this process instead of in child processes that
        # would each load torch again (test_onnx_cache checks the child-process path on its own).
        import torch  # noqa: F401


@pytest.fixture(scope="session")
def minilm() -> ModelSource:
    """The packaged default model, found through its package."""
    return resolve(None)


@pytest.fixture(scope="session")
def reference(minilm: ModelSource):  # type: ignore[no-untyped-def]
    """sentence-transformers' own model: the ground truth for every fidelity check."""
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(minilm.files), device="cpu")


@pytest.fixture(scope="session")
def embedder(minilm: ModelSource) -> Embedder:
    """The real embedder on the packaged model, loaded once per test session."""
    from embedserve.engine.loading import load_embedder

    return load_embedder(minilm, Settings())


def reference_vectors(reference, texts: list[str]) -> np.ndarray:  # type: ignore[no-untyped-def]
    return np.asarray(reference.encode(texts, normalize_embeddings=True), dtype=np.float32)


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return np.asarray((a * b).sum(axis=1))


VARIED_TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "",
    "   \t\n  ",
    "naïve café, Zürich, 東京, Москва, नमस्ते, 🙂🚀",
    "def fib(n):\n    return n if n < 2 else fib(n - 1) + fib(n - 2)\n",
    "SELECT id, name FROM users WHERE created_at > NOW() - INTERVAL '1 day';",
    "a",
    "Mixed CASE and   irregular    spacing\u00a0with\u200bzero-width",
    "word " * 600,  # far over the 256-token maximum: truncated
    "https://example.com/path?q=1&r=two#frag <b>html</b> &amp; entities",
]


REAL_SENTENCES = [
    "How do I renew my passport before an international trip?",
    "Passport renewals take six to eight weeks; expedited service is available for a fee.",
    "The stock market closed higher after the central bank signalled a pause in rate hikes.",
    "Our refund policy allows returns within 30 days of purchase with a valid receipt.",
    "Can I bring my dog on the train?",
    "Small pets in carriers travel free; larger dogs need a ticket and must be leashed.",
    "Regular exercise lowers the risk of heart disease, stroke and type 2 diabetes.",
    "The committee will meet on Thursday to review the annual budget proposal.",
    "Python lists are mutable, while tuples cannot be changed after creation.",
    "Rain is forecast for the weekend, with temperatures falling below freezing at night.",
    "The novel follows a young detective investigating a series of thefts in Victorian London.",
    "Install the dependencies, copy the example configuration and start the service.",
    "Customers reported that the mobile app crashes when uploading large photos.",
    "Vaccines train the immune system to recognize and fight specific pathogens.",
    "The bridge was closed for repairs after inspectors found cracks in its supports.",
    "What are the side effects of ibuprofen?",
]


@pytest.fixture
def tmp_cache(tmp_path: Path) -> Path:
    return tmp_path / "tiktoken"


@pytest.fixture
def ray_dir() -> Iterator[Path]:
    """A Ray cluster's files for one test: short, as Ray's socket paths must fit in 107 bytes."""
    folder = Path(tempfile.mkdtemp(prefix="ray-", dir="/tmp"))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def resident_kib(path: Path) -> int:
    """KiB of this process's mappings of `path` that are resident (/proc/self/smaps)."""
    total, current = 0, False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        fields = line.split()
        if fields and "-" in fields[0] and not fields[0].endswith(":"):
            current = len(fields) > 5 and fields[5] == str(path)
        elif current and fields[0] == "Rss:":
            total += int(fields[1])
    return total
