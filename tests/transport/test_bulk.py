"""Bulk and urgent messages on one stream, and how received bytes are acknowledged."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from agentwire._transport import (
    ClientStream,
    ServerStream,
    _protocol,
    bidi,
    open_channel,
    open_grpc_server,
)
from agentwire._transport._connection import _ACK_BATCH
from agentwire._transport._protocol import BULK_IN_FLIGHT, STREAM_WINDOW

BULK = ord("B")
BULK_MESSAGE = b"B" * 4000
LAST = b"B: the last"  # bulk too, so it comes after every other bulk message


class Reader:
    """A server stream that takes nothing until told to, then records what it reads."""

    def __init__(self, tag: int | None) -> None:
        self.tag = tag
        self.read = trio.Event()
        self.messages: list[bytes] = []

    async def __call__(self, stream: ServerStream) -> None:
        stream.set_bulk_tag(self.tag)
        await stream.send_initial_metadata()
        await self.read.wait()
        async for message in stream:
            self.messages.append(message)
            if message == LAST:
                await stream.send(b"done")


async def _flood_until_blocked(stream: ClientStream) -> int:
    """Send bulk messages until the stream takes no more (its window is spent); how many."""
    sent = 0
    async with trio.open_nursery() as nursery:

        async def flood() -> None:
            nonlocal sent
            while True:
                await stream.send(BULK_MESSAGE)
                sent += 1

        nursery.start_soon(flood)
        await trio.testing.wait_all_tasks_blocked(cushion=0.05)
        nursery.cancel_scope.cancel()
    return sent


@pytest.mark.parametrize("tagged", [True, False])
async def test_an_urgent_message_overtakes_a_stream_full_of_bulk_messages(tagged: bool) -> None:
    reader = Reader(BULK if tagged else None)
    async with (
        open_grpc_server({"/t.T/Read": bidi(reader)}, "127.0.0.1", 0) as server,
        open_channel(server.address) as channel,
        channel.stream("/t.T/Read") as stream,
    ):
        stream.set_bulk_tag(BULK if tagged else None)
        # the reader takes nothing: the flood stops when the window is spent
        sent = await _flood_until_blocked(stream)
        assert sent * len(BULK_MESSAGE) > 2**20
        assert stream.try_send(b"urgent") is tagged
        if not tagged:
            return
        await trio.testing.wait_all_tasks_blocked(cushion=0.05)
        reader.read.set()
        await stream.send(LAST)
        assert await stream.receive() == b"done"
    # taken before the bulk messages queued ahead of it, which follow in order
    assert reader.messages == [b"urgent", *[BULK_MESSAGE] * sent, LAST]


async def test_bulk_messages_leave_part_of_the_window_to_the_others() -> None:
    reader = Reader(BULK)
    async with (
        open_grpc_server({"/t.T/Read": bidi(reader)}, "127.0.0.1", 0) as server,
        open_channel(server.address) as channel,
        channel.stream("/t.T/Read") as stream,
    ):
        stream.set_bulk_tag(BULK)
        await _flood_until_blocked(stream)
        # the reader queued what it could; of the rest, at most BULK_IN_FLIGHT is out
        unacknowledged = STREAM_WINDOW - stream._conn._h2.local_flow_control_window(stream._st.id)
        assert 0 < unacknowledged <= BULK_IN_FLIGHT
        # urgent messages may use the window that bulk ones leave
        urgent = 0
        while stream.try_send(b"U" * 4000):
            urgent += 1
            if urgent % 50 == 0:  # let the writer drain the output buffer
                await trio.testing.wait_all_tasks_blocked(cushion=0.01)
        assert urgent * 4005 >= STREAM_WINDOW - BULK_IN_FLIGHT - 4005  # framed: 5 bytes more
        assert stream._conn._h2.local_flow_control_window(stream._st.id) < 4000
        reader.read.set()


async def test_consumed_bytes_are_acknowledged_in_small_batches() -> None:
    async def consume(stream: ServerStream) -> None:
        async for message in stream:
            if message == b"last":
                await stream.send(b"done")

    async with (
        open_grpc_server({"/t.T/Consume": bidi(consume)}, "127.0.0.1", 0) as server,
        open_channel(server.address) as channel,
        channel.stream("/t.T/Consume") as stream,
    ):
        for _ in range(300):
            await stream.send(b"x" * 1000)
        await stream.send(b"last")
        assert await stream.receive() == b"done"
        # everything was taken: all but the last batch is credited back, where h2
        # alone would wait for half the window (2 MiB) to be consumed
        window = stream._conn._h2.local_flow_control_window(stream._st.id)
        assert window >= STREAM_WINDOW - _ACK_BATCH


async def test_bulk_messages_flow_to_a_peer_with_a_small_window(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # grpc-core starts streams at 64 KiB; this is smaller than one full frame
    monkeypatch.setattr(_protocol, "STREAM_WINDOW", 16384)
    reader = Reader(BULK)
    reader.read.set()
    big = b"B" * 100_000
    async with (
        open_grpc_server({"/t.T/Read": bidi(reader)}, "127.0.0.1", 0) as server,
        open_channel(server.address) as channel,
        channel.stream("/t.T/Read") as stream,
    ):
        stream.set_bulk_tag(BULK)
        with trio.fail_after(30):  # a guard: without room for a bulk frame this would hang
            for message in [BULK_MESSAGE] * 50 + [big] * 3 + [LAST]:
                await stream.send(message)
            assert await stream.receive() == b"done"
    assert reader.messages == [BULK_MESSAGE] * 50 + [big] * 3 + [LAST]


async def test_a_server_hears_of_urgent_messages_and_takes_them_past_queued_bulk() -> None:
    arrived = trio.Event()

    async def handler(stream: ServerStream) -> None:
        stream.set_bulk_tag(BULK)
        stream.on_urgent(arrived.set)
        await stream.send(b"listening")
        await arrived.wait()
        taken = []
        while (message := stream.receive_urgent_nowait()) is not None:
            taken.append(message)
        stream.on_urgent(None)
        rest = [message async for message in stream]
        await stream.send(b"|".join(taken) + b" then " + b"|".join(rest))

    async with (
        open_grpc_server({"/t.T/Read": bidi(handler)}, "127.0.0.1", 0) as server,
        open_channel(server.address) as channel,
        channel.stream("/t.T/Read") as stream,
    ):
        stream.set_bulk_tag(BULK)
        await stream.send(b"B1")
        await stream.send(b"B2")
        with trio.fail_after(5):
            assert await stream.receive() == b"listening"
            await stream.send(b"u1")
            await stream.end()
            assert await stream.receive() == b"u1 then B1|B2"
