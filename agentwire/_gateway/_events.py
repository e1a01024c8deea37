"""Event fan-out in the routing table: which connections a CloudEvent goes
to, and the copies relayed subscriptions ask for. Sans-IO; ``_routing.py``
holds one :class:`EventFanout` and hands it every event it admits.

Invariants (the routing table's, checked by its ``check_invariants``):

I8  Relayed subscriptions (operator-made): L1-L2 of ``_operator/_relay.py``
    (the table's ``_relays``, which this fan-out reads).
I9  Peer gateways, the event half (the whole rule: ``_peers.py``). An event
    that came from a peer gateway is never held and goes to local clients
    only (*local_only*), with no relayed copies: the publisher's gateway made
    those (I8) and they cross as events. So events never loop between gateways.
I10 Cached routes. ``_routes`` maps the ``(type, source)`` of valid topics to
    the connections an event published there goes to (all, and those that
    are not peer gateways), as :meth:`EventFanout.publish` computes them
    from the registry; every entry was computed at the registry's current
    generation (its R7: the cache is emptied when it moves on), so no event
    goes to a connection it would not go to without the cache. At most
    ``_ROUTES_CAP`` entries (emptied when full). With shared agent types
    nothing is cached: a delivery there may place an agent.

Wire compatibility (AutoGen 0.7.5's Python host is the reference):
CloudEvents are forwarded byte-for-byte, once per client that owns a
subscribed agent type, the publisher included (as AutoGen). With shared
agent types, once per client owning an agent the subscriptions map the topic
to (the worker then delivers it to the recipients its own subscriptions
give, as usual).
"""

from __future__ import annotations

import logging
from typing import Final

from .._errors import InvalidIdentifierError
from .._ids import TopicId
from .._operator._relay import Relays
from .._proto import cloudevent_pb2
from .._security._guard import MessagePolicy
from ._actions import Action, Deliver
from ._held import HeldEvent, StartupHold
from ._registry import Conn, Registry
from ._shared import SharedTypes

__all__ = ["EventFanout"]

logger = logging.getLogger("agentwire.gateway")

_ROUTES_CAP: Final = 4096

# A cached route (I10): the target connections, and those that are not peers.
_Route = tuple[tuple[Conn, ...], tuple[Conn, ...]]


class EventFanout:
    """Where the events of one routing table go."""

    __slots__ = (
        "_clients",
        "_generation",
        "_owner",
        "_reg",
        "_relays",
        "_routes",
        "_shared",
        "deliveries",
        "dropped",
        "received",
    )

    def __init__(self, reg: Registry, shared: SharedTypes | None, relays: Relays) -> None:
        self._reg = reg
        self._clients = reg.clients
        self._owner = reg.owner
        self._shared = shared
        self._relays = relays
        self.received = 0
        self.deliveries = 0  # events handed to the I/O layer, relayed copies included
        self.dropped = 0
        self._routes: dict[tuple[str, str], _Route] = {}  # I10
        self._generation = reg.generation

    def receive(
        self,
        conn: Conn,
        event: cloudevent_pb2.CloudEvent,
        data: bytes,
        now: float,
        policy: MessagePolicy | None,
        hold: StartupHold | None,
    ) -> list[Action]:
        """*event* (in *data*, a serialized ``agents.Message``) arrived on
        live data connection *conn*: its deliveries, or none (then it is
        held while *hold* accepts it, else dropped)."""
        self.received += 1
        if policy is not None and policy.refuse_event(conn.client_id, event.type):
            self.dropped += 1  # the policy counted and logged it
            return []
        route = None
        if self._shared is None:
            topic_type, source = event.type, event.source
            if self._generation == self._reg.generation:  # (_route's lookup, without a call)
                route = self._routes.get((topic_type, source))
            if route is None:
                route = self._route(topic_type, source)
        if route is not None and not self._relays:  # the usual case, from the cache (I10)
            targets = route[1] if conn.peer else route[0]  # I9
            if len(targets) == 1:  # (Deliver(..., answer=False, event=True), positionally)
                self.deliveries += 1
                return [Deliver(targets[0], data, False, True)]
            if targets:
                self.deliveries += len(targets)
                return [Deliver(target, data, False, True) for target in targets]
            if conn.peer or hold is None or not hold.accepts(now):
                return []
        try:
            topic = TopicId(event.type, event.source)
        except InvalidIdentifierError as exc:
            self.dropped += 1
            logger.warning("dropping CloudEvent %r: %s", event.id, exc)
            return []
        if conn.peer:  # I9
            return self.publish(topic, data, local_only=True)
        actions = self.publish(topic, data)
        if not actions and hold is not None and hold.accepts(now):
            hold.events.append(HeldEvent(topic, data))
        return actions

    def _route(self, topic_type: str, source: str) -> _Route | None:
        """The targets of an event published to ``topic_type/source``, from the
        cache (I10); None if that is no valid topic."""
        generation = self._reg.generation
        if self._generation != generation:
            self._routes.clear()
            self._generation = generation
        key = (topic_type, source)
        route = self._routes.get(key)
        if route is None:
            try:
                route = self._fresh_route(TopicId(topic_type, source))
            except InvalidIdentifierError:
                return None
            if len(self._routes) >= _ROUTES_CAP:
                self._routes.clear()
            self._routes[key] = route
        return route

    def _fresh_route(self, topic: TopicId) -> _Route:
        every = tuple(self._targets(topic, local_only=False))
        return every, tuple(conn for conn in every if not conn.peer)

    def release(self, events: list[HeldEvent], hold: StartupHold | None) -> list[Action]:
        """Retry held *events*: each goes to the subscribers reachable now,
        else back into *hold* (None: the grace is over, it is dropped)."""
        actions: list[Action] = []
        for held in events:
            delivered = self.publish(held.topic, held.data)
            if delivered:
                actions += delivered
            elif hold is not None:
                hold.events.append(held)
            else:
                self.dropped += 1
        return actions

    def publish(self, topic: TopicId, data: bytes, *, local_only: bool = False) -> list[Action]:
        """Deliver *data* once to each client owning a type subscribed to *topic*
        (*local_only*: to no peer gateway, I9)."""
        targets = self._targets(topic, local_only)
        self.deliveries += len(targets)
        actions: list[Action] = [Deliver(target, data, event=True) for target in targets]
        if self._relays and not local_only:  # I9: the publisher's gateway made the copies
            actions += self._relay(topic, data)
        return actions

    def _targets(self, topic: TopicId, local_only: bool) -> dict[Conn, None]:
        """The connections an event published to *topic* goes to, in order."""
        targets: dict[Conn, None] = {}
        if self._shared is not None:
            for agent in self._reg.table.recipients(topic):
                placed = self._shared.target(agent.type, agent.key)
                if isinstance(placed, Conn):
                    if not (local_only and placed.peer):
                        targets[placed] = None
                else:
                    logger.debug("event for %s on %s not delivered: %s", agent, topic, placed[1])
            return targets
        for agent_type in self._reg.table.agent_types(topic):
            owner = self._owner.get(agent_type)
            if owner is None:
                logger.debug("no owner for agent type %s subscribed to %s", agent_type, topic)
                continue
            data_conn = self._clients[owner].data
            if data_conn is not None and not (local_only and data_conn.peer):
                targets[data_conn] = None
        return targets

    def _relay(self, topic: TopicId, data: bytes) -> list[Action]:
        """The copies of an event that relayed subscriptions ask for (I8)."""
        actions: list[Action] = []
        for agent_type, copy in self._relays.copies(topic, data, self._reg.table):
            if self._shared is not None:
                placed = self._shared.target(agent_type, topic.source)
                target = placed if isinstance(placed, Conn) else None
            else:
                owner = self._owner.get(agent_type)
                target = None if owner is None else self._clients[owner].data
            if target is not None:
                actions.append(Deliver(target, copy, event=True))
        self.deliveries += len(actions)
        return actions

    def check_invariants(self) -> None:
        """Assert I10: every cached route is the one computed afresh."""
        assert len(self._routes) <= _ROUTES_CAP
        assert not (self._routes and self._shared is not None)
        if self._generation == self._reg.generation:
            for (topic_type, source), route in self._routes.items():
                topic = TopicId(topic_type, source)
                fresh = tuple(self._targets(topic, False)), tuple(self._targets(topic, True))
                assert route == fresh, (topic, route, fresh)
