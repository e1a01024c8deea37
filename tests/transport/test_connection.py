"""Unit tests of ``_connection.py`` helpers that need no network."""

from __future__ import annotations

from typing import Any

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import pytest
import trio
import trio.testing

from agentwire._transport._connection import HIGH_WATER, URGENT_HIGH_WATER, Http2Connection
from agentwire._transport._framing import encode_message
from agentwire._transport._h2fast import LastFrame, receive_plain_data, try_send_data
from agentwire._transport._h2fast import send_data as _send_data
from agentwire._transport._open_stream import OpenStream

_HEADERS = [(":method", "POST"), (":path", "/s/m"), (":scheme", "http"), (":authority", "a")]


def _client_with_stream() -> tuple[h2.connection.H2Connection, int]:
    conn = h2.connection.H2Connection(
        h2.config.H2Configuration(client_side=True, header_encoding=None)
    )
    conn.initiate_connection()
    conn.data_to_send()
    stream_id = conn.get_next_available_stream_id()
    conn.send_headers(
        stream_id,
        [(":method", "POST"), (":path", "/s/m"), (":scheme", "http"), (":authority", "a")],
    )
    conn.data_to_send()
    return conn, stream_id


@pytest.mark.parametrize("size", [0, 1, 150, 16384])
def test_fast_data_frame_is_what_h2_would_send(size: int) -> None:
    reference, ref_id = _client_with_stream()
    fast, fast_id = _client_with_stream()
    for n in range(3):
        data = bytes([n]) * size
        reference.send_data(ref_id, data)
        _send_data(fast, fast_id, data)
    assert fast.data_to_send() == reference.data_to_send()
    assert fast.outbound_flow_control_window == reference.outbound_flow_control_window
    assert fast.local_flow_control_window(fast_id) == reference.local_flow_control_window(ref_id)
    assert (
        fast.streams[fast_id].state_machine.state == reference.streams[ref_id].state_machine.state
    )
    # h2 goes on working normally afterwards (the stream can still be ended)
    fast.end_stream(fast_id)
    reference.end_stream(ref_id)
    assert fast.data_to_send() == reference.data_to_send()


def test_fast_data_frame_decodes_at_the_peer() -> None:
    server = h2.connection.H2Connection(
        h2.config.H2Configuration(client_side=False, header_encoding=None)
    )
    server.initiate_connection()
    # a whole client conversation: preface, headers, two fast DATA frames
    replay = h2.connection.H2Connection(
        h2.config.H2Configuration(client_side=True, header_encoding=None)
    )
    replay.initiate_connection()
    sid = replay.get_next_available_stream_id()
    replay.send_headers(sid, _HEADERS)
    _send_data(replay, sid, b"hello")
    _send_data(replay, sid, b"world")
    events = server.receive_data(replay.data_to_send())
    received = [e.data for e in events if isinstance(e, h2.events.DataReceived)]
    assert received == [b"hello", b"world"]


def test_closed_stream_goes_through_h2() -> None:
    conn, stream_id = _client_with_stream()
    conn.end_stream(stream_id)
    conn.data_to_send()
    with pytest.raises(h2.exceptions.ProtocolError):
        _send_data(conn, stream_id, b"late")


def test_a_non_blocking_fast_send_that_fits_is_what_h2_would_send() -> None:
    reference, ref_id = _client_with_stream()
    fast, fast_id = _client_with_stream()
    for n in range(3):
        reference.send_data(ref_id, bytes([n]) * 150)
        buffered = try_send_data(fast, fast_id, bytes([n]) * 150, 1 << 20, None)
        assert buffered == (n + 1) * (9 + 150)  # what h2 holds for the wire
    assert fast.data_to_send() == reference.data_to_send()
    assert fast.local_flow_control_window(fast_id) == reference.local_flow_control_window(ref_id)


def test_a_non_blocking_fast_send_that_does_not_fit_changes_nothing() -> None:
    conn, stream_id = _client_with_stream()
    window = conn.local_flow_control_window(stream_id)
    frame_size = conn.max_outbound_frame_size
    assert try_send_data(conn, stream_id, b"x" * (frame_size + 1), 1 << 30, None) == 0
    conn.streams[stream_id].outbound_flow_control_window = 100
    assert try_send_data(conn, stream_id, b"x" * 101, 1 << 30, None) == 0
    assert try_send_data(conn, stream_id, b"x" * 100, 1 << 30, 1) == 0  # bulk room 99
    assert try_send_data(conn, stream_id, b"x" * 99, 1 << 30, 1) == 9 + 99
    assert try_send_data(conn, stream_id, b"y", 10, None) == 0  # 108 bytes buffered
    assert conn.local_flow_control_window(stream_id) == 1
    assert conn.outbound_flow_control_window == window - 99
    assert conn.data_to_send() == (99).to_bytes(3, "big") + b"\x00\x00" + (
        stream_id.to_bytes(4, "big") + b"x" * 99
    )


def test_a_non_blocking_fast_send_on_a_closed_stream_is_left_to_h2() -> None:
    conn, stream_id = _client_with_stream()
    conn.end_stream(stream_id)
    sent = conn.data_to_send()
    assert try_send_data(conn, stream_id, b"late", 1 << 20, None) is None
    assert try_send_data(conn, stream_id + 2, b"unknown", 1 << 20, None) is None
    assert conn.data_to_send() == b""
    assert sent


def _frames(data: bytes) -> list[tuple[int, int, bytes]]:
    """(type, stream id, payload) of each frame in ``data``."""
    frames, pos = [], 0
    while pos < len(data):
        length = int.from_bytes(data[pos : pos + 3], "big")
        stream_id = int.from_bytes(data[pos + 5 : pos + 9], "big")
        frames.append((data[pos + 3], stream_id, data[pos + 9 : pos + 9 + length]))
        pos += 9 + length
    assert pos == len(data)
    return frames


def test_data_for_the_stream_of_the_last_frame_joins_that_frame() -> None:
    reference, ref_id = _client_with_stream()
    conn, stream_id = _client_with_stream()
    last = LastFrame()
    parts = [b"a" * 10, b"", b"b" * 200, b"c"]
    for n, part in enumerate(parts):
        reference.send_data(ref_id, part)
        if n % 2:
            _send_data(conn, stream_id, part, last)
        else:
            assert try_send_data(conn, stream_id, part, 1 << 20, None, last)
    assert _frames(conn.data_to_send()) == [(0, stream_id, b"".join(parts))]
    assert conn.local_flow_control_window(stream_id) == reference.local_flow_control_window(ref_id)
    assert conn.outbound_flow_control_window == reference.outbound_flow_control_window
    # a peer takes the joined frame as the same data
    server = h2.connection.H2Connection(
        h2.config.H2Configuration(client_side=False, header_encoding=None)
    )
    server.initiate_connection()
    client, sid, opening = _client_conversation()
    client_last = LastFrame()
    for part in parts:
        _send_data(client, sid, part, client_last)
    events = server.receive_data(opening + client.data_to_send())
    assert [e.data for e in events if isinstance(e, h2.events.DataReceived)] == [b"".join(parts)]


def test_anything_else_after_the_last_frame_starts_a_new_one() -> None:
    conn, first = _client_with_stream()
    second = conn.get_next_available_stream_id()
    conn.send_headers(second, _HEADERS)
    conn.data_to_send()
    last = LastFrame()
    _send_data(conn, first, b"1", last)
    _send_data(conn, second, b"2", last)  # another stream
    _send_data(conn, first, b"3", last)
    conn.increment_flow_control_window(100)  # h2 appends a WINDOW_UPDATE
    _send_data(conn, first, b"4", last)
    _send_data(conn, first, b"5", last)
    assert [(kind, sid, payload) for kind, sid, payload in _frames(conn.data_to_send())] == [
        (0, first, b"1"),
        (0, second, b"2"),
        (0, first, b"3"),
        (8, 0, (100).to_bytes(4, "big")),
        (0, first, b"45"),
    ]


def test_a_joined_frame_grows_no_larger_than_the_peers_maximum_frame_size() -> None:
    conn, stream_id = _client_with_stream()
    limit = conn.max_outbound_frame_size
    last = LastFrame()
    for part in (b"a" * (limit - 10), b"b" * 10, b"c"):
        assert try_send_data(conn, stream_id, part, 1 << 30, None, last)
    assert _frames(conn.data_to_send()) == [
        (0, stream_id, b"a" * (limit - 10) + b"b" * 10),
        (0, stream_id, b"c"),
    ]


def test_a_forgotten_frame_is_never_joined_even_where_the_new_output_ends_alike() -> None:
    conn, stream_id = _client_with_stream()
    last = LastFrame()
    _send_data(conn, stream_id, b"12345678", last)  # a 17-byte frame, like a PING
    last.forget()
    assert _frames(conn.data_to_send()) == [(0, stream_id, b"12345678")]
    conn.ping(b"pingpong")  # the new output ends where the old frame did
    _send_data(conn, stream_id, b"next", last)
    assert _frames(conn.data_to_send()) == [(6, 0, b"pingpong"), (0, stream_id, b"next")]


def _client_conversation() -> tuple[h2.connection.H2Connection, int, bytes]:
    """A client's preface, SETTINGS and request headers (bytes), and its stream id."""
    client = h2.connection.H2Connection(
        h2.config.H2Configuration(client_side=True, header_encoding=None)
    )
    client.initiate_connection()
    stream_id = client.get_next_available_stream_id()
    client.send_headers(stream_id, _HEADERS)
    return client, stream_id, client.data_to_send()


async def test_plain_data_frames_bypass_h2_with_the_same_effect() -> None:
    a, b = trio.testing.memory_stream_pair()
    results = []
    for fast in (True, False):
        conn = Http2Connection(a, client_side=False, max_message_size=1 << 20)
        conn._fast_receive = fast
        client, stream_id, opening = _client_conversation()
        conn._h2.receive_data(opening)
        st = OpenStream(stream_id, 1 << 20)
        conn._streams[stream_id] = st
        messages = [encode_message(bytes([n]) * (n * 100)) for n in range(1, 4)]
        for message in messages:
            client.send_data(stream_id, message)
        client.send_data(stream_id, encode_message(b"last"), end_stream=True)
        data = client.data_to_send()
        rest, held = (
            receive_plain_data(conn._h2, data, conn._data_received) if fast else (data, b"")
        )
        assert held == b""
        if fast:
            # the three plain frames were taken; the END_STREAM one is left to h2
            assert len(st.messages) == 3
            assert rest == data[-len(rest) :]
            assert rest[3:5] == b"\x00\x01"  # DATA with END_STREAM
        for event in conn._h2.receive_data(rest):
            handler = conn._dispatch.get(type(event))
            if handler is not None:
                handler(event)
        h2conn: Any = conn._h2
        results.append(
            (
                [payload for payload, _ in st.messages],
                st.remote_closed,
                h2conn._inbound_flow_control_window_manager.current_window_size,
                h2conn.streams[stream_id]._inbound_window_manager.current_window_size,
                h2conn.streams[stream_id].state_machine.state,
                conn._unacked_total,
            )
        )
    assert results[0] == results[1]
    assert results[0][0] == [bytes([n]) * (n * 100) for n in range(1, 4)] + [b"last"]
    assert results[0][1] is True
    await b.aclose()


async def test_window_updates_pass_to_h2_alone_and_the_data_after_them_does_not() -> None:
    a, b = trio.testing.memory_stream_pair()
    results = []
    for fast in (True, False):
        conn = Http2Connection(a, client_side=False, max_message_size=1 << 20)
        client, stream_id, opening = _client_conversation()
        conn._h2.receive_data(opening)
        st = OpenStream(stream_id, 1 << 20)
        conn._streams[stream_id] = st
        client.send_data(stream_id, encode_message(b"one"))
        client.increment_flow_control_window(1000, stream_id)
        client.send_data(stream_id, encode_message(b"two"))
        client.increment_flow_control_window(3000)
        client.send_data(stream_id, encode_message(b"three"))
        client.send_data(stream_id, encode_message(b"four"))
        data = client.data_to_send()
        fed: list[bytes] = []

        def to_h2(frame: bytes, conn: Http2Connection = conn, fed: list[bytes] = fed) -> None:
            fed.append(frame)
            conn._to_h2(frame)

        if fast:
            rest, held = receive_plain_data(conn._h2, data, conn._data_received, to_h2)
            # the two updates went to h2 alone, each a 13-byte frame; no DATA did
            assert [(len(f), f[3]) for f in fed] == [(13, 8), (13, 8)]
            assert (rest, held) == (b"", b"")
        else:
            conn._to_h2(data)
        h2conn: Any = conn._h2
        results.append(
            (
                [payload for payload, _ in st.messages],
                h2conn.outbound_flow_control_window,
                h2conn.streams[stream_id].outbound_flow_control_window,
                h2conn._inbound_flow_control_window_manager.current_window_size,
                h2conn.streams[stream_id]._inbound_window_manager.current_window_size,
            )
        )
    assert results[0] == results[1]
    assert results[0][0] == [b"one", b"two", b"three", b"four"]
    await b.aclose()


def _server_with_open_stream(
    stream: trio.abc.Stream | None = None,
) -> tuple[Http2Connection, h2.connection.H2Connection, int, OpenStream]:
    """A server connection (on ``stream``, else on a memory stream of its own) that has
    taken a client's opening, the client, and the stream."""
    if stream is None:
        stream, _ = trio.testing.memory_stream_pair()
    conn = Http2Connection(stream, client_side=False, max_message_size=1 << 20)
    client, stream_id, opening = _client_conversation()
    conn._h2.receive_data(opening)
    conn._streams[stream_id] = st = OpenStream(stream_id, 1 << 20)
    return conn, client, stream_id, st


async def test_plain_data_waits_for_h2_while_it_holds_a_partial_frame() -> None:
    conn, client, stream_id, st = _server_with_open_stream()
    client.send_data(stream_id, encode_message(b"one"))
    client.send_data(stream_id, encode_message(b"two"))
    data = client.data_to_send()
    conn._h2.receive_data(data[:5])  # h2 now holds part of a frame
    assert receive_plain_data(conn._h2, data[5:], conn._data_received) == (data[5:], b"")
    assert not st.messages  # so everything goes to h2


async def test_a_frame_over_the_maximum_frame_size_is_left_to_h2() -> None:
    conn, _, stream_id, st = _server_with_open_stream()
    # DATA on the open stream, no flags, claiming 0x010100 bytes: the length's high byte
    # counts (a 16-bit reading would make it a complete 256-byte frame)
    length = 0x010100
    header = length.to_bytes(3, "big") + b"\x00\x00" + stream_id.to_bytes(4, "big")
    data = header + encode_message(b"x" * 300) + bytes(300)
    assert length > conn._h2.max_inbound_frame_size
    assert receive_plain_data(conn._h2, data, conn._data_received) == (data, b"")
    assert not st.messages
    assert not conn._h2.incoming_buffer._data  # type: ignore[attr-defined]


async def test_a_read_that_ends_inside_a_frame_leaves_h2_holding_nothing() -> None:
    conn, client, stream_id, st = _server_with_open_stream()
    for word in (b"one", b"two", b"three"):
        client.send_data(stream_id, encode_message(word))
    client.ping(b"12345678")
    client.send_data(stream_id, encode_message(b"four"))
    data = client.data_to_send()
    first = len(encode_message(b"one")) + 9 + 4  # the first frame and part of the second
    rest, held = receive_plain_data(conn._h2, data[:first], conn._data_received)
    assert (rest, held) == (b"", data[9 + len(encode_message(b"one")) : first])
    # The next read, behind what was held, takes the fast path from its first byte;
    # the PING goes to h2 whole, the DATA frame cut after it is held in turn.
    cut = len(data) - 3
    rest, held = receive_plain_data(conn._h2, held + data[first:cut], conn._data_received)
    assert (rest[3], len(rest)) == (6, 9 + 8)  # the PING frame, nothing else
    assert held == data[len(data) - 9 - len(encode_message(b"four")) : cut]
    assert [payload for payload, _ in st.messages] == [b"one", b"two", b"three"]
    assert not conn._h2.incoming_buffer._data  # type: ignore[attr-defined]
    for event in conn._h2.receive_data(rest):
        assert isinstance(event, h2.events.PingReceived)
    rest, held = receive_plain_data(conn._h2, held + data[cut:], conn._data_received)
    assert (rest, held) == (b"", b"")
    assert [payload for payload, _ in st.messages][-1] == b"four"


@pytest.mark.parametrize("over_socket", [False, True])
async def test_output_taken_for_the_wire_is_never_joined_afterwards(over_socket: bool) -> None:
    # over a socket, the sending task writes (flush_now); else the writer task does
    a: trio.abc.Stream
    b: trio.abc.Stream
    if over_socket:
        left, right = trio.socket.socketpair()
        a, b = trio.SocketStream(left), trio.SocketStream(right)
    else:
        a, b = trio.testing.memory_stream_pair()
    conn, client, _, st = _server_with_open_stream(a)
    async with trio.open_nursery() as nursery:
        conn.start(nursery)
        conn.send_headers(st, [(":status", "200")], end=False)
        await trio.testing.wait_all_tasks_blocked()  # the writer took the headers
        assert conn.try_send_message(st, encode_message(b"abc"), flush=over_socket)  # 17 bytes
        await trio.testing.wait_all_tasks_blocked()  # and then that frame
        conn._h2.ping(b"pingpong")  # 17 bytes again, as a keepalive would add
        assert conn.try_send_message(st, encode_message(b"def"), flush=False)
        await trio.testing.wait_all_tasks_blocked()
        out = b""
        while len(out) < 10 + 3 * 17:  # the headers (10 bytes), and three 17-byte frames
            out += await b.receive_some()
        nursery.cancel_scope.cancel()
    received = [
        e.data if isinstance(e, h2.events.DataReceived) else e.ping_data
        for e in client.receive_data(out)
        if isinstance(e, (h2.events.DataReceived, h2.events.PingReceived))
    ]
    assert received == [encode_message(b"abc"), b"pingpong", encode_message(b"def")]


async def test_an_urgent_message_is_buffered_past_the_high_water_mark_a_bulk_one_is_not() -> None:
    conn, _, _, st = _server_with_open_stream()
    conn.send_headers(st, [(":status", "200")], end=False)
    conn.set_bulk_tag(st, 7)
    while conn.pending_output < HIGH_WATER:  # output no writer has taken
        conn._h2.ping(b"12345678")
    assert not conn.try_send_message(st, encode_message(b"\x07bulk"), flush=False)
    assert conn.try_send_message(st, encode_message(b"urgent"), flush=False)
    while conn.pending_output < URGENT_HIGH_WATER:
        conn._h2.ping(b"12345678")
    assert not conn.try_send_message(st, encode_message(b"urgent"), flush=False)
