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


async def test_big_message(channel: Channel) -> None:
    payload = bytes(range(256)) * (10 * 4096)  # 10 MiB
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
