"""`embedserve embed ... --ray-address local|auto|ADDRESS`: the same job on Ray Data.

The driver plans the job as the local run does (the same scan, manifest and output folder).
Ray Data maps the parts still to do over an actor pool: each actor loads the model once (a
`PartWorker` on its share of the cores), reads each part it is given from where the part starts,
embeds it and writes the part's file; the driver follows their progress and finishes the folder.
So the folder, its resuming and its vectors are the local run's. The output folder (and the
inputs) must be on storage every node sees."""

from __future__ import annotations

import asyncio
import math
from contextlib import closing
from typing import Any

import numpy as np

from embedserve import machine
from embedserve.bulk.job import EmbedJob, JobOptions, PartWorker, Plan
from embedserve.bulk.output import engine_differs
from embedserve.bulk.progress import Tally
from embedserve.config import Settings
from embedserve.ray_cluster import cluster


def run_on_ray(options: JobOptions, settings: Settings, address: str, actors: int | None) -> str:
    """Run the job on the Ray cluster at `address` ("local" starts one for the job and stops it
    after); its summary line."""
    job = EmbedJob(options, settings)
    try:
        with cluster(address) as ray:
            return _run(job, ray, settings, actors)
    finally:
        job.folder.close()  # after the cluster's exit: no actor of this job writes on


def _run(job: EmbedJob, ray: Any, settings: Settings, actors: int | None) -> str:
    """The job on a connected cluster: parts mapped over an actor pool, followed to the end."""
    cpus = int(ray.cluster_resources().get("CPU", 1))
    count = actors or max(1, cpus // _cpus_per_actor(settings, cpus))
    per_actor = max(1, cpus // count)
    log_plan(count, per_actor)
    done = job.open()
    before = job.folder.engine_before
    progress = job.progress(done)
    try:
        todo = [i for i in range(job.parts) if i not in done]
        if todo:
            ray.data.DataContext.get_current().enable_progress_bars = False  # ours shows it
            parts = ray.data.from_items([{"part": i} for i in todo], override_num_blocks=len(todo))
            tallies = parts.map_batches(
                _PartActor,
                fn_constructor_args=(job.options, settings, job.plan, per_actor, before),
                batch_size=1,
                # a part at a time: an actor that is free takes the next, so no actor
                # waits behind another's queue at the end
                compute=ray.data.ActorPoolStrategy(size=count, max_tasks_in_flight_per_actor=1),
                num_cpus=per_actor,
            )
            # Closed on the way out, a refusal included: else the traceback keeps the rows'
            # executor alive past ray.shutdown(), and its threads then kill the process (exit 1).
            with closing(iter(tallies.iter_rows())) as rows:
                for row in rows:
                    engine = {"precision": row["precision"], "backend": row["backend"]}
                    _check_engine(job, engine, refused=bool(row["refused"]))
                    progress.advance(
                        int(row["documents"]),
                        int(row["rows"]),
                        int(row["tokens"]),
                        int(row["skipped"]),
                    )
        job.finish()
        return progress.summary(len(done))
    finally:
        progress.close()


def _check_engine(job: EmbedJob, engine: dict[str, str], refused: bool) -> None:
    """The first part sets the folder's manifest engine (so a resumed run checks it); a part
    refused for another engine stops the job."""
    if refused:
        agreed = job.manifest.get("engine") or job.folder.claimed()
        engine_differs(job.options.output, agreed, engine)
    if "engine" not in job.manifest:
        job.manifest["engine"] = engine
        job.folder.write_manifest(job.manifest)


def log_plan(actors: int, per_actor: int) -> None:
    import logging

    logging.getLogger("embedserve").info(
        "Ray: %d actor(s) of %d CPU(s), one model load each", actors, per_actor
    )


def _cpus_per_actor(settings: Settings, cpus: int) -> int:
    """One actor per stream the engine would run on these CPUs: each is a stream on its share."""
    streams = settings.streams or machine.default_streams(cpus)
    return max(1, math.ceil(cpus / streams))


class _PartActor:
    """One loaded model on its share of a node's cores, embedding the parts it is handed."""

    def __init__(
        self,
        options: JobOptions,
        settings: Settings,
        plan: Plan,
        cpus: int,
        engine: dict[str, str] | None,
    ) -> None:
        """`engine`: that of the folder's earlier parts, if any. Else the first actor to start
        claims its own for the folder; an actor with another (a node with another CPU under
        `--precision auto`) writes no part, and the driver stops the job."""
        machine.use_at_most(cpus)
        self.loop = asyncio.new_event_loop()
        self.worker = PartWorker(EmbedJob(options, settings, plan))  # not scanned again
        self.loop.run_until_complete(self.worker.start())
        mine = self.worker.engine
        self.refused = (engine or self.worker.output.claim_engine(mine)) != mine

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        # Refused parts are not written: the driver reads the engine and stops the job.
        tallies: list[Tally] = [
            Tally()
            if self.refused
            else self.loop.run_until_complete(self.worker.embed_part(int(index)))
            for index in batch["part"]
        ]
        return {
            "part": np.asarray(batch["part"]),
            "refused": np.array([self.refused] * len(tallies)),
            **{key: np.array([value] * len(tallies)) for key, value in self.worker.engine.items()},
            **{
                field: np.array([getattr(t, field) for t in tallies], dtype=np.int64)
                for field in ("documents", "rows", "tokens", "skipped")
            },
        }
