"""gRPC server: listeners, connection limits, graceful shutdown.

Invariants:

- Limits: at most ``max_connections`` connections (more are refused with
  GOAWAY, at most ``MAX_REFUSING`` refusals being written at a time, further
  ones closed at once), at most ``max_concurrent_streams`` streams per
  connection (SETTINGS_MAX_CONCURRENT_STREAMS), messages up to
  ``max_message_size`` (larger ones end that call with RESOURCE_EXHAUSTED).
- No connection holds a slot forever: the handshake must complete within
  ``handshake_timeout``, a connection without calls closes after
  ``idle_timeout``, and with keepalive on a silent one is probed and dropped.
- ``shutdown`` ends: GOAWAY, a grace period for running calls, then their
  cancellation (UNAVAILABLE), then the connections' close.
"""

from __future__ import annotations

import errno
import logging
import ssl
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager, suppress
from typing import Any

import attrs
import h2.config
import h2.connection
import trio

from .._nursery import open_service_nursery
from .._wire import DEFAULT_MAX_MESSAGE_SIZE
from ._protocol import ENHANCE_YOUR_CALM
from ._server_call import Method
from ._server_connection import ServerConnection, peer_name

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


@attrs.frozen
class ServerStatistics:
    """A snapshot of a server's state."""

    connections: int
    open_streams: int
    shutting_down: bool


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

    async def _accept_loop(self, listener: trio.abc.Listener[trio.abc.Stream]) -> None:
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
                conn = ServerConnection(stream, self, peer_name(stream), nursery)
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
    sockets = await _open_listeners(host, port)
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
    server.port = sockets[0].socket.getsockname()[1]
    listeners: list[trio.abc.Listener[trio.abc.Stream]] = list(sockets)
    if ssl_context is not None:
        ssl_context.set_alpn_protocols(["h2"])
        listeners = [trio.SSLListener(listener, ssl_context) for listener in sockets]
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
