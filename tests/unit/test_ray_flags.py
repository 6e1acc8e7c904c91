"""`serve --ray`'s replica flags: each bound comes from its declaration, checked as it is
parsed; what binds two of them is checked when they meet."""

from __future__ import annotations

import pytest

from embedserve.cli import main
from embedserve.errors import ConfigError
from embedserve.ray_serve import Replicas


@pytest.mark.parametrize("flag", ["--replicas", "--min-replicas", "--max-replicas"])
def test_a_replica_count_below_1_is_refused_as_parsed(
    flag: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["serve", "--ray", flag, "0"])
    assert exited.value.code == 2
    assert f"argument {flag}: must be at least 1, got 0" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ((2, 1, 3), "give --replicas, or --min-replicas and --max-replicas, not both"),
        ((None, 1, None), "autoscaling needs both --min-replicas and --max-replicas"),
        ((None, 3, 2), "--min-replicas (3) must be at most --max-replicas (2)"),
    ],
)
def test_flags_that_bind_each_other_are_checked_together(
    given: tuple[int | None, int | None, int | None], message: str
) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        Replicas(*given)
    assert Replicas(2).options() == {"num_replicas": 2}
