"""A server's HTTP/2 connection: requests become calls, one handler task per stream.

Invariants:

- Every request stream gets exactly one response ending: trailers (or a
  trailers-only response) with a grpc-status, or RST_STREAM when the client
  reset it or the connection is gone. The ending is written synchronously in a
  ``finally``, so no exit path of a handler leaves a stream open.
- Every handler runs in its own task inside its connection's nursery, under a
  cancel scope that the stream's deadline, a client reset, the loss of the
  connection and the end of a shutdown's grace period cancel. A connection's
  nursery (and so ``serve_grpc``) never outlives its handlers.
- A status the handler chose reaches the client whenever the connection
  lives: trailers are not flow-controlled, so they go out even when a
  half-sent message has to be abandoned (only OK then becomes a reset).
- Response headers are sent lazily: on the first message, on
  ``send_initial_metadata()``, or together with the trailers.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, cast

import h2.events
import h2.exceptions
import trio
from grpclib.const import Status
from grpclib.exceptions import GRPCError
from grpclib.metadata import decode_timeout, encode_grpc_message

from ._connection import Http2Connection
from ._open_stream import OpenStream
from ._protocol import CANCEL, NO_ERROR, REFUSED_STREAM, decode_headers
from ._server_call import Method, ServerOpenStream, ServerStream, StreamHandler, UnaryHandler

if TYPE_CHECKING:
    from ._server import GrpcServer

log = logging.getLogger("agentwire.transport")


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
                    await self._call_unary(cast(UnaryHandler, entry.handler), stream)
                else:
                    await cast(StreamHandler, entry.handler)(stream)
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
    async def _call_unary(handler: UnaryHandler, stream: ServerStream) -> None:
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


def peer_name(stream: trio.abc.Stream) -> str:
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
