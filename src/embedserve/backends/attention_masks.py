"""The attention masks our exported graphs give a transformer, built from which text each
token belongs to (`segments`: 1, 2, ... a text, 0 where none is), in place of the masks the
model builds itself.

Two reasons: transformers builds decoder masks with functions the ONNX exporter cannot trace
(Gemma3's bidirectional ones with vmap: "unordered_map::at"), and packed rows need a mask per
text. The rules are the model's own, read from its code and configuration: causal attention
where its attention modules say so, and a window of `sliding_window` tokens on the layers its
`layer_types` name "sliding_attention" (both sides of a token where attention is
bidirectional). Nothing here is trusted blindly: each exported graph is compared at build
with sentence-transformers' own modules on texts longer than every window (onnx_build.py).

Needs torch (run in the build's process only)."""

from __future__ import annotations

from typing import Any

FULL = "full_attention"
SLIDING = "sliding_attention"


def needs_own_masks(transformer: Any) -> bool:
    """Whether the exports give this transformer masks of their own: a causal model, or one
    whose layers attend differently (the decoder families). Encoders (BERT, XLM-R, MPNet...)
    read a plain mask and keep the export path that has always served them."""
    return is_causal(transformer) or bool(getattr(transformer.config, "layer_types", None))


def is_causal(transformer: Any) -> bool:
    """What the model's attention modules say (Gemma3's turn it off for EmbeddingGemma's
    bidirectional attention; BERT's are causal only as a decoder)."""
    return any(
        bool(getattr(module, "is_causal", False))
        for module in transformer.modules()
        if type(module).__name__.endswith("Attention")
    )


def masks_for(transformer: Any, segments: Any) -> Any:
    """The attention mask(s) for `segments` [rows, width]: a dict by layer type for a model
    with `layer_types` (the mapping its forward accepts in place of the masks it would build),
    else one additive mask [rows, 1, width, width]."""
    config = transformer.config
    causal = is_causal(transformer)
    layer_types = getattr(config, "layer_types", None)
    window = getattr(config, "sliding_window", None)
    if not layer_types:
        uses_window = window and getattr(config, "use_sliding_window", True)
        return _additive(segments, causal, window if uses_window else None)
    return {
        kind: _additive(segments, causal, window if kind == SLIDING else None)
        for kind in dict.fromkeys(layer_types)
    }


def _additive(segments: Any, causal: bool, window: int | None) -> Any:
    """0 where a token may attend (its own text; before it if causal; within the window), the
    dtype's minimum elsewhere. A row's empty tail attends to nothing real: its outputs are
    never read."""
    import torch

    allowed = (segments[:, :, None] == segments[:, None, :]) & (segments[:, None, :] > 0)
    index = torch.arange(segments.shape[1], device=segments.device)
    distance = index[:, None] - index[None, :]  # query - key; a text's tokens are contiguous
    if causal:
        allowed = allowed & (distance >= 0)[None]
    if window:
        allowed = allowed & (distance.abs() < window)[None]
    return torch.where(allowed[:, None], 0.0, torch.finfo(torch.float32).min)
