"""A faster precision mode that strays past its bar says so loudly at start-up."""

from __future__ import annotations

import logging

import pytest

from embedserve.engine.fidelity import Fidelity, report


def test_a_mode_within_its_bar_is_logged_quietly(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    assert report("int8", Fidelity(mean=0.995, min=0.985))
    [record] = caplog.records
    assert record.levelno == logging.INFO
    assert "mean 0.995000, min 0.985000" in record.getMessage()


@pytest.mark.parametrize("fidelity", [Fidelity(0.985, 0.985), Fidelity(0.995, 0.975)])
def test_a_mode_below_its_bar_is_an_error_that_stands_out(
    fidelity: Fidelity, caplog: pytest.LogCaptureFixture
) -> None:
    """int8's bar is mean >= 0.99 and min >= 0.98 (the issue's); missing either one shouts."""
    caplog.set_level(logging.INFO)
    assert not report("int8", fidelity)
    [record] = caplog.records
    assert record.levelno == logging.ERROR
    assert "BELOW THE BAR" in record.getMessage()
    assert record.getMessage().startswith("!" * 20)
