"""The ``agents.AgentRpc`` service: gRPC calls in, hub operations out.

Status codes and messages follow AutoGen 0.7.5's Python host:

* every call needs a ``client-id`` header: INVALID_ARGUMENT
  "client-id metadata not found." otherwise;
* RegisterAgent / AddSubscription / RemoveSubscription / GetSubscriptions
  answer what the router decides (see ``_routing.py`` for the messages);
* a request body that is not a valid protobuf message: INVALID_ARGUMENT.

OpenChannel and OpenControlChannel pump bytes between the HTTP/2 stream and a
hub :class:`~._hub.Connection`. Unlike AutoGen's host we send the response
headers as soon as the stream is attached (AutoGen sends none until its first
message); AutoGen's worker does not care, and clients that wait for headers
are not left hanging. A client half-close means the client is leaving: its
state is dropped and the call ends OK once the queue has drained (AutoGen's
host ignores half-close and waits for a cancel).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TypeVar

import trio
from google.protobuf.message import DecodeError, Message
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from .._proto import agent_worker_pb2 as pb
from .._transport import Method, ServerStream, bidi, unary
from .._wire import SERVICE_PREFIX
from ._hub import Connection, GatewayHub
from ._routing import ConnKind, RoutingError

__all__ = ["AgentRpcService"]

logger = logging.getLogger("agentwire.gateway")


def _client_id(stream: ServerStream) -> str:
    client_id = stream.metadata.get("client-id")
    if client_id is None:
        raise GRPCError(Status.INVALID_ARGUMENT, "client-id metadata not found.")
    return client_id


_M = TypeVar("_M", bound=Message)
_R = TypeVar("_R", bound=Message)


def _parse(cls: type[_M], data: bytes) -> _M:
    try:
        return cls.FromString(data)
    except DecodeError as exc:
        raise GRPCError(
            Status.INVALID_ARGUMENT, f"malformed {cls.DESCRIPTOR.full_name} ({exc})"
        ) from None


def _unary_call(
    request_type: type[_M],
    handle: Callable[[str, _M], _R | None],
    response_type: type[_R],
) -> Method:
    """A unary method: check the client-id, parse the request, let *handle*
    act on it (a RoutingError ends the call with its status), answer with
    what *handle* returned, or an empty *response_type*."""

    async def call(data: bytes, stream: ServerStream) -> bytes:
        client_id = _client_id(stream)
        request = _parse(request_type, data)
        try:
            response = handle(client_id, request)
        except RoutingError as exc:
            raise GRPCError(exc.status, exc.message) from None
        return (response_type() if response is None else response).SerializeToString()

    return unary(call)


class AgentRpcService:
    """The method table of one gateway (``methods()``), backed by *hub*."""

    def __init__(self, hub: GatewayHub) -> None:
        self._hub = hub

    def methods(self) -> dict[str, Method]:
        hub = self._hub
        return {
            SERVICE_PREFIX + "OpenChannel": bidi(self.open_channel),
            SERVICE_PREFIX + "OpenControlChannel": bidi(self.open_control_channel),
            SERVICE_PREFIX + "RegisterAgent": _unary_call(
                pb.RegisterAgentTypeRequest,
                lambda client_id, request: hub.register_agent(client_id, request.type),
                pb.RegisterAgentTypeResponse,
            ),
            SERVICE_PREFIX + "AddSubscription": _unary_call(
                pb.AddSubscriptionRequest,
                lambda client_id, request: hub.add_subscription(client_id, request.subscription),
                pb.AddSubscriptionResponse,
            ),
            SERVICE_PREFIX + "RemoveSubscription": _unary_call(
                pb.RemoveSubscriptionRequest,
                lambda client_id, request: hub.remove_subscription(client_id, request.id),
                pb.RemoveSubscriptionResponse,
            ),
            SERVICE_PREFIX + "GetSubscriptions": _unary_call(
                pb.GetSubscriptionsRequest,
                lambda _client_id, _request: pb.GetSubscriptionsResponse(
                    subscriptions=hub.subscriptions()
                ),
                pb.GetSubscriptionsResponse,
            ),
        }

    # ------------------------------------------------------------ streams

    async def open_channel(self, stream: ServerStream) -> None:
        await self._serve_stream(stream, ConnKind.DATA)

    async def open_control_channel(self, stream: ServerStream) -> None:
        await self._serve_stream(stream, ConnKind.CONTROL)

    async def _serve_stream(self, stream: ServerStream, kind: ConnKind) -> None:
        client_id = _client_id(stream)
        try:
            async with self._hub.connect(client_id, kind) as conn:
                logger.debug(
                    "client %s opened a %s channel (%s)", client_id, kind.value, stream.peer
                )
                await stream.send_initial_metadata()
                await _pump(stream, conn)
        except RoutingError as exc:
            raise GRPCError(exc.status, exc.message) from None
        if conn.close_reason is not None:
            raise GRPCError(*conn.close_reason)


async def _pump(stream: ServerStream, conn: Connection) -> None:
    """Move messages both ways until either side ends the stream."""
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_pump_in, stream, conn)
        nursery.start_soon(_abandon_when_discarded, conn, nursery.cancel_scope)
        conn.enable_direct(stream.try_send)
        # A message that arrived alone (request/response traffic) is routed in
        # the transport's reader task when that cannot wait: no wake-up of
        # _pump_in. Bursts still go through _pump_in, which batches better.
        stream.set_message_handler(lambda data, alone: alone and conn.try_send(data))
        async for data in conn.from_gateway:
            await stream.send(data)
            conn.message_sent()
        nursery.cancel_scope.cancel()


async def _pump_in(stream: ServerStream, conn: Connection) -> None:
    # A GRPCError from receive (e.g. an oversized message) propagates and ends
    # the call with its status; leaving the hub connection cleans up.
    try:
        while (data := await stream.receive()) is not None:
            await conn.send(data, more=stream.buffered > 0)
        conn.leave()  # half-close: the client is leaving
    except trio.BrokenResourceError:
        pass  # the gateway ended this connection; the outbound side reports why


async def _abandon_when_discarded(conn: Connection, scope: trio.CancelScope) -> None:
    """A slow or superseded client gets no more sends, even mid-flow-control."""
    await conn.wait_ended()
    if conn.discarded:
        scope.cancel()
