"""Unit tests of ``_connection.py`` helpers that need no network."""

from __future__ import annotations

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import pytest

from agentwire._transport._connection import _send_data

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
