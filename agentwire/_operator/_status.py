"""The gateway's read-only status method, ``/agentwire.Operator/Status``, and its text form.

An agentwire-only unary method next to ``agents.AgentRpc`` (which it leaves
alone): the request is empty, the answer is UTF-8 JSON::

    {"clients": [{"client_id": ..., "agent_types": [...], "subscriptions": 2,
                  "connected": true}, ...],
     "subscriptions": [{"id": ..., "agent_type": ..., "topic_type": ...}
                       or {..., "topic_type_prefix": ...}, ...],
     "statistics": {"data_connections": 1, "events_received": 3, ...}}

With an authenticator the caller must authenticate (UNAUTHENTICATED
otherwise) and sees only the clients and subscriptions of its own client-ids
(as with ``GetSubscriptions``); the counters are the gateway's totals.
"""

from __future__ import annotations

import json
from typing import Any

import attrs
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from .._errors import AuthenticationError
from .._proto import agent_worker_pb2 as pb
from .._security import AccessGuard, Credentials
from .._transport import Method, ServerStream, unary
from .._wire import OPERATOR_STATUS_METHOD
from ._subscriptions import OperatorSubscriptions

__all__ = ["OperatorService", "format_status", "subscription_to_json"]


def subscription_to_json(subscription: pb.Subscription) -> dict[str, str]:
    """A subscription as the status and ``agentwire subscriptions --json`` show it."""
    if subscription.HasField("typePrefixSubscription"):
        prefix = subscription.typePrefixSubscription
        return {
            "id": subscription.id,
            "agent_type": prefix.agent_type,
            "topic_type_prefix": prefix.topic_type_prefix,
        }
    exact = subscription.typeSubscription
    return {"id": subscription.id, "agent_type": exact.agent_type, "topic_type": exact.topic_type}


class OperatorService:
    """The operator methods of one gateway (``methods()``): status, and the
    subscriptions the gateway keeps (``_subscriptions.py``; ``run`` keeps
    their clients); *hub* is its :class:`~agentwire._gateway._hub.GatewayHub`,
    *guard* its access guard."""

    def __init__(self, hub: Any, guard: AccessGuard) -> None:
        self._hub = hub
        self._guard = guard
        self._subscriptions = OperatorSubscriptions(hub, guard)
        self.run = self._subscriptions.run

    def methods(self) -> dict[str, Method]:
        return {OPERATOR_STATUS_METHOD: unary(self._status), **self._subscriptions.methods()}

    async def _status(self, request: bytes, stream: ServerStream) -> bytes:
        guard = self._guard
        try:
            principal = guard.authenticate(
                Credentials(stream.metadata, stream.peer_certificate, stream.peer)
            )
        except AuthenticationError as exc:
            raise GRPCError(Status.UNAUTHENTICATED, str(exc)) from None
        hub = self._hub
        clients = [
            {
                "client_id": client_id,
                "agent_types": list(types),
                "subscriptions": subscriptions,
                "connected": connected,
            }
            for client_id, types, subscriptions, connected in hub.clients()
            if guard.may_see(principal, client_id)
        ]
        subscriptions = [
            subscription_to_json(sub)
            for sub in hub.subscriptions()
            if guard.may_see(principal, hub.subscription_owner(sub.id))
        ]
        statistics = attrs.asdict(hub.statistics(), recurse=False)
        status = {"clients": clients, "subscriptions": subscriptions, "statistics": statistics}
        return json.dumps(status).encode()


def format_status(status: dict[str, Any]) -> str:
    """The status for people: clients, subscriptions, then the counters."""
    lines: list[str] = []
    clients = status.get("clients", [])
    lines.append(f"clients: {len(clients)}")
    for client in clients:
        state = "connected" if client.get("connected") else "disconnected"
        types = ", ".join(client.get("agent_types", [])) or "(no agent types)"
        lines.append(
            f"  {client.get('client_id')}  {state}  types: {types}  "
            f"subscriptions: {client.get('subscriptions', 0)}"
        )
    subscriptions = status.get("subscriptions", [])
    lines.append(f"subscriptions: {len(subscriptions)}")
    lines.extend(f"  {format_subscription(sub)}" for sub in subscriptions)
    lines.append("counters:")
    for name, value in sorted(status.get("statistics", {}).items()):
        lines.append(f"  {name}: {value}")
    return "\n".join(lines)


def format_subscription(subscription: dict[str, str]) -> str:
    """``TOPIC -> AGENT_TYPE  (id)``; a prefix subscription shows ``PREFIX*``."""
    topic = subscription.get("topic_type")
    if topic is None:
        topic = subscription.get("topic_type_prefix", "") + "*"
    return f"{topic} -> {subscription.get('agent_type')}  ({subscription.get('id')})"
