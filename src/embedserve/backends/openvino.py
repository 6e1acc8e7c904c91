"""OpenVINO backend, for the faster modes on CPU: int8 (an NNCF-quantized model) and bf16 (the
fp32 ONNX graph computed in bf16, on CPUs that have it natively)."""

from __future__ import annotations

import logging
import os
import queue
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import numpy as np

from embedserve.backends.base import graph_feeds, probe_dimension
from embedserve.backends.packing import PackedBatch, lay_out, one_text_a_row, pool_packed
from embedserve.machine import cores as machine_cores
from embedserve.machine import page_out_files_under, sharing_cores

log = logging.getLogger(__name__)

OpenVinoPrecision = Literal["fp32", "bf16", "int8"]


class OpenVinoBackend:
    kind = "openvino"
    kernels_per_shape = True  # up to --kernel-cache entries; a missing shape is rebuilt

    def __init__(
        self,
        model: Path,
        precision: OpenVinoPrecision,
        threads: int | None = None,
        streams: int = 1,
        kernel_cache: int = 1000,
        compile_cache: Path | None = None,
        packed_pooling: str | None = None,
        head: Callable[[np.ndarray], np.ndarray] | None = None,
    ) -> None:
        """`model` is an ONNX file or an OpenVINO model.xml. `streams`: passes the caller may run
        at once, each on its share of the `threads` (default: every core this process may use).
        `kernel_cache`: entries of kernels kept for the shapes met (Settings.kernel_cache).
        `compile_cache`: a folder OpenVINO keeps its compiled models in, so that a warm start
        loads them instead of compiling. `packed_pooling`: `model` is a packed graph
        (packed_export.py), its token vectors pooled so; `embed_packed` then runs packed batches
        and `embed` runs a padded one as one text a row; `head`: the Dense layers that follow
        the pooling of a packed graph's token vectors (dense_head.py)."""
        import openvino as ov

        self.precision = precision
        self.streams = streams
        self.packed_pooling = packed_pooling
        self.head = head
        threads = threads or machine_cores()
        core = ov.Core()
        if compile_cache is not None:
            core.set_property({"CACHE_DIR": str(compile_cache)})

        def compiled_with(streams: int) -> Any:
            return core.compile_model(
                str(model),  # a path: with a warm cache, imported without reading the model
                "CPU",
                {
                    # int8's other ops (attention, norms) stay in f32: in bf16 they ran slower,
                    # converting around every int8 layer.
                    "INFERENCE_PRECISION_HINT": "bf16" if precision == "bf16" else "f32",
                    "INFERENCE_NUM_THREADS": threads,
                    "PERFORMANCE_HINT": "LATENCY" if streams == 1 else "THROUGHPUT",
                    "NUM_STREAMS": streams,
                    "CPU_RUNTIME_CACHE_CAPACITY": kernel_cache,
                    # pinned, two Ray actors of one CPU each ran on the same first core (0.46x)
                    "ENABLE_CPU_PINNING": not sharing_cores(),
                },
            )

        cached = _blobs(compile_cache)
        compiled = compiled_with(streams)
        if written := _blobs(compile_cache) - cached:
            # Compiled now, it holds the weights as read, in this process's own memory;
            # imported from the cache it maps them from the blob, whose pages go back below
            # once written out (a dirty page cannot leave).
            del compiled
            assert compile_cache is not None
            for name in written:
                with (compile_cache / name).open("rb") as blob:
                    os.fsync(blob.fileno())
            compiled = compiled_with(streams)
        self._requests: queue.SimpleQueue[Any] = queue.SimpleQueue()  # one per stream
        for _ in range(streams):
            self._requests.put(compiled.create_infer_request())
        self._inputs = {port.get_any_name() for port in compiled.inputs}
        # A lone batch on every core (what ONNX Runtime's second session does): a second compiled
        # model of one stream, used only while nothing else runs.
        self._alone = compiled_with(1).create_infer_request() if streams > 1 < threads else None
        # per-token vectors (TEI's /embed_all) only where the graph ends before pooling
        self.token_vectors = self._token_vectors if packed_pooling else None
        self._dimension = probe_dimension(self.embed)
        if self._alone is not None:
            probe_dimension(self._embed_alone)
        if compile_cache is not None:
            # A compiled model imported from the cache maps its blob and reads every weight
            # once, to repack it into the CPU's layout; those source pages are not read again
            # but stayed resident (86 MiB of MiniLM's 320 MiB server; 3 MiB came back in use).
            page_out_files_under(compile_cache)
        log.info(
            "OpenVINO backend: %s, %s%s, %d stream(s) on %d threads",
            model.name,
            precision,
            ", texts packed side by side" if packed_pooling else "",
            compiled.get_property("NUM_STREAMS"),
            compiled.get_property("INFERENCE_NUM_THREADS"),
        )

    @property
    def dimension(self) -> int:
        return self._dimension

    @property
    def every_core_pass(self) -> Callable[[np.ndarray, np.ndarray], np.ndarray] | None:
        return self._embed_alone if self._alone is not None else None

    @property
    def packs(self) -> bool:
        """Whether it runs packed batches (`embed_packed`)."""
        return self.packed_pooling is not None

    def embed(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        if self.packs:
            return self.embed_packed(one_text_a_row(input_ids, attention_mask))
        request = self._requests.get()
        try:
            return self._infer(request, input_ids, attention_mask)
        finally:
            self._requests.put(request)

    def embed_packed(self, batch: PackedBatch) -> np.ndarray:
        """One vector a text of a packed batch, in the order of its spans."""
        request = self._requests.get()
        try:
            return self._infer_packed(request, batch)
        finally:
            self._requests.put(request)

    def every_core_packed(self, batch: PackedBatch) -> np.ndarray:
        """`embed_packed` on every core (only while nothing else runs: see every_core_pass)."""
        return self._infer_packed(self._alone, batch)

    def _embed_alone(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        if self.packs:
            return self.every_core_packed(one_text_a_row(input_ids, attention_mask))
        return self._infer(self._alone, input_ids, attention_mask)

    def _infer(self, request: Any, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        outputs = request.infer(graph_feeds(self._inputs, input_ids, attention_mask))
        return np.array(outputs[0], dtype=np.float32)  # a copy: the request reuses buffers

    def _infer_packed(self, request: Any, batch: PackedBatch) -> np.ndarray:
        assert self.packed_pooling is not None
        tokens = request.infer(_packed_feeds(batch))[0]  # pooled at once: buffers are reused
        pooled = pool_packed(tokens, batch.spans, self.packed_pooling)
        return self.head(pooled) if self.head is not None else pooled

    def _token_vectors(self, sequences: list[list[int]]) -> list[np.ndarray]:
        """Each sequence's token vectors: the transformer's last hidden states, before pooling
        and the Dense layers, one text a row."""
        batch = lay_out([[s] for s in sequences], max(map(len, sequences)))
        request = self._requests.get()
        try:
            tokens = request.infer(_packed_feeds(batch))[0]
            return [np.array(tokens[r, start : start + n]) for r, start, n in batch.spans]
        finally:
            self._requests.put(request)


def _blobs(folder: Path | None) -> set[str]:
    """The compiled models in a compile cache folder."""
    return {p.name for p in folder.glob("*.blob")} if folder is not None else set()


def _packed_feeds(batch: PackedBatch) -> dict[str, np.ndarray]:
    return {"input_ids": batch.ids, "position_ids": batch.positions, "segments": batch.segments}
