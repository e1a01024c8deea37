"""Connections that never start or never end: handshake and idle timeouts, refusals."""

from __future__ import annotations

import h2.config
import h2.connection
import h2.events
import pytest
import trio
import trio.testing

from agentwire._transport import (
    GRPCError,
    GrpcServer,
    Method,
    ServerStream,
    Status,
    _server,
    bidi,
    open_channel,
    open_channel_over_stream,
    open_grpc_server,
    unary,
)

from .conftest import serving_in_memory

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


async def _echo(request: bytes, stream: ServerStream) -> bytes:
    return request


async def _hang(stream: ServerStream) -> None:
    await stream.send(b"started")
    await trio.sleep_forever()


METHODS: dict[str, Method] = {"/t/Echo": unary(_echo), "/t/Hang": bidi(_hang)}


async def _read_until_eof(stream: trio.abc.ReceiveStream) -> bytes:
    received = b""
    while chunk := await stream.receive_some():
        received += chunk
    return received


@pytest.mark.parametrize(
    "sent", [b"", PREFACE[:10], PREFACE], ids=["nothing", "half", "no-settings"]
)
async def test_a_client_that_never_completes_the_handshake_is_dropped(
    autojump_clock: trio.abc.Clock, sent: bytes
) -> None:
    async with serving_in_memory(METHODS, handshake_timeout=10) as (client, server):
        await client.send_all(sent)
        with trio.move_on_after(9.9):
            await _read_until_eof(client)
            pytest.fail("closed before the handshake timeout")
        assert server.statistics().connections == 1
        with trio.fail_after(1):
            await _read_until_eof(client)
        await trio.testing.wait_all_tasks_blocked()
        assert server.statistics().connections == 0


async def test_no_handshake_timeout_when_disabled(autojump_clock: trio.abc.Clock) -> None:
    async with serving_in_memory(METHODS, handshake_timeout=None, idle_timeout=None) as (
        client,
        server,
    ):
        await client.send_all(PREFACE[:10])
        with trio.move_on_after(24 * 3600) as scope:
            await _read_until_eof(client)
        assert scope.cancelled_caught
        assert server.statistics().connections == 1


async def test_a_completed_handshake_is_not_timed_out(autojump_clock: trio.abc.Clock) -> None:
    async with serving_in_memory(METHODS, handshake_timeout=10, idle_timeout=None) as (
        client_stream,
        server,
    ):
        client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        client.initiate_connection()
        await client_stream.send_all(client.data_to_send())
        with trio.move_on_after(3600) as scope:
            await _read_until_eof(client_stream)
        assert scope.cancelled_caught
        assert server.statistics().connections == 1


async def test_a_connection_without_calls_is_closed_after_the_idle_timeout(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with (
        serving_in_memory(METHODS, idle_timeout=60) as (client_stream, server),
        open_channel_over_stream(client_stream) as channel,
    ):
        assert await channel.unary("/t/Echo", b"hi") == b"hi"
        with trio.move_on_after(59):
            await channel._conn.wait_closed()
        assert not channel.closed
        with trio.fail_after(2):
            await channel._conn.wait_closed()
        assert channel.closed
        # a graceful GOAWAY: the client is told the connection is over, not failed
        with pytest.raises(GRPCError) as info:
            await channel.unary("/t/Echo", b"again")
        assert info.value.status is Status.UNAVAILABLE
        await trio.testing.wait_all_tasks_blocked()
        assert server.statistics().connections == 0


async def test_an_open_call_keeps_a_connection_from_being_idle(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with (
        serving_in_memory(METHODS, idle_timeout=60) as (client_stream, server),
        open_channel_over_stream(client_stream) as channel,
    ):
        async with channel.stream("/t/Hang") as stream:
            assert await stream.receive() == b"started"
            with trio.move_on_after(3600):
                await channel._conn.wait_closed()
            assert not channel.closed
        # the idle clock starts when the last call ends
        with trio.move_on_after(59):
            await channel._conn.wait_closed()
        assert not channel.closed
        with trio.fail_after(2):
            await channel._conn.wait_closed()
        assert server.statistics().connections == 0


class _Listener(trio.abc.Listener[trio.abc.Stream]):
    """Hands out the given streams, then waits forever."""

    def __init__(self, streams: list[trio.abc.Stream]) -> None:
        self._streams = streams

    async def accept(self) -> trio.abc.Stream:
        await trio.lowlevel.checkpoint()
        if not self._streams:
            await trio.sleep_forever()
        return self._streams.pop(0)

    async def aclose(self) -> None:
        await trio.lowlevel.checkpoint()


async def test_refusals_beyond_the_bound_are_closed_without_a_goaway(
    autojump_clock: trio.abc.Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_server, "MAX_REFUSING", 3)
    # lockstep streams: the refusal's GOAWAY waits until the client reads it
    pairs = [trio.testing.lockstep_stream_pair() for _ in range(5)]
    server = GrpcServer(METHODS, max_connections=0)
    async with trio.open_nursery() as nursery:
        server._nursery = nursery
        nursery.start_soon(server._accept_loop, _Listener([theirs for _, theirs in pairs]))
        await trio.testing.wait_all_tasks_blocked()
        assert server._refusing == 3
        # the two over the bound are closed at once: end of stream, no GOAWAY
        for ours, _ in pairs[3:]:
            assert await ours.receive_some() == b""
        # the others are told why (once they read), then closed
        first = pairs[0][0]
        reply = await _read_until_eof(first)
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        conn.initiate_connection()
        events = conn.receive_data(reply)
        (goaway,) = [e for e in events if isinstance(e, h2.events.ConnectionTerminated)]
        assert goaway.additional_data == b"too many connections"
        nursery.cancel_scope.cancel()


async def test_idle_sockets_are_reaped_so_new_clients_get_served() -> None:
    cap = 8
    async with open_grpc_server(
        METHODS, "127.0.0.1", 0, max_connections=cap, handshake_timeout=3
    ) as server:
        idle = [await trio.open_tcp_stream("127.0.0.1", server.port) for _ in range(cap)]
        for sock in idle[::2]:
            await sock.send_all(PREFACE[:10])  # half a preface
        await trio.testing.wait_all_tasks_blocked(cushion=0.05)
        assert server.statistics().connections == cap
        # the idle sockets hold every slot: a new client is refused
        async with open_channel(server.address) as refused:
            with pytest.raises(GRPCError) as info:
                await refused.unary("/t/Echo", b"x")
            assert info.value.status is Status.UNAVAILABLE
        with trio.fail_after(30):
            for sock in idle:
                await _read_until_eof(sock)
                await sock.aclose()
        await trio.testing.wait_all_tasks_blocked(cushion=0.05)
        assert server.statistics().connections == 0
        async with open_channel(server.address) as channel:
            assert await channel.unary("/t/Echo", b"served") == b"served"
