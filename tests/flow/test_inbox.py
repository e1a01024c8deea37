"""Human in the loop: a state waits for an answer sent to its run, with a timeout."""

from __future__ import annotations

import pytest
import trio
import trio.testing

import agentwire as aw
from agentwire.flow import (
    Answer,
    FlowDefinitionError,
    FlowError,
    Inbox,
    Rule,
    State,
    StateFlow,
    StateTimeoutError,
    Wait,
    run_flow,
)


def approval_flow(inbox: Inbox, error: str | None = None) -> StateFlow:
    states = [
        State(
            "approval",
            Wait(inbox),
            [Rule("approved", lambda answer, _: answer.text == "yes"), Rule("rejected")],
            timeout=3600,
        ),
        State("approved"),
        State("rejected"),
    ]
    if error is not None:
        states.append(State(error, None, "rejected"))
    return StateFlow(
        "approval", states, initial="approval", final=["approved", "rejected"], error=error
    )


async def test_a_waiting_state_outputs_the_answer_sent_to_its_run(runtime: aw.Runtime) -> None:
    inbox = await Inbox.register(runtime, "approvals")
    async with trio.open_nursery() as nursery:
        results: list[object] = []

        async def run() -> None:
            results.append(await run_flow(runtime, approval_flow(inbox), run_id="r1"))

        nursery.start_soon(run)
        await trio.testing.wait_all_tasks_blocked()
        assert inbox.waiting() == {"r1"}
        await runtime.send_message(Answer("yes", by="ada"), aw.AgentId("approvals", "r1"))
    (result,) = results
    assert result.state == "approved"  # type: ignore[attr-defined]
    assert result.output == Answer("yes", by="ada")  # type: ignore[attr-defined]
    assert inbox.waiting() == frozenset()


async def test_an_answer_for_a_run_that_is_not_waiting_is_refused_to_its_sender(
    runtime: aw.Runtime,
) -> None:
    await Inbox.register(runtime, "approvals")
    with pytest.raises(FlowError, match=r"run 'nobody' is not waiting for an answer"):
        await runtime.send_message(Answer("yes"), aw.AgentId("approvals", "nobody"))


async def test_no_answer_within_the_timeout_takes_the_error_path(
    runtime: aw.Runtime, autojump_clock: trio.testing.MockClock
) -> None:
    inbox = await Inbox.register(runtime, "approvals")
    with pytest.raises(StateTimeoutError, match="state 'approval' took longer than its 3600 s"):
        await run_flow(runtime, approval_flow(inbox))
    result = await run_flow(runtime, approval_flow(inbox, error="expired"))
    assert [(s.state, s.reason) for s in result.history] == [
        ("approval", "error"),
        ("expired", "rule"),
    ]
    assert result.state == "rejected"
    assert inbox.waiting() == frozenset()


def test_a_waiting_state_needs_a_timeout() -> None:
    inbox = Inbox("approvals")
    with pytest.raises(FlowDefinitionError, match="'a' waits for an answer: give it a timeout"):
        StateFlow("f", [State("a", Wait(inbox), "z"), State("z")], initial="a", final=["z"])


async def test_an_answer_crosses_the_gateway_from_another_worker() -> None:
    with trio.fail_after(20):
        async with (
            aw.open_gateway("127.0.0.1:0") as gateway,
            aw.open_worker(gateway.address) as flows,
            aw.open_worker(gateway.address) as human,
        ):
            inbox = await Inbox.register(flows, "approvals")
            human.add_message_serializer(aw.serializers_for_type(Answer))
            async with trio.open_nursery() as nursery:
                results: list[object] = []

                async def run() -> None:
                    results.append(await run_flow(flows, approval_flow(inbox), run_id="r2"))

                nursery.start_soon(run)
                with pytest.raises(aw.RemoteError, match="run 'r3' is not waiting"):
                    await human.send_message(Answer("yes"), aw.AgentId("approvals", "r3"))
                while "r2" not in inbox.waiting():
                    await trio.testing.wait_all_tasks_blocked()
                await human.send_message(Answer("no"), aw.AgentId("approvals", "r2"))
    assert results[0].state == "rejected"  # type: ignore[attr-defined]
