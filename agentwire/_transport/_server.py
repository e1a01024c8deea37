"""gRPC server on the shared HTTP/2 pump: method table, one task per stream.

Invariants:

- Every request stream gets exactly one response ending: trailers (or a
  trailers-only response) with a grpc-status, or RST_STREAM when the client
  reset it or the connection is gone. The ending is written synchronously in a
  ``finally``, so no exit path of a handler leaves a stream open.
- Every handler runs in its own task inside its connection's nursery, under a
  cancel scope that the stream's deadline, a client reset, the loss of the
  connection and the end of a shutdown's grace period cancel. A connection's
  nursery (and so ``serve_grpc``) never outlives its handlers.
- Response headers are sent lazily: on the first message, on
  ``send_initial_metadata()``, or together with the trailers.
- Limits: at most ``max_connections`` connections (more are refused with
  GOAWAY), at most ``max_concurrent_streams`` streams per connection
  (SETTINGS_MAX_CONCURRENT_STREAMS), messages up to ``max_message_size``
  (larger ones end that call with RESOURCE_EXHAUSTED).
"""

from __future__ import annotations

import errno
import logging
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager, suppress
from typing import Any, Literal

import attrs
import h2.config
import h2.connection
import h2.events
import h2.exceptions
import trio
from grpclib.const import Status
from grpclib.exceptions import GRPCError
from grpclib.metadata import decode_timeout, encode_grpc_message

from .._nursery import open_service_nursery
from .._wire import DEFAULT_MAX_MESSAGE_SIZE
from ._connection import Http2Connection
from ._framing import decompress_message, frame_message
from ._open_stream import OpenStream
from ._protocol import CANCEL, ENHANCE_YOUR_CALM, NO_ERROR, REFUSED_STREAM, decode_headers

log = logging.getLogger("agentwire.transport")

DEFAULT_MAX_CONCURRENT_STREAMS = 1000
DEFAULT_MAX_CONNECTIONS = 1000
DEFAULT_HANDSHAKE_TIMEOUT = 10.0
DEFAULT_IDLE_TIMEOUT = 300.0
DEFAULT_KEEPALIVE_TIMEOUT = 20.0
#: refused connections being told so (GOAWAY) at once; more are closed without a word
MAX_REFUSING = 64
_REFUSE_TIMEOUT = 1.0
_FINAL_FLUSH_TIMEOUT = 2.0


class ServerStream:
    """The server side of one call, handed to handlers.

    ``metadata`` holds the request headers (no pseudo-headers), ``deadline``
    the trio time by which the client wants an answer (or ``None``).
    """

    __slots__ = (
        "_compression",
        "_conn",
        "_encoding",
        "_st",
        "deadline",
        "metadata",
        "path",
        "peer",
    )

    def __init__(
        self,
        conn: ServerConnection,
        st: ServerOpenStream,
        *,
        path: str,
        metadata: Mapping[str, str],
        peer: str,
        deadline: float | None,
        encoding: str | None,
        compression: str | None,
    ) -> None:
        self._conn = conn
        self._st = st
        self.path = path
        self.metadata = metadata
        self.peer = peer
        self.deadline = deadline
        self._encoding = encoding
        self._compression = compression

    async def receive(self) -> bytes | None:
        """The next request message; ``None`` once the client half-closed."""
        item = await self._conn.receive_message(self._st)
        if item is None:
            return None
        payload, compressed = item
        if compressed:
            return decompress_message(payload, self._encoding, self._conn.max_message_size)
        return payload

    async def send(self, message: bytes) -> None:
        """Send one response message (the response headers first, if not yet sent).

        Waits while the client's flow-control window is full.
        """
        st = self._st
        if not st.headers_sent:
            self._send_headers()
        await self._conn.send_message(st, frame_message(message, self._compression))

    def try_send(self, message: bytes, *, flush: bool = True) -> bool:
        """Send one message now if that needs no waiting; ``False`` sends nothing.

        Synchronous and never blocks: ``True`` means the message is buffered
        for the wire (it leaves in order with everything sent before), within
        the client's flow-control window and the connection's output bound.
        ``False`` (no window or buffer space, response headers not sent yet,
        the call ended or failed): use :meth:`send`, which waits or raises.
        ``flush=False`` leaves the write to the connection's writer, so that
        messages produced in a burst share one socket write.
        """
        st = self._st
        if not st.headers_sent:
            return False
        return self._conn.try_send_message(
            st, frame_message(message, self._compression), flush=flush
        )

    def set_message_handler(self, handler: Callable[[bytes, bool], bool] | None) -> None:
        """Have ``handler(message, alone)`` take request messages in the reader task.

        While a task is waiting in :meth:`receive` with nothing queued, each
        arriving message is offered to ``handler`` first: True means it took
        the message (the waiting task is not woken), False that it is queued
        for :meth:`receive` as usual -- and so is everything after it until
        :meth:`receive` has caught up, so messages are taken in arrival order.
        ``alone`` is True when the message is all its socket read brought
        (nothing else is about to follow: a request/response pattern). The
        handler must not block; if it raises, the call fails (INTERNAL).
        Compressed messages always go to :meth:`receive`. ``None`` removes it.
        """
        if handler is None:
            self._st.handler = None
            return

        def take(payload: bytes, compressed: bool, alone: bool) -> bool:
            if compressed:
                return False
            return handler(payload, alone)

        self._st.handler = take

    @property
    def error(self) -> GRPCError | None:
        """Why the call ended under the handler, or ``None`` while it goes on.

        Set when the handler is cancelled because the client reset the call
        (CANCELLED) or the connection was lost (UNAVAILABLE: closed, broken,
        or "keepalive ping not acknowledged" for a frozen client), and when a
        request message was rejected (RESOURCE_EXHAUSTED, INTERNAL).
        """
        return self._st.error

    @property
    def buffered(self) -> int:
        """Complete request messages received and not yet taken by :meth:`receive`."""
        return len(self._st.messages)

    async def send_initial_metadata(self) -> None:
        """Send the response headers now (otherwise they go with the first message)."""
        await self._conn.tick()
        if not self._st.headers_sent:
            self._send_headers()

    def _send_headers(self) -> None:
        st = self._st
        if st.error is not None:
            raise st.error
        if st.closed or st.local_closed:
            raise trio.ClosedResourceError("this call has ended")
        headers = [(":status", "200"), ("content-type", "application/grpc")]
        if self._compression is not None:
            headers.append(("grpc-encoding", self._compression))
        self._conn.send_headers(st, headers, False)

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[bytes]:
        while (message := await self.receive()) is not None:
            yield message


UnaryHandler = Callable[[bytes, ServerStream], Awaitable[bytes]]
StreamHandler = Callable[[ServerStream], Awaitable[None]]


@attrs.frozen
class Method:
    """One entry of a server's method table (make it with :func:`unary` or :func:`bidi`)."""

    kind: Literal["unary", "bidi"]
    handler: Callable[..., Awaitable[Any]]


def unary(handler: UnaryHandler) -> Method:
    """A unary-unary method: one request in, one response out."""
    return Method("unary", handler)


def bidi(handler: StreamHandler) -> Method:
    """A streaming method (bidi, client- or server-streaming): the handler drives the stream."""
    return Method("bidi", handler)


@attrs.frozen
class ServerStatistics:
    """A snapshot of a server's state."""

    connections: int
    open_streams: int
    shutting_down: bool


class ServerOpenStream(OpenStream):
    __slots__ = ("cancel_status", "scope")

    def __init__(self, stream_id: int, max_message_size: int) -> None:
        super().__init__(stream_id, max_message_size)
        self.scope = trio.CancelScope()
        # what to answer if ``scope`` is cancelled: (status, message), None = reset
        self.cancel_status: tuple[Status, str] | None = (
            Status.DEADLINE_EXCEEDED,
            "Deadline exceeded",
        )


def _unwrap(exc: BaseException) -> BaseException:
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


class ServerConnection(Http2Connection):
    def __init__(
        self,
        stream: trio.abc.Stream,
        server: GrpcServer,
        peer: str,
        nursery: trio.Nursery,
    ) -> None:
        super().__init__(
            stream,
            client_side=False,
            max_message_size=server.max_message_size,
            max_concurrent_streams=server.max_concurrent_streams,
            keepalive_interval=server.keepalive_interval,
            keepalive_timeout=server.keepalive_timeout,
            handshake_timeout=server.handshake_timeout,
            idle_timeout=server.idle_timeout,
        )
        self._server = server
        self._peer = peer
        self._nursery = nursery
        self._dispatch[h2.events.RequestReceived] = self._on_request

    # -- requests ------------------------------------------------------------

    def _on_request(self, event: h2.events.RequestReceived) -> None:
        sid = event.stream_id
        if self.draining:
            self._h2.reset_stream(sid, REFUSED_STREAM)
            return
        st = ServerOpenStream(sid, self.max_message_size)
        self._add_stream(st)
        if event.stream_ended is not None:
            st.remote_closed = True
        method = path = content_type = timeout = encoding = accept = None
        metadata: dict[str, str] = {}
        for name, value in decode_headers(event.headers):
            if name[0] == ":":
                if name == ":path":
                    path = value
                elif name == ":method":
                    method = value
                continue
            if name == "content-type":
                content_type = value
            elif name == "grpc-timeout":
                timeout = value
            elif name == "grpc-encoding":
                encoding = value
            elif name == "grpc-accept-encoding":
                accept = value
            metadata[name] = value
        if method != "POST":
            self._http_error(st, "405")
            return
        if content_type is None or not content_type.startswith("application/grpc"):
            self._http_error(st, "415")
            return
        if encoding == "identity":
            encoding = None
        if encoding is not None and encoding != "gzip":
            self._finish(
                st,
                Status.UNIMPLEMENTED,
                f"unsupported grpc-encoding {encoding!r}",
                trailers_only=True,
            )
            return
        entry = self._server.methods.get(path or "")
        if entry is None:
            self._finish(st, Status.UNIMPLEMENTED, f"Method not found: {path}", trailers_only=True)
            return
        deadline = None
        if timeout is not None:
            try:
                deadline = trio.current_time() + decode_timeout(timeout)
            except ValueError:
                self._finish(
                    st, Status.INTERNAL, f"invalid grpc-timeout {timeout!r}", trailers_only=True
                )
                return
            st.scope.deadline = deadline
        compression = self._server.compression
        if compression is not None and (
            accept is None or compression not in (e.strip() for e in accept.split(","))
        ):
            compression = None
        stream = ServerStream(
            self,
            st,
            path=path or "",
            metadata=metadata,
            peer=self._peer,
            deadline=deadline,
            encoding=encoding,
            compression=compression,
        )
        self._nursery.start_soon(self._run_handler, st, entry, stream)

    def _http_error(self, st: ServerOpenStream, http_status: str) -> None:
        self.send_headers(st, [(":status", http_status)], True)
        self._finish(st, None, None)

    async def _run_handler(self, st: ServerOpenStream, entry: Method, stream: ServerStream) -> None:
        status: Status | None = None
        message: str | None = None
        try:
            with st.scope:
                if entry.kind == "unary":
                    await self._call_unary(entry.handler, stream)
                else:
                    await entry.handler(stream)
            if st.scope.cancelled_caught:
                if st.cancel_status is not None:
                    status, message = st.cancel_status
            else:
                status = Status.OK
        except Exception as exc:
            inner = _unwrap(exc)
            if isinstance(inner, GRPCError):
                status, message = inner.status, inner.message
            else:
                log.warning("handler for %s failed", stream.path, exc_info=exc)
                status, message = Status.UNKNOWN, f"Unexpected {type(inner)}: {inner}"
        finally:
            self._finish(st, status, message)

    @staticmethod
    async def _call_unary(handler: Callable[..., Awaitable[Any]], stream: ServerStream) -> None:
        request = await stream.receive()
        if request is None:
            raise GRPCError(Status.INTERNAL, "no request message for a unary call")
        if await stream.receive() is not None:
            raise GRPCError(Status.INTERNAL, "several request messages for a unary call")
        response = await handler(request, stream)
        if not isinstance(response, bytes | bytearray | memoryview):
            raise TypeError(f"unary handler returned {type(response).__name__}, not bytes")
        await stream.send(bytes(response))

    def _finish(
        self,
        st: ServerOpenStream,
        status: Status | None,
        message: str | None,
        *,
        trailers_only: bool = False,
    ) -> None:
        """End the call: trailers with ``status`` (or a reset when None), then forget it."""
        if status is not None:
            self._end_with_status(st, status, message, trailers_only=trailers_only)
        self.release(st)
        self.flush_now()

    def _end_with_status(
        self,
        st: ServerOpenStream,
        status: Status,
        message: str | None,
        *,
        trailers_only: bool = False,
    ) -> None:
        """Send the trailers (trailers-only if nothing was sent), unless the call has ended.

        A half-sent message (its rest held back by flow control, or its send
        cancelled) is abandoned: the trailers still go, since HEADERS are not
        flow-controlled, and the client reports this status after the
        truncated message -- unless the status is OK, which cannot follow a
        truncated message: the stream is reset instead. A client still
        sending gets RST_STREAM(NO_ERROR) after the trailers.
        """
        if st.closed or st.local_closed or self.lost is not None:
            return
        if st.partial:
            if status is Status.OK:
                self.reset_stream(st, CANCEL)
                return
            st.partial = False
        trailers = [("grpc-status", str(status.value))]
        if message:
            trailers.append(("grpc-message", encode_grpc_message(message)))
        try:
            if not st.headers_sent or trailers_only:
                headers = [(":status", "200"), ("content-type", "application/grpc")]
                self.send_headers(st, headers + trailers, True)
            else:
                self.send_headers(st, trailers, True)
            if not st.remote_closed:
                self.reset_stream(st, NO_ERROR)
        except h2.exceptions.ProtocolError:
            log.debug("could not end stream %d", st.id, exc_info=True)

    # -- stream events ---------------------------------------------------------

    def _on_stream_error(self, st: OpenStream, status: Status, message: str) -> None:
        assert isinstance(st, ServerOpenStream)
        st.error = GRPCError(status, message)
        # answer at once; the handler is cancelled and finds the call ended
        st.cancel_status = None
        st.scope.cancel()
        self._end_with_status(st, status, message)

    def _on_peer_reset(self, st: OpenStream, error_code: int) -> None:
        assert isinstance(st, ServerOpenStream)
        if st.error is None:
            st.error = GRPCError(Status.CANCELLED, "the client cancelled the call")
        st.cancel_status = None
        st.scope.cancel()

    def _on_stream_lost(self, st: OpenStream) -> None:
        assert isinstance(st, ServerOpenStream)
        st.cancel_status = None
        st.scope.cancel()

    def _on_graceful_goaway(self, last_stream_id: int) -> None:
        pass  # the client goes away; its open calls may still finish

    # -- shutdown --------------------------------------------------------------

    def begin_shutdown(self) -> None:
        """Send GOAWAY: streams already received go on, new ones are refused."""
        if self.draining or self.lost is not None:
            return
        self.draining = True
        self._h2.send_graceful_goaway(self._h2.highest_inbound_stream_id)
        self._kick()
        if not self._streams:
            self.close()

    def cancel_handlers(self) -> None:
        for st in list(self._streams.values()):
            assert isinstance(st, ServerOpenStream)
            if st.cancel_status is not None:
                st.cancel_status = (Status.UNAVAILABLE, "Server shutting down")
            st.scope.cancel()


def _peer_name(stream: trio.abc.Stream) -> str:
    inner: Any = stream
    while isinstance(inner, trio.SSLStream):
        inner = inner.transport_stream
    sock = getattr(inner, "socket", None)
    if sock is None:
        return "unknown"
    try:
        address = sock.getpeername()
    except OSError:
        return "unknown"
    if isinstance(address, tuple):
        host, port = address[0], address[1]
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return str(address)


class GrpcServer:
    """A running gRPC server (from :func:`serve_grpc` or :func:`open_grpc_server`)."""

    def __init__(
        self,
        methods: Mapping[str, Method],
        host: str = "",
        *,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
        max_concurrent_streams: int = DEFAULT_MAX_CONCURRENT_STREAMS,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        grace_period: float = 5.0,
        keepalive_interval: float | None = None,
        keepalive_timeout: float = DEFAULT_KEEPALIVE_TIMEOUT,
        handshake_timeout: float | None = DEFAULT_HANDSHAKE_TIMEOUT,
        idle_timeout: float | None = DEFAULT_IDLE_TIMEOUT,
        compression: str | None = None,
    ) -> None:
        self.methods = dict(methods)
        self.host = host
        self.port = 0
        self.max_message_size = max_message_size
        self.max_concurrent_streams = max_concurrent_streams
        self.max_connections = max_connections
        self.grace_period = grace_period
        self.keepalive_interval = keepalive_interval
        self.keepalive_timeout = keepalive_timeout
        self.handshake_timeout = handshake_timeout
        self.idle_timeout = idle_timeout
        self.compression = compression
        self._refusing = 0
        self._connections: set[ServerConnection] = set()
        self._connections_changed = trio.lowlevel.ParkingLot()
        self._accept_scope = trio.CancelScope()
        self._shutting_down = False
        self._stopped = trio.Event()
        self._nursery: trio.Nursery | None = None

    @property
    def address(self) -> str:
        """``host:port`` to connect to (IPv6 hosts in brackets)."""
        host = self.host
        return f"[{host}]:{self.port}" if ":" in host else f"{host}:{self.port}"

    def statistics(self) -> ServerStatistics:
        return ServerStatistics(
            connections=len(self._connections),
            open_streams=sum(conn.open_streams for conn in self._connections),
            shutting_down=self._shutting_down,
        )

    async def shutdown(self, grace: float | None = None) -> None:
        """Stop accepting, send GOAWAY, let calls finish for ``grace`` seconds, then cancel.

        Calls still running after the grace period end with UNAVAILABLE.
        Returns once every connection is closed and the server has stopped.
        """
        if grace is None:
            grace = self.grace_period
        self._shutting_down = True
        self._accept_scope.cancel()
        for conn in list(self._connections):
            conn.begin_shutdown()
        with trio.move_on_after(grace):
            await self._wait_no_connections()
        # Cancelled handlers answer UNAVAILABLE; each connection closes itself
        # (GOAWAY, flush) once its last stream has ended.
        for conn in list(self._connections):
            conn.cancel_handlers()
        with trio.move_on_after(_FINAL_FLUSH_TIMEOUT):
            await self._wait_no_connections()
        for conn in list(self._connections):
            conn.close()
        with trio.move_on_after(_FINAL_FLUSH_TIMEOUT):
            await self._wait_no_connections()
        if self._connections and self._nursery is not None:
            self._nursery.cancel_scope.cancel()
        await self._stopped.wait()

    async def _wait_no_connections(self) -> None:
        while self._connections:
            await self._connections_changed.park()

    async def _accept_loop(self, listener: trio.abc.Listener[Any]) -> None:
        assert self._nursery is not None
        nursery = self._nursery
        try:
            with self._accept_scope:
                while True:
                    try:
                        stream = await listener.accept()
                    except OSError as exc:
                        if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS):
                            log.error("accept failed (%s); backing off", exc)
                            await trio.sleep(0.1)
                            continue
                        raise
                    if len(self._connections) < self.max_connections:
                        nursery.start_soon(self._serve_connection, stream)
                    elif self._refusing < MAX_REFUSING:
                        self._refusing += 1
                        nursery.start_soon(self._refuse, stream)
                    else:
                        log.debug("closing a connection over the limit without GOAWAY")
                        await trio.aclose_forcefully(stream)
        finally:
            await trio.aclose_forcefully(listener)

    async def _refuse(self, stream: trio.abc.Stream) -> None:
        try:
            log.warning("refusing a connection: %d connections open", len(self._connections))
            conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
            conn.initiate_connection()
            conn.close_connection(ENHANCE_YOUR_CALM, b"too many connections")
            with trio.move_on_after(_REFUSE_TIMEOUT):
                with suppress(trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                    await stream.send_all(conn.data_to_send())
            await trio.aclose_forcefully(stream)
        finally:
            self._refusing -= 1

    async def serve_connection(self, stream: trio.abc.Stream) -> None:
        """Serve one already accepted byte stream (tests, custom listeners)."""
        await self._serve_connection(stream)

    async def _serve_connection(self, stream: trio.abc.Stream) -> None:
        conn: ServerConnection | None = None
        try:
            async with trio.open_nursery() as nursery:
                conn = ServerConnection(stream, self, _peer_name(stream), nursery)
                self._connections.add(conn)
                if self._shutting_down:
                    conn.begin_shutdown()
                conn.start(nursery)
        finally:
            if conn is not None:
                self._connections.discard(conn)
            self._connections_changed.unpark_all()


async def _open_listeners(host: str, port: int) -> list[trio.SocketListener]:
    bind_host = host or None
    listeners = await trio.open_tcp_listeners(port, host=bind_host)
    if port == 0 and len(listeners) > 1:
        # every address must share the one port we report
        chosen = listeners[0].socket.getsockname()[1]
        others, listeners = listeners[1:], listeners[:1]
        for other in others:
            address = other.socket.getsockname()[0]
            await other.aclose()
            try:
                listeners += await trio.open_tcp_listeners(chosen, host=address)
            except OSError:
                log.debug("could not also listen on %s:%d", address, chosen)
    return listeners


async def serve_grpc(
    methods: Mapping[str, Method],
    host: str,
    port: int,
    *,
    task_status: trio.TaskStatus[GrpcServer] = trio.TASK_STATUS_IGNORED,
    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
    max_concurrent_streams: int = DEFAULT_MAX_CONCURRENT_STREAMS,
    max_connections: int = DEFAULT_MAX_CONNECTIONS,
    grace_period: float = 5.0,
    ssl_context: ssl.SSLContext | None = None,
    keepalive_interval: float | None = None,
    keepalive_timeout: float = DEFAULT_KEEPALIVE_TIMEOUT,
    handshake_timeout: float | None = DEFAULT_HANDSHAKE_TIMEOUT,
    idle_timeout: float | None = DEFAULT_IDLE_TIMEOUT,
    compression: str | None = None,
) -> None:
    """Serve ``methods`` (path -> :class:`Method`) on ``host:port`` until shut down.

    ``task_status.started(server)`` reports the :class:`GrpcServer` once
    listening (``port=0`` picks a free port; see ``server.port``). Returns
    after ``server.shutdown()``; cancelling it stops everything at once.
    ``compression="gzip"`` compresses responses for clients that accept it.

    Connections are bounded in number and in time: at most
    ``max_connections`` are served (more get GOAWAY "too many connections";
    while ``MAX_REFUSING`` refusals are being written, further ones are
    closed without a word). A client must complete the HTTP/2 handshake
    (preface and SETTINGS) within ``handshake_timeout`` seconds, and a
    connection without calls for ``idle_timeout`` seconds is closed with
    GOAWAY (grpc clients reconnect as needed); ``None`` disables either.
    With ``keepalive_interval``, a connection with calls open that has been
    silent that long is sent a PING; if nothing arrives within
    ``keepalive_timeout`` the connection is dropped: its calls' handlers are
    cancelled and ``ServerStream.error`` says why (a frozen client).
    """
    if compression not in (None, "gzip"):
        raise ValueError(f"unsupported compression {compression!r} (use None or 'gzip')")
    listeners: list[Any] = list(await _open_listeners(host, port))
    server = GrpcServer(
        methods,
        host,
        max_message_size=max_message_size,
        max_concurrent_streams=max_concurrent_streams,
        max_connections=max_connections,
        grace_period=grace_period,
        keepalive_interval=keepalive_interval,
        keepalive_timeout=keepalive_timeout,
        handshake_timeout=handshake_timeout,
        idle_timeout=idle_timeout,
        compression=compression,
    )
    server.port = listeners[0].socket.getsockname()[1]
    if ssl_context is not None:
        ssl_context.set_alpn_protocols(["h2"])
        listeners = [trio.SSLListener(listener, ssl_context) for listener in listeners]
    try:
        async with trio.open_nursery() as nursery:
            server._nursery = nursery
            for listener in listeners:
                nursery.start_soon(server._accept_loop, listener)
            task_status.started(server)
    finally:
        server._shutting_down = True
        server._stopped.set()


@asynccontextmanager
async def open_grpc_server(
    methods: Mapping[str, Method], host: str, port: int, **kwargs: Any
) -> AsyncIterator[GrpcServer]:
    """Run :func:`serve_grpc` for the duration of the block.

    Leaving the block normally shuts down gracefully (``grace_period``);
    leaving it with an exception or cancellation stops the server at once.
    """
    async with open_service_nursery() as services:
        server: GrpcServer = await services.start(_serve_kw, methods, host, port, kwargs)
        yield server
        await server.shutdown()


async def _serve_kw(
    methods: Mapping[str, Method],
    host: str,
    port: int,
    kwargs: dict[str, Any],
    *,
    task_status: trio.TaskStatus[GrpcServer] = trio.TASK_STATUS_IGNORED,
) -> None:
    await serve_grpc(methods, host, port, task_status=task_status, **kwargs)
