"""Fast paths through h2's private internals (the DATA frames of the hot path).

Checked against h2 :data:`CHECKED_VERSION`; :func:`supported` is false for
any other minor series, or when the attributes relied on are missing, and the
connection then uses h2's public API for everything (see ``_fastpath``).
Every function here has the same effect on h2's state as the public call it
replaces (tests/transport/test_connection.py compares them byte for byte),
except that, given a :class:`LastFrame`, data for the stream whose DATA frame
ends the output buffer joins that frame: the same bytes on the stream, in
fewer frames.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable
from typing import Any

import h2
import h2.connection
import h2.stream

from ._protocol import OPEN_STATES

CHECKED_VERSION = "4.4.1"
"""The h2 release these fast paths were written and tested against (its 4.4 series is used)."""

_SENDING_STATES = (h2.stream.StreamState.OPEN, h2.stream.StreamState.HALF_CLOSED_REMOTE)
_RECEIVING_STATES = (h2.stream.StreamState.OPEN, h2.stream.StreamState.HALF_CLOSED_LOCAL)

#: a frame header: length (24 bits, as its high byte and low 16 bits), type, flags, stream
#: id (31 bits and a reserved bit); one struct call, not a slice and an int per field
_HEADER = struct.Struct(">BHBBI")
_pack_header = _HEADER.pack
_unpack_header = _HEADER.unpack_from
#: a frame's length alone (the first three bytes of its header)
_pack_length = struct.Struct(">BH").pack
_WINDOW_UPDATE = 0x8

#: receives one plain DATA frame's payload: (stream id, data, flow-controlled length, alone)
DataSink = Callable[[int, bytes, int, bool], None]


class LastFrame:
    """The DATA frame at the end of one connection's output buffer, if put there here.

    Small gRPC messages on one stream cost a frame each at both ends; a burst of
    them written in one go can share one: data for the stream of the frame that
    ends h2's output buffer is appended to that frame (its length rewritten in
    place, up to the peer's maximum frame size) instead of getting a header of
    its own. A peer sees the same bytes on the stream, in fewer frames (any
    HTTP/2 peer takes any split of a stream's data into frames, and gRPC's
    messages any split into frames).

    Invariants:

    1. ``end`` is the length of the output buffer just after the frame, so
       anything h2 appends afterwards (another stream's frame, a WINDOW_UPDATE,
       END_STREAM) makes the frame no longer last, and nothing joins it.
    2. Whoever takes h2's output calls :meth:`forget` first: the buffer then
       starts again, and a length equal to ``end`` by chance says nothing.
    3. Only frames without flags are recorded (no END_STREAM, no padding).
    """

    __slots__ = ("end", "start", "stream_id")

    def __init__(self) -> None:
        self.end = -1  # none: -1 is no buffer's length
        self.start = 0  # where its header begins in the buffer
        self.stream_id = 0

    def forget(self) -> None:
        """The output buffer is being taken: nothing is appended to an old frame."""
        self.end = -1


def supported(conn: h2.connection.H2Connection) -> bool:
    """This h2 has the internals the fast paths rely on."""
    buffer = conn.incoming_buffer
    return (
        all(hasattr(buffer, name) for name in ("_data", "_preamble_len", "_headers_buffer"))
        and hasattr(conn, "_inbound_flow_control_window_manager")
        and hasattr(conn, "_data_to_send")
    )


def pending_output(conn: h2.connection.H2Connection) -> int:
    """Bytes h2 has buffered for the wire (h2 has no public accessor for it)."""
    return len(conn._data_to_send)


def send_data(
    conn: h2.connection.H2Connection,
    stream_id: int,
    data: bytes,
    last: LastFrame | None = None,
) -> None:
    """``conn.send_data(stream_id, data)`` for the common case, without h2's overhead.

    The caller has checked ``data`` against the flow-control windows and the
    maximum frame size. For an open connection and a stream open for sending,
    h2 4.x's ``send_data`` (no END_STREAM, no padding) changes no state but the
    two outbound windows and appends one DATA frame to its output buffer; that
    is done here directly (~4x cheaper), joining ``last`` if it can. Anything
    else goes through h2 (which raises if the data does not fit after all).
    """
    if not try_send_data(conn, stream_id, data, math.inf, None, last):
        conn.send_data(stream_id, data)


def try_send_data(
    conn: h2.connection.H2Connection,
    stream_id: int,
    data: bytes,
    high_water: float,
    bulk_slack: int | None,
    last: LastFrame | None = None,
) -> int | None:
    """:func:`send_data` with the checks of a non-blocking send folded in.

    Above 0: ``data`` went out as :func:`send_data` sends it; the number is
    what h2 has buffered for the wire now (:func:`pending_output`, for free).
    0: it does not fit now (larger than the peer's frame size or either
    outbound window, ``high_water`` bytes or more buffered already, or, for
    bulk data, more than the stream's window less ``bulk_slack``); nothing
    changed. None: the connection or stream is not in a state this covers;
    nothing changed, the caller uses its general path.
    """
    stream = conn.streams.get(stream_id)
    if (
        stream is None
        or stream.state_machine.state not in _SENDING_STATES
        or conn.state_machine.state not in OPEN_STATES
    ):
        return None
    size = len(data)
    window = stream.outbound_flow_control_window
    buffer = conn._data_to_send
    end = len(buffer)
    max_size = conn.max_outbound_frame_size
    if (
        size > max_size
        or end >= high_water
        or size > window
        or size > conn.outbound_flow_control_window
        or (bulk_slack is not None and size + bulk_slack > window)
    ):
        return 0
    conn.outbound_flow_control_window -= size
    stream.outbound_flow_control_window = window - size
    if last is not None:
        if last.end == end and last.stream_id == stream_id:
            start = last.start
            length = end - start - 9 + size
            if length <= max_size:  # join it: its length rewritten in place
                buffer[start : start + 3] = _pack_length(length >> 16, length & 0xFFFF)
                buffer += data
                last.end = end = end + size
                return end
        last.start = end
        last.end = end + 9 + size
        last.stream_id = stream_id
    # a frame of its own: length, type DATA (0), no flags, stream id
    buffer += _pack_header(size >> 16, size & 0xFFFF, 0, 0, stream_id) + data
    return end + 9 + size  # at least the frame header: above 0


def receive_plain_data(
    conn: h2.connection.H2Connection,
    data: bytes,
    sink: DataSink,
    control: Callable[[bytes], object] | None = None,
) -> tuple[bytes, bytes]:
    """Take the leading plain DATA frames of ``data`` without h2; return
    ``(for_h2, held)``: what h2 must take now, and an incomplete last frame.

    h2 4.x turns a DATA frame without flags (no END_STREAM, no padding), on a
    stream open for receiving whose headers came and that declared no
    content-length, within both inbound windows, into nothing but the two
    window reductions and one ``DataReceived``; that is done here directly,
    several times cheaper, handing each payload to ``sink``. It applies only
    while h2 holds no partial input (no preface still expected, no partial
    frame, no header block in progress); the first frame that is anything
    else, and everything after it, goes to h2 as usual, so order is kept.
    Except a WINDOW_UPDATE: given ``control``, each one is handed to it alone
    (it feeds h2 that frame and acts on its events), in its place, and the
    fast path goes on after it while h2 is still open and holds nothing.
    (The peer's acknowledgements come every few dozen KiB; without this the
    frames behind each one in its read all went through h2.)

    A read rarely ends on a frame boundary. Handing h2 part of a frame would
    send the whole of the next read through h2 (it holds a partial frame), so
    the frame the data ends in, if incomplete, is ``held`` instead: the caller
    puts it in front of the next read. (At most one frame, so at most
    ``max_inbound_frame_size`` + 9 bytes.) When the fast path does not apply,
    everything goes to h2 and nothing is held.
    """
    buffer: Any = conn.incoming_buffer
    if (
        buffer._data
        or buffer._preamble_len
        or buffer._headers_buffer
        or conn.state_machine.state not in OPEN_STATES
    ):
        return data, b""
    streams = conn.streams
    conn_window: Any = conn._inbound_flow_control_window_manager
    max_size = conn.max_inbound_frame_size
    end = len(data)
    pos = 0
    while end - pos >= 9:
        high, low, kind, flags, stream_id = _unpack_header(data, pos)
        length = high << 16 | low
        if kind == _WINDOW_UPDATE and control is not None and pos + 9 + length <= end:
            control(data[pos : pos + 9 + length])
            pos += 9 + length
            if buffer._data or conn.state_machine.state not in OPEN_STATES:
                break  # (h2 refused it and closed, or kept part of it: all to h2)
            continue
        if kind or flags or length > max_size or pos + 9 + length > end:
            break  # not DATA, has flags, too large, or incomplete
        stream_id &= 0x7FFFFFFF
        stream: Any = streams.get(stream_id)
        if stream is None:
            break
        try:
            machine = stream.state_machine
            window = stream._inbound_window_manager
            plain = not (
                machine.state not in _RECEIVING_STATES
                or not machine.headers_received
                or stream._expected_content_length is not None
                or length > window.current_window_size
                or length > conn_window.current_window_size
            )
        except AttributeError:  # pragma: no cover - an h2 with other stream internals
            break
        if not plain:
            break
        # WindowManager.window_consumed, inline: both windows were seen to hold length
        conn_window.current_window_size -= length
        window.current_window_size -= length
        start = pos + 9
        alone = pos == 0 and start + length == end
        pos = start + length
        sink(stream_id, data[start:pos], length, alone)
    # the rest: whole frames for h2, and the last one if it has not fully come
    rest = pos
    while end - pos >= 9:
        high, low = _unpack_header(data, pos)[:2]
        length = high << 16 | low
        if length > max_size:  # h2 refuses it (a connection error)
            pos = end
            break
        if pos + 9 + length > end:
            break
        pos += 9 + length
    if pos == end:
        return (data[rest:] if rest else data), b""
    return data[rest:pos], data[pos:]
