"""--precision auto: the fastest mode whose vectors are exact. bf16 on OpenVINO where the CPU
computes it natively and the probe proves it exact (every probe text within 0.9999 of fp32),
else fp32 on ONNX Runtime; the verdict is kept with the builds."""

from __future__ import annotations

import json
import shutil
import uuid
import weakref
from dataclasses import replace

import pytest

from embedserve import machine
from embedserve.backends.calibration import docstring_paragraphs
from embedserve.backends.onnx import OnnxBackend
from embedserve.config import Settings
from embedserve.engine import loading
from embedserve.engine.embedder import Embedder
from embedserve.engine.fidelity import Fidelity, measure
from embedserve.engine.loading import load_embedder
from embedserve.models.source import ModelSource, resolve
from tests.conftest import REAL_SENTENCES, VARIED_TEXTS, cosines, reference_vectors

pytestmark = pytest.mark.slow  # builds and probes models

WITH_BF16 = frozenset({"avx512f", "avx512_bf16", "amx_bf16"})
WITHOUT_BF16 = frozenset({"avx2", "avx512f"})


def varied_corpus() -> list[str]:
    """Texts of every kind and length: real prose of other modules' docstrings than the
    calibration's, sentences, code, other scripts, near-empty and over-long inputs."""
    prose = docstring_paragraphs(["argparse", "json", "logging", "pathlib", "zipfile"])[::2]
    code = [
        "import numpy as np\nx = np.linspace(0, 1, 50)\nprint(x.mean())",
        "SELECT a.id, COUNT(*) FROM orders a JOIN items b ON a.id = b.order_id GROUP BY a.id;",
        "<div class='card'><h2>Title</h2><p>Body text &amp; more</p></div>",
    ]
    scripts = [
        "北京是中华人民共和国的首都。",
        "สวัสดีครับ ยินดีที่ได้รู้จัก",
        "안녕하세요, 만나서 반갑습니다.",
        "Привет, как дела? Всё хорошо.",
        "שלום עולם",
    ]
    odd = ["", ".", "ok", "🙂🙂🙂", "1234567890", "A" * 3000, "lorem ipsum " * 400]
    return [*VARIED_TEXTS, *REAL_SENTENCES, *prose, *code, *scripts, *odd]


@pytest.fixture
def fresh_cpu(monkeypatch: pytest.MonkeyPatch) -> str:
    """A CPU no verdict was cached for (so that a test's verdicts are its own)."""
    identity = f"test-cpu-{uuid.uuid4().hex}"
    monkeypatch.setattr(machine, "cpu_identity", lambda: identity)
    return identity


async def test_the_default_is_exact_on_every_kind_of_input(embedder: Embedder, reference) -> None:  # type: ignore[no-untyped-def]
    texts = varied_corpus()
    assert len(texts) > 150
    expected = reference_vectors(reference, texts)
    alone = embedder.embed_sync(texts).vectors  # one pass, a text a row
    assert cosines(alone, expected).min() >= 0.9999
    served = (await embedder.embed(texts)).vectors  # as requests get them: packed where it packs
    assert cosines(served, expected).min() >= 0.9999
    if machine.native_bf16():  # the CPU computes bf16 natively: auto chose it, proven exact
        assert (embedder.kind, embedder.precision) == ("openvino", "bf16")
        assert "this CPU computes bf16 natively" in embedder.selection
        assert "every probe text is within 0.9999 of fp32" in embedder.selection
    else:
        assert (embedder.kind, embedder.precision) == ("onnx", "fp32")
        assert "no bf16 instructions" in embedder.selection


def test_without_native_bf16_auto_serves_fp32_on_onnx_runtime(  # type: ignore[no-untyped-def]
    minilm: ModelSource, monkeypatch, caplog
) -> None:
    monkeypatch.setattr(machine, "cpu_flags", lambda: WITHOUT_BF16)
    caplog.set_level("INFO")
    served = load_embedder(minilm, Settings())
    assert (served.kind, served.precision) == ("onnx", "fp32")
    assert served.selection == (
        "precision auto: fp32 on ONNX Runtime: this CPU has no bf16 instructions "
        "(AVX512-BF16 or AMX); use fp32 or int8"
    )
    assert any(served.selection in m for m in caplog.messages)  # the start-up log says it too
    served.close()


def test_a_probe_that_fails_falls_back_to_fp32_with_the_figures(  # type: ignore[no-untyped-def]
    minilm: ModelSource, reference, monkeypatch, caplog, fresh_cpu
) -> None:
    monkeypatch.setattr(machine, "cpu_flags", lambda: WITH_BF16)
    monkeypatch.setattr(loading, "measure", lambda *a: Fidelity(0.999990, 0.999712, 40))
    caplog.set_level("INFO")
    served = load_embedder(minilm, Settings())
    assert (served.kind, served.precision) == ("onnx", "fp32")
    expected = (
        "bf16 on OpenVINO fell short of fp32 on a probe text "
        "(mean 0.999990, min 0.999712 over 40 probe texts)"
    )
    assert served.selection == f"precision auto: fp32 on ONNX Runtime: {expected}"
    warned = [r for r in caplog.records if r.levelname == "WARNING" and expected in r.getMessage()]
    assert warned
    vectors = served.embed_sync(REAL_SENTENCES).vectors
    assert cosines(vectors, reference_vectors(reference, REAL_SENTENCES)).min() >= 0.9999
    served.close()


def test_the_verdict_is_kept_with_the_builds_until_what_decides_it_changes(  # type: ignore[no-untyped-def]
    minilm: ModelSource, monkeypatch, fresh_cpu, tmp_path
) -> None:
    monkeypatch.setattr(machine, "cpu_flags", lambda: WITH_BF16)
    probes: list[Fidelity] = []

    def counted(*args):  # type: ignore[no-untyped-def]
        probes.append(measure(*args))
        return probes[-1]

    monkeypatch.setattr(loading, "measure", counted)
    first = load_embedder(minilm, Settings())
    assert len(probes) == 1
    assert first.selection.endswith("measured now)")
    first.close()
    second = load_embedder(minilm, Settings())
    assert len(probes) == 1  # the verdict came from the cache, with the build
    assert second.selection.endswith("measured before)")
    assert (second.kind, second.precision) == (first.kind, first.precision)
    second.close()
    monkeypatch.setattr(machine, "cpu_identity", lambda: f"{fresh_cpu}-another-cpu")
    load_embedder(minilm, Settings()).close()
    assert len(probes) == 2  # another CPU: probed again
    shorter = tmp_path / "shorter"
    shutil.copytree(minilm.files, shorter)
    config = shorter / "sentence_bert_config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "max_seq_length": 128}))
    load_embedder(resolve(str(shorter)), Settings()).close()
    assert len(probes) == 3  # the same graph, but probe texts cut elsewhere: probed again
    monkeypatch.setattr(loading, "serves_packed", lambda *a: False)
    load_embedder(minilm, Settings()).close()
    assert len(probes) == 4  # a padded graph's verdict is not a packed one's


def test_the_probes_fp32_reference_is_released_once_the_mode_is_proven(  # type: ignore[no-untyped-def]
    minilm: ModelSource, monkeypatch, fresh_cpu
) -> None:
    """The probe builds the fp32 padded graph only to prove bf16 exact: once start-up is over,
    nothing holds it (its weights and arena would be resident for nothing)."""
    from embedserve.backends import registry

    monkeypatch.setattr(machine, "cpu_flags", lambda: WITH_BF16)
    onnx = registry.BACKENDS["onnx"]
    references: list[weakref.ref[object]] = []
    arenas: list[bool] = []

    def spy(spec):  # type: ignore[no-untyped-def]
        built = onnx.build(spec)
        references.append(weakref.ref(built))
        # its own memory, not the arena serving shares (which keeps what it grew to)
        assert isinstance(built, OnnxBackend)
        arenas.append(built._session.get_session_options().enable_cpu_mem_arena)
        return built

    monkeypatch.setitem(registry.BACKENDS, "onnx", replace(onnx, build=spy))
    served = load_embedder(minilm, Settings())
    try:
        assert (served.kind, served.precision) == ("openvino", "bf16")
        assert "measured now" in served.selection
        assert len(references) == 1  # the probe's reference was built ...
        assert arenas == [False]
        assert references[0]() is None  # ... and is gone, without waiting for a collection
        assert served.embed_sync(["still served"]).vectors.shape == (1, 384)
    finally:
        served.close()


def test_a_negative_verdict_skips_building_the_mode_next_time(  # type: ignore[no-untyped-def]
    minilm: ModelSource, monkeypatch, fresh_cpu
) -> None:
    from embedserve.backends import registry

    monkeypatch.setattr(machine, "cpu_flags", lambda: WITH_BF16)
    monkeypatch.setattr(loading, "measure", lambda *a: Fidelity(0.99999, 0.9990, 40))
    load_embedder(minilm, Settings()).close()
    built: list[str] = []
    openvino = registry.BACKENDS["openvino"]

    def spy(spec):  # type: ignore[no-untyped-def]
        built.append(spec.precision)
        return openvino.build(spec)

    monkeypatch.setitem(registry.BACKENDS, "openvino", replace(openvino, build=spy))
    again = load_embedder(minilm, Settings())
    assert built == []  # known not to be exact here: not even built
    assert (again.kind, again.precision) == ("onnx", "fp32")
    assert "measured before" in again.selection
    again.close()


def test_an_explicit_precision_is_served_as_asked(minilm: ModelSource) -> None:
    """--precision fp32 stays ONNX Runtime's fp32, bf16 available or not."""
    fp32 = load_embedder(minilm, Settings(precision="fp32"))
    assert (fp32.kind, fp32.precision, fp32.selection) == (
        "onnx",
        "fp32",
        "precision fp32: fp32 on ONNX Runtime: as asked",
    )
    fp32.close()
