"""How each backend is built for a model: find or build the files it runs, then construct it.
The registry (registry.py) names these; each takes a BackendSpec."""

from __future__ import annotations

import logging
from pathlib import Path

from embedserve.backends.base import Backend
from embedserve.backends.spec import BackendSpec
from embedserve.errors import ModelUnavailable
from embedserve.models.metadata import read_metadata
from embedserve.models.source import onnx_file

log = logging.getLogger(__name__)


def onnx(spec: BackendSpec) -> Backend:
    """ONNX Runtime on the model's own ONNX graph when it ships only that, else on our export
    of its whole module stack (fp32, or int8 quantized from it)."""
    from embedserve.backends.onnx import OnnxBackend
    from embedserve.backends.onnx_build import OnnxPrecision, cached_onnx_model

    shipped = onnx_file(spec.files)
    if shipped is not None:
        return _shipped_onnx(spec, shipped)
    model = cached_onnx_model(
        spec.files, spec.precision_of(OnnxPrecision), spec.cache_root, spec.model_id,
        pools_instruction=spec.pools_instruction, trust_remote_code=spec.trust_remote_code,
    )  # fmt: skip
    return OnnxBackend(
        model,
        precision=spec.precision,
        streams=spec.streams,
        cores=spec.cores,
        shared_arena=not spec.short_lived,
    )


def _shipped_onnx(spec: BackendSpec, model: Path) -> Backend:
    """An ONNX folder is served as it is: no export, fp32, pooled as its 1_Pooling says."""
    from embedserve.backends.onnx import OnnxBackend
    from embedserve.backends.pooling import POOLINGS

    metadata = read_metadata(spec.files)
    if any("Dense" in m for m in metadata.modules):
        raise ModelUnavailable(
            f"{spec.model_id} has a Dense layer after pooling but only ONNX weights for the "
            f"transformer; provide the PyTorch weights so the whole stack can be exported"
        )
    pooling = metadata.pooling or "mean"
    if pooling not in POOLINGS:
        raise ModelUnavailable(
            f"{spec.model_id}: pooling '{pooling}' is not supported for ONNX folders"
        )
    log.info("serving the ONNX model shipped in %s (%s pooling)", model, pooling)
    return OnnxBackend(model, pooling=pooling, streams=spec.streams, cores=spec.cores)


def openvino(spec: BackendSpec) -> Backend:
    """OpenVINO on our fp32 ONNX export (fp32, or bf16 computed from it), or on an int8 model
    NNCF quantized from it: the packed export where the model packs, else the padded one."""
    from embedserve.backends.dense_head import dense_head
    from embedserve.backends.onnx_build import cached_onnx_model
    from embedserve.backends.openvino import OpenVinoBackend, OpenVinoPrecision
    from embedserve.backends.openvino_build import cached_openvino_int8
    from embedserve.backends.packed_export import cached_packed_onnx, serves_packed

    padded = cached_onnx_model(
        spec.files, "fp32", spec.cache_root, spec.model_id,
        pools_instruction=spec.pools_instruction, trust_remote_code=spec.trust_remote_code,
    )  # fmt: skip
    packed = None
    if serves_packed(spec.files, spec.pools_instruction):
        packed = cached_packed_onnx(
            spec.files, spec.cache_root, spec.model_id, spec.trust_remote_code
        )
    model = packed or padded
    if spec.precision == "int8":  # quantized from the graph that serves
        model = cached_openvino_int8(spec.files, model, spec.cache_root, spec.model_id)
    pooling = read_metadata(spec.files).pooling or "mean"
    return OpenVinoBackend(
        model,
        spec.precision_of(OpenVinoPrecision),
        threads=spec.cores,
        streams=spec.streams,
        kernel_cache=kernel_cache(spec),
        compile_cache=model.parent / "openvino-compiled",  # goes with its build when stale
        packed_pooling=pooling if packed else None,
        head=dense_head(spec.files) if packed else None,
    )


def kernel_cache(spec: BackendSpec) -> int:
    """--kernel-cache, else what served best for the precision: int8's kernels take long to
    rebuild, bf16's and fp32's little, and each entry costs memory in every stream
    (docs/engineering-notes.md)."""
    if spec.kernel_cache is not None:
        return spec.kernel_cache
    return 1000 if spec.precision == "int8" else 300


def torch(spec: BackendSpec) -> Backend:
    """The model's own sentence-transformers stack on PyTorch (one stream)."""
    from embedserve.backends.torch import TorchBackend, TorchPrecision

    return TorchBackend(
        spec.files, spec.device, spec.precision_of(TorchPrecision), cores=spec.cores,
        trust_remote_code=spec.trust_remote_code,
    )  # fmt: skip
