"""``agentwire worker MODULE:FUNCTION`` as a process against a real gateway."""

from __future__ import annotations

import signal

import pytest
import trio

from agentwire import AgentId, JsonSerializer, open_gateway, open_worker
from tests.operator.agents import Greet, Greeting
from tests.operator.cli import agentwire, read_line, running


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
async def test_a_worker_serves_what_setup_registers_and_stops_on_a_signal(
    signum: signal.Signals,
) -> None:
    async with open_gateway(startup_grace=0) as gw, open_worker(gw.address) as caller:
        caller.add_message_serializer(JsonSerializer(Greeting))
        spec = "tests.operator.agents:setup"
        async with running("worker", "--gateway", gw.address, spec) as process:
            assert process.stdout is not None
            with trio.fail_after(30):
                line = await read_line(process.stdout)
            assert line == f"agentwire worker ready (connected to {gw.address})\n"
            result = await caller.send_message(Greet("dee"), AgentId("greeter", "w"))
            assert result == Greeting("hello dee x1 from w")
            process.send_signal(signum)
            with trio.fail_after(30):
                status = await process.wait()
        assert status == 0
        # The worker left: its registration is gone from the gateway.
        with trio.fail_after(10):
            await gw.wait_until(lambda s: s.data_connections == 1)


@pytest.mark.parametrize(
    ("spec", "reason"),
    [
        ("no_separator", "is not MODULE:FUNCTION"),
        ("tests.operator.no_such_module:setup", "cannot import"),
        ("tests.operator.agents:missing", "has no 'missing'"),
        ("tests.operator.agents:not_async", "must be an async function"),
    ],
)
async def test_a_bad_setup_is_one_line_and_exit_2(spec: str, reason: str) -> None:
    done = await agentwire("worker", "--gateway", "127.0.0.1:1", spec)
    assert done.status == 2
    assert done.err.startswith("agentwire worker: ")
    assert reason in done.err
    assert done.err.count("\n") == 1


async def test_a_worker_with_several_gateways_moves_on_when_its_gateway_stops() -> None:
    async with (
        trio.open_nursery() as nursery,
        open_gateway(startup_grace=0) as second,
        open_worker(second.address) as caller,
    ):
        caller.add_message_serializer(JsonSerializer(Greeting))
        stop_first = trio.Event()
        first = await nursery.start(_run_gateway, stop_first)
        gateways = f"{first},{second.address}"
        async with running(
            "worker", "--gateway", gateways, "tests.operator.agents:setup"
        ) as process:
            assert process.stdout is not None
            with trio.fail_after(30):
                line = await read_line(process.stdout)
            assert line == f"agentwire worker ready (connected to {gateways})\n"
            assert second.statistics().agent_types == 0  # it is on the first
            stop_first.set()
            with trio.fail_after(30):
                await second.wait_until(lambda s: s.agent_types == 1)
            result = await caller.send_message(Greet("eve"), AgentId("greeter", "w"))
            assert result == Greeting("hello eve x1 from w")
            process.send_signal(signal.SIGTERM)
            with trio.fail_after(30):
                assert await process.wait() == 0


async def _run_gateway(
    stop: trio.Event, *, task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED
) -> None:
    async with open_gateway(startup_grace=0, grace_period=0.1) as gateway:
        task_status.started(gateway.address)
        await stop.wait()
