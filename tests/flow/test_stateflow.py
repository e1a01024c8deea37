"""StateFlow: definitions checked when built, runs along their table, events on a topic."""

from __future__ import annotations

from typing import Any

import pytest
import trio
import trio.testing

import agentwire as aw
from agentwire.flow import (
    Call,
    Failure,
    FlowDefinitionError,
    FlowTransition,
    InvalidTransitionError,
    NoTransitionError,
    Route,
    RouteDecision,
    RouteRequest,
    Rule,
    Send,
    State,
    StateFlow,
    StateTimeoutError,
    StepContext,
    StepLimitError,
    run_flow,
)

from .helpers import Done, Work, Worker, register_events_recorder


async def add_one(ctx: StepContext) -> int:
    return int(ctx.input) + 1


def counter_flow(limit: int = 3) -> StateFlow:
    return StateFlow(
        "counter",
        [
            State("count", Call(add_one), [Rule("count", lambda n, _: n < limit), Rule("done")]),
            State("done"),
        ],
        initial="count",
        final=["done"],
    )


# -- definitions -------------------------------------------------------------------------------


def test_an_unknown_target_is_refused_naming_the_state_and_the_target() -> None:
    with pytest.raises(FlowDefinitionError, match=r"state 'a' has a transition to 'nowhere'"):
        StateFlow("f", [State("a", None, "nowhere"), State("z")], initial="a", final=["z"])


def test_an_unreachable_final_state_is_refused_by_name() -> None:
    with pytest.raises(FlowDefinitionError, match=r"final state\(s\) 'z' cannot be reached"):
        StateFlow(
            "f",
            [State("a", None, "b"), State("b", None, "a"), State("z")],
            initial="a",
            final=["z"],
        )


def test_a_final_state_reached_only_through_the_error_state_is_reachable() -> None:
    flow = StateFlow(
        "f",
        [State("a", None, "a"), State("oops", None, "z"), State("z")],
        initial="a",
        final=["z"],
        error="oops",
    )
    assert flow.reachable() == {"a", "oops", "z"}


@pytest.mark.parametrize(
    ("states", "initial", "final", "error", "message"),
    [
        ([State("a", None, "z"), State("z")], "b", ["z"], None, "initial state 'b'"),
        ([State("a", None, "z"), State("z")], "a", ["y"], None, "final state 'y'"),
        ([State("a", None, "z"), State("z")], "a", [], None, "has no final state"),
        ([State("a", None, "z"), State("z")], "a", ["z"], "e", "error state 'e'"),
        ([State("a", None, "z"), State("z")], "a", ["z"], "z", "cannot be final"),
        ([State("a"), State("z")], "a", ["z"], None, "'a' has no transitions"),
        ([State("a", None, "z"), State("z", None, "a")], "a", ["z"], None, "'z' is final"),
        ([State("a", None, "z"), State("a", None, "z"), State("z")], "a", ["z"], None, "twice"),
        ([State("a", None, "z", timeout=0), State("z")], "a", ["z"], None, "timeout"),
    ],
)
def test_malformed_flows_are_refused_with_a_precise_error(
    states: list[State], initial: str, final: list[str], error: str | None, message: str
) -> None:
    with pytest.raises(FlowDefinitionError, match=message):
        StateFlow("f", states, initial=initial, final=final, error=error)


# -- runs --------------------------------------------------------------------------------------


async def test_rules_are_tried_in_order_and_the_history_records_every_step(
    runtime: aw.Runtime,
) -> None:
    result = await run_flow(runtime, counter_flow(3), 0, run_id="r1")
    assert result.run_id == "r1"
    assert result.state == "done"
    assert result.output == 3
    assert [(s.state, s.input, s.output, s.target) for s in result.history] == [
        ("count", 0, 1, "count"),
        ("count", 1, 2, "count"),
        ("count", 2, 3, "done"),
    ]
    assert all(step.reason == "rule" and step.duration >= 0 for step in result.history)


async def test_rules_see_the_history_so_far(runtime: aw.Runtime) -> None:
    flow = StateFlow(
        "h",
        [
            State("loop", None, [Rule("end", lambda _, history: len(history) == 4), Rule("loop")]),
            State("end"),
        ],
        initial="loop",
        final=["end"],
    )
    result = await run_flow(runtime, flow, "x")
    assert len(result.history) == 5


async def test_the_step_limit_stops_a_loop_with_a_precise_error(runtime: aw.Runtime) -> None:
    with pytest.raises(StepLimitError, match=r"step limit \(5\) in state 'count'") as caught:
        await run_flow(runtime, counter_flow(100), 0, max_steps=5)
    assert caught.value.max_steps == 5


async def test_no_matching_rule_is_a_precise_error(runtime: aw.Runtime) -> None:
    flow = StateFlow(
        "f",
        [State("a", Call(add_one), [Rule("z", lambda n, _: n > 10)]), State("z")],
        initial="a",
        final=["z"],
    )
    with pytest.raises(NoTransitionError, match=r"no transition rule of state 'a' matched .* 1"):
        await run_flow(runtime, flow, 0)


async def test_a_send_action_talks_to_the_runs_own_agent(runtime: aw.Runtime) -> None:
    await Worker.register(runtime, "worker", lambda: Worker("upper-cases"))
    flow = StateFlow(
        "f",
        [State("ask", Send("worker", lambda ctx: Work(ctx.input)), "z"), State("z")],
        initial="ask",
        final=["z"],
    )
    first = await run_flow(runtime, flow, "hi", run_id="run-1")
    second = await run_flow(runtime, flow, "ho", run_id="run-2")
    assert first.output == Done("HI", "worker/run-1")
    assert second.output == Done("HO", "worker/run-2")


def route_to(answer: Any) -> Any:
    async def router(_: aw.ClosureContext, request: RouteRequest, ctx: aw.MessageContext) -> Any:
        return answer(request)

    return router


def routed_flow(error: str | None = None) -> StateFlow:
    states = [
        State("decide", Call(add_one), Route("router", ["left", "right"])),
        State("left"),
        State("right"),
    ]
    if error is not None:
        states.append(State(error, None, "left"))
    return StateFlow("routed", states, initial="decide", final=["left", "right"], error=error)


async def test_a_router_agent_chooses_among_the_allowed_targets(runtime: aw.Runtime) -> None:
    requests: list[RouteRequest] = []

    def answer(request: RouteRequest) -> RouteDecision:
        requests.append(request)
        return RouteDecision("right")

    await aw.ClosureAgent.register_closure(runtime, "router", route_to(answer))
    result = await run_flow(runtime, routed_flow(), 41, run_id="r")
    assert result.state == "right"
    assert result.history[0].reason == "router"
    assert requests == [RouteRequest("routed", "r", "decide", ["left", "right"], "42", [])]


async def test_a_router_answer_outside_the_table_names_state_target_and_allowed(
    runtime: aw.Runtime,
) -> None:
    await aw.ClosureAgent.register_closure(runtime, "router", route_to(lambda _: "sideways"))
    with pytest.raises(InvalidTransitionError) as caught:
        await run_flow(runtime, routed_flow(), 0)
    assert str(caught.value) == (
        "flow 'routed': state 'decide' cannot go to 'sideways'; allowed targets: 'left', 'right'"
    )
    assert caught.value.allowed == ("left", "right")


async def test_a_router_answer_outside_the_table_goes_to_the_error_state(
    runtime: aw.Runtime,
) -> None:
    await aw.ClosureAgent.register_closure(runtime, "router", route_to(lambda _: "sideways"))
    result = await run_flow(runtime, routed_flow(error="oops"), 0)
    assert [(s.state, s.target, s.reason) for s in result.history] == [
        ("decide", "oops", "error"),
        ("oops", "left", "rule"),
    ]
    failure = result.history[0].output
    assert isinstance(failure, Failure)
    assert isinstance(failure.error, InvalidTransitionError)
    assert failure.input == 0


async def test_a_failing_action_without_error_state_raises_naming_the_state(
    runtime: aw.Runtime,
) -> None:
    async def boom(ctx: StepContext) -> None:
        raise KeyError("gone")

    flow = StateFlow("f", [State("a", Call(boom), "z"), State("z")], initial="a", final=["z"])
    with pytest.raises(KeyError) as caught:
        await run_flow(runtime, flow, run_id="r9")
    assert "in state 'a' of flow 'f' run 'r9'" in caught.value.__notes__


async def test_recovery_transitions_choose_by_where_the_run_failed(runtime: aw.Runtime) -> None:
    attempts: dict[str, int] = {"b": 0}

    async def flaky(ctx: StepContext) -> str:
        attempts["b"] += 1
        if attempts["b"] == 1:
            raise RuntimeError("first try fails")
        return "ok"

    def failed_in(state: str) -> Any:
        return lambda failure, _: isinstance(failure, Failure) and failure.state == state

    flow = StateFlow(
        "f",
        [
            State("a", None, "b"),
            State("b", Call(flaky), "z"),
            State("error", None, [Rule("b", failed_in("b")), Rule("a")]),
            State("z"),
        ],
        initial="a",
        final=["z"],
        error="error",
    )
    result = await run_flow(runtime, flow, "in")
    assert [s.state for s in result.history] == ["a", "b", "error", "b"]
    assert result.history[1].error == "RuntimeError('first try fails')"
    assert result.output == "ok"


async def test_a_failure_in_the_error_state_itself_raises(runtime: aw.Runtime) -> None:
    async def boom(ctx: StepContext) -> None:
        raise ValueError(f"boom in {ctx.state}")

    flow = StateFlow(
        "f",
        [State("a", Call(boom), "z"), State("error", Call(boom), "a"), State("z")],
        initial="a",
        final=["z"],
        error="error",
    )
    with pytest.raises(ValueError, match="boom in error"):
        await run_flow(runtime, flow)


async def test_a_state_timeout_fails_the_step(
    runtime: aw.Runtime, autojump_clock: trio.testing.MockClock
) -> None:
    async def slow(ctx: StepContext) -> None:
        await trio.sleep(10)

    flow = StateFlow(
        "f",
        [State("a", Call(slow), "z", timeout=2.5), State("z")],
        initial="a",
        final=["z"],
    )

    start = trio.current_time()
    with pytest.raises(StateTimeoutError, match=r"state 'a' took longer than its 2.5 s"):
        await run_flow(runtime, flow)
    assert trio.current_time() - start == pytest.approx(2.5)


async def test_every_transition_is_published_on_the_chosen_topic(runtime: aw.Runtime) -> None:
    seen = await register_events_recorder(runtime, "lifecycle")
    result = await run_flow(runtime, counter_flow(2), 0, run_id="r7", topic="lifecycle")
    await runtime.wait_idle()
    assert all(isinstance(event, FlowTransition) for event in seen)
    assert all(event.flow == "counter" and event.run_id == "r7" for event in seen)
    assert [(e.step, e.source, e.target, e.reason, e.detail) for e in seen] == [
        (0, "", "count", "start", ""),
        (1, "count", "count", "rule", "1"),
        (2, "count", "done", "rule", "2"),
        (2, "done", "done", "final", ""),
    ]
    assert len(result.history) == 2


async def test_cancelling_the_caller_cancels_the_step_in_flight(runtime: aw.Runtime) -> None:
    started = trio.Event()
    cancelled = trio.Event()

    async def wait_forever(ctx: StepContext) -> None:
        started.set()
        try:
            await trio.sleep_forever()
        finally:
            cancelled.set()

    flow = StateFlow(
        "f", [State("a", Call(wait_forever), "z"), State("z")], initial="a", final=["z"]
    )
    async with trio.open_nursery() as nursery:
        nursery.start_soon(run_flow, runtime, flow)
        await started.wait()
        nursery.cancel_scope.cancel()
    assert cancelled.is_set()
