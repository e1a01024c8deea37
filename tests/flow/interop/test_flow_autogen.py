"""A StateFlow and a DAG run by agentwire whose steps, router and follower are AutoGen's."""

from __future__ import annotations

import pathlib
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio

import agentwire as aw
from agentwire.flow import (
    Dag,
    Route,
    Send,
    State,
    StateFlow,
    Task,
    TaskContext,
    run_dag,
    run_flow,
)

from ..helpers import Done, Work

pytestmark = pytest.mark.interop

PEER = pathlib.Path(__file__).parent / "autogen_flow_peer.py"
WAIT = 60.0  # cold AutoGen imports are slow; a hang guard, never a synchronisation


class Lines:
    """The peer's stdout, line by line."""

    def __init__(self, stream: trio.abc.ReceiveStream) -> None:
        self.stream = stream
        self.buffer = b""

    async def next(self) -> str:
        while b"\n" not in self.buffer:
            chunk = await self.stream.receive_some(65536)
            if not chunk:
                raise AssertionError("the AutoGen peer exited")
            self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\n", 1)
        return line.decode()

    async def until(self, last: str) -> list[str]:
        """Every line up to and including *last*."""
        lines = [await self.next()]
        while lines[-1] != last:
            lines.append(await self.next())
        return lines


@asynccontextmanager
async def autogen_peer(address: str) -> AsyncIterator[trio.Process]:
    """The AutoGen worker process, ended when the block is left."""
    peer = await trio.lowlevel.open_process(
        [sys.executable, str(PEER), address], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    try:
        yield peer
    finally:
        peer.kill()
        with trio.CancelScope(shield=True):
            await peer.wait()


async def test_autogen_agents_serve_route_and_follow_a_flow_and_a_dag() -> None:
    flow = StateFlow(
        "mixed",
        [
            State(
                "ask",
                Send("ag_step", lambda ctx: Work(ctx.input, ctx.idempotency_key)),
                Route("ag_router", ["ask", "done"]),
            ),
            State("done"),
        ],
        initial="ask",
        final=["done"],
    )

    async def ask(ctx: TaskContext) -> Done:
        return await ctx.send("ag_step", Work(ctx.task, ctx.idempotency_key))

    dag = Dag("mixed-dag", [Task("one", ask), Task("two", ask, ["one"])])
    with trio.fail_after(WAIT):
        async with (
            aw.open_gateway("127.0.0.1:0") as gateway,
            aw.open_worker(gateway.address) as driver,
            autogen_peer(gateway.address) as peer,
        ):
            assert peer.stdout is not None
            assert peer.stdin is not None
            lines = Lines(peer.stdout)
            assert await lines.next() == "READY"
            driver.add_message_serializer(aw.serializers_for_type(Done))
            result = await run_flow(driver, flow, "hello", run_id="r1", topic="flow-events")
            transitions = await lines.until("TRANSITION done done final")
            dag_result = await run_dag(driver, dag, run_id="d1", topic="flow-events")
            tasks = await lines.until("TASK two done")
            await peer.stdin.aclose()
    assert result.state == "done"
    assert result.output == Done("HELLO", "autogen ag_step/r1 r1/0/1")
    assert transitions == [
        "TRANSITION - ask start",
        "TRANSITION ask done router",
        "TRANSITION done done final",
    ]
    assert dag_result.results["two"] == Done("TWO", "autogen ag_step/d1 d1/two/1")
    assert tasks == ["TASK one started", "TASK one done", "TASK two started", "TASK two done"]
