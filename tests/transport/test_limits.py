"""Bad input, limits and shutdown of the server, over real sockets."""

from __future__ import annotations

from collections.abc import AsyncIterator

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.settings
import pytest
import trio
import trio.testing

from agentwire._transport import (
    GRPCError,
    GrpcServer,
    Method,
    ServerStream,
    Status,
    bidi,
    open_channel,
    open_grpc_server,
    unary,
)


async def _echo(request: bytes, stream: ServerStream) -> bytes:
    return request


async def _big(request: bytes, stream: ServerStream) -> bytes:
    return b"x" * int(request)


class Flood:
    def __init__(self) -> None:
        self.sent = 0
        self.started = trio.Event()

    async def handler(self, stream: ServerStream) -> None:
        self.started.set()
        while True:
            await stream.send(b"y" * 65536)
            self.sent += 65536


def _methods(flood: Flood | None = None) -> dict[str, Method]:
    methods = {"/t/Echo": unary(_echo), "/t/Big": unary(_big)}
    if flood is not None:
        methods["/t/Flood"] = bidi(flood.handler)
    return methods


@pytest.fixture
async def server() -> AsyncIterator[GrpcServer]:
    async with open_grpc_server(_methods(), "127.0.0.1", 0, max_message_size=2**20) as server:
        yield server


async def _read_until_eof(stream: trio.abc.Stream) -> bytes:
    received = b""
    with trio.fail_after(10):
        while chunk := await stream.receive_some():
            received += chunk
    return received


def _goaway(data: bytes) -> h2.events.ConnectionTerminated | None:
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    conn.initiate_connection()
    for event in conn.receive_data(data):
        if isinstance(event, h2.events.ConnectionTerminated):
            return event
    return None


async def test_garbage_instead_of_preface(server: GrpcServer) -> None:
    raw = await trio.open_tcp_stream("127.0.0.1", server.port)
    await raw.send_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" + b"\x00" * 100)
    reply = await _read_until_eof(raw)  # the server hangs up
    await raw.aclose()
    # the server says why (GOAWAY PROTOCOL_ERROR after its SETTINGS)
    event = _goaway(reply)
    assert event is not None
    assert event.error_code == h2.errors.ErrorCodes.PROTOCOL_ERROR
    async with open_channel(server.address) as channel:
        assert await channel.unary("/t/Echo", b"still serving") == b"still serving"


async def test_invalid_frame_after_preface(server: GrpcServer) -> None:
    raw = await trio.open_tcp_stream("127.0.0.1", server.port)
    client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    client.initiate_connection()
    # a SETTINGS frame whose length is not a multiple of 6
    bad_settings = b"\x00\x00\x05\x04\x00\x00\x00\x00\x00" + b"\x00" * 5
    await raw.send_all(client.data_to_send() + bad_settings)
    reply = await _read_until_eof(raw)
    await raw.aclose()
    event = _goaway(reply)
    assert event is not None
    assert event.error_code != 0
    async with open_channel(server.address) as channel:
        assert await channel.unary("/t/Echo", b"ok") == b"ok"


async def test_oversized_request_fails_that_call_only(server: GrpcServer) -> None:
    async with open_channel(server.address) as channel:
        with pytest.raises(GRPCError) as info:
            await channel.unary("/t/Echo", b"z" * (2**20 + 1))
        assert info.value.status is Status.RESOURCE_EXHAUSTED
        assert await channel.unary("/t/Echo", b"z" * 2**20) == b"z" * 2**20
        assert channel.statistics().open_streams == 0
    assert server.statistics().open_streams == 0


async def test_oversized_response_fails_that_call_only(server: GrpcServer) -> None:
    async with open_channel(server.address, max_message_size=1000) as channel:
        with pytest.raises(GRPCError) as info:
            await channel.unary("/t/Big", b"1001")
        assert info.value.status is Status.RESOURCE_EXHAUSTED
        assert await channel.unary("/t/Big", b"1000") == b"x" * 1000
        assert not channel.closed


async def test_connect_refused_is_unavailable() -> None:
    listener = (await trio.open_tcp_listeners(0, host="127.0.0.1"))[0]
    port = listener.socket.getsockname()[1]
    await listener.aclose()
    with pytest.raises(GRPCError) as info:
        async with open_channel(f"127.0.0.1:{port}"):
            pass
    assert info.value.status is Status.UNAVAILABLE


async def test_peer_that_stops_reading_is_bounded() -> None:
    flood = Flood()
    async with open_grpc_server(_methods(flood), "127.0.0.1", 0) as server:
        raw = await trio.open_tcp_stream("127.0.0.1", server.port)
        client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        client.initiate_connection()
        # huge windows: only TCP and the server's own buffers can stop the flood
        client.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 2**31 - 1})
        client.increment_flow_control_window(2**31 - 1 - 65535)
        sid = client.get_next_available_stream_id()
        client.send_headers(
            sid,
            [
                (":method", "POST"),
                (":scheme", "http"),
                (":path", "/t/Flood"),
                (":authority", "x"),
                ("content-type", "application/grpc"),
                ("te", "trailers"),
            ],
        )
        await raw.send_all(client.data_to_send())
        await flood.started.wait()
        # the handler blocks once the socket and the transport's buffers are full
        with trio.fail_after(30):
            await trio.testing.wait_all_tasks_blocked(cushion=0.05)
        sent_when_blocked = flood.sent
        (conn,) = server._connections
        assert conn.pending_output <= 2**20
        # socket buffers on loopback are a few MiB at most; nothing grows without bound
        assert sent_when_blocked < 64 * 2**20
        # other connections are served meanwhile
        async with open_channel(server.address) as channel:
            assert await channel.unary("/t/Echo", b"alive") == b"alive"
        assert flood.sent == sent_when_blocked
        await raw.aclose()


async def test_max_connections() -> None:
    async with (
        open_grpc_server(_methods(), "127.0.0.1", 0, max_connections=1) as server,
        open_channel(server.address) as first,
    ):
        assert await first.unary("/t/Echo", b"1") == b"1"
        async with open_channel(server.address) as second:
            with pytest.raises(GRPCError) as info:
                await second.unary("/t/Echo", b"2")
            assert info.value.status is Status.UNAVAILABLE
        assert await first.unary("/t/Echo", b"1") == b"1"


async def test_max_concurrent_streams_queues_calls() -> None:
    release = trio.Event()
    inside = 0
    most = 0

    async def wait(request: bytes, stream: ServerStream) -> bytes:
        nonlocal inside, most
        inside += 1
        most = max(most, inside)
        await release.wait()
        inside -= 1
        return request

    methods = {"/t/Wait": unary(wait)}
    async with (
        open_grpc_server(methods, "127.0.0.1", 0, max_concurrent_streams=2) as server,
        open_channel(server.address) as channel,
    ):
        # a first call, so that the client has the server's SETTINGS
        release.set()
        await channel.unary("/t/Wait", b"warm-up")
        release = trio.Event()
        results = []

        async def call(i: int) -> None:
            results.append(await channel.unary("/t/Wait", b"%d" % i))

        async with trio.open_nursery() as nursery:
            for i in range(6):
                nursery.start_soon(call, i)
            await trio.testing.wait_all_tasks_blocked(cushion=0.05)
            assert inside == 2
            release.set()
        assert sorted(results) == [b"%d" % i for i in range(6)]
        assert most == 2


async def test_graceful_shutdown_lets_calls_finish() -> None:
    async def echo_stream(stream: ServerStream) -> None:
        async for message in stream:
            await stream.send(message)

    methods = {"/t/Echo": unary(_echo), "/t/Stream": bidi(echo_stream)}
    async with trio.open_nursery() as nursery:
        server: GrpcServer = await nursery.start(_serve, methods)
        async with open_channel(server.address) as channel:
            async with channel.stream("/t/Stream") as stream:
                await stream.send(b"before")
                assert await stream.receive() == b"before"
                done = trio.Event()

                async def shutdown() -> None:
                    await server.shutdown(grace=3600)
                    done.set()

                nursery.start_soon(shutdown)
                await trio.testing.wait_all_tasks_blocked(cushion=0.05)
                assert server.statistics().shutting_down
                # in-flight calls go on during the grace period
                await stream.send(b"during")
                assert await stream.receive() == b"during"
                # new connections are refused
                with pytest.raises(GRPCError) as info:
                    async with open_channel(server.address) as late:
                        await late.unary("/t/Echo", b"")
                assert info.value.status is Status.UNAVAILABLE
                await stream.end()
                assert await stream.receive() is None
            # the last call ended: shutdown completes long before the grace period
            with trio.fail_after(10):
                await done.wait()


async def _serve(methods: dict[str, Method], *, task_status: trio.TaskStatus[GrpcServer]) -> None:
    from agentwire._transport import serve_grpc

    await serve_grpc(methods, "127.0.0.1", 0, task_status=task_status)


async def test_ping_flood_from_a_peer_that_never_reads(server: GrpcServer) -> None:
    raw = await trio.open_tcp_stream("127.0.0.1", server.port)
    client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    client.initiate_connection()
    await raw.send_all(client.data_to_send())
    ping = b"\x00\x00\x08\x06\x00\x00\x00\x00\x00" + b"flooding"
    burst = ping * 4096  # 69 KiB of PINGs, 4096 ACKs owed per burst

    async def flood() -> None:
        while True:
            await raw.send_all(burst)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(flood)
        # the server stops reading once the ACKs it cannot send pile up,
        # so the flood ends up blocked on TCP
        with trio.fail_after(30):
            await trio.testing.wait_all_tasks_blocked(cushion=0.1)
        (conn,) = server._connections
        assert conn.pending_output <= 2 * 2**20
        async with open_channel(server.address) as channel:
            assert await channel.unary("/t/Echo", b"unaffected") == b"unaffected"
        nursery.cancel_scope.cancel()
    await raw.aclose()


async def test_port_in_use_raises_oserror_unwrapped(server: GrpcServer) -> None:
    with pytest.raises(OSError):
        async with open_grpc_server(_methods(), "127.0.0.1", server.port):
            pass
