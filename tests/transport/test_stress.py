"""Many calls on one connection, cancelled at random points: nothing leaks."""

from __future__ import annotations

import random

import trio
import trio.testing

from agentwire._transport import (
    GRPCError,
    ServerStream,
    Status,
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


async def test_random_deadlines_errors_and_gzip_leave_nothing_open() -> None:
    rng = random.Random(99)
    running = 0

    async def echo_stream(stream: ServerStream) -> None:
        nonlocal running
        running += 1
        try:
            async for message in stream:
                if message == b"fail":
                    raise GRPCError(Status.ABORTED, "asked to")
                await stream.send(message * rng.randint(1, 3000))
                await trio.lowlevel.checkpoint()
        finally:
            running -= 1

    async def slow(request: bytes, stream: ServerStream) -> bytes:
        nonlocal running
        running += 1
        try:
            for _ in range(int(request)):
                await trio.lowlevel.checkpoint()
            if int(request) % 7 == 0:
                raise ValueError("seven")
            return request * 1000
        finally:
            running -= 1

    statuses: dict[str, int] = {}
    methods = {"/t/Stream": bidi(echo_stream), "/t/Slow": unary(slow)}
    with trio.fail_after(60):
        async with (
            open_grpc_server(
                methods, "127.0.0.1", 0, max_concurrent_streams=15, compression="gzip"
            ) as server,
            open_channel(server.address, compression="gzip") as channel,
        ):

            async def call() -> None:
                kind, steps = rng.choice("us"), rng.randint(1, 40)
                timeout = rng.choice([None, None, 0.001, 0.01, 0.05])
                outcome = "OK"
                with trio.CancelScope() as scope:
                    if rng.random() < 0.2:
                        scope.deadline = trio.current_time() + rng.random() * 0.02
                    try:
                        if kind == "u":
                            await channel.unary("/t/Slow", b"%d" % steps, timeout=timeout)
                        else:
                            async with channel.stream("/t/Stream", timeout=timeout) as stream:
                                for i in range(steps):
                                    fail = rng.random() < 0.02
                                    await stream.send(b"fail" if fail else b"x%d" % i)
                                    await stream.receive()
                                await stream.end()
                                await stream.receive()
                    except GRPCError as exc:
                        outcome = exc.status.name
                if scope.cancelled_caught:
                    outcome = "cancelled"
                statuses[outcome] = statuses.get(outcome, 0) + 1

            async with trio.open_nursery() as nursery:
                for _ in range(200):
                    nursery.start_soon(call)
            assert channel.statistics().open_streams == 0
            assert await channel.unary("/t/Slow", b"1") == b"1" * 1000
            await trio.testing.wait_all_tasks_blocked(cushion=0.05)
            assert server.statistics().open_streams == 0
            assert running == 0
    assert sum(statuses.values()) == 200
    assert set(statuses) <= {"OK", "cancelled", "DEADLINE_EXCEEDED", "UNKNOWN", "ABORTED"}
    assert statuses.get("OK", 0) > 0
