"""A small HTTP/1.1 server on trio and h11 that answers GET (and HEAD) for a few paths,
and POST for others.

Enough for a Prometheus scrape endpoint and a webhook and no more: each GET
path maps to a function that renders a body from the request's ``Accept``
header; each POST path to an async handler of the whole request (its body
read first, at most ``max_body`` bytes); anything else is 404 (405 for other
methods). Bounded everywhere:

* at most ``max_connections`` connections at once (more are closed at once);
* a request's head is at most 16 KiB (431-ish: h11 refuses it, 400);
* a connection that sends nothing for ``idle_timeout`` seconds is closed,
  and so is one that takes longer than that to send a request;
* request bodies are read, at most ``max_body`` bytes of them (64 KiB by
  default; more is 413 and the connection is closed; a ``Content-Length``
  over it is refused before the body is read), and discarded unless the path
  is a POST path.

Keep-alive works as HTTP/1.1 says (h11 keeps the state). Logging goes to
``agentwire.metrics``.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping

import attrs
import h11
import trio

__all__ = ["HttpRequest", "HttpResponse", "HttpServer", "PostHandler", "Renderer", "serve_http"]

logger = logging.getLogger("agentwire.metrics")

Renderer = Callable[[str], tuple[bytes, str]]
"""``render(accept_header) -> (body, content_type)``."""


@attrs.frozen
class HttpRequest:
    """A request to a POST path: header names are lower-case; *peer* is ``host:port``."""

    path: str
    headers: list[tuple[bytes, bytes]]
    body: bytes
    peer: str


HttpResponse = tuple[int, bytes, list[tuple[bytes, bytes]]]
"""``(status, body, headers)``; without a ``content-type`` header the body is plain text."""

PostHandler = Callable[[HttpRequest], Awaitable[HttpResponse]]

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
    too_large: int = 0
    """Requests refused with 413 (body over ``max_body``)."""
    timed_out: int = 0
    """Connections closed because a request did not arrive whole within ``idle_timeout``."""

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
    post_routes: Mapping[str, PostHandler] | None = None,
    max_body: int = _MAX_BODY,
) -> None:
    """Serve *routes* (GET) and *post_routes* (POST) on ``host:port`` (0: a
    free port) until cancelled or ``close()``d."""
    listeners = await trio.open_tcp_listeners(port, host=host)
    site = _Site(routes, post_routes or {}, max_body, idle_timeout)
    try:
        with trio.CancelScope() as scope:
            server = HttpServer(host, listeners[0].socket.getsockname()[1], scope)
            async with trio.open_nursery() as nursery:
                for listener in listeners:
                    nursery.start_soon(_accept, listener, server, site, max_connections)
                task_status.started(server)
    finally:  # closed now, however it ends (a cancelled aclose() would still await)
        for listener in listeners:
            listener.socket.close()


@attrs.frozen
class _Site:
    routes: Mapping[str, Renderer]
    post_routes: Mapping[str, PostHandler]
    max_body: int
    idle_timeout: float


async def _accept(
    listener: trio.SocketListener, server: HttpServer, site: _Site, max_connections: int
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
            nursery.start_soon(_serve_connection, stream, server, site)


def _peer(stream: trio.SocketStream) -> str:
    try:
        host, port, *_ = stream.socket.getpeername()
    except (OSError, ValueError):
        return ""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


async def _serve_connection(stream: trio.SocketStream, server: HttpServer, site: _Site) -> None:
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=_MAX_HEAD)
    try:
        async with stream:
            while await _serve_one(stream, conn, server, site):
                conn.start_next_cycle()
    except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
        logger.debug("metrics: connection ended (%s)", exc)
    finally:
        server.connections -= 1


async def _serve_one(
    stream: trio.SocketStream, conn: h11.Connection, server: HttpServer, site: _Site
) -> bool:
    """Answer one request; ``True`` if the connection can take another."""
    request: h11.Request | None = None
    body = 0
    kept: list[bytes] | None = None  # the body of a request to a POST path
    started = False  # bytes of a request arrived
    complete = False  # the whole request arrived
    too_large = f"request body over {site.max_body} bytes\n".encode()
    with trio.move_on_after(site.idle_timeout):
        try:
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    data = await stream.receive_some(_READ_SIZE)
                    started = started or bool(data)
                    conn.receive_data(data)
                elif isinstance(event, h11.Request):
                    request = event
                    if _declared_length(event) > site.max_body:
                        server.too_large += 1
                        await _send(stream, conn, 413, too_large)
                        return False
                    if event.method == b"POST" and _path(event) in site.post_routes:
                        kept = []
                        if conn.they_are_waiting_for_100_continue:
                            response = h11.InformationalResponse(status_code=100, headers=[])
                            await stream.send_all(conn.send(response) or b"")
                elif isinstance(event, h11.Data):
                    body += len(event.data)
                    if body > site.max_body:
                        server.too_large += 1
                        await _send(stream, conn, 413, too_large)
                        return False
                    if kept is not None:
                        kept.append(bytes(event.data))
                elif isinstance(event, h11.EndOfMessage):
                    complete = True
                    break
                else:  # ConnectionClosed, or PAUSED after a response we sent
                    return False
        except h11.RemoteProtocolError as exc:
            if conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
                await _send(stream, conn, exc.error_status_hint, f"{exc}\n".encode())
            return False
    if request is None or not complete:  # idle or slow too long
        if started:
            server.timed_out += 1  # a request started and did not finish in time
        return False
    server.requests += 1
    if kept is not None:
        handle = site.post_routes[_path(request)]
        status, data, headers = await handle(
            HttpRequest(_path(request), list(request.headers), b"".join(kept), _peer(stream))
        )
        await _send(stream, conn, status, data, headers or None)
    else:
        await _respond(stream, conn, request, site)
    return conn.our_state is h11.DONE and conn.their_state is h11.DONE


def _path(request: h11.Request) -> str:
    return request.target.decode("ascii", "replace").partition("?")[0]


def _declared_length(request: h11.Request) -> int:
    for name, value in request.headers:
        if name == b"content-length":
            return int(value)  # h11 has checked it is a number
    return 0


async def _respond(
    stream: trio.SocketStream, conn: h11.Connection, request: h11.Request, site: _Site
) -> None:
    method = request.method.decode("ascii", "replace")
    path = _path(request)
    if path in site.post_routes:
        await _send(stream, conn, 405, b"use POST\n", [(b"allow", b"POST")])
        return
    render = site.routes.get(path)
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
