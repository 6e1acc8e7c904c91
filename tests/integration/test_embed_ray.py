"""`embedserve embed --ray-address local` on a Ray cluster started for the job, inside the test's
own temp folder: the same folder and vectors as the local run, and no Ray process left after."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.dataset as ds
import pytest

from tests.conftest import cosines
from tests.processes import ray_processes

pytest.importorskip("ray")
pytestmark = [pytest.mark.slow, pytest.mark.process]


def embed(args: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "embedserve", "embed", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})},
    )


def vectors(folder: Path) -> tuple[list[str], np.ndarray]:
    table = ds.dataset(folder, format="parquet").to_table().sort_by("id")
    column = table.column("embedding").combine_chunks()
    flat = np.asarray(column.flatten().to_numpy()).reshape(len(table), column.type.list_size)
    return table.column("id").to_pylist(), flat


def test_ray_data_path_writes_the_local_runs_folder(tmp_path: Path, ray_dir: Path) -> None:
    source = tmp_path / "d.jsonl"
    source.write_text(
        "".join(
            json.dumps({"text": f"note {i} about the river's {i % 9}th flood"}) + "\n"
            for i in range(300)
        )
    )
    local = embed([str(source), "-o", str(tmp_path / "local"), "--part-rows", "50"])
    assert local.returncode == 0, local.stderr
    on_ray = embed(
        [str(source), "-o", str(tmp_path / "ray"), "--part-rows", "50", "--ray-address", "local",
         "--ray-actors", "2"],
        env={"RAY_TMPDIR": str(ray_dir)},
    )  # fmt: skip
    assert on_ray.returncode == 0, on_ray.stderr[-3000:]
    assert "Ray: 2 actor(s) of 1 CPU(s)" in on_ray.stderr
    assert "done: 300 documents" in on_ray.stderr
    ids, got = vectors(tmp_path / "ray")
    local_ids, expected = vectors(tmp_path / "local")
    assert ids == local_ids
    assert len(set(ids)) == 300
    assert cosines(got, expected).min() >= 0.9999
    assert sorted(p.name for p in (tmp_path / "ray").glob("part-*")) == [
        f"part-{i:05d}.parquet" for i in range(6)
    ]
    manifest = json.loads((tmp_path / "ray" / "_manifest.json").read_text())
    assert manifest["complete"] is True
    assert (
        manifest["engine"]
        == json.loads((tmp_path / "local" / "_manifest.json").read_text())["engine"]
    )  # the actors' engine, as the local run records its own
    assert not (tmp_path / "ray" / "_engine.json").exists()  # the manifest holds it now
    assert not ray_processes(ray_dir), "Ray processes outlived the job"


def test_a_local_folder_resumed_on_ray_keeps_its_engine(tmp_path: Path, ray_dir: Path) -> None:
    source = tmp_path / "d.jsonl"
    source.write_text(
        "".join(json.dumps({"text": f"line {i} of the ledger"}) + "\n" for i in range(200))
    )
    out = tmp_path / "out"
    assert embed([str(source), "-o", str(out), "--part-rows", "50"]).returncode == 0
    _, expected = vectors(out)
    manifest_path = out / "_manifest.json"
    manifest = json.loads(manifest_path.read_text())
    engine = manifest["engine"]
    on_ray = [str(source), "-o", str(out), "--part-rows", "50", "--ray-address", "local",
              "--ray-actors", "1"]  # fmt: skip
    ray_env = {"RAY_TMPDIR": str(ray_dir)}

    # parts of the folder's earlier engine, missing after an interruption, are filled in
    (out / "part-00001.parquet").unlink()
    (out / "part-00003.parquet").unlink()
    manifest_path.write_text(json.dumps({**manifest, "complete": False}))
    resumed = embed(on_ray, env=ray_env)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "done: 100 documents" in resumed.stderr
    assert "100 documents in 2 parts were done already" in resumed.stderr
    ids, got = vectors(out)
    assert len(ids) == len(set(ids)) == 200
    assert cosines(got, expected).min() >= 0.9999
    assert json.loads(manifest_path.read_text())["engine"] == engine

    # an actor that gets another engine than the earlier parts' writes nothing and stops the job
    candidates = (
        {"precision": "bf16", "backend": "openvino"},
        {"precision": "fp32", "backend": "onnx"},
    )
    other = next(e for e in candidates if e != engine)  # the default differs by CPU
    (out / "part-00002.parquet").unlink()
    manifest_path.write_text(json.dumps({**manifest, "complete": False, "engine": other}))
    refused = embed(on_ray, env=ray_env)
    assert refused.returncode == 2, refused.stderr[-3000:]
    assert (
        f"parts were embedded in {other['precision']} on {other['backend']}, and this run got "
        f"{engine['precision']} on {engine['backend']}"
    ) in refused.stderr
    assert "Traceback" not in refused.stderr
    assert not (out / "part-00002.parquet").exists()
    assert json.loads(manifest_path.read_text())["engine"] == other

    # a folder whose first actor claimed another engine (on another node, say) before the job
    # stopped, no part done: the claim holds, and an actor with another engine writes no part
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    started = {k: v for k, v in manifest.items() if k != "engine"}
    (fresh / "_manifest.json").write_text(json.dumps({**started, "complete": False}))
    (fresh / "_engine.json").write_text(json.dumps(other))
    on_ray[2] = str(fresh)
    refused = embed(on_ray, env=ray_env)
    assert refused.returncode == 2, refused.stderr[-3000:]
    assert f"parts were embedded in {other['precision']} on {other['backend']}" in refused.stderr
    assert not list(fresh.glob("part-*"))
    assert not ray_processes(ray_dir), "Ray processes outlived the job"
