"""The agents of one runtime: their slots, the state delivery shares, and activation.

Every instantiated agent has one :class:`AgentSlot` (the agent, its mailbox,
whether a handler of it runs). :class:`DeliveryState` names the state the
parts of :class:`~._delivery.Delivery` share (each part is a base class of
it, so a method moved between parts costs nothing per call), and
:class:`Activation` creates an agent with its type's factory on its first
message.

Invariants (``Delivery.check_invariants`` asserts 1 and 2 as far as it can)
-------------------------------------------------------------------------

1. An agent id is in ``activating`` exactly while one task runs its factory;
   other tasks asking for it wait on ``activated`` and then look again, so a
   factory runs once per agent id (unless it failed).
2. An agent id gets a slot at most once and a slot is never replaced: the
   kept fan-outs (``_publishing``) hold slots. Removing one (a rolled-back
   instance registration) tells the fan-out.
3. An agent being created counts as work: the runtime is not idle while
   ``activating`` is non-empty, and the end of an activation wakes the tasks
   waiting for idleness.
"""

from __future__ import annotations

import itertools
import logging
from collections import deque
from typing import TYPE_CHECKING, Any

import trio

from .._agents import Agent, AgentRuntime
from .._errors import UndeliverableError
from .._ids import AgentId
from .._serialization import SerializationRegistry
from .._subscriptions import SubscriptionTable
from ._fanout import Fanout
from ._pending import PendingMap
from ._registration import Registration

if TYPE_CHECKING:
    from collections.abc import Callable

    from ._mailbox import Envelope

__all__ = ["Activation", "AgentSlot", "DeliveryState"]

logger = logging.getLogger("agentwire.runtime")


class AgentSlot:
    """One agent instance and its mailbox."""

    __slots__ = ("agent", "busy", "id", "queue", "space")

    def __init__(self, agent: Agent, agent_id: AgentId) -> None:
        self.agent = agent
        self.id = agent_id
        # Created on first use: most agents only ever take inline RPCs, and an
        # empty deque costs ~600 bytes.
        self.queue: deque[Envelope] | None = None
        self.busy = False
        self.space: trio.lowlevel.ParkingLot | None = None  # senders waiting for room


class DeliveryState:
    """The state shared by the parts of delivery (set by ``Delivery.__init__``)."""

    _runtime: AgentRuntime  # what agents are bound to
    _services: trio.Nursery
    _serialization: SerializationRegistry
    _subscriptions: SubscriptionTable
    mailbox_size: int
    max_overflow: int
    overflow: int
    dropped: int
    _ignore_unhandled: bool
    registrations: dict[str, Registration]
    slots: dict[AgentId, AgentSlot]
    activating: set[AgentId]
    activated: trio.lowlevel.ParkingLot  # tasks waiting for an activation to end
    _fanout: Fanout[AgentSlot]
    pending: PendingMap[int, Any]
    _keys: itertools.count[int]
    _result_types: set[type]
    busy: int
    queued: int
    in_flight: int
    spend: Callable[[], bool]
    idle: trio.lowlevel.ParkingLot
    watchers: int  # tasks in wait_until(); checked (an int, cheap) before waking them
    changed: trio.lowlevel.ParkingLot
    closed: bool
    _background_error: BaseException | None


class Activation(DeliveryState):
    """Agents created on their first message (see the module docstring)."""

    async def slot(self, agent_id: AgentId) -> AgentSlot:
        """The slot of *agent_id*, creating the agent if needed."""
        slot = self.slots.get(agent_id)
        if slot is None:
            slot = await self.activate(agent_id)
        return slot

    async def activate(self, agent_id: AgentId) -> AgentSlot:
        """Create *agent_id* with its type's factory (once, even if several tasks ask)."""
        while True:
            registration = self.registrations.get(agent_id.type)
            if registration is None:
                raise UndeliverableError(
                    f"no agent type {agent_id.type!r} is registered with this runtime "
                    f"(cannot deliver to {agent_id}); register it first"
                )
            if registration.factory is None:
                raise UndeliverableError(
                    f"agent {agent_id} does not exist: type {agent_id.type!r} holds registered "
                    "instances only (check the subscriptions mapping to this type)"
                )
            if agent_id not in self.activating:
                break
            # Another task is creating it: wait for the end of an activation
            # (any: one lot for all, as waiting is rare), then look again.
            await self.activated.park()
            slot = self.slots.get(agent_id)
            if slot is not None:
                return slot
        self.activating.add(agent_id)
        try:
            agent = await registration.create(self._runtime, agent_id)
            slot = self.slots[agent_id] = AgentSlot(agent, agent_id)
            return slot
        except Exception:
            logger.exception("creating agent %s failed", agent_id)
            raise
        finally:
            self.activating.discard(agent_id)
            if self.activated:
                self.activated.unpark_all()
            if not self.busy and not self.activating and self.idle:
                self.idle.unpark_all()
            if self.watchers:
                self.changed.unpark_all()

    def add_instance(self, agent: Agent, agent_id: AgentId) -> None:
        """Record an agent registered as an instance (already bound)."""
        self.slots[agent_id] = AgentSlot(agent, agent_id)

    def remove_instance(self, agent_id: AgentId) -> None:
        """Forget an instance whose registration was rolled back (it never handled a message)."""
        del self.slots[agent_id]
        self._fanout.changed()

    def _check_activation(self) -> None:
        """Assert invariants 1 and 2 (as far as a snapshot shows them)."""
        for agent_id, slot in self.slots.items():
            assert slot.id == agent_id, (agent_id, slot.id)
        for agent_id in self.activating:
            assert agent_id not in self.slots, f"{agent_id} has a slot while being created"
