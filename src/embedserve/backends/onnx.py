"""ONNX Runtime backend: a session tuned to the machine's cores."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from embedserve.backends.base import graph_feeds, probe_dimension
from embedserve.backends.pooling import pool
from embedserve.machine import cores as machine_cores

log = logging.getLogger(__name__)


class OnnxBackend:
    kind = "onnx"
    kernels_per_shape = False  # coarse widths would only cost it padding

    def __init__(
        self,
        model: Path,
        threads: int | None = None,
        precision: str = "fp32",
        pooling: str | None = None,
        streams: int = 1,
        cores: int | None = None,
        shared_arena: bool = True,
    ) -> None:
        """`pooling` is for graphs that output token vectors (ONNX folders from the hub); our
        own exports output pooled vectors and need none. `streams`: passes the caller may run
        at once (ONNX Runtime's `run` is thread-safe), each on `threads` threads (default: the
        `cores` shared out among them). With several streams on shared cores, a second session
        on every core serves `every_core_pass`. `shared_arena`: allocate from the arena every
        session of the process shares (it keeps what it grew to); False for a short-lived
        session, whose memory goes back when it is dropped."""
        self.precision = precision
        self.streams = streams
        self._pooling = pooling
        cores = cores or machine_cores()
        share = threads or max(1, cores // streams)
        self._session = _session(model, share, shared_arena)
        self._alone = (
            _session(model, cores, shared_arena) if threads is None and share < cores else None
        )
        self._inputs = [i.name for i in self._session.get_inputs()]
        self._dimension = probe_dimension(self.embed)
        if self._alone is not None:
            probe_dimension(self._embed_alone)  # warm it too
        log.info(
            "ONNX Runtime backend: %s, %d stream(s) of %d thread(s)%s",
            model.name,
            streams,
            share,
            f", a lone batch on {cores}" if self._alone is not None else "",
        )

    @property
    def dimension(self) -> int:
        return self._dimension

    @property
    def every_core_pass(self) -> Callable[[np.ndarray, np.ndarray], np.ndarray] | None:
        return self._embed_alone if self._alone is not None else None

    @property
    def every_core_options(self) -> Any:
        """The SessionOptions behind `every_core_pass`; None where it has none."""
        return self._alone.get_session_options() if self._alone is not None else None

    def embed(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        return self._embed(self._session, input_ids, attention_mask)

    def _embed_alone(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        return self._embed(self._alone, input_ids, attention_mask)

    def _embed(self, session: Any, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        # Our exports read UNPOOLED marks themselves; a hub graph needs a plain 0/1 mask.
        mask = attention_mask if self._pooling is None else np.minimum(attention_mask, 1)
        outputs = session.run(None, graph_feeds(self._inputs, input_ids, mask))
        vectors = np.asarray(outputs[0], dtype=np.float32)
        if vectors.ndim == 3:  # token vectors: pool them as the model's configuration says
            vectors = pool(vectors, attention_mask, self._pooling or "mean")
        return vectors


_arena_lock = threading.Lock()
_arena_registered = False


def _shared_arena() -> None:
    """One CPU memory arena for every session in the process (a model's two sessions, every
    model), instead of one each: each arena keeps the largest buffers it ever needed. Once:
    ONNX Runtime refuses a second registration, and lazy models load on threads at once."""
    global _arena_registered
    import onnxruntime as ort

    with _arena_lock:
        if _arena_registered:
            return
        memory = ort.OrtMemoryInfo(
            "Cpu", ort.OrtAllocatorType.ORT_ARENA_ALLOCATOR, 0, ort.OrtMemType.DEFAULT
        )
        ort.create_and_register_allocator(memory, ort.OrtArenaCfg(0, -1, -1, -1))
        _arena_registered = True


def _session(model: Path, threads: int, shared_arena: bool) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    if shared_arena:
        _shared_arena()
        options.add_session_config_entry("session.use_env_allocators", "1")
    else:
        options.enable_cpu_mem_arena = False
    # A memory pattern plans one block per input shape; batch shapes vary without end here, and
    # the blocks fragmented the arena.
    options.enable_mem_pattern = False
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # A pass on several threads spins them between its operators (fast hand-offs), but they
    # stop when it ends: spinning on, they starved the threads that answer the request.
    options.add_session_config_entry("session.force_spinning_stop", "1")
    return ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
