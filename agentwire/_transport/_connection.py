"""The HTTP/2 connection pump shared by the gRPC client and server.

One :class:`Connection` owns one byte stream and one ``h2`` state machine.

Invariants (every method below keeps them):

- Only the reader task receives from the byte stream; only the writer task
  sends to it. Every other task changes ``h2`` state synchronously and then
  calls :meth:`Connection._kick`, which wakes the writer; the writer flushes all
  that ``h2`` has buffered with one ``send_all`` per wake-up, so everything
  produced during one scheduler pass leaves in one socket write.
- Outbound buffering is bounded: a sender adds DATA only while the bytes
  buffered inside ``h2`` are below ``_HIGH_WATER`` (plus one frame) and only
  within the peer's flow-control windows; otherwise it waits. The reader stops
  reading while control frames it provoked exceed ``4 * _HIGH_WATER``.
- Inbound buffering is bounded: received bytes are acknowledged (batched)
  while the stream's queue of complete, untaken messages holds less than
  ``_QUEUE_LIMIT`` bytes; past that they are owed, and paid back as the
  application takes messages. So a stream buffers at most ``_QUEUE_LIMIT`` +
  its window + one partial message (the decoder refuses messages larger than
  ``max_message_size``), and a message larger than the window still flows.
- A stream is in ``_streams`` from its HEADERS until its owner releases it;
  release closes it on the wire (END_STREAM both ways, else RST_STREAM) and
  pays back what it owes. Nothing is left open when the owner
  is gone, whatever the exit path (the release code is synchronous).
- When the connection is lost every stream fails with UNAVAILABLE and every
  waiter is woken; no task waits on a dead connection.
- Output normally leaves through the writer; a task about to block, or
  answering what the peer just said, may write it itself (``flush_now``) when
  the writer is idle and no other task could add to the batch.
- A stream may have a message handler (``StreamState.handler``), called in
  the reader task with each complete message that arrives while the stream's
  consumer is parked in :meth:`receive_message` with nothing queued, so it
  has finished with everything before. If it returns True it took the
  message (no wake-up of the consumer); if False the message is queued as
  usual, and so is everything after it until the consumer has caught up.
  Order is therefore the arrival order whoever takes a message. The handler
  never blocks; the queue bound above holds for what it declines.
- Operations that need not wait do not yield every time (that made pipelined
  streams 2.5x slower), but they check for cancellation every time and yield
  to the scheduler every few operations (a ``CheckpointBudget``).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import sys
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings
import h2.stream
import trio
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from .._budget import CheckpointBudget
from ._framing import FramingError, MessageDecoder, MessageTooLargeError

log = logging.getLogger("agentwire.transport")

#: outbound bytes buffered in h2 above which senders wait for the writer
_HIGH_WATER = 256 * 1024
#: bytes asked from the socket per receive
_RECEIVE_SIZE = 256 * 1024
#: a stream's queued, untaken bytes above which received bytes are not acknowledged
_QUEUE_LIMIT = 1024 * 1024
#: consumed bytes acknowledged (WINDOW_UPDATE) in batches of at least this size
_ACK_BATCH = 64 * 1024
#: our SETTINGS_INITIAL_WINDOW_SIZE (per stream) and our connection window
STREAM_WINDOW = 4 * 1024 * 1024
CONNECTION_WINDOW = 16 * 1024 * 1024
#: how long a graceful close may spend flushing before the socket is dropped
_CLOSE_FLUSH_TIMEOUT = 2.0

# HTTP/2 error codes used here (RFC 9113 section 7)
NO_ERROR = 0x0
PROTOCOL_ERROR = 0x1
INTERNAL_ERROR = 0x2
REFUSED_STREAM = 0x7
CANCEL = 0x8
ENHANCE_YOUR_CALM = 0xB

# gRPC's mapping of RST_STREAM codes to statuses (doc/PROTOCOL-HTTP2.md)
_RESET_STATUS = {
    REFUSED_STREAM: Status.UNAVAILABLE,
    CANCEL: Status.CANCELLED,
    ENHANCE_YOUR_CALM: Status.RESOURCE_EXHAUSTED,
    0xC: Status.PERMISSION_DENIED,
}

Headers = list[tuple[str, str]]


def reset_status(error_code: int) -> Status:
    """The gRPC status a client reports for a stream reset with ``error_code``."""
    return _RESET_STATUS.get(error_code, Status.INTERNAL)


def decode_headers(raw: Iterable[tuple[bytes, bytes]]) -> Headers:
    return [
        (name.decode("utf-8", "replace"), value.decode("utf-8", "replace")) for name, value in raw
    ]


def _runnable() -> int:
    """How many trio tasks are ready to run in this scheduler pass.

    ``trio.lowlevel.current_statistics().tasks_runnable`` answers this but costs
    several microseconds (it also walks the I/O registrations); the run queue's
    length is read directly, and "many" is assumed if trio's internals move.
    """
    try:
        return len(trio._core._run.GLOBAL_RUN_CONTEXT.runner.runq)
    except AttributeError:  # pragma: no cover - a future trio
        return 1 << 30


def _pending_output(conn: h2.connection.H2Connection) -> int:
    # h2 has no public accessor for the size of its output buffer; h2 4.x
    # keeps it in ``_data_to_send`` (pinned by the ``h2<5`` dependency).
    return len(getattr(conn, "_data_to_send", b""))


_OPEN_STATES = (
    h2.connection.ConnectionState.CLIENT_OPEN,
    h2.connection.ConnectionState.SERVER_OPEN,
)


_SENDING_STATES = (h2.stream.StreamState.OPEN, h2.stream.StreamState.HALF_CLOSED_REMOTE)
_RECEIVING_STATES = (h2.stream.StreamState.OPEN, h2.stream.StreamState.HALF_CLOSED_LOCAL)


def _send_data(conn: h2.connection.H2Connection, stream_id: int, data: bytes) -> None:
    """``conn.send_data(stream_id, data)`` for the common case, without h2's overhead.

    The caller has checked ``data`` against the flow-control windows and the
    maximum frame size. For an open connection and a stream open for sending,
    h2 4.x's ``send_data`` (no END_STREAM, no padding) changes no state but the
    two outbound windows and appends one DATA frame to its output buffer; that
    is done here directly (~4x cheaper). Anything else goes through h2.
    """
    stream = conn.streams.get(stream_id)
    if (
        stream is None
        or stream.state_machine.state not in _SENDING_STATES
        or conn.state_machine.state not in _OPEN_STATES
    ):
        conn.send_data(stream_id, data)
        return
    size = len(data)
    # frame header: length (24 bits), type DATA (0), no flags, stream id (31 bits)
    conn._data_to_send += (
        size.to_bytes(3, "big") + b"\x00\x00" + stream_id.to_bytes(4, "big") + data
    )
    conn.outbound_flow_control_window -= size
    stream.outbound_flow_control_window -= size


class _H2Connection(h2.connection.H2Connection):
    """h2 with graceful GOAWAY: streams up to ``last_stream_id`` may finish.

    Stock h2 treats any GOAWAY as the end of the connection and rejects every
    later frame, which breaks the graceful shutdown gRPC servers (grpc-core,
    ours) perform. After a GOAWAY with NO_ERROR the state machine is put back
    to open; the transport itself refuses new streams.
    """

    def _receive_goaway_frame(self, frame: Any) -> Any:
        previous = self.state_machine.state
        result = super()._receive_goaway_frame(frame)
        if frame.error_code == NO_ERROR and previous in _OPEN_STATES:
            self.state_machine.state = previous
        return result

    def send_graceful_goaway(self, last_stream_id: int) -> None:
        previous = self.state_machine.state
        self.close_connection(error_code=NO_ERROR, last_stream_id=last_stream_id)
        if previous in _OPEN_STATES:
            self.state_machine.state = previous


#: takes one received message in the reader task: (payload, compressed, alone), where
#: ``alone`` says it is the only message of its socket read; False: queue it instead
MessageHandler = Callable[[bytes, bool, bool], bool]


class Signal:
    """Wakes the one task waiting on it (a tiny, cheaper ``trio.Event``)."""

    __slots__ = ("_task",)

    @property
    def waiting(self) -> bool:
        return self._task is not None

    def __init__(self) -> None:
        self._task: trio.lowlevel.Task | None = None

    async def wait(self) -> None:
        if self._task is not None:
            raise trio.BusyResourceError("another task is already waiting on this stream")
        self._task = trio.lowlevel.current_task()

        def abort(_: Any) -> trio.lowlevel.Abort:
            self._task = None
            return trio.lowlevel.Abort.SUCCEEDED

        await trio.lowlevel.wait_task_rescheduled(abort)

    def set(self) -> None:
        task = self._task
        if task is not None:
            self._task = None
            trio.lowlevel.reschedule(task)


class StreamState:
    """Transport state of one HTTP/2 stream (client or server side)."""

    __slots__ = (
        "decoder",
        "error",
        "handler",
        "headers",
        "headers_sent",
        "id",
        "local_closed",
        "messages",
        "owed",
        "partial",
        "queued",
        "recv_signal",
        "remote_closed",
        "reset",
        "send_signal",
        "trailers",
    )

    def __init__(self, stream_id: int, max_message_size: int) -> None:
        self.id = stream_id
        # complete messages not taken yet: (payload, compressed flag)
        self.messages: deque[tuple[bytes, bool]] = deque()
        self.queued = 0  # framed bytes in ``messages``
        self.owed = 0  # received bytes not acknowledged because the queue was full
        self.decoder: MessageDecoder | None = MessageDecoder(max_message_size)
        self.remote_closed = False
        self.local_closed = False
        self.reset = False
        self.headers_sent = False
        self.partial = False  # some but not all frames of a message handed to h2
        self.error: GRPCError | None = None
        self.handler: MessageHandler | None = None
        self.headers: Headers | None = None
        self.trailers: Headers | None = None
        self.recv_signal = Signal()
        self.send_signal = Signal()

    @property
    def closed(self) -> bool:
        return self.reset or (self.local_closed and self.remote_closed)

    def wake(self) -> None:
        self.recv_signal.set()
        self.send_signal.set()


class Connection:
    """Shared HTTP/2 plumbing; subclasses handle headers and stream lifecycle."""

    def __init__(
        self,
        stream: trio.abc.Stream,
        *,
        client_side: bool,
        max_message_size: int,
        max_concurrent_streams: int | None = None,
        keepalive_interval: float | None = None,
        keepalive_timeout: float = 20.0,
        handshake_timeout: float | None = None,
        idle_timeout: float | None = None,
    ) -> None:
        self._stream = stream
        # plain TCP sockets are read and written directly (see _read_fd/_write_fd)
        self._fd: int | None = (
            stream.socket.fileno()
            if type(stream) is trio.SocketStream and sys.platform != "win32"
            else None
        )
        self._read_hint = False
        self._leftover = b""  # output flush_now() could not write; the writer sends it
        self._socket_closed = False
        self._heard = False  # data arrived since the last eager write (see send_message)
        self._lone_read = False  # the DATA being handled is all this read brought
        # received bytes not yet acknowledged, by stream id (see release_credit)
        self._unacked: dict[int, int] = {}
        self._unacked_total = 0
        config = h2.config.H2Configuration(
            client_side=client_side,
            header_encoding=None,
            validate_outbound_headers=False,
            normalize_outbound_headers=False,
        )
        self._h2 = _H2Connection(config=config)
        # see _receive_plain_data; off if this h2 lacks the internals it relies on
        self._fast_receive = all(
            hasattr(self._h2.incoming_buffer, name)
            for name in ("_data", "_preamble_len", "_headers_buffer")
        ) and hasattr(self._h2, "_inbound_flow_control_window_manager")
        self.max_message_size = max_message_size
        self._keepalive_interval = keepalive_interval
        self._keepalive_timeout = keepalive_timeout
        self._handshake_timeout = handshake_timeout
        self._idle_timeout = idle_timeout
        # when the last stream ended (None while streams are open); see _timers
        self._idle_since: float | None = trio.current_time()
        self._ping_sent_at: float | None = None
        self._streams: dict[int, StreamState] = {}
        self._budget = CheckpointBudget()
        self._writer_parked = False  # parked, and nobody has woken it
        self._writer_idle = False  # parked, or woken but not yet running
        self._writer_lot = trio.lowlevel.ParkingLot()
        self._drain_lot = trio.lowlevel.ParkingLot()
        self._slot_lot = trio.lowlevel.ParkingLot()
        self._closing = False  # no more output after what h2 buffered
        self.draining = False  # GOAWAY sent or received: no new streams
        self._lost: GRPCError | None = None
        self._last_received = trio.current_time()
        self._timers_scope = trio.CancelScope()
        self._writer_scope = trio.CancelScope()
        self._reader_scope = trio.CancelScope()
        self._done = trio.Event()
        # set by the peer's first SETTINGS (or the end of the connection)
        self.settings_received = trio.Event()
        self.bytes_sent = 0
        self.bytes_received = 0
        self.pings_acknowledged = 0
        settings: dict[h2.settings.SettingCodes, int] = {
            h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: STREAM_WINDOW,
            h2.settings.SettingCodes.ENABLE_PUSH: 0,
            h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE: 64 * 1024,
        }
        if max_concurrent_streams is not None:
            settings[h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS] = max_concurrent_streams
        self._h2.local_settings = h2.settings.Settings(client=client_side, initial_values=settings)
        self._h2.initiate_connection()
        self._h2.increment_flow_control_window(CONNECTION_WINDOW - 65535)
        self._dispatch: dict[type[h2.events.Event], Callable[[Any], None]] = {
            h2.events.DataReceived: self._on_data,
            h2.events.StreamEnded: self._on_stream_ended,
            h2.events.StreamReset: self._on_stream_reset,
            h2.events.WindowUpdated: self._on_window_updated,
            h2.events.RemoteSettingsChanged: self._on_settings_changed,
            h2.events.ConnectionTerminated: self._on_goaway,
            h2.events.PingAckReceived: self._on_ping_ack,
        }

    # -- public-ish state ----------------------------------------------------

    @property
    def lost(self) -> GRPCError | None:
        """The error every call on this connection fails with, once it is gone."""
        return self._lost

    @property
    def open_streams(self) -> int:
        return len(self._streams)

    @property
    def pending_output(self) -> int:
        return _pending_output(self._h2)

    # -- running -------------------------------------------------------------

    def start(self, nursery: trio.Nursery) -> None:
        """Start pumping the connection: its tasks run in ``nursery`` until it ends."""
        nursery.start_soon(self._writer)
        nursery.start_soon(self._reader)
        if (
            self._keepalive_interval is not None
            or self._handshake_timeout is not None
            or self._idle_timeout is not None
        ):
            nursery.start_soon(self._timers)
        self._kick()

    async def wait_closed(self) -> None:
        await self._done.wait()

    def _kick(self) -> None:
        if self._writer_parked:
            self._writer_parked = False
            self._writer_lot.unpark()

    async def _writer(self) -> None:
        try:
            with self._writer_scope:
                await self._write_loop()
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            self._connection_lost(f"connection lost while sending: {exc!r}", flush=False)
        finally:
            self._writer_parked = False
            self._writer_idle = False
            self._closing = True
            self._drain_lot.unpark_all()
            self._socket_closed = True  # the fd number may be reused from now on
            self._reader_scope.cancel()  # whatever the stream type does on close
            await trio.aclose_forcefully(self._stream)
            self._done.set()

    async def _write_loop(self) -> None:
        h2conn = self._h2
        fd = self._fd
        while True:
            self._writer_idle = False
            data = h2conn.data_to_send()
            if self._leftover:
                data = self._leftover + data
                self._leftover = b""
            if data:
                self._drain_lot.unpark_all()
                self.bytes_sent += len(data)
                if fd is None:
                    await self._stream.send_all(data)
                else:
                    await self._write_fd(fd, data)
                continue
            if self._closing:
                break
            self._writer_parked = True
            self._writer_idle = True
            await self._writer_lot.park()

    def flush_now(self) -> None:
        """Write pending output from the calling task, if that is as good as waiting.

        Called by a task about to block. When the writer is idle and no other
        task (but the writer, woken for this very output) is runnable, nothing
        else can join this batch of output, so one non-blocking write now puts
        it on the wire a scheduler pass earlier; the writer then finds nothing
        to do. Whatever the socket does not take is left to the writer.
        """
        fd = self._fd
        if (
            fd is None
            or self._closing
            or not self._writer_idle
            or self._leftover
            or _runnable() > (0 if self._writer_parked else 1)
        ):
            return
        data = self._h2.data_to_send()
        if not data:
            return
        if self._drain_lot:
            self._drain_lot.unpark_all()
        try:
            sent = os.write(fd, data)
        except BlockingIOError:
            sent = 0
        except OSError:
            sent = 0  # the writer meets the error again and reports it
        self.bytes_sent += sent
        if sent < len(data):
            self._leftover = data[sent:]
            self._kick()

    @staticmethod
    async def _write_fd(fd: int, data: bytes) -> None:
        # Plain TCP: write the socket directly. A write that completes needs
        # no extra trip through the scheduler (the writer parks right after).
        view = memoryview(data)
        while True:
            try:
                sent = os.write(fd, view)
            except BlockingIOError:
                await trio.lowlevel.wait_writable(fd)
                continue
            if sent == len(view):
                return
            view = view[sent:]
            await trio.lowlevel.wait_writable(fd)

    async def _read_fd(self, fd: int) -> bytes:
        # Plain TCP: wait for readability first unless the last read filled the
        # buffer (then more is likely waiting); read the socket directly.
        if self._read_hint:
            self._read_hint = False
            await trio.lowlevel.checkpoint()
        else:
            await trio.lowlevel.wait_readable(fd)
        while True:
            if self._socket_closed:
                raise trio.ClosedResourceError("the connection is closed")
            try:
                data = os.read(fd, _RECEIVE_SIZE)
            except BlockingIOError:
                await trio.lowlevel.wait_readable(fd)
                continue
            self._read_hint = len(data) == _RECEIVE_SIZE
            return data

    async def _reader(self) -> None:
        with self._reader_scope:
            await self._read_loop()
        if self._lost is None:  # cancelled by the writer's end
            self._connection_lost("connection closed", flush=False)

    async def _read_loop(self) -> None:
        h2conn = self._h2
        stream = self._stream
        fd = self._fd
        dispatch = self._dispatch
        keepalive = self._keepalive_interval is not None
        try:
            while True:
                try:
                    if fd is None:
                        data = await stream.receive_some(_RECEIVE_SIZE)
                    else:
                        data = await self._read_fd(fd)
                except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
                    self._connection_lost(f"connection lost: {exc!r}", flush=False)
                    return
                if not data:
                    self._connection_lost("connection closed by peer", flush=False)
                    return
                self.bytes_received += len(data)
                self._heard = True
                if keepalive:
                    self._last_received = trio.current_time()
                if self._fast_receive and type(data) is bytes:
                    data = self._receive_plain_data(data)
                if data:
                    try:
                        events = h2conn.receive_data(data)
                    except h2.exceptions.ProtocolError as exc:
                        # h2 has usually queued a GOAWAY (not for a bad preface); flush, close.
                        if h2conn.state_machine.state is not h2.connection.ConnectionState.CLOSED:
                            with contextlib.suppress(h2.exceptions.ProtocolError):
                                h2conn.close_connection(PROTOCOL_ERROR, b"invalid HTTP/2 input")
                        self._connection_lost(f"HTTP/2 protocol error: {exc!r}")
                        return
                    for event in events:
                        handler = dispatch.get(type(event))
                        if handler is not None:
                            handler(event)
                if self._lost is not None:
                    return
                if _pending_output(h2conn):
                    self._kick()
                    while _pending_output(h2conn) > 4 * _HIGH_WATER and not self._closing:
                        await self._drain_lot.park()
        finally:
            self._kick()

    def _receive_plain_data(self, data: bytes) -> bytes:
        """Take the leading plain DATA frames of ``data`` without h2; return the rest.

        h2 4.x turns a DATA frame without flags (no END_STREAM, no padding),
        on a stream open for receiving whose headers came and that declared no
        content-length, within both inbound windows, into nothing but the two
        window reductions and one ``DataReceived``; that is done here
        directly, several times cheaper. It applies only while h2 holds no
        partial input (no preface still expected, no partial frame, no
        header block in progress); the first frame that is anything else, and
        everything after it, goes to h2 as usual, so order is kept.
        """
        h2conn = self._h2
        buffer: Any = h2conn.incoming_buffer
        if (
            buffer._data
            or buffer._preamble_len
            or buffer._headers_buffer
            or h2conn.state_machine.state not in _OPEN_STATES
        ):
            return data
        streams = h2conn.streams
        conn_window: Any = h2conn._inbound_flow_control_window_manager
        max_size = h2conn.max_inbound_frame_size
        end = len(data)
        pos = 0
        while end - pos >= 9:
            length = int.from_bytes(data[pos : pos + 3], "big")
            if data[pos + 3] or data[pos + 4] or length > max_size or pos + 9 + length > end:
                break  # not DATA, has flags, too large, or incomplete
            stream_id = int.from_bytes(data[pos + 5 : pos + 9], "big") & 0x7FFFFFFF
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
            except AttributeError:  # pragma: no cover - an h2 with other internals
                self._fast_receive = False
                break
            if not plain:
                break
            conn_window.window_consumed(length)
            window.window_consumed(length)
            start = pos + 9
            self._lone_read = pos == 0 and start + length == end
            pos = start + length
            self._data_received(stream_id, data[start:pos], length)
        self._lone_read = False
        return data[pos:] if pos else data

    async def _timers(self) -> None:
        with self._timers_scope:
            await self._run_timers()

    async def _run_timers(self) -> None:
        """The connection's clocks: handshake, idle and keepalive (one task for all three).

        - The peer's SETTINGS (after its preface) must arrive within
          ``handshake_timeout``, else the connection is closed.
        - A connection without streams for ``idle_timeout`` is closed (GOAWAY).
        - After ``keepalive_interval`` without a byte from the peer while
          streams are open, a PING is sent; if nothing at all arrives within
          ``keepalive_timeout`` of it, the connection is lost: every stream
          fails with UNAVAILABLE.
        """
        if self._handshake_timeout is not None:
            with trio.move_on_after(self._handshake_timeout):
                await self.settings_received.wait()
            if not self.settings_received.is_set():
                log.debug("no HTTP/2 handshake within %s s", self._handshake_timeout)
                self.close(PROTOCOL_ERROR, "no HTTP/2 handshake in time")
                return
        idle_timeout = self._idle_timeout
        interval = self._keepalive_interval
        acks = 0
        while self._lost is None and not self._closing:
            now = trio.current_time()
            wake = math.inf
            if idle_timeout is not None:
                idle_since = self._idle_since
                if idle_since is None:
                    wake = now + idle_timeout  # look again then
                elif now >= idle_since + idle_timeout:
                    log.debug("closing a connection idle for %s s", idle_timeout)
                    self.close(NO_ERROR, "idle")
                    return
                else:
                    wake = idle_since + idle_timeout
            if interval is not None:
                sent_at = self._ping_sent_at
                if sent_at is not None and (
                    self._last_received > sent_at or self.pings_acknowledged > acks
                ):
                    sent_at = self._ping_sent_at = None  # the peer is alive
                if sent_at is not None:
                    if now >= sent_at + self._keepalive_timeout:
                        self._connection_lost("keepalive ping not acknowledged", flush=False)
                        return
                    wake = min(wake, sent_at + self._keepalive_timeout)
                elif now < self._last_received + interval:
                    wake = min(wake, self._last_received + interval)
                elif not self._keepalive_wanted():
                    self._last_received = now
                    wake = min(wake, now + interval)
                else:
                    try:
                        self._h2.ping(b"agentwir")
                    except h2.exceptions.ProtocolError:
                        return
                    self._kick()
                    self._ping_sent_at = now
                    acks = self.pings_acknowledged
                    wake = min(wake, now + self._keepalive_timeout)
            await trio.sleep_until(wake)

    def _keepalive_wanted(self) -> bool:
        return bool(self._streams)

    def _on_ping_ack(self, event: h2.events.PingAckReceived) -> None:
        self.pings_acknowledged += 1

    def _add_stream(self, st: StreamState) -> None:
        self._streams[st.id] = st
        self._idle_since = None

    # -- closing -------------------------------------------------------------

    def close(self, error_code: int = NO_ERROR, reason: str = "") -> None:
        """Send GOAWAY, flush what is buffered and close (synchronous; see ``aclose``)."""
        if not self._closing:
            with contextlib.suppress(h2.exceptions.ProtocolError):
                self._h2.close_connection(
                    error_code=error_code,
                    additional_data=reason.encode() if reason else None,
                )
            self._closing = True
        if self._lost is None:
            self._connection_lost(reason or "connection closed")
        self._kick()

    async def aclose(self) -> None:
        """Close gracefully, waiting a bounded time for the GOAWAY to flush."""
        self.close()
        with trio.move_on_after(_CLOSE_FLUSH_TIMEOUT) as scope:
            scope.shield = True
            await self._done.wait()
        if not self._done.is_set():
            await trio.aclose_forcefully(self._stream)

    def _connection_lost(self, reason: str, *, flush: bool = True) -> None:
        """The connection is over: fail its streams; the writer flushes (briefly) and closes.

        ``flush=False`` when the transport itself is gone: nothing can be sent.
        """
        if self._lost is None:
            log.debug("connection ended: %s", reason)
            self._lost = GRPCError(Status.UNAVAILABLE, reason)
        self._closing = True
        if flush:
            deadline = trio.current_time() + _CLOSE_FLUSH_TIMEOUT
            self._writer_scope.deadline = min(self._writer_scope.deadline, deadline)
        else:
            self._writer_scope.cancel()
        error = self._lost
        for st in list(self._streams.values()):
            if st.error is None and not (st.remote_closed and st.trailers is not None):
                st.error = error
            st.reset = True
            self._on_stream_lost(st)
            st.wake()
        self._slot_lot.unpark_all()
        self._drain_lot.unpark_all()
        self.settings_received.set()
        self._timers_scope.cancel()
        self._kick()

    def _on_stream_lost(self, st: StreamState) -> None:
        """Hook: the connection is gone under ``st``."""

    # -- stream operations (called from application tasks) --------------------

    async def tick(self) -> None:
        """A cheap checkpoint: always cancellable, yields every few operations."""
        await self._budget.checkpoint()

    def send_headers(self, st: StreamState, headers: Sequence[tuple[str, str]], end: bool) -> None:
        self._h2.send_headers(st.id, headers, end_stream=end)
        st.headers_sent = True
        if end:
            st.local_closed = True
        self._kick()

    def end_stream(self, st: StreamState) -> None:
        if not st.local_closed and not st.reset:
            st.local_closed = True
            self._h2.end_stream(st.id)
            self._kick()

    def reset_stream(self, st: StreamState, error_code: int) -> None:
        if st.closed:
            return
        st.reset = True
        if self._lost is None:
            with contextlib.suppress(h2.exceptions.StreamClosedError):
                self._h2.reset_stream(st.id, error_code)
            self._kick()
        st.wake()

    def release(self, st: StreamState) -> None:
        """The owner is done with ``st``: close it on the wire and forget it."""
        if not st.closed:
            self.reset_stream(st, CANCEL)
        st.messages.clear()
        st.queued = 0
        st.decoder = None
        if st.owed:
            self.release_credit(st.owed, st.id)
            st.owed = 0
        if self._unacked.get(st.id):
            self._flush_acks()  # the stream's credit counts on the connection window
        if self._streams.pop(st.id, None) is not None:
            self._slot_lot.unpark()
            if not self._streams:
                self._idle_since = trio.current_time()
                if self.draining:
                    self.close()

    async def send_message(self, st: StreamState, frame: bytes, end: bool = False) -> None:
        """Send one framed message; waits for flow control and buffer space.

        Cancellation before any of the message is handed over sends nothing;
        cancellation in the middle of a large message leaves the stream
        ``partial`` (its owner resets it).
        """
        await self.tick()
        h2conn = self._h2
        sid = st.id
        size = len(frame)
        if (
            not st.closed
            and not st.local_closed
            and size <= h2conn.max_outbound_frame_size
            and _pending_output(h2conn) < _HIGH_WATER
            and size <= h2conn.local_flow_control_window(sid)
        ):
            if end:
                h2conn.send_data(sid, frame, end_stream=True)
                st.local_closed = True
            else:
                _send_data(h2conn, sid, frame)
            if self._heard and not st.messages and self._writer_parked:
                # An answer to what the peer just said, with nothing more of
                # it to read: write at once (the request/response pattern)
                # rather than wake the writer. Bursts still coalesce: the next
                # send finds ``_heard`` false and wakes the writer.
                self._heard = False
                self.flush_now()
                if not self._leftover and not _pending_output(h2conn):
                    return
            self._kick()
            return
        view = memoryview(frame)
        pos = 0
        while True:
            self._check_sendable(st)
            if _pending_output(h2conn) >= _HIGH_WATER:
                await self._drain_lot.park()
                continue
            window = h2conn.local_flow_control_window(sid)
            if window <= 0:
                await st.send_signal.wait()
                continue
            n = min(size - pos, window, h2conn.max_outbound_frame_size)
            last = pos + n >= size
            h2conn.send_data(sid, view[pos : pos + n], end_stream=end and last)
            pos += n
            st.partial = not last
            self._kick()
            if last:
                if end:
                    st.local_closed = True
                break

    def try_send_message(self, st: StreamState, frame: bytes, *, flush: bool = True) -> bool:
        """Hand one framed message to h2 now if that needs no waiting; else send nothing.

        True: the whole message is buffered for the wire (within the peer's
        windows and below ``_HIGH_WATER``, like the fast path of
        :meth:`send_message`). False: nothing was sent (no window or buffer
        space, the stream is closed or failed, or a cancelled send left it
        mid-message); the caller falls back to :meth:`send_message`, which
        waits or raises. Synchronous: no checkpoint, no wake-up of the caller.

        ``flush``: write at once when the writer is idle and nothing else is
        runnable (see :meth:`flush_now`); otherwise the writer is woken and
        batches this with whatever else is produced in this scheduler pass.
        """
        h2conn = self._h2
        size = len(frame)
        if (
            st.closed
            or st.local_closed
            or st.partial
            or st.error is not None
            or self._closing
            or size > h2conn.max_outbound_frame_size
            or _pending_output(h2conn) >= _HIGH_WATER
            or size > h2conn.local_flow_control_window(st.id)
        ):
            return False
        try:
            _send_data(h2conn, st.id, frame)
        except h2.exceptions.ProtocolError:  # pragma: no cover - state checked above
            return False
        if flush and self._writer_parked:
            self.flush_now()
            if not self._leftover and not _pending_output(h2conn):
                return True
        self._kick()
        return True

    def _check_sendable(self, st: StreamState) -> None:
        if st.error is not None:
            raise st.error
        if st.reset or st.local_closed:
            raise trio.ClosedResourceError("this stream is closed for sending")

    async def receive_message(self, st: StreamState) -> tuple[bytes, bool] | None:
        """The next ``(payload, compressed)`` of ``st``; ``None`` at END_STREAM.

        A message is taken only when no cancellation is raised: cancelling a
        receive never loses a message.
        """
        while True:
            if st.messages:
                await self.tick()
                if not st.messages:
                    continue
                payload, compressed = st.messages.popleft()
                st.queued -= len(payload) + 5
                if st.owed and st.queued < _QUEUE_LIMIT:
                    self.release_credit(st.owed, st.id)
                    st.owed = 0
                return payload, compressed
            if st.error is not None:
                await trio.lowlevel.checkpoint()
                raise st.error
            if st.remote_closed:
                await self.tick()
                return None
            self.flush_now()
            await st.recv_signal.wait()

    def release_credit(self, credit: int, stream_id: int) -> None:
        """Acknowledge ``credit`` received bytes of ``stream_id`` to the peer.

        Acknowledgements are batched per connection up to ``_ACK_BATCH`` bytes,
        far below any window, so batching never stalls a peer.
        """
        unacked = self._unacked
        unacked[stream_id] = unacked.get(stream_id, 0) + credit
        self._unacked_total += credit
        if self._unacked_total >= _ACK_BATCH:
            self._flush_acks()

    def _flush_acks(self) -> None:
        if self._lost is None:
            acknowledge = self._h2.acknowledge_received_data
            for stream_id, credit in self._unacked.items():
                acknowledge(credit, stream_id)
            if _pending_output(self._h2):
                self._kick()
        self._unacked.clear()
        self._unacked_total = 0

    # -- events --------------------------------------------------------------

    def _on_data(self, event: h2.events.DataReceived) -> None:
        self._data_received(event.stream_id, event.data, event.flow_controlled_length)

    def _data_received(self, stream_id: int, data: bytes, flow: int) -> None:
        st = self._streams.get(stream_id)
        decoder = st.decoder if st is not None else None
        if st is None or decoder is None or st.reset:
            if flow:
                self.release_credit(flow, stream_id)
            return
        try:
            messages = decoder.feed(data)
        except MessageTooLargeError as exc:
            st.decoder = None
            if flow:
                self.release_credit(flow, stream_id)
            self._on_stream_error(st, Status.RESOURCE_EXHAUSTED, str(exc))
            return
        except FramingError as exc:
            st.decoder = None
            if flow:
                self.release_credit(flow, stream_id)
            self._on_stream_error(st, Status.INTERNAL, str(exc))
            return
        if messages:
            queue = st.messages
            queued = st.queued
            handler = st.handler
            lone = self._lone_read and len(messages) == 1
            for compressed, payload in messages:
                if handler is not None and not queue and st.recv_signal.waiting:
                    try:
                        taken = handler(payload, compressed, lone)
                    except Exception as exc:
                        log.exception("message handler of stream %d failed", st.id)
                        st.decoder = None
                        self._on_stream_error(
                            st, Status.INTERNAL, f"message handler failed: {exc!r}"
                        )
                        if flow:
                            self.release_credit(flow, stream_id)
                        return
                    if taken:
                        continue
                queue.append((payload, compressed))
                queued += len(payload) + 5
            st.queued = queued
            if queue:
                st.recv_signal.set()
        if st.queued < _QUEUE_LIMIT:
            if flow:
                self.release_credit(flow, stream_id)
        else:
            st.owed += flow

    def _on_stream_error(self, st: StreamState, status: Status, message: str) -> None:
        """A stream-level error detected on receipt (oversized or malformed message)."""
        st.error = GRPCError(status, message)
        self.reset_stream(st, CANCEL)

    def _on_stream_ended(self, event: h2.events.StreamEnded) -> None:
        st = self._streams.get(event.stream_id)
        if st is None:
            return
        st.remote_closed = True
        if st.decoder is not None and st.decoder.buffered and st.error is None:
            st.error = GRPCError(Status.INTERNAL, "stream ended inside a message")
        st.recv_signal.set()

    def _on_stream_reset(self, event: h2.events.StreamReset) -> None:
        st = self._streams.get(event.stream_id)
        if st is None:
            return
        was_closed = st.closed
        st.reset = True
        if not was_closed:
            self._on_peer_reset(st, event.error_code)
        st.wake()

    def _on_peer_reset(self, st: StreamState, error_code: int) -> None:
        if st.error is None:
            st.error = GRPCError(
                reset_status(error_code), f"stream reset by peer (HTTP/2 error {error_code})"
            )

    def _on_window_updated(self, event: h2.events.WindowUpdated) -> None:
        if event.stream_id:
            st = self._streams.get(event.stream_id)
            if st is not None:
                st.send_signal.set()
        else:
            for st in self._streams.values():
                st.send_signal.set()

    def _on_settings_changed(self, event: h2.events.RemoteSettingsChanged) -> None:
        self.settings_received.set()
        changed = event.changed_settings
        if h2.settings.SettingCodes.INITIAL_WINDOW_SIZE in changed:
            for st in self._streams.values():
                st.send_signal.set()
        if h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS in changed:
            self._slot_lot.unpark_all()

    def _on_goaway(self, event: h2.events.ConnectionTerminated) -> None:
        if event.error_code != NO_ERROR:
            detail = (event.additional_data or b"").decode("utf-8", "replace")
            self._connection_lost(
                f"connection closed by peer (GOAWAY, HTTP/2 error {event.error_code}"
                + (f": {detail})" if detail else ")")
            )
            return
        self.draining = True
        self._on_graceful_goaway(event.last_stream_id or 0)
        if not self._streams:
            self.close()

    def _on_graceful_goaway(self, last_stream_id: int) -> None:
        """Hook: the peer sent GOAWAY(NO_ERROR); streams up to the id go on."""
