"""agentwire client against agentwire server, in one process."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import trio

from agentwire._transport import (
    Channel,
    GRPCError,
    GrpcServer,
    ServerStream,
    Status,
    bidi,
    open_channel,
    open_grpc_server,
    unary,
)


async def _echo(request: bytes, stream: ServerStream) -> bytes:
    return request


async def _metadata(request: bytes, stream: ServerStream) -> bytes:
    return stream.metadata.get("client-id", "").encode()


async def _fail(request: bytes, stream: ServerStream) -> bytes:
    raise GRPCError(Status.NOT_FOUND, "no such thing: ünïcode % 100")


async def _crash(request: bytes, stream: ServerStream) -> bytes:
    raise ValueError("boom")


async def _bidi_echo(stream: ServerStream) -> None:
    async for message in stream:
        await stream.send(message)


async def _count(stream: ServerStream) -> None:
    n = 0
    async for _ in stream:
        n += 1
    await stream.send(str(n).encode())


METHODS = {
    "/test.Test/Echo": unary(_echo),
    "/test.Test/Metadata": unary(_metadata),
    "/test.Test/Fail": unary(_fail),
    "/test.Test/Crash": unary(_crash),
    "/test.Test/BidiEcho": bidi(_bidi_echo),
    "/test.Test/Count": bidi(_count),
}


@pytest.fixture
async def server() -> AsyncIterator[GrpcServer]:
    async with open_grpc_server(METHODS, "127.0.0.1", 0) as server:
        yield server


@pytest.fixture
async def channel(server: GrpcServer) -> AsyncIterator[Channel]:
    async with open_channel(server.address) as channel:
        yield channel


async def test_unary_echo(channel: Channel) -> None:
    assert await channel.unary("/test.Test/Echo", b"hello") == b"hello"
    assert await channel.unary("/test.Test/Echo", b"") == b""


async def test_request_metadata_reaches_handler(channel: Channel) -> None:
    reply = await channel.unary("/test.Test/Metadata", b"", metadata=[("client-id", "abc-123")])
    assert reply == b"abc-123"


async def test_status_and_message(channel: Channel) -> None:
    with pytest.raises(GRPCError) as info:
        await channel.unary("/test.Test/Fail", b"")
    assert info.value.status is Status.NOT_FOUND
    assert info.value.message == "no such thing: ünïcode % 100"


async def test_unexpected_exception_is_unknown(channel: Channel) -> None:
    with pytest.raises(GRPCError) as info:
        await channel.unary("/test.Test/Crash", b"")
    assert info.value.status is Status.UNKNOWN
    assert info.value.message == "Unexpected <class 'ValueError'>: boom"


async def test_unknown_method_is_unimplemented(channel: Channel) -> None:
    with pytest.raises(GRPCError) as info:
        await channel.unary("/test.Test/Nope", b"")
    assert info.value.status is Status.UNIMPLEMENTED


async def test_bidi_ping_pong(channel: Channel) -> None:
    async with channel.stream("/test.Test/BidiEcho") as stream:
        for i in range(50):
            await stream.send(b"%d" % i)
            assert await stream.receive() == b"%d" % i
        await stream.end()
        assert await stream.receive() is None
        assert stream.trailing_metadata is not None
        assert stream.trailing_metadata["grpc-status"] == "0"


async def test_client_streaming(channel: Channel) -> None:
    async with channel.stream("/test.Test/Count") as stream:
        for _ in range(100):
            await stream.send(b"x")
        await stream.end()
        assert [m async for m in stream] == [b"100"]


async def test_big_message() -> None:
    payload = bytes(range(256)) * (10 * 4096)  # 10 MiB: above the 4 MiB default limit
    limit = 16 * 2**20
    async with (
        open_grpc_server(METHODS, "127.0.0.1", 0, max_message_size=limit) as server,
        open_channel(server.address, max_message_size=limit) as channel,
    ):
        assert await channel.unary("/test.Test/Echo", payload) == payload


async def test_nothing_left_open(server: GrpcServer, channel: Channel) -> None:
    for _ in range(5):
        await channel.unary("/test.Test/Echo", b"x")
    async with channel.stream("/test.Test/BidiEcho") as stream:
        await stream.send(b"x")
        assert await stream.receive() == b"x"
    assert channel.statistics().open_streams == 0


async def test_concurrent_calls(channel: Channel) -> None:
    results: list[bytes] = []

    async def call(i: int) -> None:
        results.append(await channel.unary("/test.Test/Echo", b"%d" % i))

    async with trio.open_nursery() as nursery:
        for i in range(200):
            nursery.start_soon(call, i)
    assert sorted(results) == sorted(b"%d" % i for i in range(200))


async def test_gzip_both_ways() -> None:
    payload = b"abc" * 100_000
    async with (
        open_grpc_server(METHODS, "127.0.0.1", 0, compression="gzip") as server,
        open_channel(server.address, compression="gzip") as channel,
    ):
        assert await channel.unary("/test.Test/Echo", payload) == payload
        async with channel.stream("/test.Test/BidiEcho") as stream:
            await stream.send(payload)
            assert await stream.receive() == payload
            assert stream.initial_metadata is not None
            assert stream.initial_metadata["grpc-encoding"] == "gzip"
        stats = channel.statistics()
        assert stats.bytes_sent < len(payload) // 10
        assert stats.bytes_received < len(payload) // 10


async def test_unsupported_request_encoding(channel: Channel) -> None:
    with pytest.raises(GRPCError) as info:
        await channel.unary("/test.Test/Echo", b"", metadata=[("grpc-encoding", "br")])
    assert info.value.status is Status.UNIMPLEMENTED


async def test_server_stream_iteration_and_initial_metadata() -> None:
    async def numbers(stream: ServerStream) -> None:
        await stream.send_initial_metadata()
        count = int(await stream.receive() or b"0")
        for i in range(count):
            await stream.send(b"%d" % i)

    async with (
        open_grpc_server({"/t/Numbers": bidi(numbers)}, "127.0.0.1", 0) as server,
        open_channel(server.address) as channel,
        channel.stream("/t/Numbers") as stream,
    ):
        await stream.send(b"5")
        await stream.end()
        assert [m async for m in stream] == [b"0", b"1", b"2", b"3", b"4"]
        assert stream.initial_metadata == {"content-type": "application/grpc"}
        assert stream.trailing_metadata == {"grpc-status": "0"}
        assert await stream.receive() is None


async def test_send_after_end_is_refused(channel: Channel) -> None:
    async with channel.stream("/test.Test/BidiEcho") as stream:
        await stream.end()
        with pytest.raises(trio.ClosedResourceError):
            await stream.send(b"late")
        assert await stream.receive() is None


async def test_handler_returning_non_bytes_is_unknown() -> None:
    async def wrong(request: bytes, stream: ServerStream) -> bytes:
        return "text"  # type: ignore[return-value]

    async with (
        open_grpc_server({"/t/Wrong": unary(wrong)}, "127.0.0.1", 0) as server,
        open_channel(server.address) as channel,
    ):
        with pytest.raises(GRPCError) as info:
            await channel.unary("/t/Wrong", b"")
    assert info.value.status is Status.UNKNOWN
    assert "TypeError" in (info.value.message or "")


async def test_handler_exception_group_with_one_grpc_error() -> None:
    async def grouped(request: bytes, stream: ServerStream) -> bytes:
        async with trio.open_nursery():
            raise GRPCError(Status.PERMISSION_DENIED, "no")

    async with (
        open_grpc_server({"/t/G": unary(grouped)}, "127.0.0.1", 0) as server,
        open_channel(server.address) as channel,
    ):
        with pytest.raises(GRPCError) as info:
            await channel.unary("/t/G", b"")
    assert info.value.status is Status.PERMISSION_DENIED


async def test_channel_close_fails_calls_with_unavailable(server: GrpcServer) -> None:
    async with open_channel(server.address) as channel:
        async with channel.stream("/test.Test/BidiEcho") as stream:
            await stream.send(b"a")
            assert await stream.receive() == b"a"
            await channel.aclose()
            with pytest.raises(GRPCError) as info:
                await stream.receive()
        assert info.value.status is Status.UNAVAILABLE
        assert channel.closed
        with pytest.raises(GRPCError):
            await channel.unary("/test.Test/Echo", b"")


async def test_ipv6_and_localhost_addresses() -> None:
    async with open_grpc_server(METHODS, "localhost", 0) as server:
        assert server.address == f"localhost:{server.port}"
        async with open_channel(server.address) as channel:
            assert await channel.unary("/test.Test/Echo", b"v") == b"v"
