"""A graph over protobuf's 2 GiB keeps its weights in files beside it (the exporter writes them
so): such a graph is recognised, and moved with its weights into the cache, where it still
runs. A small graph saved the same way stands in for a 2 GiB one."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from embedserve.backends.onnx_build import has_external_data, move_graph


def graph_with_external_weights(folder: Path) -> tuple[Path, np.ndarray]:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weight = np.random.default_rng(0).standard_normal((4, 3)).astype(np.float32)
    node = helper.make_node("MatMul", ["x", "w"], ["y"])
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 3])],
        [numpy_helper.from_array(weight, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    folder.mkdir()
    path = folder / "model.onnx"
    onnx.save_model(
        model, str(path), save_as_external_data=True, location="w.data", size_threshold=0
    )
    return path, weight


def test_a_graph_with_weights_beside_it_moves_with_them_and_runs(tmp_path: Path) -> None:
    import onnxruntime as ort

    exported, weight = graph_with_external_weights(tmp_path / "export")
    assert has_external_data(exported)
    (tmp_path / "final").mkdir()
    target = tmp_path / "final" / "model.onnx"
    move_graph(exported, target)
    assert sorted(p.name for p in target.parent.iterdir()) == ["model.onnx", "w.data"]
    assert not any(exported.parent.iterdir())
    x = np.ones((2, 4), dtype=np.float32)
    session = ort.InferenceSession(str(target), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(session.run(None, {"x": x})[0], x @ weight, rtol=1e-6)


def test_a_graph_alone_has_no_external_data(tmp_path: Path) -> None:
    (tmp_path / "export").mkdir()
    alone = tmp_path / "export" / "model.onnx"
    alone.write_bytes(b"graph")
    assert not has_external_data(alone)
