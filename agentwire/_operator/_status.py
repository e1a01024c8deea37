"""The gateway's read-only status method, ``/agentwire.Operator/Status``, and its text form.

An agentwire-only unary method next to ``agents.AgentRpc`` (which it leaves
alone): the request is empty, the answer is UTF-8 JSON::

    {"clients": [{"client_id": ..., "agent_types": [...], "subscriptions": 2,
                  "connected": true}, ...],
     "gateways": [the same for each other gateway of a cluster, as this one sees it],
     "subscriptions": [{"id": ..., "agent_type": ..., "topic_type": ...}
                       or {..., "topic_type_prefix": ...}, ...],
     "statistics": {"data_connections": 1, "events_received": 3, ...,
                    "peer_connections": 1,
                    "cluster": {"gateway_id": ..., "joined": true, "peers": 1,
                                "batches_sent": ..., ...} or null,
                    "state": {"served": ..., "failed": ..., "refused": ...,
                              "waiting": ...} or null,
                    "placement": {"<agent type>": {"workers": 2, "keys": {...},
                                                   "draining": [...]}, ...}}}

``clients``, ``data_connections`` and ``control_connections`` count workers
and the gateway's own clients; connections from the other gateways of a
cluster are ``peer_connections``. ``cluster`` is ``gateway.cluster.statistics()``
(``joined``: a session with the cluster's Redis is up), ``state`` the
gateway-hosted state service's requests, ``placement`` the shared agent types.

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
        peers = hub.peer_gateways()
        listed = [
            (
                client_id,
                {
                    "client_id": client_id,
                    "agent_types": list(types),
                    "subscriptions": subscriptions,
                    "connected": connected,
                },
            )
            for client_id, types, subscriptions, connected in hub.clients()
            if guard.may_see(principal, client_id)
        ]
        clients = [entry for client_id, entry in listed if client_id not in peers]
        gateways = [entry for client_id, entry in listed if client_id in peers]
        subscriptions = [
            subscription_to_json(sub)
            for sub in hub.subscriptions()
            if guard.may_see(principal, hub.subscription_owner(sub.id))
        ]
        statistics = attrs.asdict(hub.statistics())  # nested records become objects
        status = {
            "clients": clients,
            "gateways": gateways,
            "subscriptions": subscriptions,
            "statistics": statistics,
        }
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
    gateways = status.get("gateways", [])
    if gateways:
        lines.append(f"other gateways of the cluster: {len(gateways)}")
        for gateway in gateways:
            types = ", ".join(gateway.get("agent_types", [])) or "(no agent types)"
            lines.append(
                f"  {gateway.get('client_id')}  types: {types}  "
                f"subscriptions: {gateway.get('subscriptions', 0)}"
            )
    subscriptions = status.get("subscriptions", [])
    lines.append(f"subscriptions: {len(subscriptions)}")
    lines.extend(f"  {format_subscription(sub)}" for sub in subscriptions)
    statistics = status.get("statistics", {})
    lines.append("counters:")
    for name, value in sorted(statistics.items()):
        if not isinstance(value, dict | list) and value is not None:
            lines.append(f"  {name}: {value}")
    cluster = statistics.get("cluster")
    if cluster:
        lines.append(
            f"cluster: gateway {cluster.get('gateway_id')}, {cluster.get('peers', 0)} peers, "
            f"Redis {'reachable' if cluster.get('joined') else 'UNREACHABLE'}"
        )
        lines.extend(
            f"  {name}: {value}"
            for name, value in sorted(cluster.items())
            if name not in ("gateway_id", "peers", "joined")
        )
    state = statistics.get("state")
    if state:
        lines.append("state service:")
        lines.extend(f"  {name}: {value}" for name, value in sorted(state.items()))
    placement = statistics.get("placement") or {}
    if placement:
        lines.append(f"shared agent types: {len(placement)}")
        for agent_type, where in sorted(placement.items()):
            keys = where.get("keys", {})
            draining = where.get("draining", [])
            lines.append(
                f"  {agent_type}  workers: {where.get('workers', 0)}  "
                f"agents: {sum(keys.values())}"
                + (f"  draining: {', '.join(draining)}" if draining else "")
            )
            lines.extend(f"    {worker}: {count}" for worker, count in sorted(keys.items()))
    return "\n".join(lines)


def format_subscription(subscription: dict[str, str]) -> str:
    """``TOPIC -> AGENT_TYPE  (id)``; a prefix subscription shows ``PREFIX*``."""
    topic = subscription.get("topic_type")
    if topic is None:
        topic = subscription.get("topic_type_prefix", "") + "*"
    return f"{topic} -> {subscription.get('agent_type')}  ({subscription.get('id')})"
