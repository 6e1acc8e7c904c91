"""Packed batches: several texts side by side in one row, each attending only to itself, so a
batch of mixed lengths costs its real tokens instead of rows padded to the longest. The graph
that reads them (packed_export.py) returns token vectors; pooling them per text is done here."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

PACKED_POOLINGS = ("mean", "cls", "lasttoken")
MIN_PACKED_WIDTH = 64
"""Rows at least this wide (where the texts hold that many tokens): fewer, longer rows than the
texts' own widths, whose attention over the whole row still costs little."""


@dataclass(frozen=True)
class PackedBatch:
    """Rows of texts laid end to end, and where each text lies, in the order of the results."""

    ids: np.ndarray
    """int64 [rows, width]: token ids, 0 where no text is."""

    positions: np.ndarray
    """int64 [rows, width]: each token's position within its own text."""

    segments: np.ndarray
    """int64 [rows, width]: 1, 2, ... for the texts of a row, 0 where no text is; a token
    attends to the tokens of its own segment only."""

    spans: np.ndarray
    """int64 [texts, 3]: (row, start, length) of each text."""

    @property
    def padded_tokens(self) -> int:
        return int(self.ids.size)


RunPacked = Callable[[PackedBatch], np.ndarray]


def packed_passes(backend: Any) -> tuple[RunPacked, RunPacked | None] | None:
    """A backend's passes of packed batches (on a stream, on every core or None), or None where
    it runs padded ones only."""
    if not getattr(backend, "packs", False):
        return None
    every_core = backend.every_core_packed if backend.every_core_pass is not None else None
    return backend.embed_packed, every_core


def fill_rows(lengths: Sequence[int], width: int, max_rows: int) -> list[list[int]]:
    """Indices of `lengths` laid into at most `max_rows` rows of `width` tokens: the first
    index first (so the oldest text always goes), then the longest first, each into the first
    row with room. Indices left out did not fit."""
    order = [0, *sorted(range(1, len(lengths)), key=lambda i: -lengths[i])] if lengths else []
    rows: list[list[int]] = []
    room: list[int] = []
    for i in order:
        row = next((r for r, free in enumerate(room) if lengths[i] <= free), None)
        if row is None and len(rows) < max_rows:
            rows.append([])
            room.append(width)
            row = len(rows) - 1
        if row is not None:
            rows[row].append(i)
            room[row] -= lengths[i]
    return rows


def lay_out(rows: Sequence[Sequence[Sequence[int]]], width: int) -> PackedBatch:
    """The batch of `rows` (each a list of token sequences, end to end in at most `width`
    tokens); results come back in row order, then in order within a row."""
    ids = np.zeros((len(rows), width), dtype=np.int64)
    positions = np.zeros_like(ids)
    segments = np.zeros_like(ids)
    spans = []
    for r, row in enumerate(rows):
        start = 0
        for k, tokens in enumerate(row):
            end = start + len(tokens)
            ids[r, start:end] = tokens
            positions[r, start:end] = np.arange(len(tokens))
            segments[r, start:end] = k + 1
            spans.append((r, start, len(tokens)))
            start = end
    return PackedBatch(ids, positions, segments, np.array(spans, dtype=np.int64).reshape(-1, 3))


def one_text_a_row(input_ids: np.ndarray, attention_mask: np.ndarray) -> PackedBatch:
    """A padded batch as a packed one: each row's tokens (where the mask is set) one text."""
    lengths = (attention_mask > 0).sum(axis=1)
    segments = (attention_mask > 0).astype(np.int64)
    positions = np.broadcast_to(np.arange(input_ids.shape[1]), input_ids.shape) * segments
    spans = np.stack([np.arange(len(lengths)), np.zeros_like(lengths), lengths], axis=1)
    return PackedBatch(input_ids * segments, positions, segments, spans.astype(np.int64))


def pool_packed(tokens: np.ndarray, spans: np.ndarray, mode: str) -> np.ndarray:
    """[rows, width, hidden] token vectors -> [texts, hidden], one per span."""
    if mode == "cls":
        return np.ascontiguousarray(tokens[spans[:, 0], spans[:, 1]], dtype=np.float32)
    if mode == "lasttoken":
        last = spans[:, 1] + spans[:, 2] - 1
        return np.ascontiguousarray(tokens[spans[:, 0], last], dtype=np.float32)
    if mode != "mean":
        raise ValueError(f"pooling '{mode}' cannot pool packed texts (only {PACKED_POOLINGS})")
    # One pass over the tokens: reduceat sums [start, end) of each text (and the gaps between
    # texts, every other result, dropped); a zero row lets the last text end at the very end.
    width, hidden = tokens.shape[1], tokens.shape[2]
    flat = np.concatenate([tokens.reshape(-1, hidden), np.zeros((1, hidden), tokens.dtype)])
    starts = spans[:, 0] * width + spans[:, 1]
    bounds = np.stack([starts, starts + spans[:, 2]], axis=1).reshape(-1)
    sums = np.add.reduceat(flat, bounds, axis=0)[::2]
    means: np.ndarray = sums / np.maximum(spans[:, 2], 1)[:, None]
    return means.astype(np.float32)
