"""Shared agent types in the routing table: the placement table
(``_placement.py``, by client id) tied to the registry's clients and their
connections, for ``_routing.py``. Sans-IO.

Invariant (the routing table's I7, checked by :meth:`SharedTypes.check_invariants`):
the placement table's workers are exactly the clients with a live data
connection that have not handed their agents back (``released``, forgotten
with the connection), each for the agent types it registered.

Drain: a worker's control request to :data:`~agentwire._wire.DRAIN_DESTINATION`
stops new agents being placed on it; one to
:data:`~agentwire._wire.RELEASE_DESTINATION` hands its agents back (they are
placed anew on their next message; requests already forwarded are answered as
usual). Both are answered with a ``BoolValue`` on the same ``rpc_id``.
"""

from __future__ import annotations

import logging

from google.protobuf import wrappers_pb2

from .._proto import agent_worker_pb2 as pb
from .._wire import DRAIN_DESTINATION, ErrorKind
from ._actions import Action, Deliver
from ._placement import PlacementStrategy, PlacementTable, TypePlacement
from ._registry import Client, Conn

__all__ = ["SharedTypes"]

logger = logging.getLogger("agentwire.gateway")


class SharedTypes:
    """Which connection serves each agent of a shared type."""

    def __init__(
        self, clients: dict[str, Client], strategy: PlacementStrategy, max_keys: int
    ) -> None:
        self._clients = clients
        self.placement = PlacementTable(strategy, max_keys=max_keys)
        self.released: set[str] = set()

    # ------------------------------------------------------------ membership

    def connected(self, client_id: str) -> None:
        """*client_id* opened its data connection: it serves its types."""
        for agent_type in self._clients[client_id].types:
            self.placement.join(client_id, agent_type)

    def registered(self, client_id: str, agent_type: str) -> None:
        if client_id not in self.released and self._clients[client_id].data is not None:
            self.placement.join(client_id, agent_type)

    def disconnected(self, conn: Conn) -> None:
        self.released.discard(conn.client_id)
        unplaced = self.placement.leave(conn.client_id)
        logger.debug("%s left: %d agents to place again", conn, unplaced)

    def drain(self, client_id: str) -> bool:
        """Place no new agents on *client_id* (it keeps those it has). False
        if it serves no shared type."""
        return self.placement.drain(client_id)

    def hand_back(self, client_id: str) -> bool:
        """*client_id* hands its agents back: each is placed anew on its next
        message, and no new request goes to it (those already forwarded are
        answered as usual), until its data connection ends. False if it
        serves no shared type."""
        if not self.placement.has_worker(client_id):
            return False
        self.released.add(client_id)
        unplaced = self.placement.leave(client_id)
        logger.info("client %s handed back its %d agents", client_id, unplaced)
        return True

    # ------------------------------------------------------------ routing

    def target(self, agent_type: str, key: str) -> Conn | tuple[ErrorKind, str]:
        """The data connection serving ``agent_type/key``, placing it if
        needed, or why there is none."""
        placement = self.placement
        worker = placement.place(agent_type, key)
        if worker is None:
            full = placement.serves(agent_type) and len(placement) >= placement.max_keys
            kind = ErrorKind.OVERLOADED if full else ErrorKind.UNDELIVERABLE
            why = placement.why_not(agent_type)
            return kind, f"{why}; the message for {agent_type}/{key} was not delivered"
        data_conn = self._clients[worker].data
        assert data_conn is not None  # I7
        return data_conn

    def control_of(self, agent_type: str, key: str) -> Conn | None:
        """The control connection of the worker serving ``agent_type/key``."""
        placed = self.target(agent_type, key)
        return self._clients[placed.client_id].control if isinstance(placed, Conn) else None

    def gateway_request(self, conn: Conn, message: pb.ControlMessage) -> list[Action]:
        """A control request to the gateway itself (drain, release), from *conn*."""
        if message.destination == DRAIN_DESTINATION:
            done = self.drain(conn.client_id)
        else:
            done = self.hand_back(conn.client_id)
        return [answer(conn, message, done)] if message.respond_to else []

    # ------------------------------------------------------------ introspection

    def statistics(self) -> dict[str, TypePlacement]:
        return self.placement.statistics()

    def check_invariants(self) -> None:
        """Assert I7 of ``_routing.py`` (and P1-P4)."""
        self.placement.check_invariants()
        connected = {c for c, client in self._clients.items() if client.data is not None}
        assert self.released <= connected
        workers = {(c, t) for c in connected - self.released for t in self._clients[c].types}
        stats = self.placement.statistics()
        assert workers == {(c, t) for t, p in stats.items() for c in p.keys}


def answer(conn: Conn, message: pb.ControlMessage, done: bool) -> Deliver:
    """The ``BoolValue`` answer to a control request to the gateway."""
    reply = pb.ControlMessage(rpc_id=message.rpc_id, destination=message.respond_to)
    reply.rpcMessage.Pack(wrappers_pb2.BoolValue(value=done))
    return Deliver(conn, reply.SerializeToString())
