"""An int8 OpenVINO model of a sentence-transformers folder, built once and cached.

NNCF's post-training quantization of the cached fp32 ONNX graph, calibrated on real text
(`calibration.py`): weights and activations of every linear layer in int8. SmoothQuant moves
the GELU outputs' outliers into the FFN down-projections' weights; its alpha of 0.8 (NNCF's
default is 0.95) keeps odd inputs (emoji, code, one letter) closest to fp32.
The build runs in a child process: NNCF brings scikit-learn and scipy, which a server has no
use for once the model is built.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
import logging
import sys
from pathlib import Path

import numpy as np

from embedserve.backends.base import graph_feeds
from embedserve.backends.build_steps import run_apart, step
from embedserve.backends.calibration import calibration_texts
from embedserve.backends.onnx_build import PIPELINE_VERSION
from embedserve.backends.packing import one_text_a_row
from embedserve.errors import ModelUnavailable
from embedserve.machine import cpu_supports_bf16
from embedserve.models.cache import build_owner, cached_build, tokenizer_digest

log = logging.getLogger(__name__)

INSTALL_OPENVINO = 'install embedserve[openvino] (pip install "embedserve[openvino]")'
NO_BF16 = "this CPU has no bf16 instructions (AVX512-BF16 or AMX); use fp32 or int8"
_SMOOTH_QUANT_ALPHA = 0.8


def openvino_missing(precision: str, kind: str = "cpu") -> str | None:
    """Why OpenVINO cannot serve `precision` here (a package to install, NNCF too to build
    int8, or a CPU without bf16), or None. It runs on the CPU only (`kind`)."""
    if precision == "bf16" and not cpu_supports_bf16():
        return NO_BF16
    names = ("openvino", "nncf") if precision == "int8" else ("openvino",)
    missing = [n for n in names if importlib.util.find_spec(n) is None]
    if not missing:
        return None
    return (
        f"{precision} on OpenVINO needs {' and '.join(missing)}, not installed: {INSTALL_OPENVINO}"
    )


def cached_openvino_int8(folder: Path, fp32_onnx: Path, cache_root: Path, name: str) -> Path:
    """Path of the int8 OpenVINO model (model.xml, with model.bin beside it) of `folder`,
    quantized from its fp32 ONNX graph `fp32_onnx` (padded or packed)."""
    problem = openvino_missing("int8")
    if problem:
        raise ModelUnavailable(problem)
    key = _cache_key(folder, fp32_onnx)
    label = name.replace("/", "--")
    target = cache_root / "openvino" / f"int8-{key[:24]}"

    def build(out: Path, _: Path) -> None:
        log.info("building the int8 OpenVINO model of %s (first start only)", label)
        what = "quantizing to int8 with NNCF, calibrated on real text"
        step(1, 1, what, lambda: run_apart(quantize, folder, fp32_onnx, out / "model.xml"))

    built = cached_build(
        target,
        key,
        build,
        what=f"OpenVINO model of {label} (int8)",
        owner=build_owner(folder, "openvino int8"),
        notes={"model": label},
    )
    return built / "model.xml"


def quantize(folder: Path, fp32_onnx: Path, out: Path) -> None:
    """NNCF post-training quantization (run in a child process by `cached_openvino_int8`)."""
    import nncf
    import openvino as ov

    from embedserve.models.metadata import read_metadata
    from embedserve.models.tokenizer import ModelTokenizer

    model = ov.Core().read_model(fp32_onnx)
    inputs = {port.get_any_name() for port in model.inputs}
    tokenizer = ModelTokenizer(folder / "tokenizer.json", read_metadata(folder).max_tokens)
    samples = []
    for ids in tokenizer.encode(calibration_texts()):
        row = np.array([ids], dtype=np.int64)
        if "segments" in inputs:  # the packed graph: a text a row
            text = one_text_a_row(row, np.ones_like(row))
            feeds = {"input_ids": text.ids, "position_ids": text.positions}
            samples.append({**feeds, "segments": text.segments})
        else:
            samples.append(graph_feeds(inputs, row, np.ones_like(row)))
    quantized = nncf.quantize(
        model,
        nncf.Dataset(samples),
        model_type=nncf.ModelType.TRANSFORMER,
        subset_size=len(samples),
        advanced_parameters=nncf.AdvancedQuantizationParameters(
            smooth_quant_alphas=nncf.AdvancedSmoothQuantParameters(matmul=_SMOOTH_QUANT_ALPHA)
        ),
    )
    ov.save_model(quantized, out, compress_to_fp16=False)


def _cache_key(folder: Path, fp32_onnx: Path) -> str:
    tools = [importlib.metadata.version(n) for n in ("openvino", "nncf", "torch", "onnxruntime")]
    texts = hashlib.sha256(json.dumps(calibration_texts()).encode()).hexdigest()
    recipe = f"smooth-quant-{_SMOOTH_QUANT_ALPHA}"
    # The fp32 graph's build (its folder is named by its key) and the tokenizer that calibrates
    parts = [tokenizer_digest(folder), fp32_onnx.parent.name, PIPELINE_VERSION, texts, recipe]
    parts += tools
    return hashlib.sha256(json.dumps([*parts, sys.version_info[:2]]).encode()).hexdigest()
