"""The I/O half of an HTTP/2 connection: reader, writer and timer tasks, closing.

:class:`Http2Pump` owns one byte stream and one ``h2`` state machine;
:class:`~._connection.Http2Connection` adds the streams' operations on top.

Invariants (every method below keeps them):

- Only the reader task receives from the byte stream; only the writer task
  sends to it. Every other task changes ``h2`` state synchronously and then
  calls :meth:`Http2Pump._kick`, which wakes the writer; the writer flushes
  all that ``h2`` has buffered with one write per wake-up, so everything
  produced during one scheduler pass leaves in one socket write.
- Whoever takes h2's output first forgets the DATA frame that later
  messages of its stream could join (``_h2fast.LastFrame``): nothing is
  appended to a frame already taken.
- The reader stops reading while control frames it provoked exceed
  ``4 * HIGH_WATER`` of unsent output.
- Output normally leaves through the writer; a task about to block, or
  answering what the peer just said, may write it itself (``flush_now``) when
  the writer is idle and no other task could add to the batch.
- When the connection is lost every stream fails with UNAVAILABLE and every
  waiter is woken; no task waits on a dead connection.
- Private internals of h2 and trio are used only through ``_h2fast`` and
  ``_fdio``, when ``_fastpath.use_fast_paths`` says so (once per connection);
  otherwise the same work goes through public APIs. A TLS stream whose
  handshake is not done yet (a server's) starts on the public path and moves
  to direct I/O once data has come and the writer is parked: never while a
  task is inside the ``SSLStream``.
- The handshake, idle and keepalive deadlines are a ``ConnectionClock``'s
  (``_liveness``), acted on by one timer task per connection.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Callable
from typing import Any

import h2.connection
import h2.events
import h2.exceptions
import trio
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from . import _fastpath, _fdio, _h2fast
from ._liveness import ConnectionClock, Due
from ._open_stream import OpenStream, WakeUp
from ._protocol import NO_ERROR, PROTOCOL_ERROR, open_h2

log = logging.getLogger("agentwire.transport")

#: outbound bytes buffered in h2 above which senders wait for the writer
HIGH_WATER = 256 * 1024
#: bytes asked from the socket per receive: a read allocates this much before trimming to what
#: came, and glibc serves 128 KiB and more with mmap (then mremap and munmap, and fresh pages to
#: fault in), three syscalls and a page fault per page for every read of a small message
_RECEIVE_SIZE = 64 * 1024
#: how long a graceful close may spend flushing before the socket is dropped
_CLOSE_FLUSH_TIMEOUT = 2.0
#: urgent (not bulk) output at least this large is written at once by the task that
#: produced it, not at the end of the scheduler pass: a burst of requests or answers reaches
#: the next process in pieces while the rest is made, so the processes of a pipeline work
#: at once instead of in turns (bulk traffic keeps its larger writes)
EARLY_WRITE = 2048


def _send_data_public(conn: h2.connection.H2Connection, stream_id: int, data: bytes) -> None:
    conn.send_data(stream_id, data)


class Http2Pump:
    """Moves bytes between one byte stream and one h2 state machine."""

    def __init__(
        self,
        stream: trio.abc.Stream,
        *,
        client_side: bool,
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
        self._io = _fdio.open_io(stream, _RECEIVE_SIZE) if fast else None
        # TLS whose handshake is still to come (a server's): the reader moves
        # to direct I/O once it is done and the writer is parked (see _read_loop)
        self._tls_pending = fast and self._io is None and isinstance(stream, trio.SSLStream)
        self._fast_receive = fast
        #: the DATA frame that ends h2's output, which the next message of its stream
        #: joins (fast paths only); forgotten whenever the output is taken
        self._last_frame = _h2fast.LastFrame()
        self._send_plain: Callable[[h2.connection.H2Connection, int, bytes], None] = (
            functools.partial(_h2fast.send_data, last=self._last_frame)
            if fast
            else _send_data_public
        )
        self._pending: Callable[[], int] = (
            functools.partial(_h2fast.pending_output, h2conn) if fast else self._pending_public
        )
        # output taken from h2 but not written yet: what flush_now() could not
        # write, and (public path) what was taken out to be measured
        self._held = bytearray()
        self._heard = False  # data arrived since the last eager write (see send_message)
        self._lone_event = False  # the event being handled is all its read brought
        self._clock = ConnectionClock(
            trio.current_time(),
            handshake_timeout=handshake_timeout,
            idle_timeout=idle_timeout,
            keepalive_interval=keepalive_interval,
            keepalive_timeout=keepalive_timeout,
        )
        self._streams: dict[int, OpenStream] = {}
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
        # the reader's handlers of h2 events (subclasses add theirs)
        self._dispatch: dict[type[h2.events.Event], Callable[[Any], None]] = {
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
        self._last_frame.forget()
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
        if self._writer_wakeup.task is not None:
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
        io = self._io
        held = self._held
        while True:
            self._writer_idle = False
            self._last_frame.forget()
            data = self._h2.data_to_send()
            if held:
                data = bytes(held) + data
                held.clear()
            if data or (io is not None and io.backlog):
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
            io = self._io  # the reader may have moved it to direct I/O (TLS)

    def flush_now(self, *, early: bool = False) -> None:
        """Write pending output from the calling task, if that is as good as waiting.

        Called by a task about to block. When the writer is idle and no other
        task (but the writer, woken for this very output) is runnable, nothing
        else can join this batch of output, so one non-blocking write now puts
        it on the wire a scheduler pass earlier; the writer then finds nothing
        to do. Whatever the socket does not take is left to the writer.
        ``early``: write even though other tasks may add output in this pass
        (see :data:`EARLY_WRITE`). (Fast paths only: it needs the socket's fd
        and trio's run queue.)
        """
        io = self._io
        if (
            io is None
            or self._closing
            or not self._writer_idle
            or self._held
            or (not early and _fdio.runnable() > (0 if self._writer_wakeup.task is not None else 1))
        ):
            return
        self._last_frame.forget()
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
        elif io.backlog:  # TLS: encrypted, not all written
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
        clock = self._clock
        keepalive = clock.keepalive_interval is not None
        pending = self._pending
        to_h2 = self._to_h2
        held = b""
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
                if held:  # the incomplete frame the last read ended in
                    data = held + data
                    held = b""
                try:
                    if self._fast_receive and type(data) is bytes:
                        data, held = _h2fast.receive_plain_data(
                            h2conn, data, self._data_received, to_h2
                        )
                    if data:
                        to_h2(data)
                except h2.exceptions.ProtocolError as exc:
                    # h2 has usually queued a GOAWAY (not for a bad preface); flush, close.
                    if h2conn.state_machine.state is not h2.connection.ConnectionState.CLOSED:
                        with contextlib.suppress(h2.exceptions.ProtocolError):
                            h2conn.close_connection(PROTOCOL_ERROR, b"invalid HTTP/2 input")
                    self._connection_lost(f"HTTP/2 protocol error: {exc!r}")
                    return
                if self._lost is not None:
                    return
                if io is not None and io.backlog:  # TLS: the session answered something
                    self._kick()
                elif self._tls_pending and self._writer_idle:
                    # the handshake is done (data came) and neither task is inside
                    # the SSLStream: read and write its session directly from now on
                    self._tls_pending = False
                    io = self._io = _fdio.open_io(stream, _RECEIVE_SIZE)
                if pending():
                    self._kick()
                    while pending() > 4 * HIGH_WATER and not self._closing:
                        await self._drain_lot.park()
        finally:
            self._kick()

    def _to_h2(self, data: bytes | bytearray) -> None:
        """Feed *data* to h2 and act on the events it makes (``ProtocolError``: the
        peer broke the protocol; the reader closes the connection)."""
        events = self._h2.receive_data(data)
        # a DATA frame that is all its read brought is "alone" (see
        # MessageHandler); _h2fast.receive_plain_data says so itself
        self._lone_event = len(events) == 1
        dispatch = self._dispatch
        for event in events:
            handler = dispatch.get(type(event))
            if handler is not None:
                handler(event)

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

    def _data_received(self, stream_id: int, data: bytes, flow: int, alone: bool = False) -> None:
        """Hook: DATA for ``stream_id`` (``flow`` flow-controlled bytes)."""
        raise NotImplementedError
