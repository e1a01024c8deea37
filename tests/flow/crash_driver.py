"""Runs a durable StateFlow or DAG from a worker of its own, to be killed mid-run.

``python -m tests.flow.crash_driver <gateway address> flow|dag <run id>``, run from the
repository, connects a worker to the gateway and runs five steps ``s0`` .. ``s4`` one after
the other, each a ``Work(name, key)`` sent to agent type ``stepper``, with checkpoints kept
by agent type ``crash-checkpoints`` (both served elsewhere). It prints ``READY`` once
connected, then ``FLOW <source> -> <target>`` per transition or ``TASK <task> <kind>`` per
task event as they are published, and ``RESULT <payloads>`` at the end.
"""

from __future__ import annotations

import sys

import trio

import agentwire as aw
from agentwire.flow import (
    Checkpoints,
    Dag,
    FlowTransition,
    Send,
    State,
    StateFlow,
    Task,
    TaskContext,
    TaskEvent,
    run_dag,
    run_flow,
)
from tests.flow.helpers import Done, Work

STEPS = [f"s{index}" for index in range(5)]
TOPIC = "crash"


CHECKPOINTS = Checkpoints("crash-checkpoints", types=[Done])

FLOW = StateFlow(
    "crash-flow",
    [
        *(
            State(name, Send("stepper", lambda ctx: Work(ctx.state, ctx.idempotency_key)), after)
            for name, after in zip(STEPS, [*STEPS[1:], "end"], strict=True)
        ),
        State("end"),
    ],
    initial=STEPS[0],
    final=["end"],
)


async def step(ctx: TaskContext) -> Done:
    done: Done = await ctx.send("stepper", Work(ctx.task, ctx.idempotency_key))
    return done


DAG = Dag(
    "crash-dag",
    [
        Task(name, step, [] if index == 0 else [STEPS[index - 1]])
        for index, name in enumerate(STEPS)
    ],
)


async def print_progress(
    _: aw.ClosureContext, event: FlowTransition | TaskEvent, ctx: aw.MessageContext
) -> None:
    if isinstance(event, FlowTransition):
        print(f"FLOW {event.source or '-'} -> {event.target}", flush=True)
    else:
        print(f"TASK {event.task} {event.kind}", flush=True)


async def main(address: str, kind: str, run_id: str) -> None:
    async with aw.open_worker(address) as driver:
        driver.add_message_serializer(aw.serializers_for_type(Done))
        await aw.ClosureAgent.register_closure(
            driver,
            "progress",
            print_progress,
            subscriptions=lambda: [aw.TypeSubscription(TOPIC, "progress")],
        )
        print("READY", flush=True)
        if kind == "flow":
            result = await run_flow(
                driver, FLOW, run_id=run_id, topic=TOPIC, checkpoints=CHECKPOINTS
            )
            outputs = [step.output for step in result.history]
        else:
            dag_result = await run_dag(
                driver, DAG, run_id=run_id, topic=TOPIC, checkpoints=CHECKPOINTS
            )
            outputs = [dag_result.results[name] for name in STEPS]
    print("RESULT", " ".join(done.payload for done in outputs), flush=True)


if __name__ == "__main__":
    gateway, kind, run_id = sys.argv[1:]
    trio.run(main, gateway, kind, run_id)
