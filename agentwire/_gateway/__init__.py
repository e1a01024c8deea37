"""The agentwire gateway: AutoGen's AgentRpc service on trio.

``_routing`` is the sans-IO core, ``_hub`` runs it over per-client trio memory
channels, ``_service`` maps gRPC calls onto the hub, ``_serve`` puts it on a
socket.
"""

from __future__ import annotations

from ._hub import Connection, GatewayConfig, GatewayHub, GatewayStatistics, open_hub
from ._routing import Conn, ConnKind, RoutingError, RoutingTable
from ._serve import DEFAULT_MAX_MESSAGE_SIZE, Gateway, open_gateway, serve_gateway
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
    "GatewayStatistics",
    "RoutingError",
    "RoutingTable",
    "open_gateway",
    "open_hub",
    "serve_gateway",
]
