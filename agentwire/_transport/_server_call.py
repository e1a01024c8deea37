"""One call as a server handler sees it: ``ServerStream``, and the method table's entries."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any, Literal

import attrs
import trio
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from ._connection import Http2Connection
from ._framing import decompress_message, frame_message
from ._open_stream import OpenStream


class ServerOpenStream(OpenStream):
    """An open stream of the server: the call's cancel scope, and what to answer if it fires."""

    __slots__ = ("cancel_status", "scope")

    def __init__(self, stream_id: int, max_message_size: int) -> None:
        super().__init__(stream_id, max_message_size)
        self.scope = trio.CancelScope()
        # what to answer if ``scope`` is cancelled: (status, message), None = reset
        self.cancel_status: tuple[Status, str] | None = (
            Status.DEADLINE_EXCEEDED,
            "Deadline exceeded",
        )


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
        conn: Http2Connection,
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

    @property
    def peer_certificate(self) -> dict[str, Any] | None:
        """The client's verified TLS certificate (``ssl.SSLSocket.getpeercert()``'s
        dict) when the server asked for one (mutual TLS); ``None`` otherwise."""
        stream = self._conn._stream
        if not isinstance(stream, trio.SSLStream):
            return None
        certificate: dict[str, Any] | None = stream.getpeercert() or None
        return certificate

    async def receive(self) -> bytes | None:
        """The next request message; ``None`` once the client half-closed."""
        return self._payload(await self._conn.receive_message(self._st))

    def receive_nowait(self) -> bytes | None:
        """The next request message already received (see :attr:`buffered`),
        without waiting or a checkpoint; None if there is none."""
        return self._payload(self._conn.take_nowait(self._st))

    def receive_urgent_nowait(self) -> bytes | None:
        """The next request message that is not bulk (see :meth:`set_bulk_tag`)
        if one is queued, without waiting; else None."""
        return self._payload(self._conn.take_urgent(self._st))

    def _payload(self, item: tuple[bytes, bool] | None) -> bytes | None:
        if item is None:
            return None
        payload, compressed = item
        if compressed:
            return decompress_message(payload, self._encoding, self._conn.max_message_size)
        return payload

    def on_urgent(self, hook: Callable[[], object] | None) -> None:
        """Have ``hook()`` called (in the reader task, so it must not block)
        whenever request messages that are not bulk were queued; None: no more."""
        self._st.urgent_hook = hook

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

    def set_bulk_tag(self, tag: int | None) -> None:
        """Messages starting with byte ``tag`` are bulk; the others go first, both ways.

        Bulk messages leave part of the peer's flow-control window to the
        others, and received ones are taken after the others queued; order is
        kept within each kind only. ``None`` (the default): one kind, in order.
        """
        self._conn.set_bulk_tag(self._st, tag)

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
        self._st.handler = handler  # the connection offers it uncompressed messages only

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
        return self._st.buffered

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
    handler: UnaryHandler | StreamHandler


def unary(handler: UnaryHandler) -> Method:
    """A unary-unary method: one request in, one response out."""
    return Method("unary", handler)


def bidi(handler: StreamHandler) -> Method:
    """A streaming method (bidi, client- or server-streaming): the handler drives the stream."""
    return Method("bidi", handler)
