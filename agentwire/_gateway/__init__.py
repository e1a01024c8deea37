"""The agentwire gateway: AutoGen's AgentRpc service on trio."""

from __future__ import annotations

from ._hub import Connection, GatewayConfig, GatewayHub, GatewayStatistics, open_hub
from ._routing import Conn, ConnKind, Router, RoutingError

__all__ = [
    "Conn",
    "ConnKind",
    "Connection",
    "GatewayConfig",
    "GatewayHub",
    "GatewayStatistics",
    "Router",
    "RoutingError",
    "open_hub",
]
