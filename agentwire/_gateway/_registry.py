"""The gateway's client registry: who is connected, who owns which agent type,
who subscribed to what, and when records of a client without a channel expire.

Sans-IO like ``_routing.py``, which builds on it. Invariants (checked by
``check_invariants``, after every step of ``tests/gateway/test_routing_stateful.py``):

R1  Ownership. ``owner[t] == c`` iff ``t in clients[c].types``. An agent type
    has at most one owner, and the owner is a known client. With shared
    agent types (``shared=True``) ``owner`` stays empty and instead
    ``c in servers[t]`` iff ``t in clients[c].types``; ``servers[t]`` is
    never empty (which client serves which agent: ``_placement.py``).
R2  Subscriptions. The ids in ``table`` and ``shadows`` are exactly the
    disjoint union of ``clients[c].subscriptions`` over all clients, and
    ``sub_owner`` maps each id to the client that recorded it. ``shadows``
    (shared agent types only) holds subscriptions equal to one in ``table``
    of another client: every worker of a shared type adds the same ones.
    When the one in ``table`` goes, a shadow equal to it takes its place.
R3  Client records. A client record exists only while it has a live
    connection, an agent type or a subscription.
R4  Channel-less records expire. A client with agent types or subscriptions
    but no data connection has ``expires`` set (the time they are dropped,
    ``registration_grace`` after the first of them was recorded without a
    channel) and an entry ``(expires, client_id)`` in the heap ``_expiries``
    (stale entries are skipped); a client with a data connection has
    ``expires is None``. So registrations of a client-id that never opens a
    channel cannot live forever. (AutoGen drops a client's records only when
    its data channel ends, and keeps them forever if it never opens one.)
R5  Per-client bounds. A client has at most ``max_agent_types`` agent types
    and ``max_subscriptions`` subscriptions; more are refused with
    RESOURCE_EXHAUSTED. A peer gateway of a cluster (``peer=True``: the
    pseudo-client standing for all the clients of another gateway) has none.
R6  Dropped records are reported. When ``on_drop`` is set, every agent type
    and subscription dropped because its client left or expired (not those
    removed by a call) is passed to it, once, in the step that drops it.
R7  Generations. ``generation`` grows in every step that changes ``owner``,
    ``servers``, ``table``, ``shadows`` or any client's ``data``: what was
    computed from those at one generation holds while it stays the same
    (the event routes of ``_events.py`` are cached on it).

Wire compatibility notes (AutoGen 0.7.5's Python host is the reference):

* RegisterAgent: one owner per type, even for the same client; duplicate ->
  INVALID_ARGUMENT "Agent type {t} already registered with client {c}.".
  Unlike AutoGen we also refuse an invalid agent type (INVALID_ARGUMENT),
  since no message could ever be routed to it.
* AddSubscription: AutoGen duplicate semantics, INVALID_ARGUMENT
  "Subscription already exists" (with shared agent types: unless the equal
  one is another client's). Subscriptions that fail validation (no
  oneof arm, invalid agent or topic type) are INVALID_ARGUMENT here; AutoGen
  answers UNKNOWN for the missing oneof and accepts invalid types silently.
* RemoveSubscription of an unknown id answers UNKNOWN
  "Unexpected <class 'ValueError'>: Subscription does not exist": that is
  what AutoGen's host leaks from an unhandled ValueError, and peers may
  match on it, so we reproduce it on purpose. Any client may remove any id.
"""

from __future__ import annotations

import enum
import heapq
import logging
from collections.abc import Callable

import attrs
from grpclib.const import Status

from .._errors import (
    DuplicateSubscriptionError,
    InvalidIdentifierError,
    InvalidSubscriptionError,
    UnknownSubscriptionError,
)
from .._ids import is_valid_agent_type
from .._proto import agent_worker_pb2 as pb
from .._subscriptions import (
    Subscription,
    SubscriptionTable,
    subscription_from_proto,
    subscription_to_proto,
)

__all__ = [
    "UNKNOWN_SUBSCRIPTION_MESSAGE",
    "Conn",
    "ConnKind",
    "Registry",
    "RoutingError",
]

logger = logging.getLogger("agentwire.gateway")

# What AutoGen's host answers for RemoveSubscription of an unknown id (an
# unhandled ValueError rendered by grpcio). Reproduced for wire compatibility.
UNKNOWN_SUBSCRIPTION_MESSAGE = "Unexpected <class 'ValueError'>: Subscription does not exist"


class ConnKind(enum.Enum):
    DATA = "data"  # OpenChannel: agents.Message
    CONTROL = "control"  # OpenControlChannel: agents.ControlMessage


@attrs.frozen(slots=True, eq=False)
class Conn:
    """One live stream of a client. ``serial`` is unique for the router's life,
    and the router makes exactly one ``Conn`` per stream, so equality and
    hashing are by identity (cheap on the hot path)."""

    client_id: str
    serial: int
    kind: ConnKind
    peer: bool = False  # another gateway of the cluster (``agentwire._cluster``)

    def __str__(self) -> str:
        return f"{self.kind.value} connection #{self.serial} of client {self.client_id}"


class RoutingError(Exception):
    """A unary call failed; the service ends the call with *status* and *message*."""

    def __init__(self, status: Status, message: str) -> None:
        self.status = status
        self.message = message
        super().__init__(message)


@attrs.define(slots=True, eq=False)
class Client:
    types: set[str] = attrs.Factory(set)
    subscriptions: set[str] = attrs.Factory(set)
    data: Conn | None = None
    control: Conn | None = None
    expires: float | None = None  # R4
    peer: bool = False  # R5: another gateway of the cluster, no per-client bounds

    def is_empty(self) -> bool:
        return (
            not self.types and not self.subscriptions and self.data is None and self.control is None
        )


class Registry:
    """Clients, agent types and subscriptions of one gateway (see R1-R5)."""

    def __init__(
        self,
        *,
        registration_grace: float | None = 30.0,
        max_agent_types: int = 1000,
        max_subscriptions: int = 10_000,
        shared: bool = False,
    ) -> None:
        if registration_grace is not None and not registration_grace > 0:
            raise ValueError(
                f"registration_grace must be positive or None, got {registration_grace!r}"
            )
        if max_agent_types < 1 or max_subscriptions < 1:
            raise ValueError("max_agent_types and max_subscriptions must be at least 1")
        self.registration_grace = registration_grace
        self.max_agent_types = max_agent_types
        self.max_subscriptions = max_subscriptions
        self.clients: dict[str, Client] = {}
        self.owner: dict[str, str] = {}
        self.shared = shared
        self.servers: dict[str, dict[str, None]] = {}  # shared types: clients, in order
        self.shadows: dict[str, Subscription] = {}  # R2
        self.table = SubscriptionTable()
        self.sub_owner: dict[str, str] = {}
        self._expiries: list[tuple[float, str]] = []
        self.expired = 0  # clients whose records expired (R4)
        # R6: (client_id, agent types, subscription ids) dropped with their client
        self.on_drop: Callable[[str, list[str], list[str]], None] | None = None
        # R7: bumped by every change of ``owner``, ``table`` or a client's ``data``
        self.generation = 0

    # ------------------------------------------------------------ connections

    def attach(self, conn: Conn) -> None:
        self.generation += 1  # R7
        client = self.clients.setdefault(conn.client_id, Client())
        client.peer = client.peer or conn.peer
        if conn.kind is ConnKind.DATA:
            client.data = conn
            client.expires = None
        else:
            client.control = conn

    def detach(self, conn: Conn) -> None:
        """Forget *conn*; for a data connection, drop the client's agent types
        and subscriptions too (as AutoGen)."""
        self.generation += 1  # R7
        client = self.clients[conn.client_id]
        if conn.kind is ConnKind.CONTROL:
            client.control = None
        else:
            client.data = None
            if client.types or client.subscriptions:
                logger.info(
                    "client %s left: dropped agent types %s and %d subscriptions",
                    conn.client_id,
                    sorted(client.types),
                    len(client.subscriptions),
                )
            self._drop_records(conn.client_id, client)
        self._forget_if_empty(conn.client_id)

    def _unserve(self, agent_type: str, client_id: str) -> None:
        servers = self.servers[agent_type]
        del servers[client_id]
        if not servers:
            del self.servers[agent_type]

    def _drop_records(self, client_id: str, client: Client) -> None:
        self.generation += 1  # R7
        if self.on_drop is not None and (client.types or client.subscriptions):
            self.on_drop(client_id, list(client.types), list(client.subscriptions))
        for agent_type in client.types:
            if self.shared:
                self._unserve(agent_type, client_id)
            else:
                del self.owner[agent_type]
        for sub_id in client.subscriptions:
            self._unsubscribe(sub_id)
            del self.sub_owner[sub_id]
        client.types.clear()
        client.subscriptions.clear()
        client.expires = None

    def _forget_if_empty(self, client_id: str) -> None:
        client = self.clients.get(client_id)
        if client is not None and client.is_empty():
            del self.clients[client_id]

    def _record_for(self, client_id: str, now: float, peer: bool = False) -> Client:
        client = self.clients.setdefault(client_id, Client())
        client.peer = client.peer or peer
        grace = self.registration_grace
        if client.data is None and client.expires is None and grace is not None:
            client.expires = now + grace
            heapq.heappush(self._expiries, (client.expires, client_id))
        return client

    # ------------------------------------------------------------ unary calls

    def register_agent(
        self, client_id: str, agent_type: str, now: float, *, peer: bool = False
    ) -> None:
        """RegisterAgent. Works before the client opened a channel (as AutoGen).
        *peer*: *client_id* stands for another gateway of a cluster (R5)."""
        if not is_valid_agent_type(agent_type):
            raise RoutingError(
                Status.INVALID_ARGUMENT,
                f"Invalid agent type {agent_type!r}: it must match ^[\\w\\-\\.]+\\Z",
            )
        owner = self.owner.get(agent_type)
        if self.shared and client_id in self.servers.get(agent_type, ()):
            owner = client_id
        if owner is not None:
            raise RoutingError(
                Status.INVALID_ARGUMENT,
                f"Agent type {agent_type} already registered with client {owner}.",
            )
        existing = self.clients.get(client_id)
        if (
            existing is not None
            and not existing.peer
            and len(existing.types) >= self.max_agent_types
        ):
            raise _over_limit(
                client_id,
                f"{self.max_agent_types} agent types registered",
                f"agent type {agent_type} was not registered",
                "use fewer agent types per worker, or raise max_agent_types_per_client",
            )
        self.generation += 1  # R7
        self._record_for(client_id, now, peer).types.add(agent_type)
        if self.shared:
            self.servers.setdefault(agent_type, {})[client_id] = None
        else:
            self.owner[agent_type] = client_id
        logger.debug("client %s registered agent type %s", client_id, agent_type)

    def unregister_agent(self, client_id: str, agent_type: str) -> None:
        """Take *agent_type* from *client_id* (a peer gateway whose client left:
        clients themselves have no such call). No-op if it does not own it."""
        client = self.clients.get(client_id)
        if client is None or agent_type not in client.types:
            return
        self.generation += 1  # R7
        client.types.discard(agent_type)
        if self.shared:
            self._unserve(agent_type, client_id)
        else:
            del self.owner[agent_type]
        if not client.types and not client.subscriptions:
            client.expires = None
        self._forget_if_empty(client_id)

    def add_subscription(
        self, client_id: str, subscription: pb.Subscription, now: float, *, peer: bool = False
    ) -> None:
        try:
            sub = subscription_from_proto(subscription)
        except (InvalidSubscriptionError, InvalidIdentifierError) as exc:
            raise RoutingError(Status.INVALID_ARGUMENT, str(exc)) from None
        existing = self.clients.get(client_id)
        if (
            existing is not None
            and not existing.peer
            and len(existing.subscriptions) >= self.max_subscriptions
        ):
            raise _over_limit(
                client_id,
                f"{self.max_subscriptions} subscriptions",
                f"subscription {sub.id} was not added",
                "remove subscriptions no longer needed, or raise max_subscriptions_per_client",
            )
        try:
            if sub.id in self.shadows:
                raise DuplicateSubscriptionError()
            self.table.add(sub)
        except DuplicateSubscriptionError as exc:
            if not self._shadowed(client_id, sub):
                raise RoutingError(Status.INVALID_ARGUMENT, str(exc)) from None
        self.generation += 1  # R7 (``table`` or ``shadows`` changed)
        self.sub_owner[sub.id] = client_id
        self._record_for(client_id, now, peer).subscriptions.add(sub.id)

    def _shadowed(self, client_id: str, sub: Subscription) -> bool:
        """With shared agent types, keep *sub* as a shadow if it duplicates
        only other clients' subscriptions (R2)."""
        if not self.shared or sub.id in self.sub_owner:
            return False
        equal = [s.id for s in self.table if s == sub]
        equal += [i for i, s in self.shadows.items() if s == sub]
        if any(self.sub_owner[i] == client_id for i in equal):
            return False
        self.shadows[sub.id] = sub
        return True

    def _unsubscribe(self, subscription_id: str) -> None:
        """Take *subscription_id* out of ``table`` or ``shadows``; a shadow
        equal to a removed table entry takes its place (R2)."""
        self.generation += 1  # R7
        if self.shadows.pop(subscription_id, None) is not None:
            return
        removed = self.table.remove(subscription_id)
        for shadow_id, shadow in self.shadows.items():
            if shadow == removed:
                del self.shadows[shadow_id]
                self.table.add(shadow)
                return

    def remove_subscription(self, subscription_id: str) -> None:
        """Any client may remove any subscription (as AutoGen)."""
        try:
            self._unsubscribe(subscription_id)
        except UnknownSubscriptionError:
            raise RoutingError(Status.UNKNOWN, UNKNOWN_SUBSCRIPTION_MESSAGE) from None
        owner = self.sub_owner.pop(subscription_id)
        client = self.clients[owner]
        client.subscriptions.discard(subscription_id)
        if not client.types and not client.subscriptions:
            client.expires = None
        self._forget_if_empty(owner)

    def subscriptions(self) -> list[pb.Subscription]:
        """GetSubscriptions: every client's subscriptions, in insertion order."""
        return [subscription_to_proto(sub) for sub in self.table]

    def snapshot(self) -> list[tuple[str, tuple[str, ...], int, bool]]:
        """A read-only snapshot for operators: per client-id its agent types
        (sorted), how many subscriptions it recorded, whether a data stream is open."""
        return [
            (client_id, tuple(sorted(c.types)), len(c.subscriptions), c.data is not None)
            for client_id, c in self.clients.items()
        ]

    # ------------------------------------------------------------ expiry (R4)

    def next_expiry(self) -> float | None:
        heap = self._expiries
        while heap:
            expires, client_id = heap[0]
            client = self.clients.get(client_id)
            if client is not None and client.expires == expires:
                return expires
            heapq.heappop(heap)
        return None

    def expire(self, now: float) -> None:
        """Drop the records of every client whose channel did not come in time."""
        while (expires := self.next_expiry()) is not None and expires <= now:
            _, client_id = heapq.heappop(self._expiries)
            client = self.clients[client_id]
            logger.info(
                "client %s opened no channel within %g s of registering: dropped agent "
                "types %s and %d subscriptions",
                client_id,
                self.registration_grace,
                sorted(client.types),
                len(client.subscriptions),
            )
            self.expired += 1
            self._drop_records(client_id, client)
            self._forget_if_empty(client_id)

    def check_invariants(self) -> None:
        """Assert R1-R5."""
        for agent_type, owner in self.owner.items():
            assert owner in self.clients, (agent_type, owner)
            assert agent_type in self.clients[owner].types
        assert not (self.shared and self.owner)
        for agent_type, servers in self.servers.items():
            assert self.shared, agent_type
            assert servers, agent_type
            for client_id in servers:
                assert agent_type in self.clients[client_id].types
        live_expiries = set(self._expiries)
        for client_id, client in self.clients.items():
            assert not client.is_empty(), client_id
            for agent_type in client.types:
                if self.shared:
                    assert client_id in self.servers[agent_type]
                else:
                    assert self.owner.get(agent_type) == client_id
            for sub_id in client.subscriptions:
                assert self.sub_owner.get(sub_id) == client_id
            for conn in (client.data, client.control):
                if conn is not None:
                    assert conn.client_id == client_id
            if client.data is not None:
                assert client.expires is None
            elif (client.types or client.subscriptions) and self.registration_grace is not None:
                assert (client.expires, client_id) in live_expiries
            if not client.peer:
                assert len(client.types) <= self.max_agent_types
                assert len(client.subscriptions) <= self.max_subscriptions
        assert set(self.sub_owner) == {s.id for s in self.table} | set(self.shadows)
        assert not set(self.shadows) & {s.id for s in self.table}
        assert not self.shadows or self.shared
        for shadow in self.shadows.values():
            assert any(s == shadow for s in self.table)
        subscribed = sum(len(c.subscriptions) for c in self.clients.values())
        assert subscribed == len(self.table) + len(self.shadows)


def _over_limit(client_id: str, held: str, refused: str, advice: str) -> RoutingError:
    """RESOURCE_EXHAUSTED for a client at one of its per-client limits (R5)."""
    return RoutingError(
        Status.RESOURCE_EXHAUSTED,
        f"agentwire gateway: client {client_id} already has {held}, the gateway's limit "
        f"per client; {refused} ({advice})",
    )
