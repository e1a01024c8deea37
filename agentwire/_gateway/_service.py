"""The ``agents.AgentRpc`` service: gRPC calls in, hub operations out.

Status codes and messages follow AutoGen 0.7.5's Python host:

* every call needs a ``client-id`` header: INVALID_ARGUMENT
  "client-id metadata not found." otherwise;
* RegisterAgent / AddSubscription / RemoveSubscription / GetSubscriptions
  answer what the router decides (see ``_routing.py`` for the messages);
* a request body that is not a valid protobuf message: INVALID_ARGUMENT.

With an authenticator (``serve_gateway(authenticator=...)``) every call and
stream is authenticated first (UNAUTHENTICATED otherwise) and checked by the
gateway's :class:`~agentwire._security._guard.AccessGuard`: a client-id
belongs to the principal that first used it, registrations and subscriptions
need their rights (PERMISSION_DENIED), a principal sees and removes only its
own subscriptions (another's answers as unknown), and a registration conflict
names the owner's client-id only to its own principal.

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
from collections.abc import Awaitable, Callable
from typing import Protocol, TypeVar

import trio
from google.protobuf.message import DecodeError, Message
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from .._budget import CheckpointBudget
from .._errors import AuthenticationError, PermissionDeniedError
from .._proto import agent_worker_pb2 as pb
from .._security import AccessGuard, Credentials, Principal
from .._transport import Method, ServerStream, bidi, unary
from .._wire import CLOUD_EVENT_TAG, SERVICE_PREFIX
from ._hub import Connection, GatewayHub
from ._routing import UNKNOWN_SUBSCRIPTION_MESSAGE, ConnKind, RoutingError

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


class _Caller(Protocol):
    def __call__(self, stream: ServerStream) -> tuple[Principal, str]: ...


def _unary_call(
    enter: _Caller,
    request_type: type[_M],
    handle: Callable[[Principal, str, _M], Awaitable[_R | None]],
    response_type: type[_R],
) -> Method:
    """A unary method: authenticate and check the client-id (*enter*), parse
    the request, let *handle* act on it (a RoutingError or a refusal ends the
    call with its status), answer with what *handle* returned, or an empty
    *response_type*."""

    async def call(data: bytes, stream: ServerStream) -> bytes:
        principal, client_id = enter(stream)
        request = _parse(request_type, data)
        try:
            response = await handle(principal, client_id, request)
        except RoutingError as exc:
            raise GRPCError(exc.status, exc.message) from None
        except PermissionDeniedError as exc:
            raise GRPCError(Status.PERMISSION_DENIED, str(exc)) from None
        return (response_type() if response is None else response).SerializeToString()

    return unary(call)


class AgentRpcService:
    """The method table of one gateway (``methods()``), backed by *hub*, with
    access decided by *guard* (default: no authentication, as AutoGen)."""

    def __init__(self, hub: GatewayHub, guard: AccessGuard | None = None) -> None:
        self._hub = hub
        self._guard = AccessGuard() if guard is None else guard

    def _enter(self, stream: ServerStream) -> tuple[Principal, str]:
        """The caller's principal and client-id, or a GRPCError refusing the call."""
        guard = self._guard
        try:
            principal = guard.authenticate(
                Credentials(stream.metadata, stream.peer_certificate, stream.peer)
            )
            client_id = _client_id(stream)
            guard.check_client(principal, client_id)
        except AuthenticationError as exc:
            raise GRPCError(Status.UNAUTHENTICATED, str(exc)) from None
        except PermissionDeniedError as exc:
            raise GRPCError(Status.PERMISSION_DENIED, str(exc)) from None
        return principal, client_id

    def methods(self) -> dict[str, Method]:
        enter = self._enter
        return {
            SERVICE_PREFIX + "OpenChannel": bidi(self.open_channel),
            SERVICE_PREFIX + "OpenControlChannel": bidi(self.open_control_channel),
            SERVICE_PREFIX + "RegisterAgent": _unary_call(
                enter, pb.RegisterAgentTypeRequest, self._register, pb.RegisterAgentTypeResponse
            ),
            SERVICE_PREFIX + "AddSubscription": _unary_call(
                enter, pb.AddSubscriptionRequest, self._subscribe, pb.AddSubscriptionResponse
            ),
            SERVICE_PREFIX + "RemoveSubscription": _unary_call(
                enter,
                pb.RemoveSubscriptionRequest,
                self._unsubscribe,
                pb.RemoveSubscriptionResponse,
            ),
            SERVICE_PREFIX + "GetSubscriptions": _unary_call(
                enter, pb.GetSubscriptionsRequest, self._subscriptions, pb.GetSubscriptionsResponse
            ),
        }

    # ------------------------------------------------------------ unary

    async def _register(
        self, principal: Principal, client_id: str, request: pb.RegisterAgentTypeRequest
    ) -> None:
        guard, hub = self._guard, self._hub
        guard.check_register(principal, request.type)
        owner = hub.owner_of(request.type)
        if owner is not None and not guard.may_see(principal, owner):
            message = guard.registration_conflict(principal, request.type, owner)
            raise RoutingError(Status.INVALID_ARGUMENT, message)
        await hub.register(client_id, request.type)
        guard.claim(principal, client_id)

    async def _subscribe(
        self, principal: Principal, client_id: str, request: pb.AddSubscriptionRequest
    ) -> None:
        self._guard.check_subscription(principal, request.subscription)
        await self._hub.subscribe(client_id, request.subscription)
        self._guard.claim(principal, client_id)

    async def _unsubscribe(
        self, principal: Principal, client_id: str, request: pb.RemoveSubscriptionRequest
    ) -> None:
        owner = self._hub.subscription_owner(request.id)
        if owner is not None and not self._guard.may_see(principal, owner):
            raise RoutingError(Status.UNKNOWN, UNKNOWN_SUBSCRIPTION_MESSAGE)  # as unknown
        await self._hub.unsubscribe(client_id, request.id)

    async def _subscriptions(
        self, principal: Principal, client_id: str, request: pb.GetSubscriptionsRequest
    ) -> pb.GetSubscriptionsResponse:
        subscriptions = self._hub.subscriptions()
        if self._guard.enabled:
            owner, may_see = self._hub.subscription_owner, self._guard.may_see
            subscriptions = [s for s in subscriptions if may_see(principal, owner(s.id))]
        return pb.GetSubscriptionsResponse(subscriptions=subscriptions)

    # ------------------------------------------------------------ streams

    async def open_channel(self, stream: ServerStream) -> None:
        await self._serve_stream(stream, ConnKind.DATA)

    async def open_control_channel(self, stream: ServerStream) -> None:
        await self._serve_stream(stream, ConnKind.CONTROL)

    async def _serve_stream(self, stream: ServerStream, kind: ConnKind) -> None:
        principal, client_id = self._enter(stream)
        try:
            async with self._hub.connect(client_id, kind) as conn:
                # No checkpoint since _enter checked the client-id: it is ours.
                self._guard.claim(principal, client_id)
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
        if conn.kind is ConnKind.DATA:  # RPC traffic overtakes events (both ways)
            stream.set_bulk_tag(CLOUD_EVENT_TAG)
            conn.enable_overtaking(stream)
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
    spend = CheckpointBudget().spend
    try:
        while (data := await stream.receive()) is not None:
            # What has come with it is routed in this step too, without a
            # wait where nothing has to wait (H4), yielding every few messages.
            while True:
                more = stream.buffered > 0
                if not conn.try_send(data, more=more):
                    await conn.send(data, more=more)
                if not more:
                    break
                if spend():
                    await trio.lowlevel.checkpoint()
                data = stream.receive_nowait()
                if data is None:  # pragma: no cover - buffered said there is one
                    break
        conn.leave()  # half-close: the client is leaving
    except trio.BrokenResourceError:
        pass  # the gateway ended this connection; the outbound side reports why


async def _abandon_when_discarded(conn: Connection, scope: trio.CancelScope) -> None:
    """A slow or superseded client gets no more sends, even mid-flow-control."""
    await conn.wait_ended()
    if conn.discarded:
        scope.cancel()
