"""The sans-IO core of a StateFlow run: where it is, where it has been, where it may go.

Invariants (``check_invariants``; tests/flow/test_machine.py drives them with Hypothesis):

1. ``state`` is always a state of the flow; the first step starts in the initial state.
2. Consecutive steps chain: each step starts where the previous one went.
3. Every step's ``(state, target)`` is in the flow's table: a target of the state's rules or
   router, or the error state by an error (from a non-final state that is not the error
   state itself).
4. ``len(history) <= max_steps``: a step beyond the limit is refused before it runs.
5. ``finished`` exactly when ``state`` is final; a finished run takes no more steps.
"""

from __future__ import annotations

from typing import Any

from ._errors import FlowError, InvalidTransitionError, StepLimitError
from ._stateflow import StateFlow, Step

__all__ = ["RunCore"]


class RunCore:
    """One run's position in its flow, advanced only along the flow's transitions."""

    def __init__(self, flow: StateFlow, run_id: str, max_steps: int) -> None:
        if max_steps < 1:
            raise ValueError(f"max_steps must be >= 1, got {max_steps!r}")
        self.flow = flow
        self.run_id = run_id
        self.max_steps = max_steps
        self.state = flow.initial
        self.history: list[Step] = []

    @property
    def finished(self) -> bool:
        return self.state in self.flow.final

    def begin_step(self) -> None:
        """Check that another step may run now (invariants 4 and 5)."""
        if self.finished:
            raise FlowError(f"run {self.run_id!r} already reached final state {self.state!r}")
        if len(self.history) >= self.max_steps:
            raise StepLimitError(self.flow.name, self.run_id, self.max_steps, self.state)

    def check_target(self, target: Any, *, reason: str) -> str:
        """*target* if the current state may go there for *reason*; else InvalidTransitionError."""
        if reason == "error":
            allowed: tuple[str, ...] = tuple(
                t for t in self.flow.edges(self.state) if t == self.flow.error
            )
        else:
            allowed = self.flow.allowed(self.state)
        if not isinstance(target, str) or target not in allowed:
            raise InvalidTransitionError(self.flow.name, self.state, target, allowed)
        return target

    def advance(self, step: Step) -> None:
        """Record *step* (which ran in the current state) and move to its target."""
        self.begin_step()
        if step.state != self.state:
            raise FlowError(f"step of state {step.state!r} recorded while in {self.state!r}")
        self.check_target(step.target, reason=step.reason)
        self.history.append(step)
        self.state = step.target

    def check_invariants(self) -> None:
        flow = self.flow
        assert self.state in flow.states  # 1
        assert len(self.history) <= self.max_steps  # 4
        expected = flow.initial
        for step in self.history:
            assert step.state == expected  # 1, 2
            assert step.target in flow.edges(step.state)  # 3
            if step.reason == "error":
                assert step.target == flow.error
                assert step.state != flow.error
            else:
                assert step.target in flow.allowed(step.state)
            assert step.state not in flow.final  # 5
            expected = step.target
        assert expected == self.state  # 2
