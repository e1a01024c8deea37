"""StateFlow definitions: states, their actions, and the transitions between them.

A :class:`StateFlow` is checked when it is built, so a run never meets an unknown state:

* every name is unique; the initial state, each final state and the error state exist;
* every rule's target and every router's allowed target is a state of the flow;
* a final state has no action and no transitions; every other state has transitions;
* every final state is reachable from the initial state (an error edge leads from each
  non-final state to the error state, if there is one).
"""

from __future__ import annotations

import collections
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any, overload

import attrs

from .._agents import AgentRuntime
from ._errors import FlowDefinitionError
from ._inbox import Wait

__all__ = [
    "Call",
    "Failure",
    "History",
    "Route",
    "Rule",
    "Send",
    "State",
    "StateFlow",
    "Step",
    "StepContext",
]


@attrs.frozen
class Step:
    """One step of a run: ``state`` ran on ``input``, gave ``output`` and went to ``target``.

    ``started_at`` is wall-clock time (seconds since the epoch), ``duration`` seconds on trio's
    clock; ``error`` is the failure's text when the step failed (then ``reason`` is "error").
    """

    state: str
    input: Any
    output: Any
    target: str
    reason: str
    started_at: float
    duration: float
    error: str = ""


class History(Sequence[Step]):
    """The steps a run had taken when this view was made (read-only; made in O(1))."""

    __slots__ = ("_length", "_steps")

    def __init__(self, steps: list[Step]) -> None:
        self._steps = steps  # only ever appended to
        self._length = len(steps)

    def __len__(self) -> int:
        return self._length

    @overload
    def __getitem__(self, index: int) -> Step: ...

    @overload
    def __getitem__(self, index: slice) -> Sequence[Step]: ...

    def __getitem__(self, index: int | slice) -> Step | Sequence[Step]:
        if isinstance(index, slice):
            return tuple(self._steps[: self._length][index])
        if index < 0:
            index += self._length
        if not 0 <= index < self._length:
            raise IndexError("history index out of range")
        return self._steps[index]

    def __repr__(self) -> str:
        return f"History({list(self)!r})"


@attrs.frozen
class Failure:
    """The input of the error state: ``state`` failed on ``input`` with ``error``."""

    state: str
    input: Any
    error: Exception


@attrs.frozen
class StepContext:
    """What an action gets: the run, the state, the step's input and the history so far.

    ``attempt`` is 1 unless a durable run resumed with this step in flight.
    """

    runtime: AgentRuntime
    flow: str
    run_id: str
    state: str
    input: Any
    history: Sequence[Step]
    attempt: int = 1

    @property
    def step(self) -> int:
        """The step's number, from 0."""
        return len(self.history)

    @property
    def idempotency_key(self) -> str:
        """``run_id/step/attempt``: a durable run resumed mid-step runs it again (attempt + 1)."""
        return f"{self.run_id}/{self.step}/{self.attempt}"


def _same_input(ctx: StepContext) -> Any:
    return ctx.input


@attrs.frozen
class Send:
    """Action: send ``message(ctx)`` (default: the step's input) to ``AgentId(agent_type, key)``.

    The key is ``key(ctx)``, by default the run id: each run talks to its own agent instances,
    served by whichever process (agentwire or AutoGen) registered ``agent_type``.
    """

    agent_type: str
    message: Callable[[StepContext], Any] = _same_input
    key: Callable[[StepContext], str] | None = None


@attrs.frozen
class Call:
    """Action: ``await fn(ctx)`` in the run's own task."""

    fn: Callable[[StepContext], Awaitable[Any]]


@attrs.frozen
class Rule:
    """Go to ``target`` if ``when(output, history)`` is true (``when=None``: always)."""

    target: str
    when: Callable[[Any, Sequence[Step]], bool] | None = None


def _names(names: Iterable[str]) -> tuple[str, ...]:
    return tuple(names)


@attrs.frozen
class Route:
    """Ask a router agent ``AgentId(agent_type, key)`` which of ``targets`` comes next.

    It gets ``message(ctx, output)`` (default: a :class:`~agentwire.flow.RouteRequest`) and
    answers a :class:`~agentwire.flow.RouteDecision` or a plain ``str``. An answer outside
    ``targets`` is an :class:`~agentwire.flow.InvalidTransitionError` (the error state's
    business, if the flow has one).
    """

    agent_type: str
    targets: tuple[str, ...] = attrs.field(converter=_names)
    message: Callable[[StepContext, Any], Any] | None = None
    key: Callable[[StepContext], str] | None = None


def _to_transitions(value: Iterable[Rule | str] | Route | str) -> tuple[Rule, ...] | Route:
    if isinstance(value, Route):
        return value
    if isinstance(value, str):
        return (Rule(value),)
    rules = tuple(Rule(item) if isinstance(item, str) else item for item in value)
    for item in rules:
        if not isinstance(item, Rule):
            raise FlowDefinitionError(
                f"a transition must be a Rule or a state's name, got {item!r}"
            )
    return rules


@attrs.frozen
class State:
    """A state: its action (None: the output is the input) and where it may go next.

    The action sends a message (:class:`Send`), runs a coroutine (:class:`Call`) or waits
    for an answer sent to the run (:class:`~agentwire.flow.Wait`, which needs a timeout).

    ``transitions`` is a list of :class:`Rule` s (first match wins; a state's name in it is
    a rule without condition), a :class:`Route`, or one state's name (always go there).
    ``timeout`` bounds the action and the routing, in seconds.
    """

    name: str
    action: Send | Call | Wait | None = None
    transitions: tuple[Rule, ...] | Route = attrs.field(default=(), converter=_to_transitions)
    timeout: float | None = None

    @property
    def targets(self) -> tuple[str, ...]:
        """The states this one may go to (the error state aside), in rule order."""
        if isinstance(self.transitions, Route):
            return self.transitions.targets
        return tuple(dict.fromkeys(rule.target for rule in self.transitions))


class StateFlow:
    """A task state machine: named states, an initial state, final states, an error state.

    When a step of a non-final state fails (its action raises, times out, or its router
    answers a state it may not go to), the run goes to ``error`` if the flow has one (whose
    input is a :class:`Failure` and whose transitions are the recovery transitions), else the
    run raises. Raises :class:`~agentwire.flow.FlowDefinitionError` for a malformed flow.
    """

    def __init__(
        self,
        name: str,
        states: Iterable[State],
        *,
        initial: str,
        final: Iterable[str],
        error: str | None = None,
    ) -> None:
        self.name = name
        self.initial = initial
        self.final = frozenset(final)
        self.error = error
        self.states: Mapping[str, State] = self._index(states)
        self._allowed = {name: state.targets for name, state in self.states.items()}
        self._edges = {name: self._edges_of(name) for name in self.states}
        self._check()

    def __repr__(self) -> str:
        return f"StateFlow({self.name!r}, {len(self.states)} states)"

    def _index(self, states: Iterable[State]) -> dict[str, State]:
        index: dict[str, State] = {}
        for state in states:
            if not state.name:
                raise FlowDefinitionError(f"flow {self.name!r}: a state has an empty name")
            if state.name in index:
                raise FlowDefinitionError(
                    f"flow {self.name!r}: state {state.name!r} is defined twice"
                )
            index[state.name] = state
        return index

    def _unknown(self, what: str, name: str) -> FlowDefinitionError:
        known = ", ".join(map(repr, self.states))
        return FlowDefinitionError(
            f"flow {self.name!r}: {what} {name!r} is not a state of the flow (states: {known})"
        )

    def _check(self) -> None:
        if self.initial not in self.states:
            raise self._unknown("the initial state", self.initial)
        if not self.final:
            raise FlowDefinitionError(f"flow {self.name!r} has no final state")
        for name in sorted(self.final):
            if name not in self.states:
                raise self._unknown("the final state", name)
        if self.error is not None:
            if self.error not in self.states:
                raise self._unknown("the error state", self.error)
            if self.error in self.final:
                raise FlowDefinitionError(
                    f"flow {self.name!r}: the error state {self.error!r} cannot be final"
                )
        for state in self.states.values():
            self._check_state(state)
        reachable = self.reachable()
        unreachable = sorted(self.final - reachable)
        if unreachable:
            raise FlowDefinitionError(
                f"flow {self.name!r}: final state(s) {', '.join(map(repr, unreachable))} cannot "
                f"be reached from the initial state {self.initial!r}; add a transition to them"
            )

    def _check_state(self, state: State) -> None:
        where = f"flow {self.name!r}: state {state.name!r}"
        if state.name in self.final:
            if state.action is not None or state.targets:
                raise FlowDefinitionError(
                    f"{where} is final: it takes no action and no transitions"
                )
            return
        if not state.targets:
            raise FlowDefinitionError(
                f"{where} has no transitions: give it some, or make it a final state"
            )
        for target in state.targets:
            if target not in self.states:
                raise self._unknown(f"state {state.name!r} has a transition to", target)
        if state.timeout is not None and not state.timeout > 0:
            raise FlowDefinitionError(f"{where}: timeout must be positive, got {state.timeout!r}")
        if isinstance(state.action, Wait) and state.timeout is None:
            raise FlowDefinitionError(
                f"{where} waits for an answer: give it a timeout (its error path if none comes)"
            )

    def allowed(self, state: str) -> tuple[str, ...]:
        """The targets *state* may go to by a rule or its router."""
        return self._allowed[state]

    def edges(self, state: str) -> tuple[str, ...]:
        """Every state a run may go to from *state*: its targets, and the error state."""
        return self._edges[state]

    def _edges_of(self, state: str) -> tuple[str, ...]:
        targets = self._allowed[state]
        if self.error is not None and state != self.error and state not in self.final:
            return (*targets, self.error)
        return targets

    def reachable(self) -> frozenset[str]:
        """The states a run can reach from the initial state."""
        seen = {self.initial}
        queue = collections.deque([self.initial])
        while queue:
            for target in self.edges(queue.popleft()):
                if target not in seen:
                    seen.add(target)
                    queue.append(target)
        return frozenset(seen)
