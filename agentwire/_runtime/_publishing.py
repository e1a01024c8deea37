"""Publishing: an event queued for every local subscriber of its topic.

* Publishing queues one envelope per recipient (subscription order, the
  sender excluded, duplicates kept like AutoGen) and returns once all are
  queued; it never waits for handlers. One context and one envelope serve
  every recipient.
* A publish from outside any handler waits for mailbox room; one from a
  handler never does, and past the runtime's overflow bound it skips the full
  mailboxes and then raises :class:`~agentwire.OverloadedError` (``_mailbox``).
* Published messages' handlers run in the drain task with no scope of their
  own (one per message would cost as much as the delivery); stopping the
  runtime cancels them. Their exceptions are logged (and kept for the runtime
  to re-raise, see ``_core``); so is a recipient that cannot be created.

Invariants (``Delivery.check_invariants`` asserts 1)
----------------------------------------------------

1. The fan-out kept per topic (``_fanout``, see ``_fanout``) is exactly the
   slots of ``subscriptions.recipients(topic)``: it is told of every
   subscription added or removed and every slot removed, and is offered an
   answer only when every recipient had a slot. Slots are never replaced
   (``_activation``).
"""

from __future__ import annotations

import logging
from typing import Any

import trio

from .._agents import MessageContext
from .._errors import OverloadedError, RuntimeClosedError
from .._ids import AgentId, TopicId
from .._subscriptions import Subscription
from . import _mailbox
from ._activation import Activation, AgentSlot
from ._mailbox import Envelope, Mailboxes

__all__ = ["Publishing"]

logger = logging.getLogger("agentwire.runtime")

# Bound by assignment, not imported, for LOAD_METHOD (see ``_mailbox``).
rpc_chain = _mailbox.rpc_chain


class Publishing(Mailboxes, Activation):
    """The delivery of events (see the module docstring)."""

    async def deliver_event(
        self,
        message: Any,
        topic: TopicId,
        *,
        sender: AgentId | None,
        message_id: str,
        is_rpc: bool = False,
        checked: bool = False,
    ) -> None:
        """Queue an event for every local subscriber of *topic* except *sender*.

        *checked*: the caller passed a checkpoint (or a cancellation check) of its
        own since its last wait, so this one need not.
        """
        if self.closed:
            raise RuntimeClosedError("the runtime is closed; the event cannot be delivered")
        if checked:
            pass
        elif self.spend():
            await trio.lowlevel.checkpoint()
        else:
            await trio.lowlevel.checkpoint_if_cancelled()
        may_wait = not rpc_chain.get()  # handlers never wait for room (``_mailbox``)
        limit = self.mailbox_size
        # One context and one envelope serve every recipient (AutoGen, too,
        # shares the publish's cancellation token between recipients).
        envelope = Envelope(message, MessageContext(sender, topic, is_rpc, message_id), None, ())
        missed = 0
        recipients = self._fanout.get(topic)
        if recipients is None:
            recipients = await self._resolve_fanout(topic, sender)
        for slot in recipients:
            if sender is not None and slot.id == sender:
                continue
            queue = slot.queue
            if slot.busy and queue is not None and len(queue) < limit:  # common case, inlined
                queue.append(envelope)
                self.queued += 1
            else:
                try:
                    await self._enqueue(slot, envelope, may_wait)
                except OverloadedError:
                    missed += 1
        if self.watchers:
            self.changed.unpark_all()
        if missed:
            raise OverloadedError(
                f"publish to {topic} reached {missed} subscriber(s) fewer than it should: "
                f"their mailboxes are full and the runtime's overflow is at max_overflow="
                f"{self.max_overflow} (the handlers publishing outrun the ones handling)"
            )

    def has_recipients(self, topic: TopicId) -> bool:
        """Whether a publish to *topic* reaches any local agent (none: kept as
        an empty fan-out, so asking again is a lookup)."""
        kept = self._fanout.get(topic)
        if kept is not None:
            return bool(kept)
        generation = self._fanout.generation
        if self._subscriptions.recipients(topic):
            return True
        self._fanout.keep(topic, [], generation)
        return False

    async def _resolve_fanout(self, topic: TopicId, sender: AgentId | None) -> list[AgentSlot]:
        """The slots of *topic*'s recipients, creating agents as needed; cached when it may be.

        The sender is not created for its own publish, and a recipient that
        cannot be created is logged, recorded as a failure and left out; either
        way the answer is not cached, so the next publish looks again.
        """
        generation = self._fanout.generation
        slots: list[AgentSlot] = []
        complete = True
        for agent_id in self._subscriptions.recipients(topic):
            slot = self.slots.get(agent_id)
            if slot is None:
                if sender is not None and agent_id == sender:
                    complete = False
                    continue
                try:
                    slot = await self.activate(agent_id)
                except Exception as exc:
                    logger.error("cannot deliver a publish to %s: %s", agent_id, exc)
                    self._record_failure(exc)
                    complete = False
                    continue
            slots.append(slot)
        if complete:
            self._fanout.keep(topic, slots, generation)
        return slots

    def subscriptions_changed(
        self, added: Subscription | None, removed: Subscription | None
    ) -> None:
        """The runtime added or removed a subscription: forget every kept fan-out."""
        self._fanout.changed(added, removed)

    def _check_fanout(self) -> None:
        """Assert invariant 1."""
        for topic, kept in self._fanout.kept().items():
            expected = [self.slots.get(a) for a in self._subscriptions.recipients(topic)]
            assert kept == expected, (topic, kept, expected)
