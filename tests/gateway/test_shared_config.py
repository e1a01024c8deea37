"""Turning shared agent types on: the command-line flag and the config."""

from __future__ import annotations

import pytest

from agentwire._cli import build_parser
from agentwire._gateway import GatewayConfig
from agentwire._gateway._placement import LeastLoadedPlacement


def test_shared_agent_types_are_off_by_default() -> None:
    assert build_parser().parse_args(["gateway"]).shared_agent_types is None
    assert GatewayConfig().placement is None


@pytest.mark.parametrize(
    ("flags", "strategy"),
    [
        (["--shared-agent-types"], "hash"),
        (["--shared-agent-types", "hash"], "hash"),
        (["--shared-agent-types", "least-loaded"], "least-loaded"),
    ],
)
def test_the_flag_turns_them_on_with_a_strategy(flags: list[str], strategy: str) -> None:
    assert build_parser().parse_args(["gateway", *flags]).shared_agent_types == strategy


def test_an_unknown_strategy_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["gateway", "--shared-agent-types", "random"])
    assert "least-loaded" in capsys.readouterr().err
    with pytest.raises(ValueError, match="unknown placement strategy 'random'"):
        GatewayConfig(placement="random")


def test_a_strategy_object_is_accepted() -> None:
    strategy = LeastLoadedPlacement(seed=3)
    assert GatewayConfig(placement=strategy).placement is strategy
