"""The Dense modules after a model's pooling (EmbeddingGemma's two projections, older models'
tanh layer), applied in numpy to vectors pooled outside the graph: a packed graph returns token
vectors (packing.py), so what comes after pooling runs here, in fp32."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np

ACTIVATIONS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "Identity": lambda x: x,
    "Tanh": np.tanh,
    "ReLU": lambda x: np.maximum(x, 0.0),
}
"""Dense activations by the torch class name sentence-transformers records for them."""


class DenseHead:
    """The stack's Dense layers in order: x @ W.T + b, then the layer's activation."""

    def __init__(self, layers: list[tuple[np.ndarray, np.ndarray | None, str]]) -> None:
        self.layers = layers

    def __call__(self, vectors: np.ndarray) -> np.ndarray:
        out = vectors.astype(np.float32, copy=False)
        for weight, bias, activation in self.layers:
            out = out @ weight.T
            if bias is not None:
                out = out + bias
            out = ACTIVATIONS[activation](out)
        return np.ascontiguousarray(out, dtype=np.float32)


def dense_modules(folder: Path) -> list[Path]:
    """The folders of the Dense modules of a sentence-transformers stack, in order."""
    modules = _json(folder / "modules.json")
    return [
        folder / str(m.get("path", ""))
        for m in (modules if isinstance(modules, list) else [])
        if isinstance(m, dict) and str(m.get("type", "")).endswith("Dense")
    ]


def unsupported(folder: Path) -> str | None:
    """Why the Dense modules of `folder` cannot run here, or None when they all can."""
    for module in dense_modules(folder):
        name = _activation(module)
        if name not in ACTIVATIONS:
            return f"a Dense layer with activation {name} (here: {', '.join(ACTIVATIONS)})"
        if not (module / "model.safetensors").is_file():
            return f"a Dense layer without model.safetensors ({module.name})"
    return None


def dense_head(folder: Path) -> DenseHead | None:
    """The head of `folder` (None where it has no Dense module)."""
    from safetensors.numpy import load_file

    layers: list[tuple[np.ndarray, np.ndarray | None, str]] = []
    for module in dense_modules(folder):
        weights = load_file(str(module / "model.safetensors"))
        bias = weights.get("linear.bias")
        layers.append(
            (
                weights["linear.weight"].astype(np.float32),
                None if bias is None else bias.astype(np.float32),
                _activation(module),
            )
        )
    return DenseHead(layers) if layers else None


def _activation(module: Path) -> str:
    config = _json(module / "config.json")
    recorded = config.get("activation_function", "Tanh") if isinstance(config, dict) else "Tanh"
    return str(recorded).rsplit(".", 1)[-1]  # sentence-transformers' default is tanh


def _json(path: Path) -> dict[str, object] | list[object]:
    try:
        loaded = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return loaded if isinstance(loaded, (dict, list)) else {}
