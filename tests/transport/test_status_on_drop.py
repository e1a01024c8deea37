"""A handler that gives up on a client that stops reading: the client still gets its status."""

from __future__ import annotations

import h2.config
import h2.connection
import h2.errors
import h2.events
import pytest
import trio
import trio.testing

from agentwire._transport import (
    GRPCError,
    ServerStream,
    Status,
    bidi,
    open_channel_over_stream,
    open_grpc_server,
)

from .conftest import request_headers, run_peer_client, serving_in_memory


class Dropper:
    """Sends until the client's window is full, then drops it: UNAVAILABLE."""

    def __init__(self, size: int, status: Status = Status.UNAVAILABLE) -> None:
        self.size = size
        self.status = status
        self.sent = 0
        self.drop = trio.CancelScope()
        self.ended = trio.Event()

    async def __call__(self, stream: ServerStream) -> None:
        try:
            with self.drop:
                while True:
                    await stream.send(b"y" * self.size)
                    self.sent += 1
            if self.status is not Status.OK:
                raise GRPCError(self.status, "too slow: dropped")
        finally:
            self.ended.set()


async def _events_of_a_client_that_never_acknowledges(
    dropper: Dropper,
) -> list[h2.events.Event]:
    """Run one call from a bare h2 client that reads but never sends WINDOW_UPDATE."""
    async with serving_in_memory({"/t/Flood": bidi(dropper)}) as (raw, _):
        client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        client.initiate_connection()
        client.send_headers(client.get_next_available_stream_id(), request_headers("/t/Flood"))
        await raw.send_all(client.data_to_send())
        await trio.testing.wait_all_tasks_blocked()
        # the 64 KiB window is full and the handler waits inside a message
        assert 0 < dropper.sent * (dropper.size + 5) < 65535
        dropper.drop.cancel()
        await dropper.ended.wait()
        await trio.testing.wait_all_tasks_blocked()
        return client.receive_data(await raw.receive_some())


async def test_the_status_of_a_dropped_client_goes_out_despite_a_full_window(
    autojump_clock: trio.abc.Clock,
) -> None:
    events = await _events_of_a_client_that_never_acknowledges(Dropper(size=10_000))
    # no CANCEL: only the NO_ERROR reset that tells a client still sending to stop
    resets = [e.error_code for e in events if isinstance(e, h2.events.StreamReset)]
    assert resets in ([], [h2.errors.ErrorCodes.NO_ERROR])
    (trailers,) = [e for e in events if isinstance(e, h2.events.TrailersReceived)]
    assert (b"grpc-status", b"14") in trailers.headers
    assert (b"grpc-message", b"too slow: dropped") in trailers.headers
    assert [e for e in events if isinstance(e, h2.events.StreamEnded)]


async def test_an_ok_status_never_follows_a_truncated_message(
    autojump_clock: trio.abc.Clock,
) -> None:
    events = await _events_of_a_client_that_never_acknowledges(
        Dropper(size=10_000, status=Status.OK)
    )
    assert not [e for e in events if isinstance(e, h2.events.TrailersReceived)]
    (reset,) = [e for e in events if isinstance(e, h2.events.StreamReset)]
    assert reset.error_code == h2.errors.ErrorCodes.CANCEL


async def test_our_client_reports_the_status_after_the_complete_messages(
    autojump_clock: trio.abc.Clock,
) -> None:
    dropper = Dropper(size=100_000)
    async with (
        serving_in_memory({"/t/Flood": bidi(dropper)}) as (client_stream, _),
        open_channel_over_stream(client_stream) as channel,
        channel.stream("/t/Flood") as stream,
    ):
        # the client reads nothing: its queue and window fill, the handler blocks
        await trio.testing.wait_all_tasks_blocked()
        dropper.drop.cancel()
        await dropper.ended.wait()
        received = 0
        while len(stream._st.messages) > 0:
            assert await stream.receive() is not None
            received += 1
        with pytest.raises(GRPCError) as info:
            await stream.receive()
        assert info.value.status is Status.UNAVAILABLE
        assert info.value.message == "too slow: dropped"
        assert received == dropper.sent


async def test_grpcio_client_that_stops_reading_gets_the_status() -> None:
    async def flood(stream: ServerStream) -> None:
        while True:
            with trio.move_on_after(0.5):
                await stream.send(b"y" * 10_000)
                continue
            raise GRPCError(Status.UNAVAILABLE, "too slow: dropped")

    with trio.fail_after(60):
        async with open_grpc_server({"/test.Test/Flood": bidi(flood)}, "127.0.0.1", 0) as server:
            results = await run_peer_client("grpcio", server.address, "slow_reader")
    assert results == {
        "slow_reader": {
            "status": Status.UNAVAILABLE.value,
            "message": "too slow: dropped",
            "received": True,
        }
    }
