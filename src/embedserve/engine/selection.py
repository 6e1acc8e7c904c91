"""Which waiting sequences the next forward pass takes, and how it lays them out: pure
functions of the waiting sequences and the limits, so each rule can be read and tested alone.
The layout is decided here once and travels with the batch: whoever builds the pass's arrays
(batcher.py) lays the batch out as it was chosen, so the token budget holds as chosen."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from embedserve.backends.packing import MIN_PACKED_WIDTH, fill_rows


class Sequenced(Protocol):
    """A waiting sequence: its token ids, and when it arrived (smaller: older)."""

    @property
    def tokens(self) -> list[int]: ...

    @property
    def arrival(self) -> int: ...


T = TypeVar("T", bound=Sequenced)


@dataclass(frozen=True)
class Padded:
    """One sequence a row, padded to `width`."""

    width: int

    def tokens(self, rows: int) -> int:
        return self.width * rows


@dataclass(frozen=True)
class Packed:
    """Sequences end to end in rows of `width`: `rows[r]` of the chosen ones, in order, in row r."""

    width: int
    rows: tuple[int, ...]

    def tokens(self, rows: int = 0) -> int:
        return self.width * len(self.rows)


Layout = Padded | Packed


@dataclass(frozen=True)
class Selection(Generic[T]):
    chosen: list[T]
    """The pass's sequences, in the order its results come back (row by row)."""

    layout: Layout
    left: list[T]
    """What still waits, in the order it waited."""


@dataclass(frozen=True)
class Budget:
    """What one pass may hold."""

    max_tokens: int
    """Tokens (padded width x rows) the pass may compute."""

    max_rows: int
    """Sequences (padded) or texts (packed) in the pass."""

    max_padding: float = 1.0
    """Largest share of a padded batch's tokens that may be padding."""

    max_padding_tokens: float = float("inf")
    """Most padding tokens in a padded batch."""


Width = Callable[[int], int]
"""The width a batch whose longest sequence has n tokens is laid out in (a coarse grid for an
engine that builds kernels per shape)."""


def select_padded(waiting: Sequence[T], budget: Budget, width_of: Width) -> Selection[T]:
    """A window of similar lengths around the anchor: the oldest request's shortest waiting
    sequence (so nothing starves). The window grows toward whichever neighbour, in length
    order, wastes least padding, while padding stays under its share of the batch and its
    token limit, and the batch under the token budget and its row limit. On a CPU, compute
    follows padded tokens, so a smaller batch without padding beats a full one with it."""
    anchor = waiting[0]
    ranked = sorted(waiting, key=lambda i: (len(i.tokens), i.arrival))
    low = high = next(n for n, item in enumerate(ranked) if item is anchor)
    width = real = len(anchor.tokens)
    while high - low + 1 < budget.max_rows:
        rows = high - low + 2
        options = []
        if low > 0:
            options.append((real + len(ranked[low - 1].tokens), width, -1))
        if high + 1 < len(ranked):
            longer = len(ranked[high + 1].tokens)
            options.append((real + longer, longer, +1))
        fits = [
            (tokens / padded, tokens, new_width, step)
            for tokens, new_width, step in options
            if (padded := width_of(new_width) * rows) <= budget.max_tokens
            and 1 - tokens / padded <= budget.max_padding
            and padded - tokens <= budget.max_padding_tokens
        ]
        if not fits:
            break
        _, real, width, step = max(fits)
        low, high = (low - 1, high) if step < 0 else (low, high + 1)
    chosen = ranked[low : high + 1]
    return Selection(chosen, Padded(width_of(width)), _without(waiting, chosen))


def select_packed(waiting: Sequence[T], budget: Budget, width_of: Width) -> Selection[T]:
    """The oldest sequences whose tokens fit the budget (the oldest always; a longer one skipped
    for shorter ones after it), as many as rows of one width hold: the width is the longest's,
    or MIN_PACKED_WIDTH where they hold that many tokens, and the rows fit the budget."""
    candidates: list[T] = []
    tokens = 0
    for item in waiting:
        if len(candidates) == budget.max_rows or tokens == budget.max_tokens:
            break
        if not candidates or tokens + len(item.tokens) <= budget.max_tokens:
            candidates.append(item)
            tokens += len(item.tokens)
    lengths = [len(item.tokens) for item in candidates]
    width = width_of(max(max(lengths), min(MIN_PACKED_WIDTH, sum(lengths))))
    rows = fill_rows(lengths, width, max(1, budget.max_tokens // width))
    chosen = [candidates[i] for row in rows for i in row]
    layout = Packed(width, tuple(len(row) for row in rows))
    return Selection(chosen, layout, _without(waiting, chosen))


def _without(waiting: Sequence[T], chosen: list[T]) -> list[T]:
    taken = set(map(id, chosen))
    return [item for item in waiting if id(item) not in taken]


def coarse_width(width: int, limit: int | None = None) -> int:
    """`width` rounded up to the grid, never past `limit`: multiples of 8 below 64, then of a
    16th of the width's power of two (4 from 64, 8 from 128, ...), so a few percent of padding
    at most from 64, and few shapes for a backend that builds kernels per shape to keep. Below
    64 the grid is coarser because a new shape costs OpenVINO more than the padding: ~0.75 ms
    to prepare a pass of MiniLM for it, against ~0.07 ms a padding token (a lone query's
    latency fell 15% with multiples of 8 instead of even widths, docs/performance.md)."""
    step = 8 if width < 64 else 1 << (width.bit_length() - 5)
    grid = -(-width // step) * step
    return min(grid, limit) if limit else grid
