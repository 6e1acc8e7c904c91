"""Backend selection: one table of rules, and a backend added to the registry is one entry,
selectable by name like the shipped ones."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from embedserve.backends import registry
from embedserve.backends.registry import BACKENDS, BackendEntry, choose
from embedserve.backends.spec import BackendSpec
from embedserve.config import PrecisionSetting, Settings
from embedserve.engine.loading import build_registry, load_embedder
from embedserve.errors import ModelUnavailable
from embedserve.models.source import ModelSource
from tests.fakes import EchoBackend


class Built(EchoBackend):
    """An echo backend that keeps the spec it was built from."""

    def __init__(self, spec: BackendSpec) -> None:
        super().__init__(dimension=12)
        self.spec = spec


def test_a_backend_added_to_the_registry_is_selectable_by_name(
    minilm: ModelSource, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(BACKENDS, "echo", BackendEntry(Built, ("cpu",), ("fp32",)))
    from embedserve.cli import parse_settings

    settings = parse_settings(["serve", "--backend", "echo", "--device", "cpu"], {})
    build_registry(settings)  # a known name: no error before loading
    embedder = load_embedder(minilm, settings, cores=3)
    backend = embedder.backend
    assert isinstance(backend, Built)
    assert (backend.spec.precision, backend.spec.device, backend.spec.cores) == ("fp32", "cpu", 3)
    assert backend.spec.files == minilm.files
    assert embedder.embed_sync(["hello"]).vectors.shape == (1, 12)
    embedder.close()


def test_an_unknown_backend_fails_fast_naming_the_known_ones() -> None:
    with pytest.raises(ModelUnavailable, match="choose one of auto, onnx, openvino, torch"):
        build_registry(Settings(backend="tensorrt"))


def test_auto_falls_back_to_the_next_backend_that_builds(
    minilm: ModelSource, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(spec: BackendSpec) -> EchoBackend:
        raise RuntimeError("the exporter does not know this architecture")

    monkeypatch.setitem(BACKENDS, "broken", BackendEntry(broken, ("cpu",), ("fp32",)))
    monkeypatch.setitem(BACKENDS, "echo", BackendEntry(Built, ("cpu",), ("fp32",)))
    monkeypatch.setitem(registry.AUTO, "cpu", (("broken", "fp32"), ("echo", "fp32")))
    caplog.set_level("WARNING")
    embedder = load_embedder(minilm, Settings(device="cpu"))
    assert isinstance(embedder.backend, Built)
    assert any("does not know this architecture); trying the next" in m for m in caplog.messages)
    assert embedder.selection == (
        "precision auto: fp32 on echo: fp32 on broken could not be built "
        "(the exporter does not know this architecture)"
    )
    embedder.close()
    monkeypatch.setitem(registry.AUTO, "cpu", (("broken", "fp32"),))
    with pytest.raises(ModelUnavailable, match="cannot build the fp32 broken backend"):
        load_embedder(minilm, Settings(device="cpu"))


def test_a_faster_precision_is_measured_against_its_reference(
    minilm: ModelSource, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    class Noisy(Built):
        def embed(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
            out = super().embed(input_ids, attention_mask)
            return out + (0.5 if self.spec.precision == "int8" else 0.0)

    entry = BackendEntry(Noisy, ("cpu",), ("fp32", "int8"), reference="echo")
    monkeypatch.setitem(BACKENDS, "echo", entry)
    caplog.set_level("INFO")
    load_embedder(minilm, Settings(backend="echo", precision="int8", device="cpu")).close()
    (line,) = [m for m in caplog.messages if "cosine vs fp32" in m]
    assert line.startswith("precision int8: cosine vs fp32 mean ")


BF16 = frozenset({"avx512f", "avx512_bf16", "amx_bf16"})
NO_BF16 = frozenset({"avx2", "avx512f"})


@pytest.mark.parametrize(
    ("flags", "backend", "device", "precision", "chosen"),
    [
        (BF16, "auto", "cpu", "auto", [("openvino", "bf16"), ("onnx", "fp32"), ("torch", "fp32")]),
        (NO_BF16, "auto", "cpu", "auto", [("onnx", "fp32"), ("torch", "fp32")]),
        (BF16, "openvino", "cpu", "auto", [("openvino", "bf16"), ("openvino", "fp32")]),
        (NO_BF16, "openvino", "cpu", "auto", [("openvino", "fp32")]),
        (BF16, "onnx", "cpu", "auto", [("onnx", "fp32")]),
        (BF16, "auto", "cpu", "fp32", [("onnx", "fp32"), ("torch", "fp32")]),
        (BF16, "auto", "cuda", "auto", [("torch", "fp16"), ("torch", "bf16"), ("torch", "fp32")]),
        (BF16, "auto", "cuda:1", "bf16", [("torch", "bf16")]),
        (BF16, "torch", "cpu", "fp32", [("torch", "fp32")]),
    ],
)
def test_the_rules_pick_backends_by_device_and_precision(  # type: ignore[no-untyped-def]
    flags, backend, device, precision, chosen, monkeypatch
) -> None:
    from embedserve import machine

    monkeypatch.setattr(machine, "cpu_flags", lambda: flags)
    choices = choose(backend, device, precision)
    assert [(c.name, c.precision) for c in choices] == chosen
    # a mode that auto picks, but fp32, must prove it is exact: on a GPU too (fp16, then bf16)
    assert [c.exact for c in choices] == [
        p == "auto" and c.precision != "fp32"
        for c, p in zip(choices, [precision] * len(choices), strict=True)
    ]
    if (flags, backend, precision) == (NO_BF16, "auto", "auto"):
        assert choices[0].why.startswith("this CPU has no bf16 instructions")


@pytest.mark.parametrize(
    ("backend", "device", "precision", "reason"),
    [
        ("openvino", "cuda", "auto", "OpenVINO runs on the CPU"),
        ("onnx", "cuda", "fp32", "ONNX Runtime runs on the CPU here"),
        ("torch", "cpu", "int8", "int8 runs on the CPU (OpenVINO or ONNX Runtime)"),
        ("auto", "cpu", "fp16", "fp16 needs a CUDA GPU"),
        ("auto", "cuda", "int8", "int8 runs on the CPU"),
        ("onnx", "cpu", "bf16", "use --backend openvino for bf16"),
    ],
)
def test_what_cannot_be_served_is_refused_with_the_reason(
    backend: str, device: str, precision: PrecisionSetting, reason: str
) -> None:
    with pytest.raises(ModelUnavailable, match=reason.replace("(", r"\(").replace(")", r"\)")):
        choose(backend, device, precision)


def test_a_model_that_ships_only_onnx_is_served_as_it_is() -> None:
    (choice,) = choose("auto", "cuda", "auto", onnx_only="acme/onnx")
    assert (choice.name, choice.precision, choice.device) == ("onnx", "fp32", "cpu")
    with pytest.raises(ModelUnavailable, match=r"ships only an ONNX model.*drop --precision int8"):
        choose("auto", "cpu", "int8", onnx_only="acme/onnx")
    with pytest.raises(ModelUnavailable, match="drop --backend torch"):
        choose("torch", "cpu", "auto", onnx_only="acme/onnx")


def test_openvino_keeps_fewer_kernels_for_bf16_and_fp32_than_for_int8(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from embedserve.backends.factories import kernel_cache

    spec = BackendSpec(tmp_path, "m", "bf16", "cpu", cores=2, streams=2, cache_root=tmp_path)
    assert kernel_cache(spec) == 300
    assert kernel_cache(replace(spec, precision="fp32")) == 300
    assert kernel_cache(replace(spec, precision="int8")) == 1000
    assert kernel_cache(replace(spec, precision="int8", kernel_cache=42)) == 42


def test_a_model_that_cannot_be_exported_is_not_exported_again_for_the_next_backend(
    minilm: ModelSource, monkeypatch: pytest.MonkeyPatch
) -> None:
    from embedserve.backends.onnx_build import ExportFailed

    attempts: list[str] = []

    def exporting(name: str):  # type: ignore[no-untyped-def]
        def build(spec: BackendSpec) -> EchoBackend:
            attempts.append(name)
            raise ExportFailed("torch.onnx cannot trace this architecture")

        return BackendEntry(build, ("cpu",), ("fp32",), exports=True)

    monkeypatch.setitem(BACKENDS, "first", exporting("first"))
    monkeypatch.setitem(BACKENDS, "second", exporting("second"))
    monkeypatch.setitem(BACKENDS, "echo", BackendEntry(Built, ("cpu",), ("fp32",)))
    monkeypatch.setitem(
        registry.AUTO, "cpu", (("first", "fp32"), ("second", "fp32"), ("echo", "fp32"))
    )
    embedder = load_embedder(minilm, Settings(device="cpu"))
    assert attempts == ["first"]  # the second exports too: skipped
    assert isinstance(embedder.backend, Built)
    embedder.close()


def test_bf16_on_a_gpu_does_not_need_the_cpus_bf16(monkeypatch: pytest.MonkeyPatch) -> None:
    from embedserve import machine

    monkeypatch.setattr(machine, "cpu_flags", lambda: NO_BF16)
    assert [(c.name, c.precision) for c in choose("auto", "cuda", "bf16")] == [("torch", "bf16")]
    assert [c.name for c in choose("torch", "cuda:0", "bf16")] == ["torch"]
    with pytest.raises(ModelUnavailable, match="no bf16 instructions"):
        choose("torch", "cpu", "bf16")


def test_a_cpu_backend_asked_for_on_a_gpu_machine_runs_on_the_cpu(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from embedserve.backends import torch as torch_backend

    monkeypatch.setattr(torch_backend, "gpu_present", lambda: True)
    assert registry.resolve_device("auto") == "cuda"
    assert registry.resolve_device("auto", "onnx") == "cpu"  # --backend onnx, --device auto
    assert registry.resolve_device("auto", "openvino") == "cpu"
    assert registry.resolve_device("auto", "torch") == "cuda"
    assert registry.resolve_device("cuda", "onnx") == "cuda"  # asked for: refused by choose
