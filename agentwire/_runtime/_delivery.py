"""Delivery: the agents of one runtime, their mailboxes, and how a message reaches a handler.

:class:`Delivery` is the machinery under :class:`~._core.Runtime`: it holds
the registered agent types, the instantiated agents (one slot each, with its
mailbox), creates agents on their first message, runs handlers inline or
through a drain task, fans publishes out, and tracks idleness. The runtime
object adds the public API, interventions and the router on top.

It is made of parts, one module (and base class) each, every one with the
invariants it keeps; a method of one calls another's directly (``self.x``
finds it in the class, whichever part defines it), so the split costs
nothing per message:

* ``_activation``: the agent slots, the state the parts share, and creating
  an agent on its first message;
* ``_mailbox``: mailboxes, backpressure, the overflow bound and the drain
  task that handles queued messages;
* ``_requests``: RPCs, inline, queued or re-entrant, and their cancellation;
* ``_publishing``: events, fanned out to a topic's subscribers;
* this module: construction, publish failures, idleness and shutdown.

Ordering guarantees
-------------------

* For one sender task and one receiving agent, messages are handled in the
  order they were sent or published (RPCs and publishes alike): the handler of
  a message starts only after the handlers of the earlier ones finished.
* Nothing is promised across different receivers, or across different
  sending tasks.
* The one exception: an RPC that runs re-entrantly (``_requests``) overtakes
  messages queued earlier for its recipient, which could not be handled
  before it anyway (the recipient's handler is waiting on the caller).

Stopping
--------

:meth:`Delivery.stop` fails every waiting RPC with
:class:`~agentwire.RuntimeClosedError`, wakes senders waiting for room and
cancels the service nursery (every drain task); :meth:`Delivery.close_agents`
then calls ``close()`` on every instantiated agent. (An RPC running inline in
a task *outside* the runtime's block -- not the structured way to use it -- is
not interrupted: it ends with its caller, and its further runtime calls raise
``RuntimeClosedError``.)

:meth:`Delivery.check_invariants` asserts the invariants of every part (the
tests call it while open).
"""

from __future__ import annotations

import itertools
import logging

import trio

from .._agents import AgentRuntime
from .._budget import CheckpointBudget
from .._errors import RuntimeClosedError
from .._serialization import SerializationRegistry
from .._subscriptions import SubscriptionTable
from ._fanout import Fanout
from ._mailbox import in_handler
from ._pending import PendingMap
from ._publishing import Publishing
from ._requests import Requests

__all__ = ["Delivery", "in_handler"]

logger = logging.getLogger("agentwire.runtime")


class Delivery(Requests, Publishing):
    """The agents of one runtime and the delivery of messages to them (see the module docstring)."""

    def __init__(
        self,
        runtime: AgentRuntime,
        services: trio.Nursery,
        serialization: SerializationRegistry,
        subscriptions: SubscriptionTable,
        *,
        mailbox_size: int,
        max_overflow: int,
        ignore_unhandled_exceptions: bool,
    ) -> None:
        if mailbox_size < 1:
            raise ValueError("mailbox_size must be >= 1")
        if max_overflow < 0:
            raise ValueError("max_overflow must be >= 0")
        self._runtime = runtime
        self._services = services
        self._serialization = serialization
        self._subscriptions = subscriptions
        self.mailbox_size = mailbox_size
        self.max_overflow = max_overflow
        self.overflow = 0
        self.dropped = 0
        self._ignore_unhandled = ignore_unhandled_exceptions
        self.registrations = {}
        self.slots = {}
        self.activating = set()
        self.activated = trio.lowlevel.ParkingLot()
        self._fanout = Fanout()
        self.pending = PendingMap()
        self._keys = itertools.count()
        self._result_types = {type(None)}
        self.busy = 0
        self.queued = 0
        self.in_flight = 0
        # Shared by every entry point and drain task; bound once, called per message.
        self.spend = CheckpointBudget().spend
        self.idle = trio.lowlevel.ParkingLot()
        self.watchers = 0
        self.changed = trio.lowlevel.ParkingLot()
        self.closed = False
        self._background_error = None

    # -- failures --------------------------------------------------------------------------

    @property
    def failed(self) -> bool:
        """Whether a publish handler failed and the runtime must re-raise it."""
        return self._background_error is not None

    def raise_background_error(self) -> None:
        """Raise (once) the publish failure kept when exceptions are not ignored."""
        error = self._background_error
        if error is not None:
            self._background_error = None
            raise error

    # -- idleness and shutdown ----------------------------------------------------------------

    @property
    def is_idle(self) -> bool:
        """No handler runs, no message is queued, no agent is being created."""
        return not self.busy and not self.activating

    async def wait_idle(self) -> None:
        """Wait until idle or until a publish failure must be raised (not from a handler)."""
        while self.busy or self.activating:
            if self._background_error is not None:
                break
            await self.idle.park()
        else:
            await trio.lowlevel.checkpoint()

    def stop(self) -> None:
        """Fail waiting RPCs, wake waiting senders, cancel the drain tasks (idempotent)."""
        if self.closed:
            return
        self.closed = True
        self.pending.close(lambda key: RuntimeClosedError("the runtime closed"))
        for slot in self.slots.values():
            if slot.space:
                slot.space.unpark_all()
        self.changed.unpark_all()
        self._services.cancel_scope.cancel()

    async def close_agents(self) -> None:
        """Call ``close()`` of every instantiated agent (shielded; failures are logged)."""
        with trio.CancelScope(shield=True):
            for agent_id, slot in list(self.slots.items()):
                try:
                    await slot.agent.close()
                except Exception:
                    logger.exception("close() of agent %s failed", agent_id)

    def check_invariants(self) -> None:
        """Assert the invariants of every part (for tests; O(number of agents))."""
        self._check_activation()
        self._check_mailboxes()
        self._check_fanout()
