"""`embedserve serve --ray`: the same app as a Ray Serve deployment. Each replica builds the app
(`create_app`, with its lifespan: models loaded and warmed, then closed) on its share of the
cores; Ray Serve's HTTP proxy listens on --host/--port and spreads requests over the replicas,
a fixed number of them or autoscaled on ongoing requests. SIGTERM or SIGINT deletes the
deployment (replicas drain their requests) and, for a cluster started here, stops Ray."""

from __future__ import annotations

import logging
import signal
import threading
from dataclasses import dataclass
from typing import Any

from embedserve import machine
from embedserve.api.app import create_app
from embedserve.config import Settings
from embedserve.errors import ConfigError
from embedserve.logs import configure as configure_logging
from embedserve.ray_cluster import cluster

log = logging.getLogger("embedserve")

TARGET_ONGOING_REQUESTS = 8
"""Autoscaling adds a replica when each has more requests than this in flight."""


@dataclass(frozen=True)
class Replicas:
    count: int | None = None
    least: int | None = None
    most: int | None = None

    def __post_init__(self) -> None:
        autoscaled = self.least is not None or self.most is not None
        if self.count is not None and autoscaled:
            raise ConfigError("give --replicas, or --min-replicas and --max-replicas, not both")
        if autoscaled and (self.least is None or self.most is None):
            raise ConfigError("autoscaling needs both --min-replicas and --max-replicas")
        if self.least is not None and self.most is not None and not 0 < self.least <= self.most:
            raise ConfigError(
                f"--min-replicas ({self.least}) must be at least 1 and at most --max-replicas "
                f"({self.most})"
            )
        if self.count is not None and self.count < 1:
            raise ConfigError(f"--replicas must be at least 1, got {self.count}")

    def options(self) -> dict[str, Any]:
        if self.least is not None:
            return {
                "autoscaling_config": {
                    "min_replicas": self.least,
                    "max_replicas": self.most,
                    "target_ongoing_requests": TARGET_ONGOING_REQUESTS,
                }
            }
        return {"num_replicas": self.count or 1}

    @property
    def largest(self) -> int:
        return self.most or self.count or 1


def _replica_app(settings: Settings, cores: int) -> Any:
    """Run in each replica: the app, its engine on the replica's share of the node."""
    machine.use_at_most(cores)
    return create_app(settings)


def serve_on_ray(settings: Settings, address: str, replicas: Replicas) -> None:
    """Deploy and serve until SIGTERM/SIGINT."""
    stop = threading.Event()
    with cluster(address) as ray:
        from ray import serve

        cpus = int(ray.cluster_resources().get("CPU", 1))
        cores = max(1, cpus // replicas.largest)
        serve.start(http_options={"host": settings.host, "port": settings.port})

        def build() -> Any:  # a function, which Serve calls in each replica (not an ASGI app)
            return _replica_app(settings, cores)

        ingress = serve.ingress(build)()
        deployment = serve.deployment(
            name="embedserve",
            ray_actor_options={"num_cpus": cores},
            graceful_shutdown_timeout_s=settings.drain_timeout_s,
            **replicas.options(),
        )(ingress)
        serve.run(deployment.bind(), name="embedserve", route_prefix="/", blocking=False)
        configure_logging(settings.log_level, settings.log_format)  # Serve set its own up
        for signum in (signal.SIGTERM, signal.SIGINT):  # after Ray's own handlers are in
            signal.signal(signum, lambda *_: stop.set())
        log.info(
            "serving on http://%s:%d through Ray Serve: %s, %d CPU(s) each",
            settings.host,
            settings.port,
            _described(replicas),
            cores,
        )
        stop.wait()
        log.info(
            "stopping: the replicas drain their requests (up to %.0f s)", settings.drain_timeout_s
        )
        serve.shutdown()  # type: ignore[no-untyped-call]


def _described(replicas: Replicas) -> str:
    if replicas.least is not None:
        return f"{replicas.least} to {replicas.most} replicas, autoscaled"
    return f"{replicas.count or 1} replica(s)"
