"""The packed graph of a model: its transformer reading several texts a row (packing.py), built
once and cached. A padded batch of mixed lengths computes its padding; a packed one computes
what its texts hold, so small batches of every length fill a pass (docs/engineering-notes.md).

Exported with torch: the transformer's own code, given each token's position within its text and
the masks in which a token sees only its own text (by the model's rules: attention_masks.py); it
returns the token vectors, and pooling and any Dense layers run outside (packing.pool_packed,
dense_head.py). Proven at build, not assumed: texts of every probe length packed side by side
must give sentence-transformers' own vectors (cosine >= 0.99999), else the model is served
padded, and that verdict is cached too.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np

from embedserve.backends.build_steps import step
from embedserve.backends.dense_head import dense_head, unsupported
from embedserve.backends.onnx_build import (
    export_key,
    move_graph,
    probe_lengths_of,
    vocab_size,
    without_torch_here,
)
from embedserve.backends.packing import PACKED_POOLINGS, fill_rows, lay_out, pool_packed
from embedserve.models.cache import build_owner, cached_build
from embedserve.models.metadata import read_metadata

log = logging.getLogger(__name__)

PACKED_VERSION = 2  # bump when the export below changes what it produces (2: decoder masks)
_REFUSED = "refused.json"  # a build that found the model cannot be packed: why
_OPSET = 17
_PACKED_INPUTS = ("input_ids", "position_ids", "segments")


def not_packable(folder: Path) -> str | None:
    """Why `folder` cannot be served packed, or None: its stack must be a transformer and a
    pooling that a token's position picks or averages, then only Dense layers this side can run
    on the pooled vectors (dense_head.py) and a Normalize (no pooling that skips an
    instruction, not a cross-encoder)."""
    metadata = read_metadata(folder)
    kinds = [m.rsplit(".", 1)[-1] for m in metadata.modules]
    if metadata.task != "embed":
        return "a cross-encoder"
    if kinds[:2] != ["Transformer", "Pooling"] or set(kinds[2:]) - {"Dense", "Normalize"}:
        return f"modules {kinds} (packing needs Transformer, Pooling[, Dense...][, Normalize])"
    if problem := unsupported(folder):
        return problem
    if (metadata.pooling or "mean") not in PACKED_POOLINGS or not metadata.pools_prompt:
        return f"pooling '{metadata.pooling}' (packing pools {', '.join(PACKED_POOLINGS)})"
    return None


def serves_packed(folder: Path, pools_instruction: bool) -> bool:
    """Whether OpenVINO serves `folder` packed (if the packed graph proves exact at build): its
    fp32 and bf16 compute the packed graph, its int8 is quantized from it."""
    return pools_instruction and not_packable(folder) is None


def packed_key(folder: Path) -> str:
    """What decides the packed graph of `folder` (its cache key)."""
    return hashlib.sha256(json.dumps([export_key(folder), PACKED_VERSION]).encode()).hexdigest()


def cached_packed_onnx(
    folder: Path, cache_root: Path, name: str, trust_remote_code: bool = False
) -> Path | None:
    """The packed graph of `folder`, or None where it did not prove exact against
    sentence-transformers' modules (the reason logged). `trust_remote_code`: run the code the
    folder ships."""
    key = packed_key(folder)
    label = name.replace("/", "--")

    def build(out: Path, scratch: Path) -> None:
        exported = scratch / "packed" / "model.onnx"  # a big model's weights lie beside it
        exported.parent.mkdir()
        problem = ""

        def export() -> None:
            nonlocal problem
            try:
                without_torch_here(_export, folder, exported, trust_remote_code)
            except Exception as exc:  # e.g. a transformer that takes no positions: served padded
                problem = f"the packed graph could not be exported ({exc})"
            else:
                refused = exported.parent / _REFUSED
                problem = refused.read_text() if refused.exists() else ""

        step(1, 1, "exporting the packed graph, checked against sentence-transformers", export)
        if problem:
            (out / _REFUSED).write_text(json.dumps(problem))
        else:
            move_graph(exported, out / "model.onnx")

    built = cached_build(
        cache_root / "onnx" / f"packed-{key[:24]}",
        key,
        build,
        what=f"packed ONNX model of {label}",
        owner=build_owner(folder, "onnx packed"),
        notes={"model": label},
    )
    if (built / _REFUSED).exists():
        log.warning("%s is served padded: %s", name, json.loads((built / _REFUSED).read_text()))
        return None
    return built / "model.onnx"


def _export(folder: Path, out: Path, trust: bool = False) -> None:
    """Needs torch (run apart where the server has not loaded it). Writes `out`, or beside it
    the reason it cannot."""
    import torch
    from sentence_transformers import SentenceTransformer

    from embedserve.backends.attention_masks import masks_for

    stack = SentenceTransformer(
        str(folder), device="cpu", local_files_only=True, trust_remote_code=trust,
        model_kwargs={"attn_implementation": "eager"},
    )  # fmt: skip
    transformer: torch.nn.Module = stack[0].auto_model.eval()  # type: ignore[union-attr]
    names = getattr(stack.tokenizer, "model_input_names", ())
    found = _position_offset(transformer, vocab_size(folder))
    if found is None:
        (out.parent / _REFUSED).write_text(
            "its positions cannot be given per text (the packed tokens differed from the padded)"
        )
        return
    offset: int = found

    class Packed(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.transformer = transformer

        def forward(
            self, input_ids: torch.Tensor, position_ids: torch.Tensor, segments: torch.Tensor
        ) -> torch.Tensor:
            features = {
                "input_ids": input_ids,
                "position_ids": position_ids + offset,
                "attention_mask": masks_for(self.transformer, segments),
            }
            if "token_type_ids" in names:
                features["token_type_ids"] = torch.zeros_like(input_ids)
            return self.transformer(**features).last_hidden_state  # type: ignore[no-any-return]

    sample = torch.randint(vocab_size(folder) // 2, vocab_size(folder), (2, 16))
    args = (sample, torch.arange(16).repeat(2, 1), torch.ones_like(sample))
    axes = {n: {0: "rows", 1: "width"} for n in _PACKED_INPUTS}
    with torch.inference_mode():
        torch.onnx.export(
            Packed().eval(),
            args,
            str(out),
            input_names=list(_PACKED_INPUTS),
            output_names=["token_embeddings"],
            dynamic_axes=axes | {"token_embeddings": {0: "rows", 1: "width"}},
            opset_version=_OPSET,
            dynamo=False,
        )

    def reference(ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """sentence-transformers' own forward, the model building its own masks."""
        features = {"input_ids": torch.from_numpy(ids), "attention_mask": torch.from_numpy(mask)}
        if "token_type_ids" in names:
            features["token_type_ids"] = torch.zeros_like(features["input_ids"])
        with torch.inference_mode():
            return stack(features)["sentence_embedding"].float().numpy()  # type: ignore[no-any-return]

    if problem := _differs(out, reference, folder):
        (out.parent / _REFUSED).write_text(problem)


def _position_offset(transformer: object, vocab: int) -> int | None:
    """The position the model gives a text's first token (0 for BERT, the padding id + 1 for
    the RoBERTa family), found by trying: a text after another in one row must read as it does
    alone."""
    import torch

    assert isinstance(transformer, torch.nn.Module)
    config = getattr(transformer, "config", None)
    from embedserve.backends.attention_masks import masks_for

    candidates = [0, int(getattr(config, "pad_token_id", None) or 0) + 1]
    rng = torch.Generator().manual_seed(0)
    first, second = (torch.randint(vocab // 2, vocab, (1, n), generator=rng) for n in (5, 9))
    with torch.inference_mode():
        alone = transformer(input_ids=second, attention_mask=torch.ones_like(second))
        row = torch.cat([first, second], dim=1)
        positions = torch.cat([torch.arange(5), torch.arange(9)])[None]
        segments = torch.tensor([[1] * 5 + [2] * 9])
        for offset in dict.fromkeys(candidates):
            packed = transformer(
                input_ids=row,
                position_ids=positions + offset,
                attention_mask=masks_for(transformer, segments),
            )
            difference = (packed.last_hidden_state[:, 5:] - alone.last_hidden_state).abs().max()
            if float(difference) < 1e-4:
                return offset
    return None


def _differs(
    packed: Path, reference: Callable[[np.ndarray, np.ndarray], np.ndarray], folder: Path
) -> str:
    """Why the packed graph's vectors are not sentence-transformers' ('' when they are), on the
    export's probe lengths (across every local-attention window, up to the model's maximum):
    texts side by side in rows as wide as the longest, pooled and run through the Dense head
    here as serving does; theirs one a row, padded."""
    import onnxruntime as ort

    metadata = read_metadata(folder)
    vocab = vocab_size(folder)
    rng = np.random.default_rng(0)
    texts = [rng.integers(vocab // 2, vocab, n).tolist() for n in probe_lengths_of(folder)]
    width = max(map(len, texts))
    rows = fill_rows([len(t) for t in texts], width, len(texts))
    batch = lay_out([[texts[i] for i in row] for row in rows], width)
    order = [i for row in rows for i in row]
    session = ort.InferenceSession(str(packed), providers=["CPUExecutionProvider"])
    feeds = {"input_ids": batch.ids, "position_ids": batch.positions, "segments": batch.segments}
    ours = pool_packed(session.run(None, feeds)[0], batch.spans, metadata.pooling or "mean")
    del session  # a big model's weights: not held beside the reference's
    head = dense_head(folder)
    ours = head(ours) if head is not None else ours
    padded = lay_out([[texts[i]] for i in order], width)  # one a row: a padded batch
    theirs = reference(padded.ids, (padded.segments > 0).astype(np.int64))
    cos = (ours * theirs).sum(1) / (np.linalg.norm(ours, axis=1) * np.linalg.norm(theirs, axis=1))
    if (cos >= 0.99999).all():
        return ""
    worst = int(np.argmin(cos))
    return (
        f"packed texts gave other vectors than sentence-transformers' (cosine {cos[worst]:.6f} "
        f"on a {len(texts[order[worst]])}-token text)"
    )
