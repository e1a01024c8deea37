"""CloudEvents over HTTP into a gateway: ``serve_gateway(http_address=...)``.

``POST http://HOST:PORT/`` with one CloudEvent (binary or structured JSON
mode, see ``_cloudevents_http.py``) publishes it to ``TopicId(type, source)``
exactly as a worker's ``publish_message`` would: every agent subscribed to
the topic receives it, AutoGen workers included. The answers:

* 202: accepted (routed to the subscribers' queues; none may be subscribed);
* 400: a malformed event (one line says what is wrong), 415: not JSON data or
  a batch;
* 401 (with ``WWW-Authenticate: Bearer``): the gateway has an authenticator
  and the request has no valid ``Authorization: Bearer <token>``; 403: the
  token's principal may not publish to that topic type;
* 413: a body over ``max_body`` bytes (or an event over the gateway's message
  size limit);
* 503 (with ``Retry-After: 1``): the gateway cannot take the event now (some
  worker's queue is full, or it is shutting down). Nothing is buffered: the
  sender is told and may retry.

Bounded: at most ``max_connections`` connections (more are closed at once), a
request must arrive whole within ``request_timeout`` seconds (a slow client
is disconnected), bodies are read up to ``max_body`` bytes. The HTTP side is
plaintext: put it on loopback or behind a TLS-terminating proxy when tokens
travel over it.

The events enter the gateway through one internal client-id,
``agentwire-http-ingress`` (it shows in ``agentwire status``).
"""

from __future__ import annotations

import functools
import logging
from typing import Any

import attrs
import trio

from .._address import parse_address
from .._errors import AuthenticationError
from .._observability._http import HttpRequest, HttpResponse, HttpServer, serve_http
from .._proto import agent_worker_pb2 as pb
from .._security import AccessGuard, Credentials, Principal
from ._cloudevents_http import HttpRefusal, event_from_http

__all__ = ["INGRESS_CLIENT_ID", "HttpIngress", "serve_http_ingress"]

logger = logging.getLogger("agentwire.http")

INGRESS_CLIENT_ID = "agentwire-http-ingress"
_INGRESS_PRINCIPAL = Principal("agentwire-http-ingress")  # each request's own principal is checked
_TEXT = [(b"content-type", b"text/plain; charset=utf-8")]


@attrs.define(eq=False)
class HttpIngress:
    """A running ingress: ``address`` to POST to, and what it answered so far."""

    _http: HttpServer
    _scope: trio.CancelScope
    accepted: int = 0
    _refused: dict[int, int] = attrs.Factory(dict)

    @property
    def refused(self) -> dict[int, int]:
        """Refusals by HTTP status (400, 401, 403, 413, 415, 503)."""
        refused = dict(self._refused)
        if self._http.too_large:
            refused[413] = refused.get(413, 0) + self._http.too_large
        return refused

    @property
    def timed_out(self) -> int:
        """Connections closed because their request did not arrive in time."""
        return self._http.timed_out

    @property
    def address(self) -> str:
        return self._http.address

    @property
    def port(self) -> int:
        return self._http.port

    def close(self) -> None:
        """Stop serving (open connections are dropped)."""
        self._scope.cancel()


def _refuse(
    ingress: HttpIngress, status: int, reason: str, headers: tuple[tuple[bytes, bytes], ...] = ()
) -> HttpResponse:
    ingress._refused[status] = ingress._refused.get(status, 0) + 1
    logger.debug("HTTP event refused (%d): %s", status, reason)
    return status, f"{reason}\n".encode(), [*_TEXT, *headers]


async def _handle(
    ingress: HttpIngress,
    guard: AccessGuard,
    connection: Any,
    max_message_size: int,
    request: HttpRequest,
) -> HttpResponse:
    principal: Principal | None = None
    if guard.enabled:
        metadata = {
            name.decode("latin-1"): value.decode("latin-1")
            for name, value in request.headers
            if name == b"authorization"
        }
        try:
            principal = guard.authenticate(Credentials(metadata, None, request.peer))
        except AuthenticationError as exc:
            return _refuse(ingress, 401, str(exc), ((b"www-authenticate", b"Bearer"),))
    try:
        event = event_from_http(request.headers, request.body)
    except HttpRefusal as exc:
        return _refuse(ingress, exc.status, exc.reason)
    if principal is not None:
        allowed = principal.rights.publish
        if not (allowed.everything or allowed.allows(event.type)):
            return _refuse(
                ingress,
                403,
                f"principal {principal.name!r} may not publish to topic type {event.type!r} "
                f"(its 'publish' right allows: {allowed})",
            )
    data = pb.Message(cloudEvent=event).SerializeToString()
    if len(data) > max_message_size:
        return _refuse(
            ingress, 413, f"the event is {len(data)} bytes, over the gateway's {max_message_size}"
        )
    if not connection.try_send(data):
        return _refuse(
            ingress, 503, "the gateway cannot take the event now; retry", ((b"retry-after", b"1"),)
        )
    ingress.accepted += 1
    return 202, b"accepted\n", _TEXT


async def serve_http_ingress(
    hub: Any,
    guard: AccessGuard,
    address: str,
    *,
    task_status: trio.TaskStatus[HttpIngress] = trio.TASK_STATUS_IGNORED,
    max_body: int = 1024 * 1024,
    request_timeout: float = 10.0,
    max_connections: int = 64,
) -> None:
    """Accept CloudEvents over HTTP on *address* for the gateway of *hub*
    (see the module docstring) until cancelled or ``close()``d."""
    host, port = parse_address(address)
    with trio.CancelScope() as scope:
        async with hub.connect(INGRESS_CLIENT_ID) as connection, trio.open_nursery() as nursery:
            guard.claim(_INGRESS_PRINCIPAL, INGRESS_CLIENT_ID)
            ingress: HttpIngress | None = None

            async def handle(request: HttpRequest) -> HttpResponse:
                assert ingress is not None
                size = hub.config.max_message_size
                return await _handle(ingress, guard, connection, size, request)

            http: HttpServer = await nursery.start(
                functools.partial(
                    serve_http,
                    {},
                    host,
                    port,
                    post_routes={"/": handle},
                    max_body=max_body,
                    idle_timeout=request_timeout,
                    max_connections=max_connections,
                )
            )
            ingress = HttpIngress(http, scope)
            task_status.started(ingress)
            async for _ in connection.from_gateway:  # nothing is sent to it; keep it drained
                pass
            # The gateway ended the connection (shutdown): stop taking events.
            http.close()
