"""``try_send``: the non-blocking send of client and server streams."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

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
    ServerStream,
    Status,
    bidi,
    open_channel,
    open_grpc_server,
)
from agentwire._transport._framing import encode_message

from .conftest import request_headers, serving_in_memory


async def _bidi_echo(stream: ServerStream) -> None:
    async for message in stream:
        await stream.send(message)


async def _echo_with_try_send(stream: ServerStream) -> None:
    # Before the response headers went out try_send refuses (sends nothing).
    assert not stream.try_send(b"too early")
    await stream.send_initial_metadata()
    async for message in stream:
        if not stream.try_send(message, flush=len(message) % 2 == 0):
            await stream.send(b"fallback:" + message)


async def _never_read(stream: ServerStream) -> None:
    await trio.sleep_forever()


async def _fail_at_once(stream: ServerStream) -> None:
    await stream.receive()
    raise GRPCError(Status.NOT_FOUND, "gone")


@pytest.fixture
async def server() -> AsyncIterator[GrpcServer]:
    methods = {
        "/t.T/Echo": bidi(_bidi_echo),
        "/t.T/TryEcho": bidi(_echo_with_try_send),
        "/t.T/NeverRead": bidi(_never_read),
        "/t.T/Fail": bidi(_fail_at_once),
    }
    async with open_grpc_server(methods, "127.0.0.1", 0) as server:
        yield server


@pytest.fixture
async def channel(server: GrpcServer) -> AsyncIterator[Channel]:
    async with open_channel(server.address) as channel:
        yield channel


async def test_client_try_send_keeps_order_with_send(channel: Channel) -> None:
    async with channel.stream("/t.T/Echo") as stream:
        accepted = []
        for n in range(20):
            message = str(n).encode()
            if n % 3 == 0:
                await stream.send(message)
            else:
                accepted.append(stream.try_send(message, flush=n % 2 == 0))
        await stream.end()
        received = [message async for message in stream]
    assert all(accepted)
    assert received == [str(n).encode() for n in range(20)]


async def test_server_try_send_after_headers(channel: Channel) -> None:
    async with channel.stream("/t.T/TryEcho") as stream:
        for n in range(10):
            await stream.send(b"x" * n)
        await stream.end()
        received = [message async for message in stream]
    # no b"too early" (refused), no fallback: every message fitted at once
    assert received == [b"x" * n for n in range(10)]


async def test_message_larger_than_a_frame_is_refused_and_send_still_works(
    channel: Channel,
) -> None:
    big = b"b" * (1 << 20)
    async with channel.stream("/t.T/Echo") as stream:
        assert not stream.try_send(big)
        assert stream.try_send(b"small")
        await stream.send(big)
        await stream.end()
        received = [message async for message in stream]
    assert received == [b"small", big]


async def test_try_send_is_bounded_when_nothing_is_written(channel: Channel) -> None:
    # Without yielding, the writer never runs: try_send must stop accepting
    # once the connection's output bound is reached (no unbounded buffering).
    message = b"m" * 16000
    async with channel.stream("/t.T/NeverRead") as stream:
        accepted = 0
        while stream.try_send(message):
            accepted += 1
            assert accepted < 1000
        assert accepted * len(message) <= 512 * 1024
        # a blocking send still works once the writer gets to run
        with trio.move_on_after(5):
            await stream.send(b"one more")
        stream_state = stream._st
        assert not stream_state.closed


async def test_try_send_refused_after_end_and_after_failure(channel: Channel) -> None:
    async with channel.stream("/t.T/Echo") as stream:
        await stream.end()
        assert not stream.try_send(b"after end")
        assert [message async for message in stream] == []
    async with channel.stream("/t.T/Fail") as stream:
        await stream.send(b"go")
        with pytest.raises(GRPCError) as info:
            await stream.receive()
        assert info.value.status is Status.NOT_FOUND
        assert not stream.try_send(b"after the call ended")


async def _go_and_three(handler: Callable[[ServerStream], Awaitable[None]]) -> None:
    """Call *handler* with b"go", b"0", b"1", b"2" and the end; it answers b"done"."""
    async with (
        open_grpc_server({"/t.T/B": bidi(handler)}, "127.0.0.1", 0) as server,
        open_channel(server.address) as channel2,
        channel2.stream("/t.T/B") as stream,
    ):
        await stream.send(b"go")
        for n in range(3):
            await stream.send(str(n).encode())
        await stream.end()
        assert await stream.receive() == b"done"


async def _until_three_buffered(stream: ServerStream) -> None:
    while stream.buffered < 3:
        await trio.testing.wait_all_tasks_blocked()


async def test_server_buffered_counts_untaken_messages() -> None:
    seen: list[int] = []

    async def handler(stream: ServerStream) -> None:
        first = await stream.receive()
        assert first == b"go"
        await _until_three_buffered(stream)
        seen.append(stream.buffered)
        async for _ in stream:
            pass
        seen.append(stream.buffered)
        await stream.send(b"done")

    await _go_and_three(handler)
    assert seen == [3, 0]


async def test_server_receive_nowait_takes_what_is_buffered_in_order() -> None:
    taken: list[bytes | None] = []

    async def handler(stream: ServerStream) -> None:
        await stream.receive()
        await _until_three_buffered(stream)
        taken.extend(stream.receive_nowait() for _ in range(4))
        await stream.receive()  # the end of the requests
        await stream.send(b"done")

    await _go_and_three(handler)
    assert taken == [b"0", b"1", b"2", None]


async def test_message_handler_takes_messages_in_arrival_order(channel: Channel) -> None:
    log: list[tuple[str, bytes]] = []
    handled = trio.Event()

    def handler(message: bytes) -> bool:
        if message.startswith(b"no"):
            return False
        log.append(("handler", message))
        handled.set()
        return True

    async with channel.stream("/t.T/Echo") as stream:
        stream.set_message_handler(handler)

        async def consume() -> None:
            while (message := await stream.receive()) is not None:
                log.append(("receive", message))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(consume)
            await stream.send(b"first")  # before the headers were checked: receive()
            while not log:
                await trio.testing.wait_all_tasks_blocked()
            await stream.send(b"a")
            await handled.wait()
            for message in (b"no1", b"b", b"no2", b"c", b"d"):
                await stream.send(message)
            await stream.end()
        stream.set_message_handler(None)
    assert [message for _, message in log] == [b"first", b"a", b"no1", b"b", b"no2", b"c", b"d"]
    assert log[:2] == [("receive", b"first"), ("handler", b"a")]
    assert ("receive", b"no1") in log
    assert ("receive", b"no2") in log


async def test_message_handler_failure_fails_the_call(channel: Channel) -> None:
    def handler(message: bytes) -> bool:
        raise ValueError("boom")

    async with channel.stream("/t.T/Echo") as stream:
        stream.set_message_handler(handler)
        await stream.send(b"first")
        assert await stream.receive() == b"first"
        await stream.send(b"second")
        with pytest.raises(GRPCError) as info:
            await stream.receive()
    assert info.value.status is Status.INTERNAL
    assert "boom" in (info.value.message or "")


async def test_server_message_handler_takes_lone_messages_in_order() -> None:
    log: list[tuple[str, bytes, bool]] = []
    handled = trio.Event()

    async def handler_method(stream: ServerStream) -> None:
        def take(message: bytes, alone: bool) -> bool:
            if not alone:
                log.append(("offered", message, alone))
                return False
            log.append(("handler", message, alone))
            handled.set()
            return True

        stream.set_message_handler(take)
        while (message := await stream.receive()) is not None:
            log.append(("receive", message, False))
            if message == b"first":  # came with the request headers: not alone
                await stream.send(b"ready")
        stream.set_message_handler(None)
        await stream.send(b"done")

    async with (
        open_grpc_server({"/t.T/H": bidi(handler_method)}, "127.0.0.1", 0) as server,
        open_channel(server.address) as channel,
        channel.stream("/t.T/H") as stream,
    ):
        await stream.send(b"first")
        assert await stream.receive() == b"ready"
        await stream.send(b"lone")
        with trio.fail_after(10):  # not a timing assertion: a hang would be the failure
            await handled.wait()
        # three messages in one socket write: not alone, so receive() gets them
        assert all(stream.try_send(m, flush=False) for m in (b"b1", b"b2", b"b3"))
        await stream.end()
        assert await stream.receive() == b"done"
    taken = [(how, message) for how, message, _ in log if how != "offered"]
    assert taken == [
        ("receive", b"first"),
        ("handler", b"lone"),
        ("receive", b"b1"),
        ("receive", b"b2"),
        ("receive", b"b3"),
    ]
    assert ("handler", b"lone", True) in log


async def test_server_message_handler_is_never_offered_a_compressed_message() -> None:
    offered: list[bytes] = []
    received: list[bytes] = []

    async def handler_method(stream: ServerStream) -> None:
        def take(message: bytes, alone: bool) -> bool:
            offered.append(message)
            return True

        stream.set_message_handler(take)
        while (message := await stream.receive()) is not None:
            received.append(message)
            await stream.send(b"got")
        await stream.send(b"done")

    async with (
        open_grpc_server({"/t.T/H": bidi(handler_method)}, "127.0.0.1", 0) as server,
        open_channel(server.address, compression="gzip") as channel,
        channel.stream("/t.T/H") as stream,
    ):
        for message in (b"first", b"second", b"third"):
            await stream.send(message)
            with trio.fail_after(10):  # not a timing assertion: a hang would be the failure
                assert await stream.receive() == b"got"
        await stream.end()
        assert await stream.receive() == b"done"
    assert offered == []
    assert received == [b"first", b"second", b"third"]


@pytest.mark.parametrize("bulk", [False, True])
async def test_a_burst_of_urgent_messages_is_written_in_pieces_as_it_is_made(
    channel: Channel, bulk: bool, io_paths: bool
) -> None:
    async with channel.stream("/t.T/Echo") as stream:
        stream.set_bulk_tag(ord("B"))
        assert await stream.send(b"warm") is None
        assert await stream.receive() == b"warm"
        await trio.testing.wait_all_tasks_blocked()
        before = channel.statistics().bytes_sent
        # No checkpoint in this loop: only the task making the messages can write them.
        for _ in range(40):
            assert stream.try_send((b"B" if bulk else b"u") * 100, flush=False)
        stats = channel.statistics()
        if bulk or not io_paths:  # bulk traffic (or no direct socket) waits for the writer
            assert stats.bytes_sent == before
        else:
            assert stats.bytes_sent - before >= 2048
            assert stats.pending_output_bytes < 2048
        await stream.end()
        assert len([message async for message in stream]) == 40


async def test_a_burst_of_messages_shares_data_frames_and_arrives_whole(io_paths: bool) -> None:
    """Messages sent on one stream in one go leave in one DATA frame (fast paths)
    or one frame each (h2's public API): the same bytes either way."""
    burst = [str(n).encode() * n for n in range(1, 8)]

    async def answer_with_a_burst(stream: ServerStream) -> None:
        await stream.send_initial_metadata()
        await stream.receive()
        for message in burst:
            assert stream.try_send(message, flush=False)
        await trio.testing.wait_all_tasks_blocked()  # the burst is written
        await stream.send(b"after")  # a frame of its own

    async with serving_in_memory({"/t.T/Burst": bidi(answer_with_a_burst)}) as (raw, _):
        client = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=True, header_encoding=None)
        )
        client.initiate_connection()
        stream_id = client.get_next_available_stream_id()
        client.send_headers(stream_id, request_headers("/t.T/Burst"))
        client.send_data(stream_id, encode_message(b"go"), end_stream=True)
        await raw.send_all(client.data_to_send())
        frames: list[bytes] = []
        ended = False
        while not ended:
            data = await raw.receive_some()
            assert data, "the server closed the connection"
            for event in client.receive_data(data):
                if isinstance(event, h2.events.DataReceived):
                    frames.append(event.data)
                ended = ended or isinstance(event, h2.events.StreamEnded)
            await raw.send_all(client.data_to_send())
    expected = [encode_message(message) for message in burst]
    assert frames == ([b"".join(expected)] if io_paths else expected) + [encode_message(b"after")]
