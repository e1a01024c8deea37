"""Relayed subscriptions: rows the gateway keeps for agents whose worker does not.

A worker hands an event only to the agents its *own* subscriptions map the
topic to: AutoGen's worker and agentwire's both look the recipients up
locally. A subscription made elsewhere -- by an operator, through
``/agentwire.Operator/AddSubscription`` -- sends the event to the worker
serving its agent type, which finds no recipient and drops it. So for such a
subscription the gateway also sends that worker a copy addressed the way
every agent type listens by default: topic type ``"<agent type>:<topic
type>"``, same source, id and data. The agent type's direct-message
subscription, ``TypePrefixSubscription("<agent type>:", agent type)`` (which
``register`` adds unless told to skip it), maps that copy to the agent
``(agent type, source)``: the agent the relayed subscription maps the topic
to. The handler sees the copy's topic type.

Sans-IO; the routing table (``_gateway/_routing.py``) holds one
:class:`Relays`. Invariants (``check_invariants``):

L1  Rows. Every relayed subscription is a subscription the table's registry
    holds, under the same id; it leaves in the same step as that row (removed,
    or its client's records dropped).
L2  One copy per agent type, only when needed. For a topic, a copy goes to
    the worker of agent type ``t`` only if a relayed subscription maps the
    topic to ``t`` and no other subscription of the table does (the worker's
    own subscriptions, which it mirrors at the gateway, deliver the event
    then). So an agent never gets an event twice through one relayed row.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Container

from .._ids import TopicId
from .._proto import agent_worker_pb2 as pb
from .._subscriptions import SubscriptionTable, subscription_from_proto

__all__ = ["Relays", "direct_topic_type"]


def direct_topic_type(agent_type: str, topic_type: str) -> str:
    """The topic type a relayed copy is sent under (see the module docstring)."""
    return f"{agent_type}:{topic_type}"


class Relays:
    """The relayed subscriptions of one routing table."""

    def __init__(self) -> None:
        self._table = SubscriptionTable()

    def __len__(self) -> int:
        return len(self._table)

    def add(self, subscription: pb.Subscription) -> None:
        """Relay *subscription*, which the registry has just accepted (L1)."""
        self._table.add(subscription_from_proto(subscription))

    def discard(self, subscription_id: str) -> None:
        if subscription_id in self._table:
            self._table.remove(subscription_id)

    def prune(self, known: Container[str]) -> None:
        """Forget the relayed subscriptions whose ids the registry dropped (L1)."""
        if len(self._table):
            for sub in self._table.subscriptions():
                if sub.id not in known:
                    self._table.remove(sub.id)

    def copies(
        self, topic: TopicId, data: bytes, table: SubscriptionTable
    ) -> list[tuple[str, bytes]]:
        """``(agent type, serialized agents.Message)`` per copy an event
        published to *topic* (*data*, a serialized ``agents.Message``) needs,
        given every subscription of the gateway in *table* (L2)."""
        relayed = self._table.agent_types(topic)
        if not relayed:
            return []
        others = Counter(agent.type for agent in table.recipients(topic))
        others.subtract(agent.type for agent in self._table.recipients(topic))
        wanted = [agent_type for agent_type in relayed if others[agent_type] <= 0]
        if not wanted:
            return []
        message = pb.Message.FromString(data)
        copies = []
        for agent_type in wanted:
            message.cloudEvent.type = direct_topic_type(agent_type, topic.type)
            copies.append((agent_type, message.SerializeToString()))
        return copies

    def check_invariants(self, known: Container[str]) -> None:
        """Assert L1 against the registry's subscription ids (*known*)."""
        assert all(sub.id in known for sub in self._table.subscriptions())
