"""The batch selection rules alone, as pure functions: budgets, padding caps, the oldest never
starved, packed rows filled, and a layout that holds the budget as it was chosen."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import pytest

from embedserve.engine.selection import (
    Budget,
    Packed,
    Padded,
    coarse_width,
    select_packed,
    select_padded,
)


@dataclass(eq=False)
class Seq:
    length: int
    arrival: int
    tokens: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.tokens = [7] * self.length


def waiting(*lengths: int) -> list[Seq]:
    return [Seq(n, i) for i, n in enumerate(lengths)]


def exact(n: int) -> int:
    return n


def test_padded_takes_similar_lengths_and_pads_to_the_longest_chosen() -> None:
    queue = waiting(10, 50, 11, 12, 49, 9)
    chosen = select_padded(queue, Budget(10_000, 64, max_padding=0.15), exact)
    assert sorted(s.length for s in chosen.chosen) == [9, 10, 11, 12]
    assert chosen.layout == Padded(12)
    assert [s.length for s in chosen.left] == [50, 49]  # in the order they waited


def test_padded_holds_the_token_budget_and_the_row_limit() -> None:
    queue = waiting(*([20] * 30))
    tokens = select_padded(queue, Budget(100, 64), exact)
    assert len(tokens.chosen) == 5
    assert tokens.layout.tokens(len(tokens.chosen)) <= 100
    rows = select_padded(queue, Budget(10_000, 8), exact)
    assert len(rows.chosen) == 8


def test_padded_keeps_padding_under_its_token_limit() -> None:
    queue = waiting(10, 14)
    assert len(select_padded(queue, Budget(10_000, 64, max_padding_tokens=3), exact).chosen) == 1
    assert len(select_padded(queue, Budget(10_000, 64, max_padding_tokens=4), exact).chosen) == 2


def test_padded_always_takes_the_oldest_first() -> None:
    """However long the oldest waiting sequence is beside many short ones, it goes next."""
    queue = [Seq(200, 0), *(Seq(5, i) for i in range(1, 50))]
    chosen = select_padded(queue, Budget(1000, 64, max_padding=0.15), exact)
    assert queue[0] in chosen.chosen


def test_padded_widths_follow_the_grid() -> None:
    chosen = select_padded(waiting(65), Budget(1000, 8), coarse_width)
    assert chosen.layout == Padded(68)


def test_packed_fills_rows_of_one_width_within_the_budget() -> None:
    rng = random.Random(3)
    queue = waiting(*(rng.randint(3, 60) for _ in range(200)))
    budget = Budget(1024, 64)
    chosen = select_packed(queue, budget, exact)
    layout = chosen.layout
    assert isinstance(layout, Packed)
    assert layout.tokens() <= budget.max_tokens  # rows x width, as laid out
    assert sum(layout.rows) == len(chosen.chosen) <= 64
    start = 0
    for count in layout.rows:  # every row's texts fit its width
        assert sum(s.length for s in chosen.chosen[start : start + count]) <= layout.width
        start += count
    real = sum(s.length for s in chosen.chosen)
    assert real / layout.tokens() > 0.8  # packing leaves little empty
    assert queue[0] in chosen.chosen  # the oldest always goes


def test_packed_width_is_the_longest_or_the_minimum() -> None:
    short = select_packed(waiting(5, 6, 7), Budget(4096, 64), exact)
    assert short.layout == Packed(18, (3,))  # fewer tokens than the minimum width: their sum
    many = select_packed(waiting(*([10] * 20)), Budget(4096, 64), exact)
    assert isinstance(many.layout, Packed)
    assert many.layout.width == 64
    long = select_packed(waiting(100, 10, 10), Budget(4096, 64), exact)
    assert isinstance(long.layout, Packed)
    assert long.layout.width == 100


def test_packed_skips_a_long_one_for_shorter_ones_after_it_but_never_the_oldest() -> None:
    queue = waiting(30, 80, 20, 10)
    chosen = select_packed(queue, Budget(64, 64), exact)
    assert [s.length for s in chosen.chosen] == [30, 20, 10]
    assert [s.length for s in chosen.left] == [80]
    oldest = select_packed(waiting(500, 10), Budget(64, 64), exact)
    assert [s.length for s in oldest.chosen] == [500]  # alone, past the budget: it must go


@pytest.mark.parametrize("budget", [Budget(256, 64), Budget(4096, 8)])
def test_the_chosen_and_the_left_are_the_waiting_ones_once_each(budget: Budget) -> None:
    rng = random.Random(5)
    queue = waiting(*(rng.randint(1, 120) for _ in range(100)))
    for choose in (select_padded, select_packed):
        chosen = choose(queue, budget, exact)
        assert sorted(map(id, chosen.chosen + chosen.left)) == sorted(map(id, queue))
        assert chosen.chosen
