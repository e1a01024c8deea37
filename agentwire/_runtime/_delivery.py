"""Delivery: the agents of one runtime, their mailboxes, and how a message reaches a handler.

:class:`Delivery` is the machinery under :class:`~._core.Runtime`: it holds
the registered agent types, the instantiated agents (one :class:`_AgentSlot`
each, with its mailbox), creates agents on their first message, runs handlers
inline or through a drain task, fans publishes out, and tracks idleness. The
runtime object adds the public API, interventions and the router on top.

Delivery model
==============

* Every agent instance has a bounded mailbox (``mailbox_size``, default 64)
  and handles **one message at a time, in arrival order**. Different agents
  run concurrently in the runtime's service nursery.
* An idle agent costs no task. When its mailbox becomes non-empty a *drain
  task* is started; it handles messages until the mailbox is empty, then
  exits. (``_AgentSlot.busy`` is true while a drain task exists or a handler
  of the agent runs; ``queue`` non-empty implies ``busy``.)
* An RPC to an agent that is idle runs its handler **directly in the caller's
  task** (no queue, no task switch); it still counts as the agent's one
  running handler, so messages arriving meanwhile queue behind it. An RPC to
  a busy agent is queued and the caller waits in the pending map.
* A full mailbox makes a sender wait (backpressure) until there is room --
  unless the sender is itself a handler: messages sent or published from
  inside a handler never wait for room (they may take a mailbox past its
  size). Otherwise agents publishing into each other's full mailboxes (any
  cascade) would deadlock. So backpressure acts where work enters the
  runtime: user tasks and, for a worker, the connection's reader.
* Publishing queues one envelope per recipient (subscription order, the
  sender excluded, duplicates kept like AutoGen) and returns once all are
  queued; it never waits for handlers.

Memory bound: the overflow
--------------------------

Messages handlers queue past a full mailbox are the runtime's *overflow*; it
is bounded runtime-wide by ``max_overflow`` (default 10,000 messages). When it
is at its bound, a handler's send or publish that would add to it is refused:

* an RPC raises :class:`~agentwire.OverloadedError` in the sending handler,
  and nothing is queued;
* a publish is still queued for every recipient with mailbox room, and skips
  the others; once the fan-out is done it raises ``OverloadedError`` in the
  publishing handler, naming how many recipients missed it.

Every refused message counts in ``dropped`` (``runtime.statistics()``). So a
publish cascade (agents publishing to each other faster than they handle)
fails loudly in the handlers driving it instead of growing without bound:
the runtime holds at most ``agents * mailbox_size + max_overflow`` messages,
plus one per sender waiting for room.

Ordering guarantees
-------------------

* For one sender task and one receiving agent, messages are handled in the
  order they were sent or published (RPCs and publishes alike): the handler of
  a message starts only after the handlers of the earlier ones finished.
* Nothing is promised across different receivers, or across different
  sending tasks.
* The one exception: an RPC that runs re-entrantly (below) overtakes
  messages queued earlier for its recipient, which could not be handled
  before it anyway (the recipient's handler is waiting on the caller).

Re-entrancy and deadlocks
-------------------------

Strict per-agent serialization would deadlock an RPC cycle (A's handler calls
B, whose handler calls A). Delivery tracks the chain of agents whose handlers
are waiting on an RPC (a context variable carried along the call). An RPC to
an agent in that chain runs **re-entrantly**: its handler runs at once in the
caller's task, bypassing the mailbox, as AutoGen's fully concurrent runtime
would run it. This covers self-RPCs. The chain does not cross processes, so
an RPC cycle through two workers still waits until a deadline.

Cancellation and errors
-----------------------

* A caller leaving its cancel scope (cancel, deadline) abandons its RPC. An
  inline handler runs in the caller's task, so it is simply cancelled with
  it. A queued request's handler runs in a cancel scope of its own (which
  inherits the caller's deadline): the pending entry is removed at once and
  that scope is cancelled (a request that has not started is skipped).
  Published messages' handlers run in the drain task with no scope of their
  own (one per message would cost as much as the delivery); stopping the
  runtime cancels them.
* A handler's exception reaches the RPC caller as the exception itself. A
  handler that called ``ctx.cancellation.cancel()`` (or was interrupted by
  it) gives the caller :class:`~agentwire.RequestCancelledError`.
* An unknown recipient type raises :class:`~agentwire.UndeliverableError`
  at once. A factory's exception reaches the RPC caller. Publish handler
  exceptions are logged (and kept for the runtime to re-raise, see ``_core``).
* :meth:`Delivery.stop` fails every waiting RPC with
  :class:`~agentwire.RuntimeClosedError`, wakes senders waiting for room and
  cancels the service nursery (every drain task); :meth:`Delivery.close_agents`
  then calls ``close()`` on every instantiated agent. (An RPC running inline
  in a task *outside* the runtime's block -- not the structured way to use it
  -- is not interrupted: it ends with its caller, and its further runtime
  calls raise ``RuntimeClosedError``.)

Invariants (while open; :meth:`Delivery.check_invariants` asserts them and
the tests call it)
--------------------------------------------------------------------------

1. ``slot.queue`` non-empty implies ``slot.busy``; a busy slot has exactly one
   drain task, or one handler running inline (re-entrant calls aside).
2. ``busy`` is the number of busy slots, ``queued`` the total length of the
   mailboxes; both are zero exactly when the runtime is idle.
3. A mailbox grows past ``mailbox_size`` only by messages sent from handlers;
   ``overflow`` is the sum over mailboxes of what they hold beyond
   ``mailbox_size``, and never exceeds ``max_overflow``.
4. Every queued RPC has exactly one pending-map entry until it is answered or
   abandoned; the map is empty when no caller waits (see ``_pending``).
5. The RPC chain is a context variable: tasks a handler spawns inherit it,
   so a task that outlives its handler and calls back into the same agent
   would run re-entrantly. Do not keep such tasks beyond the handler.
6. A queued message is handled in the trace context it was sent in (the
   envelope keeps it; the drain task sets it before each handler), so the
   trace context of one message never leaks into the handling of the next.
7. The fan-out kept per topic (``_fanout``, see ``_fanout``) is exactly the
   slots of ``subscriptions.recipients(topic)``: it is told of every
   subscription added or removed and every slot removed, and is offered an
   answer only when every recipient had a slot. Slots are never replaced.
"""

from __future__ import annotations

import contextvars
import itertools
import logging
from collections import deque
from typing import Any

import outcome
import trio

from .._agents import Agent, AgentRuntime, Cancellation, MessageContext
from .._budget import CheckpointBudget
from .._errors import (
    OverloadedError,
    RequestCancelledError,
    RuntimeClosedError,
    UndeliverableError,
)
from .._ids import AgentId, TopicId, current_agent_id
from .._observability._trace_context import current_trace
from .._serialization import SerializationRegistry
from .._subscriptions import Subscription, SubscriptionTable
from ._fanout import Fanout
from ._pending import PendingMap
from ._registration import Registration

__all__ = ["Delivery", "in_handler"]

logger = logging.getLogger("agentwire.runtime")

# Agents whose handlers are waiting (directly or up the chain) on the RPC
# being made from the current context; see "Re-entrancy" above.
_rpc_chain: contextvars.ContextVar[tuple[AgentId, ...]] = contextvars.ContextVar(
    "agentwire.rpc_chain", default=()
)


_UNSET = object()


def in_handler() -> bool:
    """Whether the current task runs a handler of this process's runtime (or was spawned by one)."""
    return bool(_rpc_chain.get())


class _AgentSlot:
    """One agent instance and its mailbox."""

    __slots__ = ("agent", "busy", "id", "queue", "space")

    def __init__(self, agent: Agent, agent_id: AgentId) -> None:
        self.agent = agent
        self.id = agent_id
        # Created on first use: most agents only ever take inline RPCs, and an
        # empty deque costs ~600 bytes.
        self.queue: deque[_Envelope] | None = None
        self.busy = False
        self.space: trio.lowlevel.ParkingLot | None = None  # senders waiting for room


class _Envelope:
    __slots__ = ("chain", "ctx", "key", "message", "trace")

    def __init__(
        self, message: Any, ctx: MessageContext, key: int | None, chain: tuple[AgentId, ...]
    ) -> None:
        self.message = message
        self.ctx = ctx
        self.key = key  # pending-map key of an RPC; None for an event
        self.chain = chain
        self.trace = current_trace.get()  # the sender's (invariant 6)


class Delivery:
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
        self._runtime = runtime  # what agents are bound to
        self._services = services
        self._serialization = serialization
        self._subscriptions = subscriptions
        self.mailbox_size = mailbox_size
        self.max_overflow = max_overflow
        self.overflow = 0
        self.dropped = 0
        self._ignore_unhandled = ignore_unhandled_exceptions
        self.registrations: dict[str, Registration] = {}
        self.slots: dict[AgentId, _AgentSlot] = {}
        self.activating: set[AgentId] = set()
        self.activated = trio.lowlevel.ParkingLot()  # tasks waiting for an activation to end
        self._fanout: Fanout[_AgentSlot] = Fanout()  # invariant 7
        self.pending: PendingMap[int, Any] = PendingMap()
        self._keys = itertools.count()
        self._result_types: set[type] = {type(None)}
        self.busy = 0
        self.queued = 0
        self.in_flight = 0
        # Shared by every entry point and drain task; bound once, called per message.
        self.spend = CheckpointBudget().spend
        self.idle = trio.lowlevel.ParkingLot()
        # Tasks in wait_until(); checked (an int, cheap) before waking them.
        self.watchers = 0
        self.changed = trio.lowlevel.ParkingLot()
        self.closed = False
        self._background_error: BaseException | None = None

    # -- traffic in -------------------------------------------------------------------

    async def deliver_request(
        self, message: Any, recipient: AgentId, *, sender: AgentId | None, message_id: str
    ) -> Any:
        """Run *recipient*'s handler for an RPC and return its result (see above)."""
        # Yield (every few calls) *before* choosing the path: between the
        # choice and marking the agent busy there must be no checkpoint.
        if self.spend():
            await trio.lowlevel.checkpoint()
        else:
            await trio.lowlevel.checkpoint_if_cancelled()
        if self.closed:
            raise RuntimeClosedError("the runtime is closed; the request cannot be delivered")
        slot = self.slots.get(recipient)
        if slot is None:
            slot = await self.activate(recipient)
        chain = _rpc_chain.get()
        if slot.busy:
            if recipient in chain:
                result = await self._call_reentrant(slot, message, sender, message_id, chain)
            else:
                result = await self._call_queued(slot, message, sender, message_id, chain)
        else:
            # The common case, inline (see the module docstring), written out
            # here rather than in a method of its own: a coroutine frame less.
            # No checkpoint since the slot was seen idle; no cancel scope of
            # its own: the handler runs in the caller's task, so the caller's
            # cancellation reaches it directly (and entering a scope would
            # double the cost of an in-process RPC).
            slot.busy = True
            self.busy += 1
            ctx = MessageContext(sender, None, True, message_id)  # Cancellation made on demand
            agent_token = current_agent_id.set(slot.id)
            chain_token = _rpc_chain.set((*chain, slot.id) if chain else (slot.id,))
            self.in_flight += 1
            try:
                result = await slot.agent.on_message(message, ctx)
                cancellation = ctx._cancellation
                if cancellation is not None and cancellation._called:
                    raise self._cancelled_error(slot.id)
            finally:
                self.in_flight -= 1
                _rpc_chain.reset(chain_token)
                current_agent_id.reset(agent_token)
                # The handler is done: hand over to a drain task or go idle.
                if self.watchers:
                    self.changed.unpark_all()
                if slot.queue and not self.closed:
                    self._services.start_soon(self._drain, slot)
                else:
                    slot.busy = False
                    self.busy -= 1
                    if not self.busy and self.idle:
                        self.idle.unpark_all()
        if result.__class__ not in self._result_types:
            self.note_message_type(result.__class__)
        return result

    async def deliver_event(
        self,
        message: Any,
        topic: TopicId,
        *,
        sender: AgentId | None,
        message_id: str,
        is_rpc: bool = False,
    ) -> None:
        """Queue an event for every local subscriber of *topic* except *sender*."""
        if self.closed:
            raise RuntimeClosedError("the runtime is closed; the event cannot be delivered")
        if self.spend():
            await trio.lowlevel.checkpoint()
        else:
            await trio.lowlevel.checkpoint_if_cancelled()
        may_wait = not _rpc_chain.get()  # handlers never wait for room: see "deadlocks"
        limit = self.mailbox_size
        # One context and one envelope serve every recipient (AutoGen, too,
        # shares the publish's cancellation token between recipients).
        envelope = _Envelope(message, MessageContext(sender, topic, is_rpc, message_id), None, ())
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

    async def _resolve_fanout(self, topic: TopicId, sender: AgentId | None) -> list[_AgentSlot]:
        """The slots of *topic*'s recipients, creating agents as needed; cached when it may be.

        The sender is not created for its own publish, and a recipient that
        cannot be created is logged, recorded as a failure and left out; either
        way the answer is not cached, so the next publish looks again.
        """
        generation = self._fanout.generation
        slots: list[_AgentSlot] = []
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

    # -- handlers -------------------------------------------------------------------------

    async def _call_reentrant(
        self,
        slot: _AgentSlot,
        message: Any,
        sender: AgentId | None,
        message_id: str,
        chain: tuple[AgentId, ...],
    ) -> Any:
        """An RPC to an agent up the caller's chain: its handler runs now, in this task."""
        cancellation = Cancellation()
        ctx = MessageContext(sender, None, True, message_id, cancellation)
        agent_token = current_agent_id.set(slot.id)
        chain_token = _rpc_chain.set((*chain, slot.id))
        self.in_flight += 1
        try:
            result = await slot.agent.on_message(message, ctx)
            if cancellation._called:
                raise self._cancelled_error(slot.id)
            return result
        finally:
            self.in_flight -= 1
            _rpc_chain.reset(chain_token)
            current_agent_id.reset(agent_token)

    async def _call_queued(
        self,
        slot: _AgentSlot,
        message: Any,
        sender: AgentId | None,
        message_id: str,
        chain: tuple[AgentId, ...],
    ) -> Any:
        key = next(self._keys)
        scope = trio.CancelScope(deadline=trio.current_effective_deadline())
        ctx = MessageContext(sender, None, True, message_id, Cancellation(scope))
        envelope = _Envelope(message, ctx, key, (*chain, slot.id))
        with self.pending.register(key, on_abandon=scope.cancel) as waiter:
            await self._enqueue(slot, envelope, not chain)
            return await waiter.wait()

    def _cancelled_error(self, agent_id: AgentId) -> Exception:
        if self.closed:
            return RuntimeClosedError(
                f"the runtime closed while {agent_id} was handling the request"
            )
        return RequestCancelledError(f"the handler of {agent_id} was cancelled")

    async def _enqueue(self, slot: _AgentSlot, envelope: _Envelope, may_wait: bool) -> None:
        if self.closed:
            raise RuntimeClosedError("the runtime is closed; the message cannot be queued")
        queue = slot.queue
        if queue is None:
            queue = slot.queue = deque()
        while may_wait and len(queue) >= self.mailbox_size:
            space = slot.space
            if space is None:
                space = slot.space = trio.lowlevel.ParkingLot()
            await space.park()
            if self.closed:
                raise RuntimeClosedError("the runtime closed while waiting for mailbox room")
        if len(queue) >= self.mailbox_size:  # a handler's message past a full mailbox
            if self.overflow >= self.max_overflow:
                self.dropped += 1
                raise OverloadedError(
                    f"the mailbox of {slot.id} is full and the runtime's overflow is at "
                    f"max_overflow={self.max_overflow}: the message was not queued (the "
                    "handlers sending outrun the ones handling; slow them down or retry later)"
                )
            self.overflow += 1
        queue.append(envelope)
        self.queued += 1
        if self.watchers:
            self.changed.unpark_all()
        if not slot.busy:
            slot.busy = True
            self.busy += 1
            self._services.start_soon(self._drain, slot)

    async def _drain(self, slot: _AgentSlot) -> None:
        queue = slot.queue
        assert queue is not None
        agent = slot.agent
        spend = self.spend
        # Every handler run by this task belongs to this agent.
        agent_token = current_agent_id.set(slot.id)
        chain_token = _rpc_chain.set((slot.id,))
        trace: object = _UNSET  # the trace context this task last set (invariant 6)
        try:
            while queue:
                envelope = queue.popleft()
                self.queued -= 1
                if self.overflow and len(queue) >= self.mailbox_size:
                    self.overflow -= 1
                space = slot.space
                if space:
                    space.unpark()
                if envelope.trace is not trace:  # (this task's own context: no reset)
                    trace = envelope.trace
                    current_trace.set(envelope.trace)
                if envelope.key is None:
                    self.in_flight += 1
                    try:
                        await agent.on_message(envelope.message, envelope.ctx)
                    except Exception as exc:
                        logger.error(
                            "handler of %s failed on a published message", slot.id, exc_info=exc
                        )
                        self._record_failure(exc)
                    finally:
                        self.in_flight -= 1
                else:
                    await self._run_request(slot, envelope)
                if self.watchers:
                    self.changed.unpark_all()
                if spend():
                    await trio.lowlevel.checkpoint()
        finally:
            _rpc_chain.reset(chain_token)
            current_agent_id.reset(agent_token)
            space = slot.space
            if space:
                space.unpark_all()
            slot.busy = False
            self.busy -= 1
            if not self.busy and self.idle:
                self.idle.unpark_all()
            if self.watchers:
                self.changed.unpark_all()

    async def _run_request(self, slot: _AgentSlot, envelope: _Envelope) -> None:
        ctx = envelope.ctx
        cancellation = ctx.cancellation
        scope = cancellation._scope
        key = envelope.key
        assert key is not None
        assert scope is not None
        if scope.cancel_called:  # the caller gave up before we started
            return
        chain_token = _rpc_chain.set(envelope.chain)
        self.in_flight += 1
        try:
            with scope:
                result = await slot.agent.on_message(envelope.message, ctx)
        except Exception as exc:
            self.pending.resolve(key, outcome.Error(exc))
        else:
            if scope.cancelled_caught or cancellation._called:
                self.pending.resolve(key, outcome.Error(self._cancelled_error(slot.id)))
            else:
                self.pending.resolve(key, outcome.Value(result))
        finally:
            self.in_flight -= 1
            _rpc_chain.reset(chain_token)

    # -- failures and result types --------------------------------------------------------

    def _record_failure(self, exc: BaseException) -> None:
        if not self._ignore_unhandled and self._background_error is None:
            self._background_error = exc
            if self.idle:
                self.idle.unpark_all()

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

    def note_message_type(self, message_type: type) -> None:
        """Teach the serializer registry a type handlers take or return (a worker needs it)."""
        self._result_types.add(message_type)
        try:
            self._serialization.add_type(message_type)
        except Exception as exc:
            logger.debug("no serializer for %r (fine in-process): %s", message_type, exc)

    # -- activation -------------------------------------------------------------------------

    async def slot(self, agent_id: AgentId) -> _AgentSlot:
        """The slot of *agent_id*, creating the agent if needed."""
        slot = self.slots.get(agent_id)
        if slot is None:
            slot = await self.activate(agent_id)
        return slot

    async def activate(self, agent_id: AgentId) -> _AgentSlot:
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
            slot = self.slots[agent_id] = _AgentSlot(agent, agent_id)
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
        self.slots[agent_id] = _AgentSlot(agent, agent_id)

    def remove_instance(self, agent_id: AgentId) -> None:
        """Forget an instance whose registration was rolled back (it never handled a message)."""
        del self.slots[agent_id]
        self._fanout.changed()

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
        """Assert the module's invariants (for tests; O(number of agents))."""
        busy = 0
        queued = 0
        overflow = 0
        for slot in self.slots.values():
            assert not slot.queue or slot.busy or self.closed, f"{slot.id} queued but idle"
            busy += slot.busy
            queued += len(slot.queue or ())
            overflow += max(0, len(slot.queue or ()) - self.mailbox_size)
        assert overflow == self.overflow, (overflow, self.overflow)
        assert self.overflow <= self.max_overflow
        assert busy == self.busy, (busy, self.busy)
        assert queued == self.queued, (queued, self.queued)
        assert self.in_flight >= 0
        for topic, kept in self._fanout.kept().items():
            expected = [self.slots.get(a) for a in self._subscriptions.recipients(topic)]
            assert kept == expected, (topic, kept, expected)
        if not self.busy:
            assert self.queued == 0
