"""Mailboxes: queueing a message for an agent, and the drain task that handles them.

* Every agent instance has a bounded mailbox (``mailbox_size``, default 64)
  and handles **one message at a time, in arrival order**. Different agents
  run concurrently in the runtime's service nursery.
* An idle agent costs no task. When its mailbox becomes non-empty a *drain
  task* is started; it handles messages until the mailbox is empty, then
  exits. (``AgentSlot.busy`` is true while a drain task exists or a handler
  of the agent runs; ``queue`` non-empty implies ``busy``.)
* A full mailbox makes a sender wait (backpressure) until there is room --
  unless the sender is itself a handler: messages sent or published from
  inside a handler never wait for room (they may take a mailbox past its
  size). Otherwise agents publishing into each other's full mailboxes (any
  cascade) would deadlock. So backpressure acts where work enters the
  runtime: user tasks and, for a worker, the connection's reader. Whether the
  current task runs a handler is the RPC chain (:data:`rpc_chain`, see
  ``_requests``) being non-empty.

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

Invariants (``Delivery.check_invariants`` asserts 1-3)
------------------------------------------------------

1. ``slot.queue`` non-empty implies ``slot.busy``; a busy slot has exactly one
   drain task, or one handler running inline (re-entrant calls aside).
2. ``busy`` is the number of busy slots, ``queued`` the total length of the
   mailboxes; both are zero exactly when the runtime is idle.
3. A mailbox grows past ``mailbox_size`` only by messages sent from handlers;
   ``overflow`` is the sum over mailboxes of what they hold beyond
   ``mailbox_size``, and never exceeds ``max_overflow``.
4. A queued message is handled in the trace context it was sent in (the
   envelope keeps it; the drain task sets it before each handler), so the
   trace context of one message never leaks into the handling of the next.
"""

from __future__ import annotations

import contextvars
import logging
from collections import deque
from typing import Any

import outcome
import trio

from .. import _ids
from .._agents import MessageContext
from .._errors import OverloadedError, RequestCancelledError, RuntimeClosedError
from .._ids import AgentId
from .._observability import _trace_context
from ._activation import AgentSlot, DeliveryState

__all__ = ["Envelope", "Mailboxes", "in_handler", "rpc_chain"]

logger = logging.getLogger("agentwire.runtime")

# Bound by assignment, not imported: CPython 3.11 compiles a method call on a
# name bound by an import as an attribute load and a call (a bound method made
# per call) instead of LOAD_METHOD; these context variables' methods run per message.
current_agent_id = _ids.current_agent_id
current_trace = _trace_context.current_trace

# Agents whose handlers are waiting (directly or up the chain) on the RPC
# being made from the current context; see "Re-entrancy" in ``_requests``.
rpc_chain: contextvars.ContextVar[tuple[AgentId, ...]] = contextvars.ContextVar(
    "agentwire.rpc_chain", default=()
)


_UNSET = object()


def in_handler() -> bool:
    """Whether the current task runs a handler of this process's runtime (or was spawned by one)."""
    return bool(rpc_chain.get())


class Envelope:
    __slots__ = ("chain", "ctx", "key", "message", "trace")

    def __init__(
        self, message: Any, ctx: MessageContext, key: int | None, chain: tuple[AgentId, ...]
    ) -> None:
        self.message = message
        self.ctx = ctx
        self.key = key  # pending-map key of an RPC; None for an event
        self.chain = chain
        self.trace = current_trace.get()  # the sender's (invariant 4)


class Mailboxes(DeliveryState):
    """Queueing into mailboxes and draining them (see the module docstring)."""

    async def _enqueue(self, slot: AgentSlot, envelope: Envelope, may_wait: bool) -> None:
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

    async def _drain(self, slot: AgentSlot) -> None:
        queue = slot.queue
        assert queue is not None
        agent = slot.agent
        spend = self.spend
        # Every handler run by this task belongs to this agent.
        agent_token = current_agent_id.set(slot.id)
        chain_token = rpc_chain.set((slot.id,))
        trace: object = _UNSET  # the trace context this task last set (invariant 4)
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
            rpc_chain.reset(chain_token)
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

    async def _run_request(self, slot: AgentSlot, envelope: Envelope) -> None:
        """Run a queued RPC's handler in its own scope and answer its caller (see ``_requests``)."""
        ctx = envelope.ctx
        cancellation = ctx.cancellation
        scope = cancellation._scope
        key = envelope.key
        assert key is not None
        assert scope is not None
        if scope.cancel_called:  # the caller gave up before we started
            return
        chain_token = rpc_chain.set(envelope.chain)
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
            rpc_chain.reset(chain_token)

    def _cancelled_error(self, agent_id: AgentId) -> Exception:
        if self.closed:
            return RuntimeClosedError(
                f"the runtime closed while {agent_id} was handling the request"
            )
        return RequestCancelledError(f"the handler of {agent_id} was cancelled")

    def _record_failure(self, exc: BaseException) -> None:
        if not self._ignore_unhandled and self._background_error is None:
            self._background_error = exc
            if self.idle:
                self.idle.unpark_all()

    def _check_mailboxes(self) -> None:
        """Assert invariants 1-3."""
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
        if not self.busy:
            assert self.queued == 0
