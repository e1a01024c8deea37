"""Subscriptions the gateway keeps for operators: ``/agentwire.Operator/AddSubscription``
and ``/agentwire.Operator/RemoveSubscription`` (``agentwire subscriptions add|remove``).

A subscription made from a shell must outlive the shell's connection, so no
caller's client owns it: the gateway's own operator client does
(:data:`~agentwire._wire.OPERATOR_CLIENT_ID`, a data connection of the hub
for the gateway's life). With an access file there is one such client per
principal, ``agentwire-operator/<principal>``, owned by that principal: it
sees (``agentwire subscriptions``, ``agentwire status``) and removes its own
operator-made subscriptions as it does those of its workers, and nobody
else's. The rows are ordinary type and prefix subscriptions: an event goes to
the worker serving their agent type, relayed to it as a direct message
(``_relay.py``), since that worker does not hold the subscription itself.

Both methods are agentwire-only unary methods (AutoGen peers never call
them) with AutoGen's request messages as payloads; they need no
``client-id``. Refusals: UNAUTHENTICATED; PERMISSION_DENIED without the
``subscribe`` right on the topic or the ``call`` right on the agent type;
ALREADY_EXISTS for a subscription equal to one the gateway holds (same id,
or same kind, topic and agent type); NOT_FOUND for an id the caller cannot
see; INVALID_ARGUMENT for a malformed subscription.
"""

from __future__ import annotations

import logging
from typing import Any

import trio
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from .._errors import (
    AuthenticationError,
    InvalidIdentifierError,
    InvalidSubscriptionError,
    PermissionDeniedError,
)
from .._proto import agent_worker_pb2 as pb
from .._security import AccessGuard, Credentials, Principal
from .._subscriptions import subscription_from_proto
from .._transport import Method, ServerStream, unary
from .._wire import (
    OPERATOR_ADD_SUBSCRIPTION_METHOD,
    OPERATOR_CLIENT_ID,
    OPERATOR_REMOVE_SUBSCRIPTION_METHOD,
)

__all__ = ["OperatorSubscriptions"]

logger = logging.getLogger("agentwire.operator")


class OperatorSubscriptions:
    """The two methods (``methods()``) and the operator clients (``run``) of
    one gateway; *hub* is its :class:`~agentwire._gateway._hub.GatewayHub`."""

    def __init__(self, hub: Any, guard: AccessGuard) -> None:
        self._hub = hub
        self._guard = guard
        self._nursery: trio.Nursery | None = None
        self._clients: dict[str, trio.Event] = {}  # operator client-id -> connected

    def methods(self) -> dict[str, Method]:
        return {
            OPERATOR_ADD_SUBSCRIPTION_METHOD: unary(self._add),
            OPERATOR_REMOVE_SUBSCRIPTION_METHOD: unary(self._remove),
        }

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Keep the operator clients (made on the first subscription of each)
        connected until the hub shuts down."""
        hub = self._hub
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            await hub.wait_closing()

    async def _keep(
        self,
        client_id: str,
        connected: trio.Event,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        try:
            async with self._hub.connect(client_id) as connection:
                connected.set()
                task_status.started()
                # It serves no agent type: nothing arrives until the hub ends it.
                async for _ in connection.from_gateway:
                    pass
        finally:
            del self._clients[client_id]
            connected.set()

    async def _client_for(self, principal: Principal) -> str:
        """The operator client keeping *principal*'s subscriptions, connected."""
        if not self._guard.enabled:
            client_id = OPERATOR_CLIENT_ID
        else:
            client_id = f"{OPERATOR_CLIENT_ID}/{principal.name}"
        connected = self._clients.get(client_id)
        if connected is None:
            if self._nursery is None or self._hub.closing:
                raise GRPCError(Status.UNAVAILABLE, "agentwire gateway: shutting down")
            # Recorded before the task starts: a concurrent call waits for it.
            self._clients[client_id] = connected = trio.Event()
            await self._nursery.start(self._keep, client_id, connected)
        else:
            await connected.wait()  # another call is connecting it
        if client_id not in self._clients:
            raise GRPCError(Status.UNAVAILABLE, "agentwire gateway: shutting down")
        return client_id

    def _principal(self, stream: ServerStream) -> Principal:
        try:
            return self._guard.authenticate(
                Credentials(stream.metadata, stream.peer_certificate, stream.peer)
            )
        except AuthenticationError as exc:
            raise GRPCError(Status.UNAUTHENTICATED, str(exc)) from None

    async def _add(self, data: bytes, stream: ServerStream) -> bytes:
        from .._gateway._registry import RoutingError  # the gateway package imports this one
        from .._gateway._service import _parse

        principal = self._principal(stream)
        subscription = _parse(pb.AddSubscriptionRequest, data).subscription
        try:
            new = subscription_from_proto(subscription)
        except (InvalidSubscriptionError, InvalidIdentifierError) as exc:
            raise GRPCError(Status.INVALID_ARGUMENT, str(exc)) from None
        try:
            self._guard.check_operator_subscription(principal, subscription)
        except PermissionDeniedError as exc:
            raise GRPCError(Status.PERMISSION_DENIED, str(exc)) from None
        client_id = await self._client_for(principal)
        hub = self._hub
        # Equal to any row (not only the caller's): with shared agent types
        # the registry would keep it as a shadow, and the agent would get the
        # event twice.
        if any(subscription_from_proto(row) == new for row in hub.subscriptions()):
            raise GRPCError(
                Status.ALREADY_EXISTS,
                f"a subscription with the id {new.id!r}, or of {_describe(subscription)}, "
                "already exists",
            )
        try:
            await hub.subscribe(client_id, subscription, relay=True)
        except RoutingError as exc:  # the hub's limits
            raise GRPCError(exc.status, exc.message) from None
        self._guard.claim(principal, client_id)
        logger.info("operator %s subscribed %s (%s)", principal, _describe(subscription), new.id)
        return pb.AddSubscriptionResponse().SerializeToString()

    async def _remove(self, data: bytes, stream: ServerStream) -> bytes:
        from .._gateway._registry import RoutingError  # the gateway package imports this one
        from .._gateway._service import _parse

        principal = self._principal(stream)
        subscription_id = _parse(pb.RemoveSubscriptionRequest, data).id
        hub = self._hub
        owner = hub.subscription_owner(subscription_id)
        if owner is None or not self._guard.may_see(principal, owner):
            raise GRPCError(
                Status.NOT_FOUND, f"there is no subscription with the id {subscription_id!r}"
            )
        try:
            await hub.unsubscribe(owner, subscription_id)
        except RoutingError as exc:  # a cluster whose Redis is out of reach
            raise GRPCError(exc.status, exc.message) from None
        logger.info("operator %s removed subscription %s", principal, subscription_id)
        return pb.RemoveSubscriptionResponse().SerializeToString()


def _describe(subscription: pb.Subscription) -> str:
    if subscription.HasField("typePrefixSubscription"):
        prefix = subscription.typePrefixSubscription
        return f"{prefix.topic_type_prefix}* -> {prefix.agent_type}"
    exact = subscription.typeSubscription
    return f"{exact.topic_type} -> {exact.agent_type}"
