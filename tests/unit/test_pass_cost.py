"""Timing a forward pass's fixed cost, which bounds the padding a CPU batch may take."""

from __future__ import annotations

import time

import numpy as np
import pytest

from embedserve.backends.base import pass_cost_in_tokens


def test_a_pass_fixed_cost_is_measured_in_tokens() -> None:
    def embed(input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        time.sleep(0.004 + 0.0001 * input_ids.size)  # the fixed 4 ms is worth 40 tokens
        return np.zeros((len(input_ids), 4), dtype=np.float32)

    assert pass_cost_in_tokens(embed) == pytest.approx(40, rel=0.25)
