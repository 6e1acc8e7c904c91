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
    assert json.loads((tmp_path / "ray" / "_manifest.json").read_text())["complete"] is True
    assert not ray_processes(ray_dir), "Ray processes outlived the job"
