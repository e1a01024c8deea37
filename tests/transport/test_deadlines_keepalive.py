"""Deadlines, keepalive and cancellation, over in-memory streams on a virtual clock."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import h2.config
import h2.connection
import h2.events
import pytest
import trio
import trio.testing

from agentwire._transport import (
    Channel,
    GRPCError,
    GrpcServer,
    Method,
    ServerStream,
    Status,
    bidi,
    open_channel_over_stream,
    unary,
)


class Recorder:
    def __init__(self) -> None:
        self.deadlines: list[float | None] = []
        self.entered = trio.Event()
        self.cancelled = trio.Event()


def _methods(rec: Recorder) -> dict[str, Method]:
    async def hang(request: bytes, stream: ServerStream) -> bytes:
        rec.deadlines.append(stream.deadline)
        rec.entered.set()
        try:
            await trio.sleep_forever()
        except trio.Cancelled:
            rec.cancelled.set()
            raise
        raise AssertionError("unreachable")

    async def hang_stream(stream: ServerStream) -> None:
        await stream.send(b"started")
        await hang(b"", stream)

    async def echo(request: bytes, stream: ServerStream) -> bytes:
        return request

    return {"/t/Hang": unary(hang), "/t/HangStream": bidi(hang_stream), "/t/Echo": unary(echo)}


@asynccontextmanager
async def memory_pair(
    methods: dict[str, Method], **channel_kw: Any
) -> AsyncIterator[tuple[Channel, GrpcServer]]:
    client_stream, server_stream = trio.testing.memory_stream_pair()
    server = GrpcServer(methods)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(server.serve_connection, server_stream)
        async with open_channel_over_stream(client_stream, **channel_kw) as channel:
            yield channel, server
        nursery.cancel_scope.cancel()


async def test_explicit_timeout(autojump_clock: trio.abc.Clock) -> None:
    rec = Recorder()
    async with memory_pair(_methods(rec)) as (channel, server):
        start = trio.current_time()
        with pytest.raises(GRPCError) as info:
            await channel.unary("/t/Hang", b"", timeout=5)
        assert info.value.status is Status.DEADLINE_EXCEEDED
        with trio.fail_after(1):
            await rec.cancelled.wait()
        (deadline,) = rec.deadlines
        assert deadline is not None
        assert deadline == pytest.approx(start + 5, abs=0.01)
        assert channel.statistics().open_streams == 0
        assert server.statistics().open_streams == 0


async def test_caller_deadline_travels_and_cancels(autojump_clock: trio.abc.Clock) -> None:
    rec = Recorder()
    async with memory_pair(_methods(rec)) as (channel, server):
        start = trio.current_time()
        with trio.move_on_after(7) as scope:
            await channel.unary("/t/Hang", b"")
        assert scope.cancelled_caught
        with trio.fail_after(1):
            await rec.cancelled.wait()
        assert rec.deadlines[0] == pytest.approx(start + 7, abs=0.01)
        assert channel.statistics().open_streams == 0
        assert server.statistics().open_streams == 0


async def test_server_enforces_grpc_timeout(autojump_clock: trio.abc.Clock) -> None:
    rec = Recorder()
    async with memory_pair(_methods(rec)) as (channel, _):
        # a deadline the client does not enforce itself: only the server can end the call
        with pytest.raises(GRPCError) as info:
            await channel.unary("/t/Hang", b"", metadata=[("grpc-timeout", "3S")])
        assert info.value.status is Status.DEADLINE_EXCEEDED
        assert rec.cancelled.is_set()


async def test_no_deadline_means_none(autojump_clock: trio.abc.Clock) -> None:
    rec = Recorder()
    async with memory_pair(_methods(rec)) as (channel, _):
        with trio.move_on_after(1e9 + 1) as outer, trio.CancelScope() as scope:
            async with channel.stream("/t/HangStream") as stream:
                assert await stream.receive() == b"started"
                scope.cancel()
                await stream.receive()
        assert not outer.cancelled_caught
        assert rec.deadlines == [rec.deadlines[0]]
        assert rec.deadlines[0] is not None  # 1e9 s fits grpc-timeout (8 digits, clamped)


async def test_cancel_while_blocked_on_flow_control(autojump_clock: trio.abc.Clock) -> None:
    never_reads = trio.Event()
    cancelled = trio.Event()

    async def sink(stream: ServerStream) -> None:
        never_reads.set()
        try:
            await trio.sleep_forever()
        finally:
            cancelled.set()

    methods = {**_methods(Recorder()), "/t/Sink": bidi(sink)}
    async with memory_pair(methods) as (channel, server):
        sent = 0
        with trio.move_on_after(60) as scope:
            async with channel.stream("/t/Sink") as stream:
                await never_reads.wait()
                while True:
                    await stream.send(b"x" * 100_000)
                    sent += 100_000
        assert scope.cancelled_caught
        # flow control stopped the sender, not the test: about the 4 MiB stream
        # window (plus at most the 1 MiB the server queues before it stops acking)
        assert 4 * 2**20 - 100_000 <= sent <= 5.5 * 2**20
        with trio.fail_after(1):
            await cancelled.wait()
        assert channel.statistics().open_streams == 0
        assert server.statistics().open_streams == 0
        # the connection is still good
        assert await channel.unary("/t/Echo", b"ok") == b"ok"


class FakeServer:
    """A bare h2 server: answers request headers, may stop writing altogether."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
        self.pings: list[float] = []
        self.writing = True

    async def run(self) -> None:
        self.conn.initiate_connection()
        await self.stream.send_all(self.conn.data_to_send())
        while data := await self.stream.receive_some():
            for event in self.conn.receive_data(data):
                if isinstance(event, h2.events.PingReceived):
                    self.pings.append(trio.current_time())
                elif isinstance(event, h2.events.RequestReceived):
                    self.conn.send_headers(
                        event.stream_id, [(":status", "200"), ("content-type", "application/grpc")]
                    )
            out = self.conn.data_to_send()
            if out and self.writing:
                await self.stream.send_all(out)


@asynccontextmanager
async def fake_pair(**channel_kw: Any) -> AsyncIterator[tuple[Channel, FakeServer]]:
    client_stream, server_stream = trio.testing.memory_stream_pair()
    fake = FakeServer(server_stream)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(fake.run)
        async with open_channel_over_stream(client_stream, **channel_kw) as channel:
            yield channel, fake
        nursery.cancel_scope.cancel()


async def test_no_keepalive_pings_by_default(autojump_clock: trio.abc.Clock) -> None:
    async with fake_pair() as (channel, fake):
        with trio.move_on_after(3 * 3600) as scope:
            async with channel.stream("/t/Anything") as stream:
                await stream.receive()
        assert scope.cancelled_caught
        assert fake.pings == []
        assert not channel.closed


async def test_keepalive_pings_no_more_often_than_configured(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with fake_pair(keepalive_interval=300) as (channel, fake):
        with trio.move_on_after(3600) as scope:
            async with channel.stream("/t/Anything") as stream:
                await stream.receive()
        assert scope.cancelled_caught
        assert 1 <= len(fake.pings) <= 12
        gaps = [b - a for a, b in zip(fake.pings, fake.pings[1:], strict=False)]
        assert all(gap >= 300 for gap in gaps)
        assert not channel.closed


async def test_keepalive_detects_a_dead_peer(autojump_clock: trio.abc.Clock) -> None:
    async with fake_pair(keepalive_interval=300, keepalive_timeout=20) as (channel, fake):
        async with channel.stream("/t/Anything") as stream:
            fake.writing = False  # alive at the TCP level, silent at the HTTP/2 level
            with trio.fail_after(3600), pytest.raises(GRPCError) as info:
                await stream.receive()
        assert info.value.status is Status.UNAVAILABLE
        assert "keepalive" in (info.value.message or "")
        assert len(fake.pings) == 1
        assert channel.closed


async def test_cancelled_receive_and_send_lose_nothing(autojump_clock: trio.abc.Clock) -> None:
    received: list[bytes] = []

    async def three_then_collect(stream: ServerStream) -> None:
        for i in range(3):
            await stream.send(b"%d" % i)
        async for message in stream:
            received.append(message)

    async with (
        memory_pair({"/t/Three": bidi(three_then_collect)}) as (channel, _),
        channel.stream("/t/Three") as stream,
    ):
        assert await stream.receive() == b"0"
        await trio.testing.wait_all_tasks_blocked()
        with trio.CancelScope() as scope:
            scope.cancel()
            await stream.receive()
        assert scope.cancelled_caught
        with trio.CancelScope() as scope:
            scope.cancel()
            await stream.send(b"never")
        assert scope.cancelled_caught
        assert await stream.receive() == b"1"
        assert await stream.receive() == b"2"
        await stream.send(b"a")
        await stream.end()
        assert await stream.receive() is None
    assert received == [b"a"]
