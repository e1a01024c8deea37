"""A small HTTP/1.1 server on trio and h11 that answers GET (and HEAD) for a few paths.

Enough for a Prometheus scrape endpoint and no more: each path maps to a
function that renders a body from the request's ``Accept`` header; anything
else is 404 (405 for other methods). Bounded everywhere:

* at most ``max_connections`` connections at once (more are closed at once);
* a request's head is at most 16 KiB (431-ish: h11 refuses it, 400);
* a connection that sends nothing for ``idle_timeout`` seconds is closed,
  and so is one that takes longer than that to send a request;
* request bodies are read and discarded, at most 64 KiB of them.

Keep-alive works as HTTP/1.1 says (h11 keeps the state). Logging goes to
``agentwire.metrics``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping

import attrs
import h11
import trio

__all__ = ["HttpServer", "Renderer", "serve_http"]

logger = logging.getLogger("agentwire.metrics")

Renderer = Callable[[str], tuple[bytes, str]]
"""``render(accept_header) -> (body, content_type)``."""

_MAX_HEAD = 16 * 1024
_MAX_BODY = 64 * 1024
_READ_SIZE = 16 * 1024


@attrs.define(eq=False)
class HttpServer:
    """A running :func:`serve_http` (``address`` is ``host:port`` to connect to)."""

    host: str
    port: int
    _cancel_scope: trio.CancelScope
    connections: int = 0
    requests: int = 0

    @property
    def address(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    def close(self) -> None:
        """Stop serving (open connections are dropped)."""
        self._cancel_scope.cancel()


async def serve_http(
    routes: Mapping[str, Renderer],
    host: str,
    port: int,
    *,
    task_status: trio.TaskStatus[HttpServer] = trio.TASK_STATUS_IGNORED,
    max_connections: int = 16,
    idle_timeout: float = 30.0,
) -> None:
    """Serve *routes* on ``host:port`` (0: a free port) until cancelled or ``close()``d."""
    listeners = await trio.open_tcp_listeners(port, host=host)
    try:
        with trio.CancelScope() as scope:
            server = HttpServer(host, listeners[0].socket.getsockname()[1], scope)
            async with trio.open_nursery() as nursery:
                for listener in listeners:
                    nursery.start_soon(
                        _accept, listener, server, routes, max_connections, idle_timeout
                    )
                task_status.started(server)
    finally:  # closed now, however it ends (a cancelled aclose() would still await)
        for listener in listeners:
            listener.socket.close()


async def _accept(
    listener: trio.SocketListener,
    server: HttpServer,
    routes: Mapping[str, Renderer],
    max_connections: int,
    idle_timeout: float,
) -> None:
    async with trio.open_nursery() as nursery:
        while True:
            stream = await listener.accept()
            if server.connections >= max_connections:
                logger.warning(
                    "metrics: %d connections already, closing a new one", max_connections
                )
                await stream.aclose()
                continue
            server.connections += 1
            nursery.start_soon(_serve_connection, stream, server, routes, idle_timeout)


async def _serve_connection(
    stream: trio.SocketStream,
    server: HttpServer,
    routes: Mapping[str, Renderer],
    idle_timeout: float,
) -> None:
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=_MAX_HEAD)
    try:
        async with stream:
            while await _serve_one(stream, conn, server, routes, idle_timeout):
                conn.start_next_cycle()
    except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
        logger.debug("metrics: connection ended (%s)", exc)
    finally:
        server.connections -= 1


async def _serve_one(
    stream: trio.SocketStream,
    conn: h11.Connection,
    server: HttpServer,
    routes: Mapping[str, Renderer],
    idle_timeout: float,
) -> bool:
    """Answer one request; ``True`` if the connection can take another."""
    request: h11.Request | None = None
    body = 0
    with trio.move_on_after(idle_timeout):
        try:
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    conn.receive_data(await stream.receive_some(_READ_SIZE))
                elif isinstance(event, h11.Request):
                    request = event
                elif isinstance(event, h11.Data):
                    body += len(event.data)
                    if body > _MAX_BODY:
                        await _send(stream, conn, 413, b"request body too large\n")
                        return False
                elif isinstance(event, h11.EndOfMessage):
                    break
                else:  # ConnectionClosed, or PAUSED after a response we sent
                    return False
        except h11.RemoteProtocolError as exc:
            if conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
                await _send(stream, conn, exc.error_status_hint, f"{exc}\n".encode())
            return False
    if request is None:  # idle too long
        return False
    server.requests += 1
    await _respond(stream, conn, request, routes)
    return conn.our_state is h11.DONE and conn.their_state is h11.DONE


async def _respond(
    stream: trio.SocketStream,
    conn: h11.Connection,
    request: h11.Request,
    routes: Mapping[str, Renderer],
) -> None:
    method = request.method.decode("ascii", "replace")
    path = request.target.decode("ascii", "replace").partition("?")[0]
    render = routes.get(path)
    if render is None:
        await _send(stream, conn, 404, f"no such path: {path}\n".encode())
        return
    if method not in ("GET", "HEAD"):
        await _send(stream, conn, 405, b"use GET\n", [(b"allow", b"GET, HEAD")])
        return
    accept = ""
    for name, value in request.headers:
        if name == b"accept":
            accept = value.decode("latin-1")
    body, content_type = render(accept)
    await _send(
        stream,
        conn,
        200,
        body,
        [(b"content-type", content_type.encode("latin-1"))],
        head=method == "HEAD",
    )


async def _send(
    stream: trio.SocketStream,
    conn: h11.Connection,
    status: int,
    body: bytes,
    headers: list[tuple[bytes, bytes]] | None = None,
    *,
    head: bool = False,
) -> None:
    all_headers = [
        (b"content-length", str(len(body)).encode("ascii")),
        *(headers or [(b"content-type", b"text/plain; charset=utf-8")]),
    ]
    events: list[h11.Event] = [h11.Response(status_code=status, headers=all_headers)]
    if not head:
        events.append(h11.Data(data=body))
    events.append(h11.EndOfMessage())
    await stream.send_all(b"".join(conn.send(event) or b"" for event in events))
