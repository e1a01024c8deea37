"""A StateFlow run's core (agentwire/flow/_machine.py): only its table's transitions, and
never more steps than its limit, whatever is asked of it."""

from __future__ import annotations

import hypothesis.strategies as st
import pytest
from hypothesis import settings
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from agentwire.flow import FlowError, InvalidTransitionError, State, StateFlow, Step, StepLimitError
from agentwire.flow._machine import RunCore

FLOW = StateFlow(
    "table",
    [
        State("a", None, ["b", "c"]),
        State("b", None, ["a", "done"]),
        State("c", None, "c"),
        State("oops", None, ["a", "done"]),
        State("done"),
    ],
    initial="a",
    final=["done"],
    error="oops",
)
NAMES = [*FLOW.states, "nowhere"]


class RunCoreMachine(RuleBasedStateMachine):
    @initialize(max_steps=st.integers(1, 12))
    def start(self, max_steps: int) -> None:
        self.core = RunCore(FLOW, "r", max_steps)

    @rule(to=st.sampled_from(NAMES), reason=st.sampled_from(["rule", "router", "error"]))
    def step(self, to: str, reason: str) -> None:
        target = to
        core = self.core
        before = (core.state, len(core.history))
        allowed = FLOW.edges(core.state) if reason == "error" else FLOW.allowed(core.state)
        legal = target in allowed and (reason != "error" or target == FLOW.error)
        try:
            core.advance(Step(core.state, None, None, target, reason, 0.0, 0.0))
        except StepLimitError:
            assert before[1] == core.max_steps
        except InvalidTransitionError as error:
            refused = error
            assert not legal
            assert (refused.state, refused.target) == (before[0], target)
        except FlowError:
            assert before[0] in FLOW.final  # a finished run takes no more steps
        else:
            assert legal
            assert core.state == target
        if (core.state, len(core.history)) != before:
            assert len(core.history) == before[1] + 1

    @invariant()
    def holds(self) -> None:
        self.core.check_invariants()
        assert self.core.finished == (self.core.state in FLOW.final)


TestRunCore = RunCoreMachine.TestCase
TestRunCore.settings = settings(max_examples=200, stateful_step_count=20, deadline=None)


def test_a_step_limit_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="max_steps must be >= 1"):
        RunCore(FLOW, "r", 0)
