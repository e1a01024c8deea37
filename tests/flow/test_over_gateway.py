"""Flows over real sockets: tasks served by agents on two workers through a gateway."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio

import agentwire as aw
from agentwire.flow import (
    Dag,
    Rule,
    Send,
    State,
    StateFlow,
    Task,
    TaskContext,
    TaskEvent,
    TaskFn,
    flow_task,
    run_dag,
)

from .helpers import Done, Work, Worker

GUARD = 20  # seconds: a hang guard, never a synchronisation


@asynccontextmanager
async def network() -> AsyncIterator[
    tuple[aw.Gateway, aw.WorkerRuntime, aw.WorkerRuntime, aw.WorkerRuntime]
]:
    """A gateway on 127.0.0.1, two serving workers and one that runs the flows."""
    async with (
        aw.open_gateway("127.0.0.1:0") as gateway,
        aw.open_worker(gateway.address) as left,
        aw.open_worker(gateway.address) as right,
        aw.open_worker(gateway.address) as driver,
    ):
        driver.add_message_serializer(aw.serializers_for_type(Done))
        yield gateway, left, right, driver


def work(agent_type: str) -> TaskFn:
    async def send(ctx: TaskContext) -> Done:
        before = "".join(sorted(done.payload for done in ctx.inputs.values()))
        return await ctx.send(agent_type, Work(ctx.task + before, ctx.idempotency_key))

    return send


async def test_a_dag_runs_on_agents_of_two_workers_and_its_progress_is_followed() -> None:
    seen: list[TaskEvent] = []
    finished = trio.Event()

    async def follow(_: aw.ClosureContext, event: TaskEvent, ctx: aw.MessageContext) -> None:
        seen.append(event)
        if event.task == "review" and event.kind == "done":
            finished.set()

    review = StateFlow(
        "review",
        [
            State("check", Send("right", lambda ctx: Work(str(ctx.input))), [Rule("ok")]),
            State("ok"),
        ],
        initial="check",
        final=["ok"],
    )
    dag = Dag("net")
    dag.task(name="a", estimate=1)(work("left"))
    dag.task(name="b", estimate=3)(work("right"))
    dag.task(name="c", after=["a", "b"], estimate=1)(work("left"))
    dag.add(flow_task("review", review, after=("c",), input=lambda ctx: ctx.inputs["c"].payload))
    assert dag.critical_path() == (5.0, ("b", "c", "review"))

    with trio.fail_after(GUARD):
        async with network() as (_, left, right, driver):
            await Worker.register(left, "left", lambda: Worker("left"))
            await Worker.register(right, "right", lambda: Worker("right"))
            await aw.ClosureAgent.register_closure(
                right,
                "follower",
                follow,
                subscriptions=lambda: [aw.TypeSubscription("progress", "follower")],
            )
            result = await run_dag(driver, dag, run_id="net1", topic="progress")
            await finished.wait()

    assert result.results["a"] == Done("A", "left/net1")
    assert result.results["b"] == Done("B", "right/net1")
    assert result.results["c"] == Done("CAB", "left/net1")
    assert result.results["review"] == Done("CAB", "right/net1.review")
    assert {(event.task, event.kind) for event in seen} >= {
        ("a", "started"),
        ("a", "done"),
        ("b", "done"),
        ("c", "done"),
        ("review", "done"),
    }
    assert all(event.run_id == "net1" for event in seen)


async def test_cancelling_a_run_with_rpcs_in_flight_leaves_nothing_pending() -> None:
    started = 0
    all_started = trio.Event()
    cancelled: list[str] = []

    class Blocker(aw.RoutedAgent):
        @aw.rpc
        async def block(self, message: Work, ctx: aw.MessageContext) -> Done:
            nonlocal started
            started += 1
            if started == 3:
                all_started.set()
            try:
                await trio.sleep_forever()
            finally:
                cancelled.append(self.id.key)
            raise AssertionError("unreachable")

    async def blocked(ctx: TaskContext) -> Done:
        return await ctx.send("blocker", Work(ctx.task), key=ctx.task)

    dag = Dag("stuck", [Task(name, blocked) for name in ("x", "y", "z")])
    with trio.fail_after(GUARD):
        async with network() as (gateway, _, right, driver):
            await Blocker.register(right, "blocker", lambda: Blocker("blocks"))
            # the deadline goes along with each RPC: the serving worker ends its handlers
            run = trio.CancelScope(deadline=trio.current_time() + 3)

            async def run_it() -> None:
                with run:
                    await run_dag(driver, dag)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(run_it)
                await all_started.wait()
                assert driver.statistics().remote_pending_rpcs == 3
                run.cancel()
            stats = driver.statistics()
            assert (stats.pending_rpcs, stats.remote_pending_rpcs) == (0, 0)
            await right.wait_until(lambda s: s.in_flight == 0)
            await gateway.wait_until(lambda s: s.rpcs_in_flight == 0)
            assert driver.statistics().remote_pending_rpcs == 0
    assert run.cancelled_caught
    assert sorted(cancelled) == ["x", "y", "z"]
