"""Turn a sentence-transformers folder into an optimized ONNX model, once, and cache it.

Steps (logged as they run, first start only): export the module stack (transformer, pooling,
dense; not a final normalize, which serving applies) with torch; fuse the graph for transformer
inference with ONNX Runtime's optimizer, all but its Attention and SkipLayerNormalization
operators (kept only if it reproduces the export exactly); for int8, quantize weights
dynamically, per channel, keeping the FFN down-projections (fed by GELU, whose activations
quantize worst) in fp32. The result lives under a folder named by a key of the model's content
and every option; a manifest with the file's hash detects a corrupt or stale cache, which is
rebuilt.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import numpy as np

from embedserve.backends.build_steps import run_apart, step
from embedserve.models.cache import build_owner, cached_build, graph_digest
from embedserve.models.metadata import read_metadata

log = logging.getLogger(__name__)

OnnxPrecision = Literal["fp32", "int8"]


class ExportFailed(RuntimeError):
    """The model's stack could not be exported to ONNX (an architecture torch.onnx cannot
    trace): every backend that runs the export would fail alike."""


PIPELINE_VERSION = 4  # bump when the steps below change what they produce (4: own decoder masks)
_OPSET = 17
_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def cached_onnx_model(
    folder: Path,
    precision: OnnxPrecision,
    cache_root: Path,
    name: str | None = None,
    *,
    pools_instruction: bool = True,
    trust_remote_code: bool = False,
) -> Path:
    """Path of the ready ONNX file for `folder` at `precision`, building it if needed; `name`
    labels the log lines. The build is keyed by what determines it (graph_digest): the same
    weights under another name, folder or prompts are built once. `pools_instruction=False`
    builds a graph that reads UNPOOLED marks in its attention mask (INSTRUCTOR models); it is
    left out otherwise, as it would stop the attention fusion."""
    key = _cache_key(folder, precision, pools_instruction)
    label = (name or folder.name).replace("/", "--")
    target = cache_root / "onnx" / f"{precision}-{key[:24]}"

    def build(out: Path, scratch: Path) -> None:
        if precision == "fp32":
            try:
                _build_fp32(
                    folder, out / "model.onnx", scratch, label, pools_instruction, trust_remote_code
                )
            except Exception as exc:
                raise ExportFailed(f"cannot export {label} to ONNX: {exc}") from exc
            return
        # int8 is quantized from the cached, optimized fp32 graph, looked up only when needed
        source = cached_onnx_model(
            folder,
            "fp32",
            cache_root,
            name,
            pools_instruction=pools_instruction,
            trust_remote_code=trust_remote_code,
        )
        step(1, 1, f"quantizing {label} to int8", lambda: _quantize(source, out / "model.onnx"))

    built = cached_build(
        target,
        key,
        build,
        what=f"ONNX model of {label} ({precision})",
        owner=build_owner(folder, f"onnx {precision} {'pooled' if pools_instruction else 'apart'}"),
        notes={"precision": precision, "model": label},
    )
    return built / "model.onnx"


def _build_fp32(
    folder: Path, out: Path, scratch: Path, label: str, pools_instruction: bool, trust: bool
) -> None:
    exported = scratch / "export" / "model.onnx"  # a folder: a big model's weights lie beside it
    exported.parent.mkdir()
    log.info("building the ONNX model of %s (first start only; cached afterwards)", label)
    step(1, 2, "exporting with torch", lambda: _export(folder, exported, pools_instruction, trust))
    if has_external_data(exported):
        # Over protobuf's 2 GiB: ONNX Runtime's optimizer holds such a graph in memory several
        # times (23 GB for Qwen3-Embedding-0.6B, then it died); OpenVINO fuses on its own.
        log.info("  %s is over 2 GiB: its weights stay beside the graph, which is not fused", label)
        move_graph(exported, out)
        return
    optimized = scratch / "optimized.onnx"
    step(
        2,
        2,
        "fusing the graph for transformer inference",
        lambda: without_torch_here(_optimize, folder, exported, optimized),
    )
    if _same_outputs(exported, optimized, vocab_size(folder)):
        optimized.replace(out)
    else:
        log.warning(
            "the fused graph of %s differs from the export; serving the export", folder.name
        )
        exported.replace(out)


def has_external_data(graph: Path) -> bool:
    """Whether the exporter wrote the graph's weights in files beside it (a model over protobuf's
    2 GiB): its folder then holds more than the graph."""
    return any(p != graph for p in graph.parent.iterdir())


def move_graph(graph: Path, target: Path) -> None:
    """Move `graph` to `target`, with the weight files beside it (their names are recorded in
    the graph, so they keep them)."""
    for path in graph.parent.iterdir():
        if path != graph:
            path.replace(target.parent / path.name)
    graph.replace(target)


def _export(folder: Path, out: Path, pools_instruction: bool, trust: bool = False) -> None:
    without_torch_here(_export_stack, folder, out, pools_instruction, trust)


def without_torch_here(build_step: Callable[..., None], *args: Path | bool) -> None:
    """Run a build step that needs torch (the exporter; ORT's optimizer imports it too) in a
    child process when this one has not imported torch: the server then never carries torch's
    ~700 MB, since it serves with ONNX Runtime alone."""
    if "torch" in sys.modules:
        build_step(*args)
    else:
        run_apart(build_step, *args)


def _export_stack(folder: Path, out: Path, pools_instruction: bool, trust: bool = False) -> None:
    """`trust`: run the code the folder ships (--trust-remote-code). The graph is then compared
    with the torch modules it came from (`check_against_torch`): one that differs is refused."""
    import torch

    from embedserve.backends.attention_masks import masks_for, needs_own_masks
    from embedserve.backends.torch import pool_apart

    metadata = read_metadata(folder)
    if metadata.task == "rerank":
        model, names = _cross_encoder(folder, trust)
    else:
        model, names = _sentence_transformer(folder, trust)
    classifies = model.__class__.__name__.endswith("ForSequenceClassification")
    transformer = None if classifies else getattr(model[0], "auto_model", None)
    own_masks = transformer is not None and pools_instruction and needs_own_masks(transformer)

    def reference(features: dict[str, torch.Tensor]) -> torch.Tensor:
        """What sentence-transformers (or the classifier) computes, the model building its own
        masks."""
        if classifies:
            return model(**features).logits  # type: ignore[no-any-return]
        if not pools_instruction:
            return pool_apart(model, features)  # type: ignore[no-any-return]
        return model(dict(features))["sentence_embedding"]  # type: ignore[no-any-return]

    class Stack(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
            features = dict(zip(names, inputs, strict=True))
            if not own_masks or transformer is None:
                return reference(features)
            # The transformer reads masks of ours (attention_masks.py); the modules after it
            # (pooling, dense) read the plain one, as in sentence-transformers.
            mask = features["attention_mask"]
            given = {k: v for k, v in features.items() if k != "attention_mask"}
            states = transformer(**given, attention_mask=masks_for(transformer, mask))
            features["token_embeddings"] = states.last_hidden_state
            for module in list(self.model)[1:]:
                features = module(features)
            return features["sentence_embedding"]

    vocab = vocab_size(folder)
    sample = torch.randint(vocab // 2, vocab, (2, 16))
    fill = {"attention_mask": torch.ones_like(sample), "token_type_ids": torch.zeros_like(sample)}
    args = tuple(fill.get(n, sample) for n in names)
    axes = {n: {0: "batch", 1: "sequence"} for n in names} | {"sentence_embedding": {0: "batch"}}
    with torch.inference_mode():
        torch.onnx.export(
            Stack().eval(),
            args,
            str(out),
            input_names=names,
            output_names=["sentence_embedding"],
            dynamic_axes=axes,
            opset_version=_OPSET,
            dynamo=False,
        )
        if classifies or transformer is not None:
            check_against_torch(out, reference, names, vocab, probe_lengths_of(folder))


PROBE_MAX = 512
"""The longest probe text an export is checked on: the model's maximum where it is shorter. A
longer one costs minutes on a 0.6B model and proves no rule the shorter ones do not."""


def probe_lengths_of(folder: Path) -> list[int]:
    """Texts of these lengths, side by side in one batch, check an export: short ones, ones on
    either side of every local-attention window its configuration names, and the model's
    maximum length (up to PROBE_MAX)."""
    config = _json(folder / "config.json")
    longest = min(read_metadata(folder).max_tokens, PROBE_MAX)
    lengths = {2, 7, 19, longest}
    for name in ("sliding_window", "local_attention"):
        window = config.get(name)
        if isinstance(window, int) and window > 1:
            lengths |= {window - 1, window, window + 1, 2 * window + 3}
    return sorted(n for n in lengths if 1 < n <= longest)


def _json(path: Path) -> dict[str, Any]:
    try:
        loaded = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return loaded if isinstance(loaded, dict) else {}


EXPORT_EXACT = 0.99999
"""An export's vectors against the torch modules it came from, on every probe text."""


def check_against_torch(
    graph: Path, reference: Callable[..., Any], names: list[str], vocab: int, lengths: list[int]
) -> None:
    """Raise (the build fails, the next backend is tried) unless the exported graph gives the
    torch modules' vectors on texts of `lengths` tokens, padded side by side."""
    import onnxruntime as ort
    import torch

    rng = np.random.default_rng(0)
    width = max(lengths)
    ids = np.zeros((len(lengths), width), dtype=np.int64)
    mask = np.zeros_like(ids)
    for row, length in enumerate(lengths):
        ids[row, :length] = rng.integers(vocab // 2, vocab, length)
        mask[row, :length] = 1
    feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
    feeds = {name: feeds[name] for name in names}
    session = ort.InferenceSession(str(graph), providers=["CPUExecutionProvider"])
    declared = {i.name for i in session.get_inputs()}  # the exporter drops inputs never read
    ours = session.run(None, {k: v for k, v in feeds.items() if k in declared})[0]
    with torch.inference_mode():
        theirs = reference({k: torch.from_numpy(v) for k, v in feeds.items()}).float().numpy()
    if ours.shape[1] == 1:  # a cross-encoder's scores
        worst = float(np.abs(ours - theirs).max())
        if worst > 1e-3:
            raise RuntimeError(f"the export's scores differ from torch's by up to {worst:.2g}")
        return
    cos = (ours * theirs).sum(1) / (np.linalg.norm(ours, axis=1) * np.linalg.norm(theirs, axis=1))
    if not (cos >= EXPORT_EXACT).all():
        worst = int(np.argmin(cos))
        raise RuntimeError(
            f"the export differs from sentence-transformers' modules: cosine {cos[worst]:.6f} "
            f"on a {lengths[worst]}-token text (probe lengths {lengths})"
        )


def _sentence_transformer(folder: Path, trust: bool = False) -> tuple[Any, list[str]]:
    """The module stack, without a final Normalize (serving normalizes), and its inputs."""
    from sentence_transformers import SentenceTransformer

    from embedserve.backends.torch import without_normalize

    model = SentenceTransformer(
        str(folder),
        device="cpu",
        local_files_only=True,
        trust_remote_code=trust,
        model_kwargs={"attn_implementation": "eager"},
    )
    names = [n for n in _INPUTS if n in getattr(model.tokenizer, "model_input_names", _INPUTS)]
    return without_normalize(model).eval(), names


def _cross_encoder(folder: Path, trust: bool = False) -> tuple[Any, list[str]]:
    """A cross-encoder's classification model (its logits: CrossEncoder.predict's activation is
    applied by serving), and its inputs: token types mark the pair's second text."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(
        str(folder), local_files_only=True, attn_implementation="eager", trust_remote_code=trust
    )
    tokenizer = AutoTokenizer.from_pretrained(
        str(folder), local_files_only=True, trust_remote_code=trust
    )
    names = [n for n in _INPUTS if n in getattr(tokenizer, "model_input_names", _INPUTS)]
    return model.eval(), names


def _optimize(folder: Path, exported: Path, out: Path) -> None:
    """Fuse what runs faster fused: all but ONNX Runtime's Attention and SkipLayerNormalization,
    whose CPU kernels ran slower than the plain operators they replace
    (docs/engineering-notes.md)."""
    from onnxruntime.transformers import optimizer
    from onnxruntime.transformers.fusion_options import FusionOptions

    config = json.loads((folder / "config.json").read_text())
    options = FusionOptions("bert")
    options.enable_attention = False
    options.enable_skip_layer_norm = False
    fused = optimizer.optimize_model(
        str(exported),
        model_type="bert",  # BERT-family fusions; patterns that do not match are left as is
        num_heads=int(config.get("num_attention_heads", 0)),
        hidden_size=int(config.get("hidden_size", 0)),
        optimization_options=options,
    )
    log.info(
        "  fused operators: %s",
        {k: v for k, v in fused.get_fused_operator_statistics().items() if v},
    )
    fused.save_model_to_file(str(out))


def _quantize(source: Path, out: Path) -> None:
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    graph = onnx.load(str(source), load_external_data=False).graph
    producers = {output: node.op_type for node in graph.node for output in node.output}
    down_projections = [
        node.name
        for node in graph.node
        if node.op_type == "MatMul" and "Gelu" in producers.get(node.input[0], "")
    ]
    quantize_dynamic(
        str(source),
        str(out),
        weight_type=QuantType.QInt8,
        per_channel=True,
        nodes_to_exclude=down_projections,
        # weights only: the attention products (activation x activation) stay fp32
        extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT, "MatMulConstBOnly": True},
    )


def _same_outputs(a: Path, b: Path, vocab: int) -> bool:
    """Whether two graphs embed the same batch alike (cosine >= 0.99999 on every row)."""
    from embedserve.backends.onnx import OnnxBackend

    ids = np.random.default_rng(0).integers(vocab // 2, vocab, (3, 24))
    mask = np.ones_like(ids)
    x, y = (OnnxBackend(path, threads=1).embed(ids, mask) for path in (a, b))
    if x.shape[1] == 1:  # a cross-encoder's scores: a cosine of one number is only its sign
        return bool(np.allclose(x, y, rtol=1e-4, atol=1e-5))
    cos = (x * y).sum(axis=1) / (np.linalg.norm(x, axis=1) * np.linalg.norm(y, axis=1))
    return bool((cos >= 0.99999).all())


def vocab_size(folder: Path) -> int:
    config = json.loads((folder / "config.json").read_text())
    return int(config.get("vocab_size") or 2000)


def export_key(folder: Path, pools_instruction: bool = True) -> str:
    """What determines our fp32 export of `folder`: a graph computed from it (in any precision)
    changes when this does."""
    return _cache_key(folder, "fp32", pools_instruction)


def _cache_key(folder: Path, precision: str, pools_instruction: bool) -> str:
    # Versions from package metadata: importing torch only to read its version costs seconds.
    tools = [importlib.metadata.version(name) for name in ("torch", "onnxruntime", "onnx")]
    parts: list[object] = [graph_digest(folder), precision, PIPELINE_VERSION, _OPSET, *tools]
    if not pools_instruction:  # only then, so existing caches keep their keys
        parts.append("unpooled-instruction")
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()
