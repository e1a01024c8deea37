"""A task DAG whose tasks are served by agents on two workers, through a gateway.

    plan -> fetch (one per source, on "left") --+
        \\-> check (on "right") ----------------+-> merge (on "right") -> report (on "left")

The program starts a gateway on 127.0.0.1 and two workers: one serves agent type ``left``,
the other ``right``; a third worker drives the DAG and hosts a follower that prints every
``TaskEvent`` of the run as it is published on the run's topic. Each agent answers a
``Work`` with a ``Done`` naming who served it.

Run it: ``python examples/flow/distributed_dag.py``. Options:

* ``--gateway HOST:PORT``: use that gateway instead of starting one;
* ``--right TYPE``: send the right-hand tasks to agent type TYPE, served elsewhere on the
  gateway (an AutoGen worker, say, answering ``Work`` with ``Done``): the second worker is
  then not started;
* ``--topic NAME`` (default ``dag-progress``) and ``--run-id ID`` (default ``build-1``).
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager

import trio

import agentwire as aw
from agentwire.flow import Dag, DagResult, TaskContext, TaskEvent, run_dag

SOURCES = ["alpha", "beta", "gamma"]
GUARD = 60  # seconds for the whole program: a hang guard


@dataclasses.dataclass
class Work:
    """What a task asks of an agent (the same shape as AutoGen peers' ``Work``)."""

    payload: str
    key: str = ""


@dataclasses.dataclass
class Done:
    payload: str
    served_by: str


class Server(aw.RoutedAgent):
    """Answers ``Work`` with the payload upper-cased, naming its agent id and worker."""

    def __init__(self, worker: str) -> None:
        super().__init__(f"serves work on worker {worker}")
        self.worker = worker

    @aw.rpc
    async def work(self, message: Work, ctx: aw.MessageContext) -> Done:
        return Done(message.payload.upper(), f"{self.id} on worker {self.worker}")


def build_dag(right: str = "right") -> Dag:
    """The DAG: ``left`` tasks go to agent type ``left``, the others to *right*."""
    dag = Dag("build")

    @dag.task(estimate=0.1)
    async def plan(ctx: TaskContext) -> list[str]:
        return list(SOURCES)

    @dag.task(after=[plan], fan_out=plan, retry=aw.RetryPolicy(max_attempts=3), timeout=10)
    async def fetch(ctx: TaskContext) -> Done:
        return await ctx.send("left", Work(ctx.item, ctx.idempotency_key))

    @dag.task(after=[plan], timeout=10)
    async def check(ctx: TaskContext) -> Done:
        return await ctx.send(
            right, Work(f"{len(ctx.inputs['plan'])} sources", ctx.idempotency_key)
        )

    @dag.task(after=[fetch, check], timeout=10)
    async def merge(ctx: TaskContext) -> Done:
        fetched = "+".join(done.payload for done in ctx.inputs["fetch"])
        return await ctx.send(right, Work(fetched, ctx.idempotency_key))

    @dag.task(after=[merge], timeout=10)
    async def report(ctx: TaskContext) -> Done:
        return await ctx.send(
            "left", Work(f"report of {ctx.inputs['merge'].payload}", ctx.idempotency_key)
        )

    return dag


def describe(event: TaskEvent) -> str:
    """One progress line for *event*."""
    task = event.task if event.item < 0 else f"{event.task}[{event.item}]"
    line = f"[{event.run_id}] {task} {event.kind}"
    if event.kind in ("done", "failed"):
        # the task's time and attempts (of all its items, for a fanned-out task)
        line += f" in {event.duration * 1000:.1f} ms, {event.attempt} attempt(s)"
    elif event.kind != "skipped":
        line += f" (attempt {event.attempt})"
    if event.error:
        line += f": {event.error}"
    return line


async def follow(runtime: aw.AgentRuntime, topic: str, last: str) -> trio.Event:
    """Print every TaskEvent published on *topic*; the event is set once *last* is done."""
    finished = trio.Event()

    async def on_event(_: aw.ClosureContext, event: TaskEvent, ctx: aw.MessageContext) -> None:
        print(describe(event), flush=True)
        if event.task == last and event.kind in ("done", "failed", "skipped"):
            finished.set()

    await aw.ClosureAgent.register_closure(
        runtime,
        "progress",
        on_event,
        subscriptions=lambda: [aw.TypeSubscription(topic, "progress")],
    )
    return finished


@asynccontextmanager
async def network(gateway: str | None, right: str) -> AsyncIterator[aw.WorkerRuntime]:
    """The serving workers (and the gateway unless *gateway* is given); yields the driver."""
    async with AsyncExitStack() as stack:
        if gateway is None:
            gateway = (await stack.enter_async_context(aw.open_gateway("127.0.0.1:0"))).address
            print(f"gateway on {gateway}", flush=True)
        serving = [("left", "one")] + ([("right", "two")] if right == "right" else [])
        for agent_type, name in serving:
            worker = await stack.enter_async_context(aw.open_worker(gateway))
            await Server.register(worker, agent_type, lambda name=name: Server(name))
        driver = await stack.enter_async_context(aw.open_worker(gateway))
        driver.add_message_serializer(aw.serializers_for_type(Done))
        yield driver


async def run(gateway: str | None, right: str, topic: str, run_id: str) -> DagResult:
    with trio.fail_after(GUARD):
        async with network(gateway, right) as driver:
            finished = await follow(driver, topic, "report")
            result = await run_dag(driver, build_dag(right), run_id=run_id, topic=topic)
            await finished.wait()  # the last event may arrive after the run returns
    return result


def parse(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gateway", metavar="HOST:PORT", help="use this gateway")
    parser.add_argument("--right", default="right", metavar="TYPE", help="served elsewhere")
    parser.add_argument("--topic", default="dag-progress")
    parser.add_argument("--run-id", default="build-1")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse(argv)
    result = trio.run(run, args.gateway, args.right, args.topic, args.run_id)
    for name in ("check", "merge", "report"):
        done = result.results[name]
        print(f"{name}: {done.payload} (served by {done.served_by})")
    for index, done in enumerate(result.results["fetch"]):
        print(f"fetch[{index}]: {done.payload} (served by {done.served_by})")
    seconds, path = result.critical_path
    print(f"critical path: {' -> '.join(path)} ({seconds * 1000:.1f} ms)")


if __name__ == "__main__":
    main()
