"""OpenVINO backend, for the faster modes on CPU: int8 (an NNCF-quantized model) and bf16 (the
fp32 ONNX graph computed in bf16, on CPUs that have it natively)."""

from __future__ import annotations

import logging
import queue
from pathlib import Path
from typing import Any, Literal

import numpy as np

from embedserve.backends.base import graph_feeds, probe_dimension
from embedserve.machine import cores as machine_cores

log = logging.getLogger(__name__)

OpenVinoPrecision = Literal["fp32", "bf16", "int8"]


class OpenVinoBackend:
    kind = "openvino"
    kernels_per_shape = True  # up to --kernel-cache entries; a missing shape is rebuilt
    every_core_pass = None  # one compiled model: its streams split the cores between them

    def __init__(
        self,
        model: Path,
        precision: OpenVinoPrecision,
        threads: int | None = None,
        streams: int = 1,
        kernel_cache: int = 1000,
    ) -> None:
        """`model` is an ONNX file or an OpenVINO model.xml. `streams`: passes the caller may run
        at once, each on its share of the `threads` (default: every core this process may use).
        `kernel_cache`: entries of kernels kept for the shapes met (Settings.kernel_cache)."""
        import openvino as ov

        self.precision = precision
        self.streams = streams
        core = ov.Core()
        compiled = core.compile_model(
            core.read_model(model),
            "CPU",
            {
                # int8's other ops (attention, norms) stay in f32: in bf16 they ran slower,
                # converting around every int8 layer.
                "INFERENCE_PRECISION_HINT": "bf16" if precision == "bf16" else "f32",
                "INFERENCE_NUM_THREADS": threads or machine_cores(),
                "PERFORMANCE_HINT": "LATENCY" if streams == 1 else "THROUGHPUT",
                "NUM_STREAMS": streams,
                "CPU_RUNTIME_CACHE_CAPACITY": kernel_cache,
            },
        )
        self._requests: queue.SimpleQueue[Any] = queue.SimpleQueue()  # one per stream
        for _ in range(streams):
            self._requests.put(compiled.create_infer_request())
        self._inputs = {port.get_any_name() for port in compiled.inputs}
        self._dimension = probe_dimension(self.embed)
        log.info(
            "OpenVINO backend: %s, %s, %d stream(s) on %d threads",
            model.name,
            precision,
            compiled.get_property("NUM_STREAMS"),
            compiled.get_property("INFERENCE_NUM_THREADS"),
        )

    @property
    def dimension(self) -> int:
        return self._dimension

    def embed(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        request = self._requests.get()
        try:
            outputs = request.infer(graph_feeds(self._inputs, input_ids, attention_mask))
            return np.array(outputs[0], dtype=np.float32)  # a copy: the request reuses buffers
        finally:
            self._requests.put(request)
