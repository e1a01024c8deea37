"""The agentwire gateway: AutoGen's AgentRpc service on trio.

The sans-IO core: ``_routing`` (the routing table) over ``_registry``
(clients, agent types, subscriptions), ``_inflight`` (forwarded RPCs),
``_events`` (event fan-out), ``_control`` (the control channel), ``_peers``
(peer gateways of a cluster), ``_held`` (the start-up hold) and ``_shared`` /
``_placement`` (shared agent types: which worker serves each agent), and
``_queue`` (a client's outgoing lanes).
``_hub`` runs them over trio, ``_service`` maps gRPC calls onto the hub,
``_serve`` puts it on a socket, ``_command`` is ``agentwire gateway``.
"""

from __future__ import annotations

from ._hub import Connection, GatewayConfig, GatewayHub, GatewayStatistics, open_hub
from ._placement import HashPlacement, LeastLoadedPlacement, PlacementStrategy, TypePlacement
from ._routing import Conn, ConnKind, RoutingError, RoutingTable
from ._serve import (
    DEFAULT_MAX_MESSAGE_SIZE,
    Gateway,
    GatewayOptions,
    open_gateway,
    serve_gateway,
)
from ._service import AgentRpcService

__all__ = [
    "DEFAULT_MAX_MESSAGE_SIZE",
    "AgentRpcService",
    "Conn",
    "ConnKind",
    "Connection",
    "Gateway",
    "GatewayConfig",
    "GatewayHub",
    "GatewayOptions",
    "GatewayStatistics",
    "HashPlacement",
    "LeastLoadedPlacement",
    "PlacementStrategy",
    "RoutingError",
    "RoutingTable",
    "TypePlacement",
    "open_gateway",
    "open_hub",
    "serve_gateway",
]
