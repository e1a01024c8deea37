"""The errors of :mod:`agentwire.flow`: each names what went wrong and where."""

from __future__ import annotations

from collections.abc import Sequence

from .._errors import AgentwireError

__all__ = [
    "DagCycleError",
    "DagFailedError",
    "FlowDefinitionError",
    "FlowError",
    "InvalidTransitionError",
    "NoTransitionError",
    "StateTimeoutError",
    "StepLimitError",
    "TaskTimeoutError",
]


class FlowError(AgentwireError):
    """Base class of the errors of StateFlows and task DAGs."""


class FlowDefinitionError(FlowError, ValueError):
    """A StateFlow or a DAG is malformed (raised when it is built, before anything runs)."""


class DagCycleError(FlowDefinitionError):
    """The tasks' dependencies form a cycle; ``cycle`` lists it (first task repeated last,
    each task a dependency of the next)."""

    def __init__(self, dag: str, cycle: Sequence[str]) -> None:
        self.cycle = tuple(cycle)
        super().__init__(
            f"DAG {dag!r} has a dependency cycle {' -> '.join(self.cycle)} (each task needs "
            "the one before it): remove one of these dependencies"
        )


class InvalidTransitionError(FlowError):
    """A run tried a transition its state does not allow."""

    def __init__(self, flow: str, state: str, target: object, allowed: Sequence[str]) -> None:
        self.state = state
        self.target = target
        self.allowed = tuple(allowed)
        super().__init__(
            f"flow {flow!r}: state {state!r} cannot go to {target!r}; "
            f"allowed targets: {', '.join(map(repr, self.allowed))}"
        )


class NoTransitionError(FlowError):
    """No rule of a state matched its result (add a catch-all rule)."""

    def __init__(self, flow: str, state: str, output: object) -> None:
        self.state = state
        super().__init__(
            f"flow {flow!r}: no transition rule of state {state!r} matched its output "
            f"{_short(output)}; add a rule without a condition as the last one"
        )


class StepLimitError(FlowError):
    """A run took ``max_steps`` steps without reaching a final state."""

    def __init__(self, flow: str, run_id: str, max_steps: int, state: str) -> None:
        self.max_steps = max_steps
        self.state = state
        super().__init__(
            f"flow {flow!r} run {run_id!r} reached its step limit ({max_steps}) in state "
            f"{state!r} without reaching a final state; raise max_steps or fix the loop"
        )


class StateTimeoutError(FlowError, TimeoutError):
    """A state's action ran longer than the state's timeout."""

    def __init__(self, flow: str, state: str, timeout: float) -> None:
        self.state = state
        self.timeout = timeout
        super().__init__(f"flow {flow!r}: state {state!r} took longer than its {timeout} s timeout")


class TaskTimeoutError(FlowError, TimeoutError):
    """One attempt of a DAG task ran longer than the task's timeout."""

    def __init__(self, task: str, timeout: float) -> None:
        self.task = task
        self.timeout = timeout
        super().__init__(f"task {task!r} took longer than its {timeout} s timeout")


class DagFailedError(FlowError):
    """Tasks of a DAG run failed; ``errors`` maps each to its exception, ``result`` has the rest."""

    def __init__(self, dag: str, errors: dict[str, BaseException], result: object) -> None:
        self.errors = errors
        self.result = result
        detail = "; ".join(f"{name}: {error!r}" for name, error in errors.items())
        super().__init__(f"DAG {dag!r}: {len(errors)} task(s) failed: {detail}")


def _short(value: object, limit: int = 200) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
