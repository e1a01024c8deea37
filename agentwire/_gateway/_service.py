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
from typing import TypeVar

import trio
from google.protobuf.message import DecodeError, Message
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from .._proto import agent_worker_pb2 as pb
from .._transport import Method, ServerStream, bidi, unary
from ._hub import Connection, GatewayHub
from ._routing import ConnKind, RoutingError

__all__ = ["AgentRpcService"]

logger = logging.getLogger("agentwire.gateway")

_PREFIX = "/agents.AgentRpc/"


def _client_id(stream: ServerStream) -> str:
    client_id = stream.metadata.get("client-id")
    if client_id is None:
        raise GRPCError(Status.INVALID_ARGUMENT, "client-id metadata not found.")
    return client_id


_M = TypeVar("_M", bound=Message)


def _parse(cls: type[_M], data: bytes) -> _M:
    try:
        return cls.FromString(data)
    except DecodeError as exc:
        raise GRPCError(
            Status.INVALID_ARGUMENT, f"malformed {cls.DESCRIPTOR.full_name} ({exc})"
        ) from None


class AgentRpcService:
    """The method table of one gateway (``methods()``), backed by *hub*."""

    def __init__(self, hub: GatewayHub) -> None:
        self._hub = hub

    def methods(self) -> dict[str, Method]:
        return {
            _PREFIX + "OpenChannel": bidi(self.open_channel),
            _PREFIX + "OpenControlChannel": bidi(self.open_control_channel),
            _PREFIX + "RegisterAgent": unary(self.register_agent),
            _PREFIX + "AddSubscription": unary(self.add_subscription),
            _PREFIX + "RemoveSubscription": unary(self.remove_subscription),
            _PREFIX + "GetSubscriptions": unary(self.get_subscriptions),
        }

    # ------------------------------------------------------------ unary

    async def register_agent(self, data: bytes, stream: ServerStream) -> bytes:
        client_id = _client_id(stream)
        request = _parse(pb.RegisterAgentTypeRequest, data)
        try:
            self._hub.register_agent(client_id, request.type)
        except RoutingError as exc:
            raise GRPCError(exc.status, exc.message) from None
        return pb.RegisterAgentTypeResponse().SerializeToString()

    async def add_subscription(self, data: bytes, stream: ServerStream) -> bytes:
        client_id = _client_id(stream)
        request = _parse(pb.AddSubscriptionRequest, data)
        try:
            self._hub.add_subscription(client_id, request.subscription)
        except RoutingError as exc:
            raise GRPCError(exc.status, exc.message) from None
        return pb.AddSubscriptionResponse().SerializeToString()

    async def remove_subscription(self, data: bytes, stream: ServerStream) -> bytes:
        client_id = _client_id(stream)
        request = _parse(pb.RemoveSubscriptionRequest, data)
        try:
            self._hub.remove_subscription(client_id, request.id)
        except RoutingError as exc:
            raise GRPCError(exc.status, exc.message) from None
        return pb.RemoveSubscriptionResponse().SerializeToString()

    async def get_subscriptions(self, data: bytes, stream: ServerStream) -> bytes:
        _client_id(stream)
        _parse(pb.GetSubscriptionsRequest, data)
        response = pb.GetSubscriptionsResponse(subscriptions=self._hub.subscriptions())
        return response.SerializeToString()

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
