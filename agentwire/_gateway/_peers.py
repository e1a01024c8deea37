"""Peer gateways in the routing table (a cluster, ``agentwire._cluster``).

A connection with ``peer`` set stands for all the clients of another gateway
of the cluster; its agent types and subscriptions are recorded without the
per-client bounds. The routing table's invariant (checked by its
``check_invariants`` and ``tests/cluster``):

I9  One hop. What arrives on a peer connection is never routed to a peer
    connection again: an event from a peer is never held and goes to local
    clients only (``_events.py``), a request from a peer for an agent type
    another peer owns is refused (undeliverable, ``_routing.py``). So a
    message crosses at most one gateway-to-gateway hop and events never loop.
    Requests in flight to a peer that disconnects are answered with
    ``gateway-unreachable`` (:func:`lost_answer`).
"""

from __future__ import annotations

from .._wire import ErrorKind
from ._registry import Conn

__all__ = ["lost_answer"]


def lost_answer(conn: Conn, target_agent: str) -> tuple[ErrorKind, str]:
    """Why a request forwarded on *conn* to *target_agent* is answered with an
    error when *conn* disconnects before answering (I9 for a peer gateway)."""
    if conn.peer:
        return (
            ErrorKind.GATEWAY_UNREACHABLE,
            f"the gateway serving {target_agent} ({conn.client_id}) left the "
            "cluster or became unreachable before answering",
        )
    return (
        ErrorKind.CONNECTION_LOST,
        f"the worker serving {target_agent} (client {conn.client_id}) "
        "disconnected before answering",
    )
