"""The ONNX export and OpenVINO int8 caches: reused when sound, rebuilt when corrupt, replaced
when stale."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from embedserve.backends import onnx_build, openvino_build
from embedserve.backends.onnx import OnnxBackend
from embedserve.backends.onnx_build import cached_onnx_model
from embedserve.backends.openvino import OpenVinoBackend
from embedserve.backends.openvino_build import cached_openvino_int8
from embedserve.machine import native_int8
from embedserve.models.source import ModelSource

pytestmark = pytest.mark.slow  # builds and exports models


@pytest.fixture(scope="module")
def built(minilm: ModelSource, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    cache = tmp_path_factory.mktemp("onnx-cache")
    return cache, cached_onnx_model(minilm.files, "fp32", cache, minilm.id)


def _operators(model: Path) -> list[str]:
    """The operator type of every node of an ONNX file's graph, in order."""
    import onnx

    return [node.op_type for node in onnx.load(str(model), load_external_data=False).graph.node]


def forbid_builds(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*args: object) -> None:
        raise AssertionError("the cache should have been used")

    monkeypatch.setattr(onnx_build, "_export", fail)


def test_second_start_reuses_the_cache(built, minilm, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    cache, model = built
    forbid_builds(monkeypatch)
    assert cached_onnx_model(minilm.files, "fp32", cache, minilm.id) == model
    manifest = json.loads((model.parent / "manifest.json").read_text())
    assert manifest["precision"] == "fp32"
    assert sorted(p.name for p in model.parent.iterdir()) == ["manifest.json", "model.onnx"]


def test_a_corrupt_cache_is_detected_and_rebuilt(built, minilm, caplog) -> None:  # type: ignore[no-untyped-def]
    cache, model = built
    with model.open("r+b") as handle:  # flip bytes in the middle of the weights
        handle.seek(model.stat().st_size // 2)
        handle.write(b"\x00" * 64)
    caplog.set_level("INFO")
    rebuilt = cached_onnx_model(minilm.files, "fp32", cache, minilm.id)
    assert rebuilt == model
    messages = [r.getMessage() for r in caplog.records]
    assert any("is unusable" in m for m in messages)
    for step in ("[1/2] exporting with torch: done", "[2/2] fusing the graph"):
        assert any(step in m for m in messages), step  # progress is shown while it builds
    probe = np.array([[101, 7592, 2088, 102]])
    assert np.isfinite(OnnxBackend(rebuilt).embed(probe, np.ones_like(probe))).all()


def test_the_fp32_graph_is_fused_but_leaves_attention_to_plain_matmuls(built) -> None:  # type: ignore[no-untyped-def]
    """ONNX Runtime's fused Attention and SkipLayerNormalization CPU kernels were 5-11% slower
    than the plain operators they replace (bench/README); the other fusions stay."""
    _, model = built
    ops = _operators(model)
    assert "Attention" not in ops
    assert "SkipLayerNormalization" not in ops
    assert ops.count("Softmax") == 6  # one per layer of MiniLM-L6
    assert ops.count("MatMul") >= 6 * 6  # Q, K, V, output, and the FFN's two, in each layer
    assert ops.count("BiasGelu") == 6  # fused by the optimizer, which still ran


def test_onnx_runtime_int8_quantizes_the_weighted_projections_only(built, minilm) -> None:  # type: ignore[no-untyped-def]
    """Q, K, V, the attention output and the FFN up-projection in int8; the down-projections
    (fed by GELU) and the attention products of two activations stay fp32."""
    cache, _ = built
    model = cached_onnx_model(minilm.files, "int8", cache, minilm.id)
    ops = _operators(model)
    assert ops.count("MatMulInteger") == 6 * 5
    assert ops.count("MatMul") == 6 * (1 + 2)


def test_a_missing_manifest_is_rebuilt(built, minilm) -> None:  # type: ignore[no-untyped-def]
    cache, model = built
    (model.parent / "manifest.json").unlink()
    assert cached_onnx_model(minilm.files, "fp32", cache, minilm.id) == model
    assert (model.parent / "manifest.json").is_file()


def test_changed_model_files_replace_the_stale_cache(built, minilm, tmp_path) -> None:  # type: ignore[no-untyped-def]
    cache, model = built
    folder = tmp_path / "edited"
    shutil.copytree(minilm.files, folder)
    pooling = folder / "1_Pooling" / "config.json"
    config = json.loads(pooling.read_text())
    pooling.write_text(json.dumps(config, indent=4))  # new bytes: a build of its own
    first = cached_onnx_model(folder, "fp32", cache, "edited")
    assert first != model
    pooling.write_text(json.dumps(config, indent=3))  # edited again
    second = cached_onnx_model(folder, "fp32", cache, "edited")
    assert second != first
    assert not first.parent.exists()  # the stale build of this folder is gone
    assert model.is_file()  # another folder's build stays


def test_the_same_weights_under_another_name_folder_or_prompts_are_built_once(  # type: ignore[no-untyped-def]
    built, minilm, tmp_path, monkeypatch
) -> None:
    cache, model = built
    folder = tmp_path / "renamed-copy"
    shutil.copytree(minilm.files, folder)
    prompts = folder / "config_sentence_transformers.json"
    config = json.loads(prompts.read_text())
    prompts.write_text(json.dumps({**config, "prompts": {"query": "query: "}}))
    (folder / "README.md").write_text("another card")
    forbid_builds(monkeypatch)
    assert cached_onnx_model(folder, "fp32", cache, "another-name") == model


def run_fresh(code: str, folder: Path) -> subprocess.CompletedProcess[str]:
    """`code` in a new interpreter (nothing loaded yet), with `folder` as sys.argv[1]."""
    lines = ["import sys", "from pathlib import Path", *code.strip().splitlines()]
    return subprocess.run(
        [sys.executable, "-c", "\n".join(lines), str(folder)],
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_a_process_without_torch_builds_without_importing_it(tmp_path: Path) -> None:
    """The server serves with ONNX Runtime alone: its first start exports and fuses in child
    processes, so it never carries torch afterwards."""
    done = run_fresh(
        """
from embedserve.backends.onnx_build import cached_onnx_model
from embedserve.backends.openvino import OpenVinoBackend
from embedserve.backends.openvino_build import cached_openvino_int8
from embedserve.models.source import resolve
source = resolve(None)
model = cached_onnx_model(source.files, "fp32", Path(sys.argv[1]), source.id)
print(model.is_file(), "torch" in sys.modules)
""",
        tmp_path,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["True", "False"]


def test_a_failing_build_step_in_its_process_says_why(tmp_path: Path) -> None:
    done = run_fresh(
        """
from embedserve.backends.onnx_build import _export
_export(Path(sys.argv[1]), Path(sys.argv[1]) / "out.onnx", True)
""",
        tmp_path,
    )
    assert done.returncode != 0
    assert "the build step _export_stack failed in its process" in done.stderr


def test_graphs_that_pool_apart_have_their_own_cache_key(minilm: ModelSource) -> None:
    pooled = onnx_build._cache_key(minilm.files, "fp32", pools_instruction=True)
    apart = onnx_build._cache_key(minilm.files, "fp32", pools_instruction=False)
    assert pooled != apart


def test_the_int8_recipe_is_part_of_the_openvino_cache_key(  # type: ignore[no-untyped-def]
    minilm: ModelSource, monkeypatch
) -> None:
    fp32 = Path("/cache/onnx/minilm-fp32-0123/model.onnx")
    key = openvino_build._cache_key(minilm.files, fp32)
    monkeypatch.setattr(openvino_build, "_SMOOTH_QUANT_ALPHA", 0.95)
    assert openvino_build._cache_key(minilm.files, fp32) != key  # an old build is not reused


@pytest.fixture(scope="module")
def openvino_int8(built, minilm: ModelSource) -> Path:  # type: ignore[no-untyped-def]
    cache, fp32 = built
    return cached_openvino_int8(minilm.files, fp32, cache, minilm.id)


def test_the_openvino_int8_build_is_reused_then_rebuilt_when_corrupt(  # type: ignore[no-untyped-def]
    openvino_int8, built, minilm, monkeypatch, caplog
) -> None:
    cache, fp32 = built
    names = sorted(p.name for p in openvino_int8.parent.iterdir())
    assert names == ["manifest.json", "model.bin", "model.xml"]
    with monkeypatch.context() as patch:
        patch.setattr(openvino_build, "run_apart", lambda *a: pytest.fail("cache not used"))
        assert cached_openvino_int8(minilm.files, fp32, cache, minilm.id) == openvino_int8
    weights = openvino_int8.with_suffix(".bin")
    with weights.open("r+b") as handle:
        handle.seek(weights.stat().st_size // 2)
        handle.write(b"\xff" * 64)
    caplog.set_level("INFO")
    assert cached_openvino_int8(minilm.files, fp32, cache, minilm.id) == openvino_int8
    messages = [r.getMessage() for r in caplog.records]
    assert any("model.bin is missing or does not match" in m for m in messages)
    assert any("[1/1] quantizing to int8 with NNCF" in m and "done" in m for m in messages)
    probe = np.array([[101, 7592, 2088, 102]])
    vector = OpenVinoBackend(openvino_int8, "int8").embed(probe, np.ones_like(probe))
    reference = OnnxBackend(fp32).embed(probe, np.ones_like(probe))
    assert (
        float((vector * reference).sum() / np.linalg.norm(vector) / np.linalg.norm(reference))
        > 0.98
    )


@pytest.mark.skipif(
    not native_int8(), reason="without VNNI, OpenVINO keeps some int8 layers in f32"
)
def test_the_openvino_int8_model_runs_every_linear_layer_in_int8(openvino_int8: Path) -> None:
    """The FFN down-projections too (~20% faster than leaving them in floating point): their
    GELU outliers are smoothed into the weights, not kept out of int8."""
    import openvino as ov

    compiled = ov.Core().compile_model(openvino_int8, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    linear = [
        op.get_rt_info()["runtimePrecision"].astype(str)
        for op in compiled.get_runtime_model().get_ops()
        if op.get_rt_info()["layerType"].astype(str) in ("FullyConnected", "MatMul")
    ]
    assert len(linear) >= 6 * 4  # four weighted projections in each of MiniLM's six layers
    assert set(linear) <= {"u8", "i8"}


def test_a_shared_build_stays_while_another_owner_uses_it(built, minilm, tmp_path) -> None:  # type: ignore[no-untyped-def]
    cache, _ = built
    twins = [tmp_path / "a", tmp_path / "b"]
    for twin in twins:
        shutil.copytree(minilm.files, twin)
        pooling = twin / "1_Pooling" / "config.json"
        pooling.write_text(json.dumps(json.loads(pooling.read_text()), indent=5))
    shared = cached_onnx_model(twins[0], "fp32", cache, "a")
    assert cached_onnx_model(twins[1], "fp32", cache, "b") == shared  # the same weights
    manifest = json.loads((shared.parent / "manifest.json").read_text())
    assert len(manifest["owners"]) == 2
    pooling = twins[0] / "1_Pooling" / "config.json"
    pooling.write_text(json.dumps(json.loads(pooling.read_text()), indent=6))  # a changes
    assert cached_onnx_model(twins[0], "fp32", cache, "a") != shared
    assert shared.is_file()  # b still uses it
    assert len(json.loads((shared.parent / "manifest.json").read_text())["owners"]) == 1


def test_builds_from_before_owners_were_kept_are_removed(built, minilm, tmp_path) -> None:  # type: ignore[no-untyped-def]
    cache, model = built
    legacy = cache / "onnx" / "all-MiniLM-L6-v2-fp32-0123456789abcdef"
    legacy.mkdir()
    (legacy / "manifest.json").write_text(json.dumps({"key": "old", "files": {}}))
    folder = tmp_path / "edited"
    shutil.copytree(minilm.files, folder)
    pooling = folder / "1_Pooling" / "config.json"
    pooling.write_text(json.dumps(json.loads(pooling.read_text()), indent=7))
    cached_onnx_model(folder, "fp32", cache, "edited")
    assert not legacy.exists()
    assert model.is_file()


def test_a_hub_snapshots_builds_belong_to_its_repository_not_its_revision(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from embedserve.models.cache import build_owner

    repo = tmp_path / "hub" / "models--acme--encoder" / "snapshots"
    (repo / "rev1").mkdir(parents=True)
    (repo / "rev2").mkdir()
    assert build_owner(repo / "rev1", "onnx fp32") == build_owner(repo / "rev2", "onnx fp32")
    assert build_owner(tmp_path / "hub", "onnx fp32") != build_owner(repo / "rev1", "onnx fp32")
