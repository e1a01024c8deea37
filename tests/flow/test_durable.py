"""Durable runs: progress checkpointed through agents' state, resumed after a restart."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
import trio.testing

import agentwire as aw
from agentwire.flow import (
    Checkpoints,
    Dag,
    FlowError,
    FlowResult,
    Send,
    State,
    StateFlow,
    StepContext,
    Task,
    TaskContext,
    run_dag,
    run_flow,
)

from .helpers import Done, Work

GUARD = 20  # seconds: a hang guard, never a synchronisation


class Steps:
    """What the agents saw: each step's idempotency key; the first 'slow' call hangs until
    released (its caller long gone)."""

    def __init__(self) -> None:
        self.keys: list[str] = []
        self.hanging = trio.Event()
        self.release = trio.Event()

    def agent(self) -> type[aw.RoutedAgent]:
        steps = self

        class Stepper(aw.RoutedAgent):
            @aw.rpc
            async def work(self, message: Work, ctx: aw.MessageContext) -> Done:
                steps.keys.append(message.key)
                if self.id.type == "slow" and len(steps.keys) == 2:
                    steps.hanging.set()
                    await steps.release.wait()
                return Done(message.payload + "+" + self.id.type, message.key)

        return Stepper


def work_of(ctx: StepContext) -> Work:
    payload = ctx.input if isinstance(ctx.input, str) else ctx.input.payload
    return Work(payload, ctx.idempotency_key)


FLOW = StateFlow(
    "durable",
    [
        State("first", Send("fast", work_of), "second"),
        State("second", Send("slow", work_of), "third"),
        State("third", Send("fast", work_of), "end"),
        State("end"),
    ],
    initial="first",
    final=["end"],
)
CHECKPOINTS = Checkpoints("checkpoints", types=[Done])


async def register(runtime: aw.AgentRuntime, steps: Steps) -> None:
    agent = steps.agent()
    await agent.register(runtime, "fast", lambda: agent("fast"))
    await agent.register(runtime, "slow", lambda: agent("slow"))


async def run_until_hanging(runtime: aw.AgentRuntime, steps: Steps) -> None:
    """Start the run, and stop it (as a crash would) while its second step is in flight."""
    async with trio.open_nursery() as nursery:
        nursery.start_soon(
            lambda: run_flow(runtime, FLOW, "job", run_id="r", checkpoints=CHECKPOINTS)
        )
        await steps.hanging.wait()
        nursery.cancel_scope.cancel()


def check_resumed(result: FlowResult, steps: Steps) -> None:
    # the first step ran once; the second, in flight at the crash, ran again (attempt 2)
    assert steps.keys == ["r/0/1", "r/1/1", "r/1/2", "r/2/1"]
    assert result.state == "end"
    assert result.output == Done("job+fast+slow+fast", "r/2/1")
    assert [step.state for step in result.history] == ["first", "second", "third"]


async def test_a_run_resumes_from_the_runtimes_saved_state() -> None:
    steps = Steps()
    async with aw.open_runtime() as before:
        await CHECKPOINTS.register_store(before)
        await register(before, steps)
        await run_until_hanging(before, steps)
        snapshot = await before.save_state()
    async with aw.open_runtime() as after:
        await CHECKPOINTS.register_store(after)
        await register(after, steps)
        await after.load_state(snapshot)
        result = await run_flow(after, FLOW, "ignored", run_id="r", checkpoints=CHECKPOINTS)
    check_resumed(result, steps)


async def test_a_finished_run_returns_its_result_without_running_again(
    runtime: aw.Runtime,
) -> None:
    steps = Steps()
    steps.hanging.set()  # nothing hangs: "slow" hangs only on the second call overall
    await CHECKPOINTS.register_store(runtime)
    await register(runtime, steps)
    steps.keys.append("warm-up")
    first = await run_flow(runtime, FLOW, "job", run_id="done", checkpoints=CHECKPOINTS)
    again = await run_flow(runtime, FLOW, "job", run_id="done", checkpoints=CHECKPOINTS)
    assert steps.keys == ["warm-up", "done/0/1", "done/1/1", "done/2/1"]
    assert again == first


async def test_a_value_that_cannot_be_checkpointed_is_named(runtime: aw.Runtime) -> None:
    await CHECKPOINTS.register_store(runtime)
    with pytest.raises(FlowError, match=r"cannot checkpoint a object: use JSON values"):
        await run_flow(runtime, FLOW, object(), checkpoints=CHECKPOINTS)


async def test_a_checkpoint_of_another_flow_is_refused(runtime: aw.Runtime) -> None:
    await CHECKPOINTS.register_store(runtime)
    await runtime.agent_load_state(aw.AgentId("checkpoints", "r"), {"version": 1, "flow": "x"})
    with pytest.raises(FlowError, match=r"checkpoint of flow 'x', not of 'durable'"):
        await run_flow(runtime, FLOW, "job", run_id="r", checkpoints=CHECKPOINTS)


@asynccontextmanager
async def driver(address: str) -> AsyncIterator[aw.WorkerRuntime]:
    async with aw.open_worker(address) as worker:
        worker.add_message_serializer(aw.serializers_for_type(Done))
        worker.add_message_serializer(aw.serializers_for_type(Work))
        yield worker


async def test_a_run_resumes_on_a_new_worker_after_its_worker_stopped() -> None:
    steps = Steps()
    result: Any = None
    with trio.fail_after(GUARD):
        async with (
            aw.open_gateway("127.0.0.1:0") as gateway,
            aw.open_worker(gateway.address) as services,
        ):
            await CHECKPOINTS.register_store(services)  # checkpoints outlive the drivers
            await register(services, steps)
            async with driver(gateway.address) as first:
                await run_until_hanging(first, steps)
            steps.release.set()  # the agent finishes the call of the stopped worker
            async with driver(gateway.address) as second:
                result = await run_flow(second, FLOW, "x", run_id="r", checkpoints=CHECKPOINTS)
    check_resumed(result, steps)


async def test_a_dag_run_resumes_without_repeating_finished_tasks() -> None:
    keys: list[str] = []
    hanging = trio.Event()

    async def record(ctx: TaskContext) -> str:
        keys.append(ctx.idempotency_key)
        if ctx.task == "b" and ctx.attempt == 1:
            hanging.set()
            await trio.sleep_forever()
        return ctx.task + "".join(sorted(ctx.inputs.values()))

    dag = Dag("resumable", [Task("a", record), Task("b", record, ["a"]), Task("c", record)])
    dag.add(Task("d", record, ["b", "c"]))
    checkpoints = Checkpoints("dag-checkpoints")
    with trio.fail_after(GUARD):
        result = await crash_and_resume(dag, checkpoints, hanging)
    assert sorted(keys) == ["r/a/1", "r/b/1", "r/b/2", "r/c/1", "r/d/1"]
    assert result.results == {"a": "a", "b": "ba", "c": "c", "d": "dbac"}


async def crash_and_resume(dag: Dag, checkpoints: Checkpoints, hanging: trio.Event) -> Any:
    async with aw.open_runtime() as before:
        await checkpoints.register_store(before)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(lambda: run_dag(before, dag, run_id="r", checkpoints=checkpoints))
            await hanging.wait()
            await trio.testing.wait_all_tasks_blocked()  # "c" finished too
            nursery.cancel_scope.cancel()
        snapshot = await before.save_state()
    async with aw.open_runtime() as after:
        await checkpoints.register_store(after)
        await after.load_state(snapshot)
        return await run_dag(after, dag, run_id="r", checkpoints=checkpoints)
