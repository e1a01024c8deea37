"""The HTTP/2 connection pump shared by the gRPC client and server.

One :class:`Http2Connection` owns one byte stream and one ``h2`` state machine.
The client (``_client``) and the server (``_server_connection``) subclass it.

Invariants (every method below keeps them):

- Only the reader task receives from the byte stream; only the writer task
  sends to it. Every other task changes ``h2`` state synchronously and then
  calls :meth:`Http2Connection._kick`, which wakes the writer; the writer flushes all
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
- A stream may have a message handler (``OpenStream.handler``), called in
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
- Private internals of h2 and trio are used only through ``_h2fast`` and
  ``_fdio``, when ``_fastpath.use_fast_paths`` says so (once per connection);
  otherwise the same work goes through public APIs.
- The handshake, idle and keepalive deadlines are a ``ConnectionClock``'s
  (``_liveness``), acted on by one timer task per connection.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Callable, Sequence
from typing import Any

import h2.connection
import h2.events
import h2.exceptions
import h2.settings
import trio
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from .._budget import CheckpointBudget
from . import _fastpath, _fdio, _h2fast
from ._framing import FramingError, MessageTooLargeError
from ._liveness import ConnectionClock, Due
from ._open_stream import OpenStream, WakeUp
from ._protocol import CANCEL, NO_ERROR, PROTOCOL_ERROR, open_h2, reset_status

log = logging.getLogger("agentwire.transport")

#: outbound bytes buffered in h2 above which senders wait for the writer
_HIGH_WATER = 256 * 1024
#: bytes asked from the socket per receive
_RECEIVE_SIZE = 256 * 1024
#: a stream's queued, untaken bytes above which received bytes are not acknowledged
_QUEUE_LIMIT = 1024 * 1024
#: consumed bytes acknowledged (WINDOW_UPDATE) in batches of at least this size
_ACK_BATCH = 64 * 1024
#: how long a graceful close may spend flushing before the socket is dropped
_CLOSE_FLUSH_TIMEOUT = 2.0


def _send_data_public(conn: h2.connection.H2Connection, stream_id: int, data: bytes) -> None:
    conn.send_data(stream_id, data)


class Http2Connection:
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
        self._h2 = h2conn = open_h2(
            client_side=client_side, max_concurrent_streams=max_concurrent_streams
        )
        fast = _fastpath.use_fast_paths(h2conn)
        #: the fast paths (see _fastpath), chosen once: plain TCP is read and written
        #: directly, plain DATA frames bypass h2
        self.fast_paths = fast
        fd = _fdio.socket_fd(stream) if fast else None
        self._io = _fdio.SocketIO(fd, _RECEIVE_SIZE) if fd is not None else None
        self._fast_receive = fast
        self._send_plain: Callable[[h2.connection.H2Connection, int, bytes], None] = (
            _h2fast.send_data if fast else _send_data_public
        )
        self._pending: Callable[[], int] = (
            functools.partial(_h2fast.pending_output, h2conn) if fast else self._pending_public
        )
        # output taken from h2 but not written yet: what flush_now() could not
        # write, and (public path) what was taken out to be measured
        self._held = bytearray()
        self._heard = False  # data arrived since the last eager write (see send_message)
        self._lone_event = False  # the event being handled is all its read brought
        # received bytes not yet acknowledged, by stream id (see release_credit)
        self._unacked: dict[int, int] = {}
        self._unacked_total = 0
        self.max_message_size = max_message_size
        self._clock = ConnectionClock(
            trio.current_time(),
            handshake_timeout=handshake_timeout,
            idle_timeout=idle_timeout,
            keepalive_interval=keepalive_interval,
            keepalive_timeout=keepalive_timeout,
        )
        self._streams: dict[int, OpenStream] = {}
        self._budget = CheckpointBudget()
        self._writer_wakeup = WakeUp()
        self._writer_idle = False  # parked, or woken but not yet running
        self._drain_lot = trio.lowlevel.ParkingLot()
        self._slot_lot = trio.lowlevel.ParkingLot()
        self._closing = False  # no more output after what h2 buffered
        self.draining = False  # GOAWAY sent or received: no new streams
        self._lost: GRPCError | None = None
        self._timers_scope = trio.CancelScope()
        self._writer_scope = trio.CancelScope()
        self._reader_scope = trio.CancelScope()
        self._done = trio.Event()
        # set by the peer's first SETTINGS (or the end of the connection)
        self.settings_received = trio.Event()
        self.bytes_sent = 0
        self.bytes_received = 0
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
        """Bytes buffered for the wire and not written yet."""
        return self._pending()

    @property
    def pings_acknowledged(self) -> int:
        return self._clock.pings_acknowledged

    def _pending_public(self) -> int:
        # h2 does not say how much it holds: take it out and count it here
        data = self._h2.data_to_send()
        if data:
            self._held += data
        return len(self._held)

    # -- running -------------------------------------------------------------

    def start(self, nursery: trio.Nursery) -> None:
        """Start pumping the connection: its tasks run in ``nursery`` until it ends."""
        nursery.start_soon(self._writer)
        nursery.start_soon(self._reader)
        if self._clock.needed:
            nursery.start_soon(self._timers)
        self._kick()

    async def wait_closed(self) -> None:
        await self._done.wait()

    def _kick(self) -> None:
        self._writer_wakeup.set()

    async def _writer(self) -> None:
        try:
            with self._writer_scope:
                await self._write_loop()
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            self._connection_lost(f"connection lost while sending: {exc!r}", flush=False)
        finally:
            self._writer_idle = False
            self._closing = True
            self._drain_lot.unpark_all()
            if self._io is not None:
                self._io.closed = True  # the fd number may be reused from now on
            self._reader_scope.cancel()  # whatever the stream type does on close
            await trio.aclose_forcefully(self._stream)
            self._done.set()

    async def _write_loop(self) -> None:
        h2conn = self._h2
        io = self._io
        held = self._held
        while True:
            self._writer_idle = False
            data = h2conn.data_to_send()
            if held:
                data = bytes(held) + data
                held.clear()
            if data:
                self._drain_lot.unpark_all()
                self.bytes_sent += len(data)
                if io is None:
                    await self._stream.send_all(data)
                else:
                    await io.write(data)
                continue
            if self._closing:
                break
            self._writer_idle = True
            await self._writer_wakeup.wait()

    def flush_now(self) -> None:
        """Write pending output from the calling task, if that is as good as waiting.

        Called by a task about to block. When the writer is idle and no other
        task (but the writer, woken for this very output) is runnable, nothing
        else can join this batch of output, so one non-blocking write now puts
        it on the wire a scheduler pass earlier; the writer then finds nothing
        to do. Whatever the socket does not take is left to the writer.
        (Fast paths only: it needs the socket's fd and trio's run queue.)
        """
        io = self._io
        if (
            io is None
            or self._closing
            or not self._writer_idle
            or self._held
            or _fdio.runnable() > (0 if self._writer_wakeup.waiting else 1)
        ):
            return
        data = self._h2.data_to_send()
        if not data:
            return
        if self._drain_lot:
            self._drain_lot.unpark_all()
        sent = io.try_write(data)
        self.bytes_sent += sent
        if sent < len(data):
            self._held += memoryview(data)[sent:]
            self._kick()

    async def _reader(self) -> None:
        with self._reader_scope:
            await self._read_loop()
        if self._lost is None:  # cancelled by the writer's end
            self._connection_lost("connection closed", flush=False)

    async def _read_loop(self) -> None:
        h2conn = self._h2
        stream = self._stream
        io = self._io
        dispatch = self._dispatch
        clock = self._clock
        keepalive = clock.keepalive_interval is not None
        pending = self._pending
        try:
            while True:
                try:
                    if io is None:
                        data = await stream.receive_some(_RECEIVE_SIZE)
                    else:
                        data = await io.read()
                except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
                    self._connection_lost(f"connection lost: {exc!r}", flush=False)
                    return
                if not data:
                    self._connection_lost("connection closed by peer", flush=False)
                    return
                self.bytes_received += len(data)
                self._heard = True
                if keepalive:
                    clock.last_received = trio.current_time()
                if self._fast_receive and type(data) is bytes:
                    data = _h2fast.receive_plain_data(h2conn, data, self._data_received)
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
                    # a DATA frame that is all its read brought is "alone" (see
                    # MessageHandler); _h2fast.receive_plain_data says so itself
                    self._lone_event = len(events) == 1
                    for event in events:
                        handler = dispatch.get(type(event))
                        if handler is not None:
                            handler(event)
                if self._lost is not None:
                    return
                if pending():
                    self._kick()
                    while pending() > 4 * _HIGH_WATER and not self._closing:
                        await self._drain_lot.park()
        finally:
            self._kick()

    async def _timers(self) -> None:
        with self._timers_scope:
            await self._run_timers()

    async def _run_timers(self) -> None:
        """Act on the connection's clock (see ``_liveness``) until the connection ends."""
        clock = self._clock
        while self._lost is None and not self._closing:
            due, wake = clock.poll(trio.current_time(), bool(self._streams))
            if due is Due.HANDSHAKE_TIMEOUT:
                log.debug("no HTTP/2 handshake within %s s", clock.handshake_timeout)
                self.close(PROTOCOL_ERROR, "no HTTP/2 handshake in time")
                return
            if due is Due.IDLE:
                log.debug("closing a connection idle for %s s", clock.idle_timeout)
                self.close(NO_ERROR, "idle")
                return
            if due is Due.PING_TIMEOUT:
                self._connection_lost("keepalive ping not acknowledged", flush=False)
                return
            if due is Due.PING:
                try:
                    self._h2.ping(b"agentwir")
                except h2.exceptions.ProtocolError:
                    return
                self._kick()
            if clock.awaiting_handshake:
                with trio.move_on_at(wake):
                    await self.settings_received.wait()
                clock.handshake_done = self.settings_received.is_set()
            else:
                await trio.sleep_until(wake)

    def _on_ping_ack(self, event: h2.events.PingAckReceived) -> None:
        self._clock.ping_acknowledged()

    def _add_stream(self, st: OpenStream) -> None:
        self._streams[st.id] = st
        self._clock.stream_opened()

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

    def _on_stream_lost(self, st: OpenStream) -> None:
        """Hook: the connection is gone under ``st``."""

    # -- stream operations (called from application tasks) --------------------

    async def tick(self) -> None:
        """A cheap checkpoint: always cancellable, yields every few operations."""
        await self._budget.checkpoint()

    def send_headers(self, st: OpenStream, headers: Sequence[tuple[str, str]], end: bool) -> None:
        self._h2.send_headers(st.id, headers, end_stream=end)
        st.headers_sent = True
        if end:
            st.local_closed = True
        self._kick()

    def end_stream(self, st: OpenStream) -> None:
        if not st.local_closed and not st.reset:
            st.local_closed = True
            self._h2.end_stream(st.id)
            self._kick()

    def reset_stream(self, st: OpenStream, error_code: int) -> None:
        if st.closed:
            return
        st.reset = True
        if self._lost is None:
            with contextlib.suppress(h2.exceptions.StreamClosedError):
                self._h2.reset_stream(st.id, error_code)
            self._kick()
        st.wake()

    def release(self, st: OpenStream) -> None:
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
                self._clock.streams_all_closed(trio.current_time())
                if self.draining:
                    self.close()

    async def send_message(self, st: OpenStream, frame: bytes, end: bool = False) -> None:
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
            and self._pending() < _HIGH_WATER
            and size <= h2conn.local_flow_control_window(sid)
        ):
            if end:
                h2conn.send_data(sid, frame, end_stream=True)
                st.local_closed = True
            else:
                self._send_plain(h2conn, sid, frame)
            if self._heard and not st.messages and self._writer_wakeup.waiting:
                # An answer to what the peer just said, with nothing more of
                # it to read: write at once (the request/response pattern)
                # rather than wake the writer. Bursts still coalesce: the next
                # send finds ``_heard`` false and wakes the writer.
                self._heard = False
                self.flush_now()
                if not self._held and not self._pending():
                    return
            self._kick()
            return
        view = memoryview(frame)
        pos = 0
        while True:
            self._check_sendable(st)
            if self._pending() >= _HIGH_WATER:
                await self._drain_lot.park()
                continue
            window = h2conn.local_flow_control_window(sid)
            if window <= 0:
                await st.send_wakeup.wait()
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

    def try_send_message(self, st: OpenStream, frame: bytes, *, flush: bool = True) -> bool:
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
            or self._pending() >= _HIGH_WATER
            or size > h2conn.local_flow_control_window(st.id)
        ):
            return False
        try:
            self._send_plain(h2conn, st.id, frame)
        except h2.exceptions.ProtocolError:  # pragma: no cover - state checked above
            return False
        if flush and self._writer_wakeup.waiting:
            self.flush_now()
            if not self._held and not self._pending():
                return True
        self._kick()
        return True

    def _check_sendable(self, st: OpenStream) -> None:
        if st.error is not None:
            raise st.error
        if st.reset or st.local_closed:
            raise trio.ClosedResourceError("this stream is closed for sending")

    async def receive_message(self, st: OpenStream) -> tuple[bytes, bool] | None:
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
            await st.recv_wakeup.wait()

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
            if self._pending():
                self._kick()
        self._unacked.clear()
        self._unacked_total = 0

    # -- events --------------------------------------------------------------

    def _on_data(self, event: h2.events.DataReceived) -> None:
        self._data_received(
            event.stream_id, event.data, event.flow_controlled_length, self._lone_event
        )

    def _data_received(self, stream_id: int, data: bytes, flow: int, alone: bool = False) -> None:
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
            lone = alone and len(messages) == 1
            for compressed, payload in messages:
                if handler is not None and not queue and st.recv_wakeup.waiting:
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
                st.recv_wakeup.set()
        if st.queued < _QUEUE_LIMIT:
            if flow:
                self.release_credit(flow, stream_id)
        else:
            st.owed += flow

    def _on_stream_error(self, st: OpenStream, status: Status, message: str) -> None:
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
        st.recv_wakeup.set()

    def _on_stream_reset(self, event: h2.events.StreamReset) -> None:
        st = self._streams.get(event.stream_id)
        if st is None:
            return
        was_closed = st.closed
        st.reset = True
        if not was_closed:
            self._on_peer_reset(st, event.error_code)
        st.wake()

    def _on_peer_reset(self, st: OpenStream, error_code: int) -> None:
        if st.error is None:
            st.error = GRPCError(
                reset_status(error_code), f"stream reset by peer (HTTP/2 error {error_code})"
            )

    def _on_window_updated(self, event: h2.events.WindowUpdated) -> None:
        if event.stream_id:
            st = self._streams.get(event.stream_id)
            if st is not None:
                st.send_wakeup.set()
        else:
            for st in self._streams.values():
                st.send_wakeup.set()

    def _on_settings_changed(self, event: h2.events.RemoteSettingsChanged) -> None:
        self.settings_received.set()
        changed = event.changed_settings
        if h2.settings.SettingCodes.INITIAL_WINDOW_SIZE in changed:
            for st in self._streams.values():
                st.send_wakeup.set()
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
