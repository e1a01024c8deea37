"""gRPC client on the shared HTTP/2 pump: channels, unary calls, bidi streams.

Invariants:

- Every call holds exactly one stream of the channel's connection and
  releases it on every exit path (the release is synchronous): a call left
  early (cancellation, exception, deadline) resets its stream with CANCEL.
- Every failure a call reports is a ``GRPCError``: the server's status, a
  reset (mapped per gRPC's HTTP/2 spec), DEADLINE_EXCEEDED for an explicit
  ``timeout``, or UNAVAILABLE once the connection is gone. Cancellation from
  the caller's own scopes propagates as ``trio.Cancelled``.
- The deadline sent as ``grpc-timeout`` is the earlier of ``timeout`` and the
  caller's effective trio deadline.
"""

from __future__ import annotations

import math
import ssl
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager

import attrs
import h2.events
import trio
from grpclib.const import Status
from grpclib.exceptions import GRPCError
from grpclib.metadata import decode_grpc_message, encode_timeout

from .._address import parse_address
from .._nursery import open_service_nursery
from .._wire import DEFAULT_MAX_MESSAGE_SIZE
from ._connection import Http2Connection
from ._framing import decompress_message, frame_message
from ._open_stream import OpenStream
from ._protocol import CANCEL, NO_ERROR, Headers, decode_headers

_USER_AGENT = "agentwire-grpc/0.1"
_MAX_TIMEOUT = 99_999_999.0  # grpc-timeout allows at most 8 digits

# gRPC's mapping of HTTP statuses (when no grpc-status is present)
_HTTP_STATUS = {
    "400": Status.INTERNAL,
    "401": Status.UNAUTHENTICATED,
    "403": Status.PERMISSION_DENIED,
    "404": Status.UNIMPLEMENTED,
    "429": Status.UNAVAILABLE,
    "502": Status.UNAVAILABLE,
    "503": Status.UNAVAILABLE,
    "504": Status.UNAVAILABLE,
}


@attrs.frozen
class ChannelStatistics:
    """A snapshot of a channel's state."""

    open_streams: int
    pending_output_bytes: int
    bytes_sent: int
    bytes_received: int
    closed: bool


def _status_of(headers: Headers) -> tuple[str | None, str | None, str | None]:
    status = message = http = None
    for name, value in headers:
        if name == "grpc-status":
            status = value
        elif name == "grpc-message":
            message = value
        elif name == ":status":
            http = value
    return status, message, http


def _metadata(headers: Headers | None) -> dict[str, str] | None:
    if headers is None:
        return None
    return {name: value for name, value in headers if not name.startswith(":")}


class ClientConnection(Http2Connection):
    """The client's side of a connection: opens streams, reads responses and trailers."""

    def __init__(
        self,
        stream: trio.abc.Stream,
        *,
        max_message_size: int,
        keepalive_interval: float | None,
        keepalive_timeout: float,
    ) -> None:
        super().__init__(
            stream,
            client_side=True,
            max_message_size=max_message_size,
            keepalive_interval=keepalive_interval,
            keepalive_timeout=keepalive_timeout,
        )
        self._dispatch[h2.events.ResponseReceived] = self._on_response
        self._dispatch[h2.events.TrailersReceived] = self._on_trailers

    async def open_stream(self, headers: Sequence[tuple[str, str]], end: bool) -> OpenStream:
        h2conn = self._h2
        if not self.settings_received.is_set():
            # Until the server's SETTINGS arrive its stream limit is unknown, and
            # a server refuses a connection that exceeds it (as grpc-core does,
            # calls wait for the server's preface).
            await self.settings_received.wait()
        while True:
            if self.lost is not None:
                raise self.lost
            if self.draining:
                raise GRPCError(Status.UNAVAILABLE, "the server is going away (GOAWAY received)")
            if len(self._streams) < h2conn.remote_settings.max_concurrent_streams:
                break
            await self._slot_lot.park()
        st = OpenStream(h2conn.get_next_available_stream_id(), self.max_message_size)
        self._add_stream(st)
        self.send_headers(st, headers, end)
        return st

    def _on_response(self, event: h2.events.ResponseReceived) -> None:
        st = self._streams.get(event.stream_id)
        if st is None:
            return
        st.headers = decode_headers(event.headers)
        if event.stream_ended:  # trailers-only response
            st.trailers = st.headers
        st.recv_wakeup.set()

    def _on_trailers(self, event: h2.events.TrailersReceived) -> None:
        st = self._streams.get(event.stream_id)
        if st is None:
            return
        st.trailers = decode_headers(event.headers)
        if _status_of(st.trailers)[0] not in (None, "0"):
            # A server that ends a call with a status of its own may do so in
            # the middle of a message it could not finish (flow control): the
            # status is the answer, the truncated message is dropped.
            st.decoder = None

    def _on_peer_reset(self, st: OpenStream, error_code: int) -> None:
        if st.trailers is None:
            super()._on_peer_reset(st, error_code)

    def _on_graceful_goaway(self, last_stream_id: int) -> None:
        for st in list(self._streams.values()):
            if st.id > last_stream_id and st.error is None:
                st.error = GRPCError(Status.UNAVAILABLE, "stream refused: the server is going away")
                st.reset = True
                st.wake()


class ClientStream:
    """One call's stream: send and receive messages (bytes).

    Use it inside ``async with channel.stream(path) as stream``. Leaving the
    block before the response has ended cancels the call (RST_STREAM CANCEL).
    """

    def __init__(self, conn: ClientConnection, st: OpenStream, compression: str | None) -> None:
        self._conn = conn
        self._st = st
        self._compression = compression
        self._checked_headers = False
        self._encoding: str | None = None
        self._finished = False

    @property
    def initial_metadata(self) -> dict[str, str] | None:
        """The response headers (no pseudo-headers), once received."""
        return _metadata(self._st.headers)

    @property
    def trailing_metadata(self) -> dict[str, str] | None:
        """The response trailers, once received."""
        return _metadata(self._st.trailers)

    async def send(self, message: bytes) -> None:
        """Send one message; waits while the peer's flow-control window is full.

        Raises the call's ``GRPCError`` if the call has failed, or
        ``trio.ClosedResourceError`` after :meth:`end` or after the response
        ended with OK.
        """
        await self._send(message, False)

    async def _send(self, message: bytes, end: bool) -> None:
        st = self._st
        if st.remote_closed and st.trailers is not None:
            self._raise_status()
            raise trio.ClosedResourceError("the call has already ended")
        try:
            await self._conn.send_message(st, frame_message(message, self._compression), end)
        except trio.ClosedResourceError:
            if st.trailers is not None:
                self._raise_status()  # the server ended the call early: say how
            raise

    def try_send(self, message: bytes, *, flush: bool = True) -> bool:
        """Send one message now if that needs no waiting; ``False`` sends nothing.

        Synchronous and never blocks: ``True`` means the message is buffered
        for the wire (it leaves in order with everything sent before), within
        the server's flow-control window and the connection's output bound.
        ``False`` (no window or buffer space, the call ended or failed): use
        :meth:`send`, which waits or raises. ``flush=False`` leaves the write
        to the connection's writer, so that a burst shares one socket write.
        """
        st = self._st
        if st.remote_closed and st.trailers is not None:
            return False
        frame = frame_message(message, self._compression)
        return self._conn.try_send_message(st, frame, flush=flush)

    def set_bulk_tag(self, tag: int | None) -> None:
        """Messages starting with byte ``tag`` are bulk; the others go first, both ways.

        Bulk messages leave part of the peer's flow-control window to the
        others, and received ones are taken after the others queued; order is
        kept within each kind only. ``None`` (the default): one kind, in order.
        """
        self._conn.set_bulk_tag(self._st, tag)

    def set_message_handler(self, handler: Callable[[bytes], bool] | None) -> None:
        """Have ``handler`` take received messages in the connection's reader task.

        While a task is waiting in :meth:`receive` with nothing queued, each
        arriving message is offered to ``handler`` first: True means it took
        the message (the waiting task is not woken), False that it is queued
        for :meth:`receive` as usual -- and so is everything after it until
        :meth:`receive` has caught up, so messages are taken in arrival order.
        The handler must not block; if it raises, the call fails (INTERNAL).
        Compressed messages and those before the response headers were checked
        by :meth:`receive` always go to :meth:`receive`. ``None`` removes it.
        """
        if handler is None:
            self._st.handler = None
            return

        def take(payload: bytes, alone: bool) -> bool:
            if not self._checked_headers:
                return False
            return handler(payload)

        self._st.handler = take

    async def end(self) -> None:
        """Half-close: tell the server no more messages will be sent."""
        await self._conn.tick()
        st = self._st
        if not st.local_closed and not st.closed:
            if st.error is not None:
                raise st.error
            self._conn.end_stream(st)

    async def receive(self) -> bytes | None:
        """The next response message; ``None`` once the call ended with OK.

        Raises ``GRPCError`` when the call ended with another status.
        """
        if self._finished:
            await trio.lowlevel.checkpoint()
            return None
        item = await self._conn.receive_message(self._st)
        if not self._checked_headers:
            self._check_headers()
        if item is None:
            self._raise_status()
            self._finished = True
            return None
        payload, compressed = item
        if compressed:
            payload = self._decompress(payload)
        return payload

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[bytes]:
        while (message := await self.receive()) is not None:
            yield message

    def _decompress(self, payload: bytes) -> bytes:
        try:
            return decompress_message(payload, self._encoding, self._conn.max_message_size)
        except GRPCError as exc:
            raise self._fail(exc.status, exc.message or "") from None

    def _fail(self, status: Status, message: str) -> GRPCError:
        st = self._st
        error = GRPCError(status, message)
        if st.error is None:
            st.error = error
        self._conn.reset_stream(st, CANCEL)
        return error

    def _check_headers(self) -> None:
        self._checked_headers = True
        headers = self._st.headers
        if headers is None:
            return
        grpc_status, _, http_status = _status_of(headers)
        content_type = ""
        for name, value in headers:
            if name == "content-type":
                content_type = value
            elif name == "grpc-encoding":
                self._encoding = value
        if grpc_status is not None and headers is self._st.trailers:
            return  # trailers-only: the status says it all
        if http_status != "200":
            status = _HTTP_STATUS.get(http_status or "", Status.UNKNOWN)
            raise self._fail(status, f"HTTP status {http_status} from the server")
        if not content_type.startswith("application/grpc"):
            raise self._fail(Status.UNKNOWN, f"unexpected content-type {content_type!r}")

    def _raise_status(self) -> None:
        trailers = self._st.trailers
        if trailers is None:
            raise GRPCError(Status.INTERNAL, "the response ended without trailers")
        grpc_status, grpc_message, http_status = _status_of(trailers)
        if grpc_status is None:
            if http_status is not None and http_status != "200":
                status = _HTTP_STATUS.get(http_status, Status.UNKNOWN)
                raise GRPCError(status, f"HTTP status {http_status} from the server")
            raise GRPCError(Status.UNKNOWN, "the response has no grpc-status")
        try:
            status = Status(int(grpc_status))
        except ValueError:
            status = Status.UNKNOWN
        if status is not Status.OK:
            message = decode_grpc_message(grpc_message) if grpc_message else None
            raise GRPCError(status, message)

    def _close(self) -> None:
        st = self._st
        if not st.closed:
            response_done = st.remote_closed and st.trailers is not None
            self._conn.reset_stream(st, NO_ERROR if response_done else CANCEL)
        self._conn.release(st)


class Channel:
    """A client connection to one gRPC server (use :func:`open_channel`)."""

    def __init__(
        self, conn: ClientConnection, authority: str, scheme: str, compression: str | None
    ) -> None:
        self._conn = conn
        self._compression = compression
        base = [(":method", "POST"), (":scheme", scheme), (":authority", authority)]
        self._base_headers = base
        self._tail_headers = [
            ("te", "trailers"),
            ("content-type", "application/grpc"),
            ("user-agent", _USER_AGENT),
            ("grpc-accept-encoding", "gzip,identity"),
        ]
        if compression is not None:
            self._tail_headers.append(("grpc-encoding", compression))

    @property
    def closed(self) -> bool:
        """True once the connection is gone (every call fails with UNAVAILABLE)."""
        return self._conn.lost is not None or self._conn.draining

    def statistics(self) -> ChannelStatistics:
        conn = self._conn
        return ChannelStatistics(
            open_streams=conn.open_streams,
            pending_output_bytes=conn.pending_output,
            bytes_sent=conn.bytes_sent,
            bytes_received=conn.bytes_received,
            closed=self.closed,
        )

    async def aclose(self) -> None:
        """Close the connection (GOAWAY); calls still running fail with UNAVAILABLE."""
        await self._conn.aclose()

    def _headers(
        self, path: str, metadata: Sequence[tuple[str, str]], deadline: float
    ) -> list[tuple[str, str]]:
        headers = [*self._base_headers, (":path", path), *self._tail_headers]
        if deadline != math.inf:
            remaining = min(max(deadline - trio.current_time(), 0.0), _MAX_TIMEOUT)
            headers.append(("grpc-timeout", encode_timeout(remaining)))
        headers.extend(metadata)
        return headers

    def _deadline(self, timeout: float | None) -> tuple[float, float]:
        """(effective deadline to send, our own deadline or inf)."""
        own = math.inf if timeout is None else trio.current_time() + timeout
        return min(own, trio.current_effective_deadline()), own

    async def unary(
        self,
        path: str,
        request: bytes,
        *,
        metadata: Sequence[tuple[str, str]] = (),
        timeout: float | None = None,  # noqa: ASYNC109 - becomes grpc-timeout on the wire
    ) -> bytes:
        """Make one unary-unary call; return the response message.

        Raises ``GRPCError`` with the server's status if it is not OK,
        DEADLINE_EXCEEDED if ``timeout`` passes first, UNAVAILABLE if the
        connection is lost. Cancellation resets the stream.
        """
        deadline, own = self._deadline(timeout)
        headers = self._headers(path, metadata, deadline)
        if own == math.inf:  # no scope of our own: the common case stays cheap
            return await self._unary(headers, request)
        with trio.CancelScope(deadline=own) as scope:
            return await self._unary(headers, request)
        assert scope.cancelled_caught
        raise GRPCError(Status.DEADLINE_EXCEEDED, "Deadline exceeded")

    async def _unary(self, headers: list[tuple[str, str]], request: bytes) -> bytes:
        conn = self._conn
        st = await conn.open_stream(headers, False)
        stream = ClientStream(conn, st, self._compression)
        try:
            await stream._send(request, True)
            response = await stream.receive()
            if response is None:
                raise GRPCError(Status.UNIMPLEMENTED, "no response message for a unary call")
            if await stream.receive() is not None:
                raise GRPCError(Status.UNIMPLEMENTED, "several response messages for a unary call")
            return response
        finally:
            stream._close()

    @asynccontextmanager
    async def stream(
        self,
        path: str,
        *,
        metadata: Sequence[tuple[str, str]] = (),
        timeout: float | None = None,  # noqa: ASYNC109 - becomes grpc-timeout on the wire
    ) -> AsyncIterator[ClientStream]:
        """Open a streaming call (bidi, or any other shape) on ``path``.

        The request headers are sent at once. Leaving the block before the
        response ended resets the stream with CANCEL. With ``timeout`` the
        block is cancelled when it passes and ``GRPCError(DEADLINE_EXCEEDED)``
        is raised.
        """
        deadline, own = self._deadline(timeout)
        with trio.CancelScope(deadline=own) as scope:
            conn = self._conn
            st = await conn.open_stream(self._headers(path, metadata, deadline), False)
            stream = ClientStream(conn, st, self._compression)
            try:
                yield stream
            finally:
                stream._close()
        if scope.cancelled_caught:
            raise GRPCError(Status.DEADLINE_EXCEEDED, "Deadline exceeded")


async def _connect(
    host: str, port: int, ssl_context: ssl.SSLContext | None, connect_timeout: float
) -> trio.abc.Stream:
    address = f"{host}:{port}"
    stream: trio.abc.Stream | None = None
    try:
        with trio.fail_after(connect_timeout):
            stream = await trio.open_tcp_stream(host, port)
            if ssl_context is not None:
                ssl_context.set_alpn_protocols(["h2"])
                stream = trio.SSLStream(stream, ssl_context, server_hostname=host)
                await stream.do_handshake()
                if stream.selected_alpn_protocol() not in (None, "h2"):
                    raise GRPCError(Status.UNAVAILABLE, f"{address} does not speak h2 (ALPN)")
        return stream
    except BaseException as exc:
        if stream is not None:
            await trio.aclose_forcefully(stream)
        if isinstance(exc, trio.TooSlowError):
            raise GRPCError(Status.UNAVAILABLE, f"timed out connecting to {address}") from None
        if isinstance(exc, OSError | trio.BrokenResourceError):
            raise GRPCError(Status.UNAVAILABLE, f"cannot connect to {address}: {exc}") from exc
        raise


@asynccontextmanager
async def open_channel(
    address: str,
    *,
    ssl_context: ssl.SSLContext | None = None,
    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
    keepalive_interval: float | None = None,
    keepalive_timeout: float = 20.0,
    connect_timeout: float = 10.0,
    compression: str | None = None,
) -> AsyncIterator[Channel]:
    """Connect to the gRPC server at ``address`` (``host:port``, ``[v6]:port``).

    Raises ``GRPCError(UNAVAILABLE)`` if the connection cannot be made. The
    channel sends no keepalive pings unless ``keepalive_interval`` is given;
    then it pings after that many idle seconds while calls are active (keep it
    >= 300 s against grpc-core servers, which punish more frequent pings) and
    declares the connection dead if no answer comes within
    ``keepalive_timeout``. ``compression="gzip"`` compresses requests.
    """
    host, port = parse_address(address)
    if compression not in (None, "gzip"):
        raise ValueError(f"unsupported compression {compression!r} (use None or 'gzip')")
    stream = await _connect(host, port, ssl_context, connect_timeout)
    async with open_channel_over_stream(
        stream,
        authority=address,
        scheme="https" if ssl_context is not None else "http",
        max_message_size=max_message_size,
        keepalive_interval=keepalive_interval,
        keepalive_timeout=keepalive_timeout,
        compression=compression,
    ) as channel:
        yield channel


@asynccontextmanager
async def open_channel_over_stream(
    stream: trio.abc.Stream,
    *,
    authority: str = "localhost",
    scheme: str = "http",
    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
    keepalive_interval: float | None = None,
    keepalive_timeout: float = 20.0,
    compression: str | None = None,
) -> AsyncIterator[Channel]:
    """A channel over an already connected byte stream (tests, custom transports)."""
    conn = ClientConnection(
        stream,
        max_message_size=max_message_size,
        keepalive_interval=keepalive_interval,
        keepalive_timeout=keepalive_timeout,
    )
    channel = Channel(conn, authority, scheme, compression)
    async with open_service_nursery() as services:
        conn.start(services)
        try:
            yield channel
            await conn.aclose()
        finally:
            conn.close()
