"""Requests: an RPC reaching its recipient's handler, inline, queued or re-entrantly.

* An RPC to an agent that is idle runs its handler **directly in the caller's
  task** (no queue, no task switch); it still counts as the agent's one
  running handler, so messages arriving meanwhile queue behind it. An RPC to
  a busy agent is queued in its mailbox (``_mailbox``) and the caller waits
  in the pending map (``_pending``).
* A handler's result type is taught to the serializer registry the first
  time it is seen (a worker needs it to answer over the wire).

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
* A handler's exception reaches the RPC caller as the exception itself. A
  handler that called ``ctx.cancellation.cancel()`` (or was interrupted by
  it) gives the caller :class:`~agentwire.RequestCancelledError`.
* An unknown recipient type raises :class:`~agentwire.UndeliverableError`
  at once. A factory's exception reaches the RPC caller.

Invariants
----------

1. Every queued RPC has exactly one pending-map entry until it is answered or
   abandoned; the map is empty when no caller waits (``_pending`` checks it).
2. The RPC chain is a context variable: tasks a handler spawns inherit it,
   so a task that outlives its handler and calls back into the same agent
   would run re-entrantly. Do not keep such tasks beyond the handler.
"""

from __future__ import annotations

import logging
from typing import Any

import trio

from .. import _ids
from .._agents import Cancellation, MessageContext
from .._errors import RuntimeClosedError
from .._ids import AgentId
from . import _mailbox
from ._activation import Activation, AgentSlot
from ._deadline import effective_deadline
from ._mailbox import Envelope, Mailboxes

__all__ = ["Requests"]

logger = logging.getLogger("agentwire.runtime")

# Bound by assignment, not imported, for LOAD_METHOD (see ``_mailbox``).
rpc_chain = _mailbox.rpc_chain
current_agent_id = _ids.current_agent_id


class Requests(Mailboxes, Activation):
    """The delivery of RPCs (see the module docstring)."""

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
        chain = rpc_chain.get()
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
            chain_token = rpc_chain.set((*chain, slot.id) if chain else (slot.id,))
            self.in_flight += 1
            try:
                result = await slot.agent.on_message(message, ctx)
                cancellation = ctx._cancellation
                if cancellation is not None and cancellation._called:
                    raise self._cancelled_error(slot.id)
            finally:
                self.in_flight -= 1
                rpc_chain.reset(chain_token)
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

    async def _call_reentrant(
        self,
        slot: AgentSlot,
        message: Any,
        sender: AgentId | None,
        message_id: str,
        chain: tuple[AgentId, ...],
    ) -> Any:
        """An RPC to an agent up the caller's chain: its handler runs now, in this task."""
        cancellation = Cancellation()
        ctx = MessageContext(sender, None, True, message_id, cancellation)
        agent_token = current_agent_id.set(slot.id)
        chain_token = rpc_chain.set((*chain, slot.id))
        self.in_flight += 1
        try:
            result = await slot.agent.on_message(message, ctx)
            if cancellation._called:
                raise self._cancelled_error(slot.id)
            return result
        finally:
            self.in_flight -= 1
            rpc_chain.reset(chain_token)
            current_agent_id.reset(agent_token)

    async def _call_queued(
        self,
        slot: AgentSlot,
        message: Any,
        sender: AgentId | None,
        message_id: str,
        chain: tuple[AgentId, ...],
    ) -> Any:
        key = next(self._keys)
        scope = trio.CancelScope(deadline=effective_deadline())
        ctx = MessageContext(sender, None, True, message_id, Cancellation(scope))
        envelope = Envelope(message, ctx, key, (*chain, slot.id))
        with self.pending.register(key, on_abandon=scope.cancel) as waiter:
            await self._enqueue(slot, envelope, not chain)
            return await waiter.wait()

    def note_message_type(self, message_type: type) -> None:
        """Teach the serializer registry a type handlers take or return (a worker needs it)."""
        self._result_types.add(message_type)
        try:
            self._serialization.add_type(message_type)
        except Exception as exc:
            logger.debug("no serializer for %r (fine in-process): %s", message_type, exc)
