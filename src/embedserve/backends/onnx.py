"""ONNX Runtime backend: one session tuned to the machine's cores."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from embedserve.backends.base import graph_feeds, probe_dimension
from embedserve.backends.pooling import pool
from embedserve.config import usable_cores

log = logging.getLogger(__name__)


class OnnxBackend:
    kind = "onnx"

    def __init__(
        self,
        model: Path,
        threads: int | None = None,
        precision: str = "fp32",
        pooling: str | None = None,
        streams: int = 1,
    ) -> None:
        """`pooling` is for graphs that output token vectors (ONNX folders from the hub); our
        own exports output pooled vectors and need none. `streams`: passes the caller may run
        at once (ONNX Runtime's `run` is thread-safe), each on `threads` threads (default: the
        cores shared out among them)."""
        self.precision = precision
        self.streams = streams
        self._pooling = pooling
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or max(1, usable_cores() // streams)
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self._session = ort.InferenceSession(
            str(model), options, providers=["CPUExecutionProvider"]
        )
        self._inputs = [i.name for i in self._session.get_inputs()]
        self._dimension = probe_dimension(self.embed)
        log.info(
            "ONNX Runtime backend: %s, %d stream(s) of %d thread(s)",
            model.name,
            streams,
            options.intra_op_num_threads,
        )

    @property
    def dimension(self) -> int:
        return self._dimension

    def embed(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        # Our exports read UNPOOLED marks themselves; a hub graph needs a plain 0/1 mask.
        mask = attention_mask if self._pooling is None else np.minimum(attention_mask, 1)
        outputs = self._session.run(None, graph_feeds(self._inputs, input_ids, mask))
        vectors = np.asarray(outputs[0], dtype=np.float32)
        if vectors.ndim == 3:  # token vectors: pool them as the model's configuration says
            vectors = pool(vectors, attention_mask, self._pooling or "mean")
        return vectors
