"""The publish fan-out kept per topic: which agents' slots a publish to a topic reaches.

Asking the subscription table for a topic's recipients builds an ``AgentId``
per recipient, and finding each one's slot hashes it: about half the cost of
delivering a publish. :class:`Fanout` keeps the answer, per topic, between
publishes. It is sans-IO: delivery looks a topic up with :meth:`Fanout.get`,
works the answer out itself on a miss (creating agents, which may wait) and
offers it back with :meth:`Fanout.keep`, passing the :attr:`Fanout.generation`
it started from.

Invariants (``Delivery.check_invariants`` checks 1 against the subscription table):

1. A kept answer is exactly the slots of ``subscriptions.recipients(topic)``,
   in order (duplicates kept).
2. Nothing is kept while a custom subscription exists: its ``is_match`` and
   ``map_to_agent`` are asked on every publish, as without this cache.
3. :meth:`Fanout.changed` (a subscription added or removed, a slot removed)
   forgets every answer and moves the generation on; an answer worked out
   across a change (its generation is not the current one) is not kept.
4. At most :data:`MAX_TOPICS` answers are kept, the oldest forgotten first.
5. The last answer :meth:`Fanout.get` found is remembered with its topic
   object, and is always a kept one: a publish to the very same ``TopicId``
   again (a publisher's, or a worker's events of one sender) is answered
   without hashing it (attrs hashes a frozen instance's fields on each call).
"""

from __future__ import annotations

from typing import Generic, TypeVar

from .._ids import TopicId
from .._subscriptions import (
    DefaultSubscription,
    Subscription,
    TypePrefixSubscription,
    TypeSubscription,
)

__all__ = ["MAX_TOPICS", "Fanout"]

MAX_TOPICS = 1024
"""Topics whose fan-out is kept."""

# Subscriptions whose recipients depend on the topic alone.
_PLAIN = (TypeSubscription, DefaultSubscription, TypePrefixSubscription)

SlotT = TypeVar("SlotT")


class Fanout(Generic[SlotT]):
    """Kept fan-outs by topic (see the module docstring)."""

    __slots__ = ("_custom", "_kept", "_last", "_last_slots", "generation")

    def __init__(self) -> None:
        self._kept: dict[TopicId, list[SlotT]] = {}
        self._custom = 0  # custom subscriptions in the table
        self.generation = 0
        self._last: TopicId | None = None  # invariant 5
        self._last_slots: list[SlotT] | None = None

    def get(self, topic: TopicId) -> list[SlotT] | None:
        """The kept slots of *topic*'s recipients, or None."""
        if topic is self._last:
            return self._last_slots
        slots = self._kept.get(topic)
        if slots is not None:
            self._last = topic
            self._last_slots = slots
        return slots

    def keep(self, topic: TopicId, slots: list[SlotT], generation: int) -> None:
        """Keep *slots* for *topic*, worked out from *generation* (invariants 2-4)."""
        if self._custom or generation != self.generation:
            return
        kept = self._kept
        if len(kept) >= MAX_TOPICS:
            oldest = next(iter(kept))
            del kept[oldest]
            if oldest == self._last:
                self._forget_last()
        kept[topic] = slots

    def changed(
        self, added: Subscription | None = None, removed: Subscription | None = None
    ) -> None:
        """A subscription was *added* or *removed*, or a slot removed: forget every answer."""
        self._kept.clear()
        self._forget_last()
        self.generation += 1
        if added is not None and type(added) not in _PLAIN:
            self._custom += 1
        if removed is not None and type(removed) not in _PLAIN:
            self._custom -= 1

    def _forget_last(self) -> None:
        self._last = None
        self._last_slots = None

    def kept(self) -> dict[TopicId, list[SlotT]]:
        """Every kept answer (for invariant checks)."""
        assert not self._kept or not self._custom
        if self._last is not None:  # invariant 5
            assert self._kept.get(self._last) is self._last_slots
        return dict(self._kept)
