"""Running a StateFlow on a runtime: ``await run_flow(runtime, flow, input)``.

The run happens in the caller's task (no background task): cancelling the caller cancels
the step in flight and its RPC (through a gateway the worker sends the deadline along).
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

import attrs
import trio

from .._agents import AgentRuntime
from .._ids import AgentId
from ._durable import Checkpoints, FlowCheckpoint
from ._errors import NoTransitionError, StateTimeoutError
from ._events import (
    FlowTransition,
    RouteDecision,
    RouteRequest,
    describe_value,
    now,
    publish_event,
    register_flow_messages,
)
from ._inbox import Wait
from ._machine import RunCore
from ._stateflow import (
    Call,
    Failure,
    History,
    Route,
    Send,
    State,
    StateFlow,
    Step,
    StepContext,
)

__all__ = ["FlowResult", "run_flow"]

logger = logging.getLogger("agentwire.flow")


@attrs.frozen
class FlowResult:
    """How a run ended: its final ``state``, the last step's ``output`` and every step."""

    run_id: str
    state: str
    output: Any
    history: tuple[Step, ...]


async def run_flow(
    runtime: AgentRuntime,
    flow: StateFlow,
    input: Any = None,
    *,
    run_id: str | None = None,
    topic: str | None = None,
    max_steps: int = 100,
    checkpoints: Checkpoints | None = None,
) -> FlowResult:
    """Run *flow* from its initial state on *input* until a final state; return how it ended.

    Each transition is published as a :class:`~agentwire.flow.FlowTransition` on
    ``TopicId(topic, run_id)`` when *topic* is given. Raises
    :class:`~agentwire.flow.StepLimitError` after *max_steps* steps without a final state; a
    failed step's exception (or :class:`~agentwire.flow.StateTimeoutError`,
    :class:`~agentwire.flow.InvalidTransitionError`, :class:`~agentwire.flow.NoTransitionError`)
    when the flow has no error state, or the error state's own step failed.

    With *checkpoints* the run is durable (see :class:`~agentwire.flow.Checkpoints`): its
    progress is written before and after every step, and running it again with the same
    *run_id* resumes it (*input* is then ignored; a finished run returns its result).
    """
    run_id = uuid.uuid4().hex if run_id is None else run_id
    register_flow_messages(runtime)
    core = RunCore(flow, run_id, max_steps)
    value = input
    durable = None if checkpoints is None else FlowCheckpoint(runtime, checkpoints, flow, core)
    resumed = durable is not None and await durable.resume()
    if durable is not None and resumed:
        value = durable.value
    if topic is not None:
        event = FlowTransition(
            flow.name,
            run_id,
            len(core.history),
            core.state if resumed else "",
            core.state,
            "resume" if resumed else "start",
            now(),
        )
        await publish_event(runtime, topic, run_id, event)
    while not core.finished:
        core.begin_step()
        state = flow.states[core.state]
        attempt = 1 if durable is None else await durable.step_starts(value)
        ctx = StepContext(
            runtime, flow.name, run_id, state.name, value, History(core.history), attempt
        )
        started_at, start = now(), trio.current_time()
        try:
            output, target, reason = await _step(flow, core, state, ctx)
            error_text = ""
        except Exception as error:
            if flow.error is None or state.name == flow.error:
                error.add_note(f"in state {state.name!r} of flow {flow.name!r} run {run_id!r}")
                raise
            logger.debug(
                "flow %s run %s: state %s failed: %r", flow.name, run_id, state.name, error
            )
            output, target, reason = Failure(state.name, value, error), flow.error, "error"
            error_text = describe_value(error)
        step = Step(
            state.name,
            value,
            output,
            target,
            reason,
            started_at,
            trio.current_time() - start,
            error_text,
        )
        core.advance(step)
        value = output
        if durable is not None:
            await durable.step_done(step, value)
        if topic is not None:
            detail = error_text or describe_value(output)
            event = FlowTransition(
                flow.name, run_id, len(core.history), state.name, target, reason, now(), detail
            )
            await publish_event(runtime, topic, run_id, event)
    if topic is not None:
        event = FlowTransition(
            flow.name, run_id, len(core.history), core.state, core.state, "final", now()
        )
        await publish_event(runtime, topic, run_id, event)
    return FlowResult(run_id, core.state, value, tuple(core.history))


async def _step(
    flow: StateFlow, core: RunCore, state: State, ctx: StepContext
) -> tuple[Any, str, str]:
    if state.timeout is None:
        return await _act_and_choose(core, state, ctx)
    with trio.move_on_after(state.timeout) as scope:
        return await _act_and_choose(core, state, ctx)
    assert scope.cancelled_caught
    raise StateTimeoutError(flow.name, state.name, state.timeout)


async def _act_and_choose(core: RunCore, state: State, ctx: StepContext) -> tuple[Any, str, str]:
    output = await _act(state.action, ctx)
    transitions = state.transitions
    if isinstance(transitions, Route):
        answer = await ctx.runtime.send_message(
            _route_message(transitions, ctx, output),
            AgentId(transitions.agent_type, _key(transitions.key, ctx)),
        )
        target = answer.target if isinstance(answer, RouteDecision) else answer
        return output, core.check_target(target, reason="router"), "router"
    for rule in transitions:
        if rule.when is None or rule.when(output, ctx.history):
            return output, core.check_target(rule.target, reason="rule"), "rule"
    raise NoTransitionError(core.flow.name, state.name, output)


async def _act(action: Send | Call | Wait | None, ctx: StepContext) -> Any:
    if action is None:
        return ctx.input
    if isinstance(action, Wait):
        return await action.inbox.wait(ctx.run_id)
    if isinstance(action, Call):
        return await action.fn(ctx)
    recipient = AgentId(action.agent_type, _key(action.key, ctx))
    return await ctx.runtime.send_message(action.message(ctx), recipient)


def _key(key: Any, ctx: StepContext) -> str:
    return ctx.run_id if key is None else str(key(ctx))


def _route_message(route: Route, ctx: StepContext, output: Any) -> Any:
    if route.message is not None:
        return route.message(ctx, output)
    return RouteRequest(
        ctx.flow,
        ctx.run_id,
        ctx.state,
        list(route.targets),
        describe_value(output),
        [step.state for step in ctx.history],
    )
