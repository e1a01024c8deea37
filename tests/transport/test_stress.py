"""Many calls on one connection, cancelled at random points: nothing leaks."""

from __future__ import annotations

import random

import trio
import trio.testing

from agentwire._transport import (
    GRPCError,
    ServerStream,
    bidi,
    open_channel,
    open_grpc_server,
    unary,
)


async def test_random_cancellations_leave_nothing_open() -> None:
    rng = random.Random(1234)
    running = 0
    finished = 0

    async def echo_stream(stream: ServerStream) -> None:
        nonlocal running, finished
        running += 1
        try:
            async for message in stream:
                await stream.send(message)
                await trio.lowlevel.checkpoint()
        finally:
            running -= 1
            finished += 1

    async def slow_echo(request: bytes, stream: ServerStream) -> bytes:
        nonlocal running, finished
        running += 1
        try:
            for _ in range(int(request)):
                await trio.lowlevel.checkpoint()
            return request
        finally:
            running -= 1
            finished += 1

    methods = {"/t/Stream": bidi(echo_stream), "/t/Slow": unary(slow_echo)}
    outcomes = {"ok": 0, "cancelled": 0, "error": 0}
    with trio.fail_after(60):
        async with (
            open_grpc_server(methods, "127.0.0.1", 0, max_concurrent_streams=20) as server,
            open_channel(server.address) as channel,
        ):

            async def one_call(plan: tuple[str, int, int]) -> None:
                kind, steps, cancel_after = plan
                with trio.CancelScope() as scope:
                    try:
                        if kind == "unary":
                            if cancel_after == 0:
                                scope.cancel()
                            await channel.unary("/t/Slow", b"%d" % steps)
                        else:
                            async with channel.stream("/t/Stream") as stream:
                                for i in range(steps):
                                    if i == cancel_after:
                                        scope.cancel()
                                    await stream.send(b"%d" % i)
                                    assert await stream.receive() == b"%d" % i
                                await stream.end()
                                assert await stream.receive() is None
                    except GRPCError:
                        outcomes["error"] += 1
                        return
                outcomes["cancelled" if scope.cancelled_caught else "ok"] += 1

            plans = [
                (rng.choice(["unary", "stream"]), rng.randint(1, 30), rng.randint(0, 40))
                for _ in range(300)
            ]
            async with trio.open_nursery() as nursery:
                for plan in plans:
                    nursery.start_soon(one_call, plan)
            assert channel.statistics().open_streams == 0
            assert await channel.unary("/t/Slow", b"1") == b"1"
            await trio.testing.wait_all_tasks_blocked(cushion=0.05)
            assert server.statistics().open_streams == 0
            assert running == 0
    assert outcomes["error"] == 0
    assert outcomes["ok"] > 0
    assert outcomes["cancelled"] > 0
    assert sum(outcomes.values()) == 300
    assert finished >= outcomes["ok"]
