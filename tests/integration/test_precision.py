"""Every precision mode against sentence-transformers, on the real packaged model."""

from __future__ import annotations

import asyncio
import importlib.util
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from embedserve.backends.calibration import CALIBRATION_MODULES, docstring_paragraphs
from embedserve.backends.onnx import OnnxBackend
from embedserve.config import Settings
from embedserve.config.settings import Precision
from embedserve.engine.batcher import coarse_width, pad
from embedserve.engine.embedder import Embedder
from embedserve.engine.loading import load_embedder
from embedserve.errors import ModelUnavailable
from embedserve.machine import cores as usable_cores
from embedserve.machine import cpu_supports_bf16, default_streams, native_int8
from embedserve.models.source import ModelSource
from tests.conftest import REAL_SENTENCES, VARIED_TEXTS, cosines, reference_vectors, resident_kib

pytestmark = pytest.mark.slow  # builds and exports models


def embed(embedder: Embedder, texts: list[str]) -> np.ndarray:
    return embedder.embed_sync(texts).vectors


def test_explicit_fp32_is_onnx_runtime_and_exact(minilm: ModelSource, reference) -> None:  # type: ignore[no-untyped-def]
    fp32 = load_embedder(minilm, Settings(precision="fp32"))
    assert isinstance(fp32.backend, OnnxBackend)
    assert fp32.backend.streams == default_streams(usable_cores())  # the machine's default
    assert 0 < fp32.batcher.limits.max_padding_tokens < 1000  # a pass's cost, timed at start
    assert not fp32.batcher.limits.coarse_widths  # no kernels per shape: exact widths
    for texts in (VARIED_TEXTS, REAL_SENTENCES):
        assert cosines(embed(fp32, texts), reference_vectors(reference, texts)).min() >= 0.9999
    fp32.close()


@pytest.mark.parametrize("backend", ["openvino", "onnx"])
def test_int8_meets_its_bar_on_real_text(minilm: ModelSource, reference, caplog, backend) -> None:  # type: ignore[no-untyped-def]
    """Without VNNI, OpenVINO's int8 kernels saturate on odd texts (0.964 measured on an AVX2
    EPYC): its bar there is lower, and auto picks ONNX Runtime for int8 on such a CPU."""
    caplog.set_level("INFO")
    int8 = load_embedder(minilm, Settings(precision="int8", backend=backend))
    assert int8.backend.kind == backend
    for texts in (REAL_SENTENCES, unseen_paragraphs()):
        cos = cosines(embed(int8, texts), reference_vectors(reference, texts))
        assert cos.mean() >= 0.99
        assert cos.min() >= 0.98
    odd = cosines(embed(int8, VARIED_TEXTS), reference_vectors(reference, VARIED_TEXTS))
    # emoji, code, one letter, empty, truncated: close too
    assert odd.min() >= (0.97 if backend == "onnx" or native_int8() else 0.95)
    assert any("precision int8: cosine vs fp32" in r.getMessage() for r in caplog.records)
    int8.close()


def unseen_paragraphs() -> list[str]:
    """Real prose of every length that int8 calibration never saw: paragraphs of other modules'
    documentation strings than the calibration set's."""
    modules = ["argparse", "json", "logging", "pathlib", "subprocess", "threading", "zipfile"]
    assert not set(modules) & set(CALIBRATION_MODULES)
    paragraphs = docstring_paragraphs(modules)
    return paragraphs[:: max(1, len(paragraphs) // 150)]


def test_int8_defaults_to_openvino_and_falls_back_to_onnx_runtime(  # type: ignore[no-untyped-def]
    minilm: ModelSource, monkeypatch, caplog
) -> None:
    """On a CPU with VNNI (faked here); without it ONNX Runtime comes first."""
    import openvino as ov

    from embedserve.backends import registry

    monkeypatch.setattr(registry, "native_int8", lambda: ())
    caplog.set_level("INFO")
    int8 = load_embedder(minilm, Settings(precision="int8"))
    assert int8.backend.kind == "onnx"
    int8.close()
    assert any("this CPU has no VNNI" in r.getMessage() for r in caplog.records)
    monkeypatch.setattr(registry, "native_int8", lambda: ("avx512_vnni",))

    configs = []
    compile_model = ov.Core.compile_model

    def spy(*args):  # type: ignore[no-untyped-def]
        configs.append(args[3])
        return compile_model(*args)

    with monkeypatch.context() as patch:
        patch.setattr(ov.Core, "compile_model", spy)
        int8 = load_embedder(minilm, Settings(precision="int8", kernel_cache=250))
    assert int8.backend.kind == "openvino"
    assert configs[-1]["CPU_RUNTIME_CACHE_CAPACITY"] == 250  # --kernel-cache reaches OpenVINO
    assert configs[-1]["INFERENCE_PRECISION_HINT"] == "f32"  # non-int8 ops: bf16 was slower
    int8.close()
    find_spec = importlib.util.find_spec  # what the OpenVINO build asks, at call time
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *args: None if name in ("openvino", "nncf") else find_spec(name, *args),
    )
    caplog.set_level("INFO")
    int8 = load_embedder(minilm, Settings(precision="int8"))
    assert int8.backend.kind == "onnx"
    int8.close()
    assert any("install embedserve[openvino]" in r.getMessage() for r in caplog.records)
    with pytest.raises(ModelUnavailable, match=r"install embedserve\[openvino\]"):
        load_embedder(minilm, Settings(precision="int8", backend="openvino"))


@pytest.mark.skipif(not cpu_supports_bf16(), reason="this CPU has no bf16 instructions")
@pytest.mark.parametrize("backend", ["auto", "torch"])
def test_bf16_on_cpu(minilm: ModelSource, reference, backend) -> None:  # type: ignore[no-untyped-def]
    bf16 = load_embedder(minilm, Settings(precision="bf16", backend=backend))
    assert bf16.backend.kind == ("openvino" if backend == "auto" else "torch")
    cos = cosines(embed(bf16, VARIED_TEXTS), reference_vectors(reference, VARIED_TEXTS))
    assert cos.mean() >= 0.999
    assert cos.min() >= 0.995
    bf16.close()


def test_openvino_fp32_is_exact(minilm: ModelSource, reference) -> None:  # type: ignore[no-untyped-def]
    fp32 = load_embedder(minilm, Settings(precision="fp32", backend="openvino"))
    assert fp32.backend.kind == "openvino"
    cos = cosines(embed(fp32, VARIED_TEXTS), reference_vectors(reference, VARIED_TEXTS))
    assert cos.min() >= 0.9999
    fp32.close()


def test_openvino_batches_take_coarse_widths_with_the_same_vectors(  # type: ignore[no-untyped-def]
    minilm: ModelSource, reference
) -> None:
    served = load_embedder(minilm, Settings(precision="fp32", backend="openvino"))
    widths: list[int] = []
    served.batcher.observers.append(lambda batch: widths.append(batch.padded_tokens // batch.rows))
    vectors = np.stack([asyncio.run(served.embed([text])).vectors[0] for text in VARIED_TEXTS])
    lengths = [len(ids) for ids in served.tokenize(VARIED_TEXTS, truncate=True)]
    assert widths == [coarse_width(n, served.max_tokens) for n in lengths]
    assert any(width > n for width, n in zip(widths, lengths, strict=True))  # padded past its own
    assert cosines(vectors, reference_vectors(reference, VARIED_TEXTS)).min() >= 0.9999
    served.close()


@pytest.mark.parametrize(("backend", "precision"), [("onnx", "fp32"), ("openvino", "int8")])
def test_streams_run_passes_at_once_with_the_same_vectors(
    minilm: ModelSource, backend: str, precision: Precision
) -> None:
    settings = Settings(backend=backend, precision=precision, streams=2, max_padding_tokens=3)
    served = load_embedder(minilm, settings)
    assert served.backend.streams == 2
    assert served.batcher.limits.max_padding_tokens == 3  # the flag's, not a timing
    batches = [[text] * 3 for text in VARIED_TEXTS]
    alone = [embed(served, texts) for texts in batches]
    with ThreadPoolExecutor(2) as pool:  # two passes at once, as the batcher's workers run them
        for _ in range(3):
            together = list(pool.map(lambda texts: embed(served, texts), batches))
            for a, b in zip(alone, together, strict=True):
                assert cosines(a, b).min() >= 0.99999
    served.close()


@pytest.mark.skipif(usable_cores() < 2, reason="one core: nothing to share out")
def test_openvino_streams_keep_a_model_on_every_core_for_a_lone_batch(minilm: ModelSource) -> None:
    served = load_embedder(minilm, Settings(backend="openvino", precision="fp32", streams=2))
    backend = served.backend
    assert backend.every_core_pass is not None
    ids, mask = pad(served.tokenizer.encode(VARIED_TEXTS), served.tokenizer.pad_id)
    assert cosines(backend.every_core_pass(ids, mask), backend.embed(ids, mask)).min() >= 0.99999
    one = load_embedder(minilm, Settings(backend="openvino", precision="fp32", streams=1))
    assert one.backend.every_core_pass is None  # its one stream is on every core already
    served.close()
    one.close()


PINNED_THREADS = """
import os, sys, threading, time
from embedserve import machine
from embedserve.config import Settings
from embedserve.engine.loading import load_embedder
from embedserve.models.source import resolve
every = os.sched_getaffinity(0)
if sys.argv[1] == "share":
    machine.use_at_most(1)  # as a Ray actor or replica of one CPU
served = load_embedder(resolve(None), Settings(backend="openvino", precision="fp32"))
stop = time.monotonic() + 2
def passes():
    while time.monotonic() < stop:
        served.embed_sync(["a pass long enough to be seen while it runs " * 20] * 8)
threading.Thread(target=passes).start()
narrowed = set()  # threads seen bound to fewer cores than the process may use, while computing
while time.monotonic() < stop:
    for task in os.listdir("/proc/self/task"):
        try:
            if len(os.sched_getaffinity(int(task))) < len(every):
                narrowed.add(task)
        except OSError:  # the thread ended
            pass
    time.sleep(0.005)
print(len(narrowed))
"""


@pytest.mark.skipif(usable_cores() < 2, reason="one core: nothing to pin apart")
def test_openvino_on_a_share_of_the_cores_leaves_its_threads_unpinned() -> None:
    """OpenVINO pins its threads while they compute, each process from the first core it may
    use: two Ray actors of one CPU each ran on one core between them (half speed each)."""

    def pinned(mode: str) -> int:
        run = subprocess.run(
            [sys.executable, "-c", PINNED_THREADS, mode], capture_output=True, text=True
        )
        assert run.returncode == 0, run.stderr[-2000:]
        return int(run.stdout.split()[-1])

    assert pinned("whole") > 0  # on the whole machine OpenVINO pins, as it does by default
    assert pinned("share") == 0


@pytest.mark.skipif(not Path("/proc/self/smaps").exists(), reason="Linux's /proc only")
def test_openvino_keeps_no_resident_copy_of_the_weights_it_repacked(
    minilm: ModelSource, tmp_path: Path
) -> None:
    """Imported from its compile cache, the compiled model maps the blob and reads every weight
    once to repack it for the CPU: those pages go back to the page cache, and what the passes
    read again (a few embedding rows) is a small part of it. A cache of its own: a page mapped
    by another model in the process stays (MADV_PAGEOUT leaves shared pages)."""
    settings = Settings(backend="openvino", precision="fp32", cache_dir=str(tmp_path))
    for _ in range(2):  # the first load compiles, then imports what it wrote; the second imports
        served = load_embedder(minilm, settings)
        served.embed_sync([*VARIED_TEXTS, *REAL_SENTENCES])
        blobs = {
            Path(line.split()[5])
            for line in Path("/proc/self/maps").read_text().splitlines()
            if line.endswith(".blob") and line.split()[5].startswith(str(tmp_path))
        }
        assert blobs  # served from the compile cache's blob
        for blob in blobs:
            assert resident_kib(blob) < blob.stat().st_size // 1024 // 4
        served.close()


@pytest.mark.skipif(usable_cores() < 2, reason="one core: nothing to share out")
def test_onnx_streams_keep_a_session_on_every_core_for_a_lone_batch(minilm: ModelSource) -> None:
    served = load_embedder(minilm, Settings(backend="onnx", streams=2))
    backend = served.backend
    assert isinstance(backend, OnnxBackend)
    options = backend.every_core_options
    assert options.intra_op_num_threads == usable_cores()
    # its threads stop spinning when a pass ends, so they leave the cores to the server
    assert options.get_session_config_entry("session.force_spinning_stop") == "1"
    assert backend.every_core_pass is not None
    ids, mask = pad(served.tokenizer.encode(VARIED_TEXTS), served.tokenizer.pad_id)
    assert cosines(backend.every_core_pass(ids, mask), backend.embed(ids, mask)).min() >= 0.99999
    served.close()


def test_torch_fp32_backend_is_exact(minilm: ModelSource, reference) -> None:  # type: ignore[no-untyped-def]
    from embedserve.backends.torch import TorchBackend

    torch_fp32 = load_embedder(minilm, Settings(backend="torch", precision="fp32"))
    assert isinstance(torch_fp32.backend, TorchBackend)
    # one pass at a time on every core, so the budget is every core's, whatever --streams says
    assert torch_fp32.batcher.limits.max_batch_tokens == min(1024 * usable_cores(), 32768)
    cos = cosines(embed(torch_fp32, VARIED_TEXTS), reference_vectors(reference, VARIED_TEXTS))
    assert cos.min() >= 0.9999
    torch_fp32.close()


def test_precisions_that_cannot_run_here_fail_clearly(minilm: ModelSource) -> None:
    from embedserve.errors import ModelUnavailable

    with pytest.raises(ModelUnavailable, match="fp16 needs a CUDA GPU"):
        load_embedder(minilm, Settings(precision="fp16", device="cpu"))
    with pytest.raises(ModelUnavailable, match="int8 runs on the CPU"):
        load_embedder(minilm, Settings(precision="int8", backend="torch"))
