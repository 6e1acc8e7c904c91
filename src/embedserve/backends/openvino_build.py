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
from embedserve.backends.onnx_build import PIPELINE_VERSION, cache_label
from embedserve.errors import ModelUnavailable
from embedserve.models.cache import cached_build, folder_digest

log = logging.getLogger(__name__)

INSTALL_HINT = 'install embedserve[openvino] (pip install "embedserve[openvino]")'
_SMOOTH_QUANT_ALPHA = 0.8


def openvino_missing(*, quantizer: bool) -> str | None:
    """What to install for the OpenVINO engine (and, for int8 builds, NNCF), or None."""
    names = ("openvino", "nncf") if quantizer else ("openvino",)
    missing = [n for n in names if importlib.util.find_spec(n) is None]
    return f"not installed: {', '.join(missing)}; {INSTALL_HINT}" if missing else None


def cached_openvino_int8(folder: Path, fp32_onnx: Path, cache_root: Path, name: str) -> Path:
    """Path of the int8 OpenVINO model (model.xml, with model.bin beside it) of `folder`,
    quantized from its fp32 ONNX graph `fp32_onnx`."""
    problem = openvino_missing(quantizer=True)
    if problem:
        raise ModelUnavailable(f"int8 on OpenVINO: {problem}")
    key = _cache_key(folder, fp32_onnx)
    label = cache_label(folder, name)
    target = cache_root / "openvino" / f"{label}-int8-{key[:16]}"

    def build(out: Path, _: Path) -> None:
        log.info("building the int8 OpenVINO model of %s (first start only)", label)
        what = "quantizing to int8 with NNCF, calibrated on real text"
        step(1, 1, what, lambda: run_apart(quantize, folder, fp32_onnx, out / "model.xml"))

    built = cached_build(target, key, build, what="OpenVINO model (int8)")
    return built / "model.xml"


def quantize(folder: Path, fp32_onnx: Path, out: Path) -> None:
    """NNCF post-training quantization (run in a child process by `cached_openvino_int8`)."""
    import nncf
    import openvino as ov

    from embedserve.engine.tokenizer import ModelTokenizer
    from embedserve.models.metadata import read_metadata

    model = ov.Core().read_model(fp32_onnx)
    inputs = {port.get_any_name() for port in model.inputs}
    tokenizer = ModelTokenizer(folder / "tokenizer.json", read_metadata(folder).max_tokens)
    samples = []
    for ids in tokenizer.encode(calibration_texts()):
        row = np.array([ids], dtype=np.int64)
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
    parts = [folder_digest(folder), fp32_onnx.parent.name, PIPELINE_VERSION, texts, recipe, *tools]
    return hashlib.sha256(json.dumps([*parts, sys.version_info[:2]]).encode()).hexdigest()
