"""`embedserve serve --ray`: the same app as a Ray Serve application. Engine replicas each run
the app (`create_app`, with its lifespan: models loaded and warmed, then closed) on their share
of the cores, a fixed number of them or autoscaled on ongoing requests; Ray Serve's HTTP proxy
listens on --host/--port and hands requests to a light front, which forwards them to the
engines (ray_replicas.py says why). SIGTERM or SIGINT, also during start-up, deletes the
application (replicas drain their requests) and, for a cluster started here, stops Ray."""

from __future__ import annotations

import logging
import signal
import threading
from dataclasses import dataclass
from typing import Any

from embedserve.config import Settings
from embedserve.config.flags import command_line_flag
from embedserve.errors import ConfigError
from embedserve.logs import configure as configure_logging
from embedserve.ray_cluster import cluster
from embedserve.ray_replicas import APP, ENGINE, FRONT, EngineReplica, front_app

log = logging.getLogger("embedserve")

TARGET_ONGOING_REQUESTS = 8
"""Autoscaling adds a replica when each has more requests than this in flight..."""
UPSCALE_DELAY_S = 5.0
"""...for this long (Serve's default, 30 s, is long next to a replica's few seconds of start)."""
DOWNSCALE_DELAY_S = 120.0

MAX_ONGOING_REQUESTS = 1000
"""Far above the target: a replica's own queue limits (429, queue timeout) decide, as they do
without Ray, instead of requests waiting unseen in Serve's router."""
ENGINES_PER_FRONT = 8


@dataclass(frozen=True)
class Replicas:
    count: int | None = None
    least: int | None = None
    most: int | None = None

    def __post_init__(self) -> None:
        """What the flags' declarations cannot say alone (each is at least 1 as parsed)."""
        count, least, most = map(command_line_flag, ("replicas", "min_replicas", "max_replicas"))
        autoscaled = self.least is not None or self.most is not None
        if self.count is not None and autoscaled:
            raise ConfigError(f"give {count}, or {least} and {most}, not both")
        if autoscaled and (self.least is None or self.most is None):
            raise ConfigError(f"autoscaling needs both {least} and {most}")
        if self.least is not None and self.most is not None and self.least > self.most:
            raise ConfigError(f"{least} ({self.least}) must be at most {most} ({self.most})")

    def options(self) -> dict[str, Any]:
        if self.least is not None:
            return {
                "autoscaling_config": {
                    "min_replicas": self.least,
                    "max_replicas": self.most,
                    "target_ongoing_requests": TARGET_ONGOING_REQUESTS,
                    "upscale_delay_s": UPSCALE_DELAY_S,
                    "downscale_delay_s": DOWNSCALE_DELAY_S,
                }
            }
        return {"num_replicas": self.count or 1}

    @property
    def largest(self) -> int:
        return self.most or self.count or 1


def serve_on_ray(settings: Settings, address: str, replicas: Replicas) -> None:
    """Deploy and serve until SIGTERM/SIGINT, also one that comes during start-up: the
    deployment runs in a thread of its own, as a signal handler cannot interrupt Ray's calls."""
    stop = threading.Event()
    wake = threading.Event()  # a stop signal, or the deployment up (or failed)
    failed: list[BaseException] = []

    def on_signal(*_: object) -> None:
        stop.set()
        wake.set()

    _on_stop_signals(on_signal)
    with cluster(address) as ray:
        _on_stop_signals(on_signal)  # again: ray.init put its own in
        from ray import serve

        cpus = int(ray.cluster_resources().get("CPU", 1))
        cores = max(1, cpus // replicas.largest)

        def deploy() -> None:
            try:
                serve.start(http_options={"host": settings.host, "port": settings.port})
                application = _application(settings, replicas, cores)
                serve.run(application, name=APP, route_prefix="/", blocking=False)
            except BaseException as exc:
                if not stop.is_set():  # an error of a deployment stopped half-way is not news
                    failed.append(exc)
            finally:
                wake.set()

        try:
            if not stop.is_set():
                log.info("deploying on Ray Serve: %s, %d CPU(s) each", _described(replicas), cores)
                threading.Thread(target=deploy, name="ray-serve-deploy", daemon=True).start()
                wake.wait()
            configure_logging(settings.log_level, settings.log_format)  # Serve set its own up
            if failed:
                raise failed[0]
            if stop.is_set():
                log.info("stopping before the deployment was up")
                return
            log.info(
                "serving on http://%s:%d through Ray Serve: %s, %d CPU(s) each",
                settings.host,
                settings.port,
                _described(replicas),
                cores,
            )
            stop.wait()
            log.info(
                "stopping: the replicas drain their requests (up to %.0f s)",
                settings.drain_timeout_s,
            )
        finally:
            serve.shutdown()  # type: ignore[no-untyped-call]


def _application(settings: Settings, replicas: Replicas, cores: int) -> Any:
    """The engine deployment (scaled) and the front that Serve's proxy sends requests to."""
    from ray import serve

    engine = serve.deployment(
        name=ENGINE,
        ray_actor_options={"num_cpus": cores},
        graceful_shutdown_timeout_s=settings.drain_timeout_s,
        max_ongoing_requests=MAX_ONGOING_REQUESTS,
        **replicas.options(),
    )(EngineReplica).bind(settings, cores)

    def build() -> Any:  # a function, which Serve calls in each front replica
        return front_app(settings)

    front = serve.deployment(
        name=FRONT,
        num_replicas=max(1, -(-replicas.largest // ENGINES_PER_FRONT)),
        ray_actor_options={"num_cpus": 0},  # it waits on the engines; their cores stay theirs
        max_ongoing_requests=MAX_ONGOING_REQUESTS * ENGINES_PER_FRONT,
        graceful_shutdown_timeout_s=settings.drain_timeout_s,
    )(serve.ingress(build)())
    # Bound as the front's argument so that Serve deploys it; the front finds it by name.
    return front.bind(engine)


def _on_stop_signals(handler: Any) -> None:
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, handler)


def _described(replicas: Replicas) -> str:
    if replicas.least is not None:
        return f"{replicas.least} to {replicas.most} replicas, autoscaled"
    return f"{replicas.count or 1} replica(s)"
