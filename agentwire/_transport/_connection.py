"""The streams of an HTTP/2 connection: sending, receiving, flow control, h2 events.

One :class:`Http2Connection` (an :class:`~._pump.Http2Pump`) carries the
calls of one gRPC connection. The client (``_client``) and the server
(``_server_connection``) subclass it.

Invariants (every method below keeps them):

- Outbound buffering is bounded: a sender adds DATA only while the bytes
  buffered inside ``h2`` are below ``HIGH_WATER`` (plus one frame) and only
  within the peer's flow-control windows; otherwise it waits.
- Inbound buffering is bounded: received bytes are acknowledged (batched)
  while the stream's queue of complete, untaken messages holds less than
  ``_QUEUE_LIMIT`` bytes; past that they are owed, and paid back as the
  application takes messages (as many bytes as each message taken, all of
  them once the queue is below the limit, so the peer refills as fast as the
  application drains). So a stream buffers at most ``_QUEUE_LIMIT`` + its
  window + one partial message (the decoder refuses messages larger than
  ``max_message_size``), and a message larger than the window still flows.
- Bulk and urgent messages (a stream with a ``bulk_tag``, see
  :meth:`Http2Connection.set_bulk_tag`): a bulk message is sent only while
  the stream's bytes not yet acknowledged by the peer stay within
  ``bulk_limit`` (``BULK_IN_FLIGHT``, or three quarters of a smaller peer
  window) and the output buffered is below ``HIGH_WATER``; an urgent one
  (any other) may use the whole window and buffer up to
  ``URGENT_HIGH_WATER``. So an urgent message goes on the wire at once,
  behind at most ``HIGH_WATER`` of buffered output and ``BULK_IN_FLIGHT`` of
  bulk data the peer has yet to read. A bulk message is never cut at the
  limit (a half-sent message would hold the stream): it waits for room for
  a whole frame of at most a quarter of the peer's window, which comes back
  from any peer that acknowledges once half its window is consumed (h2 and
  grpc-core do; agentwire acknowledges every 64 KiB). Received urgent
  messages are taken before the bulk ones queued, each kind in arrival order.
- A stream is in ``_streams`` from its HEADERS until its owner releases it;
  release closes it on the wire (END_STREAM both ways, else RST_STREAM) and
  pays back what it owes. Nothing is left open when the owner
  is gone, whatever the exit path (the release code is synchronous).
- A stream may have a message handler (``OpenStream.handler``), called in
  the reader task with each complete uncompressed message that arrives while the stream's
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
from collections.abc import Sequence

import h2.events
import h2.exceptions
import h2.settings
import trio
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from .._budget import CheckpointBudget
from . import _h2fast, _protocol
from ._framing import FramingError, MessageTooLargeError
from ._open_stream import OpenStream
from ._protocol import BULK_IN_FLIGHT, CANCEL, NO_ERROR, reset_status
from ._pump import EARLY_WRITE, HIGH_WATER, Http2Pump

log = logging.getLogger("agentwire.transport")

#: a stream's queued, untaken bytes above which received bytes are not acknowledged
_QUEUE_LIMIT = 1024 * 1024
#: consumed bytes acknowledged (WINDOW_UPDATE) in batches of at least this size, or of
#: ``_THROTTLED_ACK_BATCH`` while a stream's queue is over ``_QUEUE_LIMIT`` (its
#: peer then sends as fast as the application takes, and waits for each batch)
_ACK_BATCH = 64 * 1024
_THROTTLED_ACK_BATCH = 16 * 1024
#: buffered output below which urgent messages are still taken (bulk: ``HIGH_WATER``)
URGENT_HIGH_WATER = 2 * HIGH_WATER


def bulk_limit(peer_window: int) -> int:
    """The most unacknowledged bytes a stream may have for bulk messages to be sent on it,
    when the peer's stream window is ``peer_window``."""
    return min(BULK_IN_FLIGHT, peer_window - peer_window // 4)


class Http2Connection(Http2Pump):
    """The streams' side of a connection; subclasses handle headers and stream lifecycle."""

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
        super().__init__(
            stream,
            client_side=client_side,
            max_concurrent_streams=max_concurrent_streams,
            keepalive_interval=keepalive_interval,
            keepalive_timeout=keepalive_timeout,
            handshake_timeout=handshake_timeout,
            idle_timeout=idle_timeout,
        )
        self.max_message_size = max_message_size
        # received bytes not yet acknowledged, by stream id (see release_credit)
        self._unacked: dict[int, int] = {}
        self._unacked_total = 0
        self._budget = CheckpointBudget()
        # acknowledgement batches: a quarter of our stream window at most
        window = _protocol.STREAM_WINDOW
        self._ack_batch = min(_ACK_BATCH, window // 4)
        self._throttled_ack_batch = min(_THROTTLED_ACK_BATCH, window // 4)
        # the peer's stream window (its SETTINGS_INITIAL_WINDOW_SIZE) and what of it
        # bulk messages leave to the others (see set_bulk_tag)
        self._peer_window = 65535
        self._bulk_limit = self._bulk_frame = 0
        self._set_peer_window(65535)
        self._dispatch.update(
            {
                h2.events.DataReceived: self._on_data,
                h2.events.StreamEnded: self._on_stream_ended,
                h2.events.StreamReset: self._on_stream_reset,
                h2.events.WindowUpdated: self._on_window_updated,
                h2.events.RemoteSettingsChanged: self._on_settings_changed,
                h2.events.ConnectionTerminated: self._on_goaway,
            }
        )

    # -- stream operations (called from application tasks) --------------------

    def _send_limits(self, st: OpenStream, frame: bytes) -> tuple[bool, int]:
        """(whether ``frame`` is bulk, the output bound) for sending it on ``st``."""
        tag = st.bulk_tag
        if tag < 0:
            return False, HIGH_WATER
        if len(frame) > 5 and frame[5] == tag and not frame[0]:
            return True, HIGH_WATER
        return False, URGENT_HIGH_WATER

    def _set_peer_window(self, size: int) -> None:
        self._peer_window = size
        self._bulk_limit = bulk_limit(size)
        # the most of a bulk message sent at once: room for it comes back even
        # from a peer that acknowledges only once half its window is consumed
        self._bulk_frame = max(1, min(self._bulk_limit, size // 4))

    def _bulk_room(self, stream_id: int) -> int:
        """Bytes of bulk data ``stream_id`` may send now (see ``bulk_limit``)."""
        stream = self._h2.streams.get(stream_id)
        if stream is None:
            return 0
        # what the peer has not acknowledged: its window's full size less what is left
        return self._bulk_limit - (self._peer_window - stream.outbound_flow_control_window)

    async def tick(self) -> None:
        """A cheap checkpoint: always cancellable, yields every few operations."""
        if self._budget.spend():  # CheckpointBudget.checkpoint(), one frame less
            await trio.lowlevel.checkpoint()
        else:
            await trio.lowlevel.checkpoint_if_cancelled()

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
        st.urgent.clear()
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
        bulk, high_water = self._send_limits(st, frame)
        if (
            not st.closed
            and not st.local_closed
            and size <= h2conn.max_outbound_frame_size
            and self._pending() < high_water
            and size <= h2conn.local_flow_control_window(sid)
            and (not bulk or size <= self._bulk_room(sid))
        ):
            if end:
                h2conn.send_data(sid, frame, end_stream=True)
                st.local_closed = True
            else:
                self._send_plain(h2conn, sid, frame)
            if self._heard and not st.buffered and self._writer_wakeup.task is not None:
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
            if self._pending() >= high_water:
                await self._drain_lot.park()
                continue
            window = h2conn.local_flow_control_window(sid)
            frame_size = min(size - pos, h2conn.max_outbound_frame_size)
            if bulk:  # a whole frame at a time, one the limit can hold (invariants)
                window = min(window, self._bulk_room(sid))
                frame_size = min(frame_size, self._bulk_frame)
            if window <= 0 or (bulk and window < frame_size):
                await st.send_wakeup.wait()
                continue
            n = min(frame_size, window)
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
        windows and below ``HIGH_WATER``, like the fast path of
        :meth:`send_message`). False: nothing was sent (no window or buffer
        space, the stream is closed or failed, or a cancelled send left it
        mid-message); the caller falls back to :meth:`send_message`, which
        waits or raises. Synchronous: no checkpoint, no wake-up of the caller.

        ``flush``: write at once when the writer is idle and nothing else is
        runnable (see :meth:`flush_now`); otherwise the writer is woken and
        batches this with whatever else is produced in this scheduler pass, up
        to ``EARLY_WRITE`` bytes of urgent output, which are written at once.
        """
        # (st.closed or st.local_closed, without the property's call)
        if st.reset or st.local_closed or st.partial or st.error is not None or self._closing:
            return False
        # (_send_limits, without its call and tuple: ~4 per RPC)
        tag = st.bulk_tag
        bulk = tag >= 0 and len(frame) > 5 and frame[5] == tag and not frame[0]
        high_water = URGENT_HIGH_WATER if tag >= 0 and not bulk else HIGH_WATER
        pending = (
            _h2fast.try_send_data(
                self._h2,
                st.id,
                frame,
                high_water,
                self._peer_window - self._bulk_limit if bulk else None,
                self._last_frame,
            )
            if self.fast_paths
            else None
        )
        if pending is None:
            if not self._try_send_general(st, frame, bulk, high_water):
                return False
            pending = self._pending()
        elif not pending:
            return False
        wakeup = self._writer_wakeup
        if flush and wakeup.task is not None:
            self.flush_now()
            if not self._held and not self._pending():
                return True
        elif not bulk and pending >= EARLY_WRITE:
            self.flush_now(early=True)
        if wakeup.task is not None:  # (_kick, without its call: ~4 per RPC)
            wakeup.set()
        return True

    def _try_send_general(self, st: OpenStream, frame: bytes, bulk: bool, high_water: int) -> bool:
        """What :meth:`try_send_message` does past the stream's own checks, through h2."""
        h2conn = self._h2
        size = len(frame)
        if (
            size > h2conn.max_outbound_frame_size
            or self._pending() >= high_water
            or size > h2conn.local_flow_control_window(st.id)
            or (bulk and size > self._bulk_room(st.id))
        ):
            return False
        try:
            self._send_plain(h2conn, st.id, frame)
        except h2.exceptions.ProtocolError:  # pragma: no cover - state checked above
            return False
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
            if st.urgent or st.messages:
                await self.tick()
                item = self.take_nowait(st)
                if item is None:  # taken meanwhile
                    continue
                return item
            if st.error is not None:
                await trio.lowlevel.checkpoint()
                raise st.error
            if st.remote_closed:
                await self.tick()
                return None
            self.flush_now()
            await st.recv_wakeup.wait()

    def take_nowait(self, st: OpenStream) -> tuple[bytes, bool] | None:
        """The next queued message of ``st`` (urgent ones first, as
        :meth:`receive_message`) without waiting or a checkpoint, or None."""
        queue = st.urgent or st.messages
        if not queue:
            return None
        item = queue.popleft()
        self._taken(st, item[0])
        return item

    def take_urgent(self, st: OpenStream) -> tuple[bytes, bool] | None:
        """The next queued urgent (not bulk) message of ``st`` without waiting, or None."""
        if not st.urgent:
            return None
        item = st.urgent.popleft()
        self._taken(st, item[0])
        return item

    def _taken(self, st: OpenStream, payload: bytes) -> None:
        """A queued message of ``st`` was taken: acknowledge what its room allows."""
        size = len(payload) + 5
        st.queued -= size
        if st.owed:
            throttled = st.queued >= _QUEUE_LIMIT
            credit = min(st.owed, size) if throttled else st.owed
            st.owed -= credit
            self.release_credit(credit, st.id, throttled=throttled)

    def set_bulk_tag(self, st: OpenStream, tag: int | None) -> None:
        """Messages of ``st`` whose payload starts with byte ``tag`` are *bulk*.

        Bulk messages are sent only while the stream has at most
        ``bulk_limit`` bytes unacknowledged by the peer, and received ones are
        taken after the urgent ones (every other message) that are queued: on one stream, a flood of
        bulk messages neither holds back nor queues ahead of the others at
        either end. Order is kept within each kind only. Uncompressed messages
        only (a compressed one is urgent). ``None``: every message is urgent,
        in arrival order (the default).
        """
        if tag is not None and not 0 <= tag <= 255:
            raise ValueError(f"a bulk tag is one byte, 0 to 255: got {tag}")
        st.bulk_tag = -1 if tag is None else tag

    def release_credit(self, credit: int, stream_id: int, *, throttled: bool = False) -> None:
        """Acknowledge ``credit`` received bytes of ``stream_id`` to the peer.

        Acknowledgements are batched per connection up to ``_ACK_BATCH`` bytes,
        far below any window, so batching never stalls a peer.
        """
        unacked = self._unacked
        unacked[stream_id] = unacked.get(stream_id, 0) + credit
        self._unacked_total += credit
        if self._unacked_total >= (self._throttled_ack_batch if throttled else self._ack_batch):
            self._flush_acks()

    def _flush_acks(self) -> None:
        """Send the WINDOW_UPDATEs owed: one per stream credited, one for the connection.

        h2's own ``acknowledge_received_data`` would hold credit back until half
        a window was consumed (2 MiB of a stream's 4 MiB), which makes the
        peer send in bursts and stall between them; the increments are sent
        here directly instead, a batch at a time (see ``_ACK_BATCH``).
        """
        if self._lost is None and self._unacked_total:
            increment = self._h2.increment_flow_control_window
            for stream_id, credit in self._unacked.items():
                if credit:
                    # gone from h2, or closed: only the connection's window counts
                    with contextlib.suppress(KeyError, h2.exceptions.ProtocolError):
                        increment(credit, stream_id)
            with contextlib.suppress(h2.exceptions.ProtocolError):
                increment(self._unacked_total)
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
            urgent = st.urgent
            sorting = st.bulk_tag >= 0
            queued = st.queued
            handler = st.handler
            lone = alone and len(messages) == 1
            for compressed, payload in messages:
                if (
                    handler is not None
                    and not compressed
                    and not queue
                    and not urgent
                    and st.recv_wakeup.task is not None
                ):
                    try:
                        taken = handler(payload, lone)
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
                if sorting and not st.is_bulk(payload, compressed):
                    urgent.append((payload, compressed))
                else:
                    queue.append((payload, compressed))
                queued += len(payload) + 5
            st.queued = queued
            if queue or urgent:
                st.recv_wakeup.set()
                if urgent and st.urgent_hook is not None:
                    st.urgent_hook()
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
            self._set_peer_window(changed[h2.settings.SettingCodes.INITIAL_WINDOW_SIZE].new_value)
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
