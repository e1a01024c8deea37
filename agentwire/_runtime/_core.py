"""The runtime core: agents, activation, mailboxes, subscriptions, pending RPCs.

One :class:`Runtime` class serves ``open_runtime`` (in-process) and
``open_worker`` (gRPC); what differs is the :class:`Router` underneath. The
core never knows whether a message crossed a socket.

Delivery model
==============

* Every agent instance has a bounded mailbox (``mailbox_size``, default 64)
  and handles **one message at a time, in arrival order**. Different agents
  run concurrently in the runtime's nursery.
* An idle agent costs no task. When its mailbox becomes non-empty a *drain
  task* is started; it handles messages until the mailbox is empty, then
  exits. (``_Slot.busy`` is true while a drain task exists or a handler of the
  agent runs; ``queue`` non-empty implies ``busy``.)
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
B, whose handler calls A). The core tracks the chain of agents whose handlers
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
  own (one per message would cost as much as the delivery); the runtime's
  close cancels them.
* In-process, a handler's exception reaches the RPC caller as the exception
  itself. A handler that called ``ctx.cancellation.cancel()`` (or was
  interrupted by it) gives the caller :class:`~agentwire.RequestCancelledError`.
* An unknown recipient type raises :class:`~agentwire.UndeliverableError`
  at once. A factory's exception reaches the RPC caller.
* Publish handler exceptions are logged; with
  ``ignore_unhandled_exceptions=False`` the first one is re-raised from
  ``stop_when_idle()``/``wait_idle()`` and when the runtime block exits.
* Closing the runtime fails every waiting RPC with
  :class:`~agentwire.RuntimeClosedError`, cancels every handler running in
  the runtime's tasks and then calls ``close()`` on every instantiated
  agent. (An RPC running inline in a task *outside* the runtime's block --
  not the structured way to use it -- is not interrupted: it ends with its
  caller, and its further runtime calls raise ``RuntimeClosedError``.)

Invariants (while the runtime is open; ``_check_invariants`` asserts them
and the tests call it)
-----------------------------------------------------------------------

* ``slot.queue`` non-empty implies ``slot.busy``; a busy slot has exactly one
  drain task, or one handler running inline (re-entrant calls aside).
* ``_busy`` is the number of busy slots, ``_queued`` the total length of the
  mailboxes; both are zero exactly when the runtime is idle.
* A mailbox grows past ``mailbox_size`` only by messages sent from handlers.
* Every queued RPC has exactly one pending-map entry until it is answered or
  abandoned; the map is empty when no caller waits (see ``_pending``).
* The RPC chain is a context variable: tasks a handler spawns inherit it,
  so a task that outlives its handler and calls back into the same agent
  would run re-entrantly. Do not keep such tasks beyond the handler.

The router seam (what ``open_worker`` plugs in)
===============================================

A router is created with the core (``open_core(make_router)``) and
implements :class:`Router`:

* ``send(message, recipient, *, sender, message_id) -> result``: called by
  ``Runtime.send_message`` after the ``on_send`` interventions. Return the
  response or raise. The local router calls ``core.deliver_request``; a
  worker serializes, registers ``request_id`` in its own
  :class:`~agentwire._runtime._pending.PendingMap`, writes the request and
  waits (it may call ``core.deliver_request`` directly for local types).
* ``publish(message, topic, *, sender, message_id)``: called by
  ``publish_message`` after ``on_publish``. The local router calls
  ``core.deliver_event``; a worker sends a CloudEvent to the gateway.
* ``register_agent_type(type)``, ``add_subscription(sub)``,
  ``remove_subscription(id)``: called after the core updated its own tables
  (a raising ``register_agent_type``/``add_subscription`` rolls the core's
  change back). The worker forwards them to the gateway.

What the worker calls on the core, for traffic coming from the wire:

* ``await core.deliver_request(message, recipient, sender=..., message_id=...)``
  runs the local handler (inline or queued, the rules above) and returns its
  result, or raises the handler's exception (``UndeliverableError`` for a
  type not registered here). Run it in a task per incoming request; cancel
  that task to cancel the handler. The result's type is registered with
  ``core.serialization`` automatically (AutoGen registers input types only).
* ``await core.deliver_event(message, topic, sender=..., message_id=..., is_rpc=False)``
  queues the event for the *local* recipients (from ``core.subscriptions``,
  which holds the subscriptions added through this runtime), excluding
  ``sender``; it returns once queued. It may wait for mailbox room: do not
  call it from the task that reads RPC responses, or a handler awaiting a
  response while its mailbox is full would wait on that task forever.
* ``core.serialization`` (the registry), ``core.subscriptions`` (the local
  table), ``core.agent_types()`` (registered types, to re-register after a
  reconnect), ``core.closed``.
"""

from __future__ import annotations

import contextvars
import inspect
import itertools
import logging
import uuid
import warnings
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any, Protocol, TypeVar

import attrs
import outcome
import trio

from .._agents import (
    Agent,
    AgentInstantiationContext,
    AgentMetadata,
    Cancellation,
    MessageContext,
)
from .._errors import (
    MessageDroppedError,
    RequestCancelledError,
    RuntimeClosedError,
    UndeliverableError,
)
from .._ids import AgentId, AgentType, TopicId, current_agent_id
from .._serialization import SerializationRegistry
from .._subscriptions import Subscription, SubscriptionTable
from ._interventions import DropMessage, InterventionHandler
from ._pending import PendingMap

__all__ = ["Router", "Runtime", "RuntimeStatistics", "open_core"]

logger = logging.getLogger("agentwire.runtime")

T = TypeVar("T")

# Agents whose handlers are waiting (directly or up the chain) on the RPC
# being made from the current context; see "Re-entrancy" above.
_rpc_chain: contextvars.ContextVar[tuple[AgentId, ...]] = contextvars.ContextVar(
    "agentwire.rpc_chain", default=()
)

# A drain task, or a caller running handlers inline, yields to the scheduler
# at least every _FAIRNESS handlers even if the handlers never do.
_FAIRNESS = 32


class Router(Protocol):
    """Where sends, publishes and registrations go (see the module docstring)."""

    async def send(
        self, message: Any, recipient: AgentId, *, sender: AgentId | None, message_id: str
    ) -> Any: ...

    async def publish(
        self, message: Any, topic: TopicId, *, sender: AgentId | None, message_id: str
    ) -> None: ...

    async def register_agent_type(self, agent_type: str) -> None: ...

    async def add_subscription(self, subscription: Subscription) -> None: ...

    async def remove_subscription(self, subscription_id: str) -> None: ...


@attrs.frozen
class RuntimeStatistics:
    agent_types: int
    """Registered agent types (factories and instance types)."""
    agents: int
    """Instantiated agents."""
    busy_agents: int
    """Agents with a handler running or messages queued."""
    queued: int
    """Messages waiting in mailboxes."""
    in_flight: int
    """Handlers running right now."""
    pending_rpcs: int
    """Callers waiting for a queued RPC's response."""
    late_responses: int
    """Responses that arrived after their caller gave up (dropped)."""
    subscriptions: int
    closed: bool


class _Registration:
    __slots__ = ("expected_class", "factory", "instance_class", "two_args")

    def __init__(
        self,
        factory: Callable[..., Any] | None,
        expected_class: type | None,
        instance_class: type | None = None,
    ) -> None:
        self.factory = factory
        self.expected_class = expected_class
        self.instance_class = instance_class  # set for instance-registered types
        self.two_args = False
        if factory is not None:
            try:
                params = inspect.signature(factory).parameters
            except (TypeError, ValueError):  # pragma: no cover - builtins
                params = {}  # type: ignore[assignment]
            required = [
                p
                for p in params.values()
                if p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
            ]
            if len(required) == 2:
                warnings.warn(
                    "agent factories taking (runtime, agent_id) are deprecated: take no "
                    "arguments and use AgentInstantiationContext",
                    DeprecationWarning,
                    stacklevel=4,
                )
                self.two_args = True
            elif required:
                raise ValueError("an agent factory must take no arguments")


class _Slot:
    """One agent instance and its mailbox."""

    __slots__ = ("agent", "busy", "chain", "id", "queue", "space")

    def __init__(self, agent: Agent, agent_id: AgentId) -> None:
        self.agent = agent
        self.id = agent_id
        self.chain = (agent_id,)  # the RPC chain of a handler run by the drain task
        # Created on first use: most agents only ever take inline RPCs, and an
        # empty deque costs ~600 bytes.
        self.queue: deque[_Envelope] | None = None
        self.busy = False
        self.space: trio.lowlevel.ParkingLot | None = None  # senders waiting for room


class _Envelope:
    __slots__ = ("chain", "ctx", "key", "message")

    def __init__(
        self, message: Any, ctx: MessageContext, key: int | None, chain: tuple[AgentId, ...]
    ) -> None:
        self.message = message
        self.ctx = ctx
        self.key = key  # pending-map key of an RPC; None for an event
        self.chain = chain


class Runtime:
    """An agent runtime (see the module docstring); get one from ``open_runtime``."""

    def __init__(
        self,
        nursery: trio.Nursery,
        *,
        mailbox_size: int = 64,
        ignore_unhandled_exceptions: bool = True,
        intervention_handlers: Sequence[InterventionHandler] = (),
    ) -> None:
        if mailbox_size < 1:
            raise ValueError("mailbox_size must be >= 1")
        self._nursery = nursery
        self._router: Router | None = None
        self._mailbox_size = mailbox_size
        self._ignore_unhandled = ignore_unhandled_exceptions
        self._interventions = tuple(intervention_handlers)
        self.serialization = SerializationRegistry()
        """The serializer registry (used by the worker; unused in-process)."""
        self.subscriptions = SubscriptionTable()
        """The subscriptions added through this runtime."""
        self._registrations: dict[str, _Registration] = {}
        self._slots: dict[AgentId, _Slot] = {}
        self._activating: dict[AgentId, trio.Event] = {}
        self._pending: PendingMap[int, Any] = PendingMap()
        self._keys = itertools.count()
        self._message_ids = itertools.count()
        self._id_prefix = uuid.uuid4().hex[:12] + "-"
        self._result_types: set[type] = {type(None)}
        self._busy = 0
        self._queued = 0
        self._in_flight = 0
        self._budget = _FAIRNESS
        self._idle = trio.lowlevel.ParkingLot()
        self._closed = False
        self._background_error: BaseException | None = None

    def _set_router(self, router: Router) -> None:
        self._router = router

    # -- public API: messages ---------------------------------------------------------

    def _new_message_id(self) -> str:
        return self._id_prefix + str(next(self._message_ids))

    async def send_message(
        self,
        message: Any,
        recipient: AgentId,
        *,
        sender: AgentId | None = None,
        message_id: str | None = None,
    ) -> Any:
        """Send *message* to *recipient* and return its handler's result (an RPC).

        Raises the handler's exception (in-process), ``UndeliverableError`` for
        an unknown agent type, ``MessageDroppedError`` if an intervention
        dropped it, ``RuntimeClosedError`` once the runtime is closed.
        Cancelling the caller cancels the handler's work for this request.
        """
        if self._closed:
            raise RuntimeClosedError("the runtime is closed; no more messages can be sent")
        if message_id is None:
            message_id = self._new_message_id()
        if self._interventions:
            message = await self._intercept_send(message, recipient, sender, message_id)
        assert self._router is not None
        result = await self._router.send(message, recipient, sender=sender, message_id=message_id)
        if self._interventions:
            result = await self._intercept_response(result, recipient, sender)
        return result

    async def publish_message(
        self,
        message: Any,
        topic_id: TopicId,
        *,
        sender: AgentId | None = None,
        message_id: str | None = None,
    ) -> None:
        """Queue *message* for every agent subscribed to *topic_id* except *sender*.

        Returns once queued (it may wait for room in a full mailbox).
        """
        if self._closed:
            raise RuntimeClosedError("the runtime is closed; no more messages can be published")
        if message_id is None:
            message_id = self._new_message_id()
        if self._interventions:
            ctx = MessageContext(sender, topic_id, False, message_id)
            for handler in self._interventions:
                try:
                    result = await handler.on_publish(message, message_context=ctx)
                except Exception:
                    logger.exception("on_publish intervention failed; message dropped")
                    return
                if result is DropMessage or isinstance(result, DropMessage):
                    logger.debug("publish to %s dropped by an intervention", topic_id)
                    return
                message = self._intervention_result(result, message, "on_publish")
        assert self._router is not None
        await self._router.publish(message, topic_id, sender=sender, message_id=message_id)

    # -- public API: registration ------------------------------------------------------------

    async def register_factory(
        self,
        type: str | AgentType,
        agent_factory: Callable[[], T | Awaitable[T]],
        *,
        expected_class: type[T] | None = None,
    ) -> AgentType:
        """Register a factory (sync or async, no arguments) for an agent type.

        Agents are created lazily, on their first message. Adds no
        subscriptions (``Agent.register`` does).
        """
        agent_type = type if isinstance(type, AgentType) else AgentType(type)
        if agent_type.type in self._registrations:
            raise ValueError(f"agent type {agent_type.type!r} is already registered")
        self._registrations[agent_type.type] = _Registration(agent_factory, expected_class)
        try:
            assert self._router is not None
            await self._router.register_agent_type(agent_type.type)
        except BaseException:
            del self._registrations[agent_type.type]
            raise
        return agent_type

    async def register_agent_instance(self, agent_instance: Agent, agent_id: AgentId) -> AgentId:
        """Register an existing agent object as *agent_id*.

        A type may hold several instances, all of one class; it cannot also
        have a factory.
        """
        if agent_id in self._slots:
            raise ValueError(f"agent {agent_id} already exists")
        registration = self._registrations.get(agent_id.type)
        if registration is not None:
            if registration.instance_class is None:
                raise ValueError(
                    f"agent type {agent_id.type!r} has a factory; factories and instances "
                    "cannot be registered to the same type"
                )
            if registration.instance_class is not type(agent_instance):
                raise ValueError(
                    f"instances of agent type {agent_id.type!r} must all be "
                    f"{registration.instance_class.__name__} objects"
                )
        await agent_instance.bind_id_and_runtime(agent_id, self)
        self._slots[agent_id] = _Slot(agent_instance, agent_id)
        if registration is None:
            self._registrations[agent_id.type] = _Registration(
                None, None, instance_class=type(agent_instance)
            )
            try:
                assert self._router is not None
                await self._router.register_agent_type(agent_id.type)
            except BaseException:
                del self._registrations[agent_id.type]
                del self._slots[agent_id]
                raise
        return agent_id

    def agent_types(self) -> list[str]:
        """The registered agent types, in registration order."""
        return list(self._registrations)

    # -- public API: subscriptions and serializers ------------------------------------------

    async def add_subscription(self, subscription: Subscription) -> None:
        """Add a subscription (``DuplicateSubscriptionError`` if an equal one exists)."""
        self.subscriptions.add(subscription)
        try:
            assert self._router is not None
            await self._router.add_subscription(subscription)
        except BaseException:
            self.subscriptions.remove(subscription.id)
            raise

    async def remove_subscription(self, id: str) -> None:
        """Remove a subscription by id (``UnknownSubscriptionError`` if unknown)."""
        self.subscriptions.remove(id)
        assert self._router is not None
        await self._router.remove_subscription(id)

    def get_subscriptions(self) -> list[Subscription]:
        """The subscriptions added through this runtime, in insertion order."""
        return self.subscriptions.subscriptions()

    def add_message_serializer(self, serializer: Any) -> None:
        """Add a serializer (or a sequence of them) to the registry."""
        self.serialization.add_serializer(serializer)

    # -- public API: agents and state ------------------------------------------------------

    async def get(
        self, id_or_type: AgentId | AgentType | str, /, key: str = "default", *, lazy: bool = True
    ) -> AgentId:
        """The id for *id_or_type* (and *key*); with ``lazy=False`` also activate it."""
        if isinstance(id_or_type, AgentId):
            agent_id = id_or_type
        else:
            agent_type = id_or_type.type if isinstance(id_or_type, AgentType) else id_or_type
            agent_id = AgentId(agent_type, key)
        if not lazy:
            await self._slot(agent_id)
        return agent_id

    async def try_get_underlying_agent_instance(
        self,
        id: AgentId,
        type: type[T] = Agent,  # type: ignore[assignment]
    ) -> T:
        """The agent object for *id*, instantiating it if needed.

        ``LookupError`` for an unknown type, ``TypeError`` if it is not a *type*.
        """
        if id.type not in self._registrations:
            raise LookupError(f"agent type {id.type!r} is not registered")
        agent = (await self._slot(id)).agent
        if not isinstance(agent, type):
            raise TypeError(f"agent {id} is a {agent.__class__.__name__}, not a {type.__name__}")
        return agent

    async def agent_metadata(self, agent: AgentId) -> AgentMetadata:
        return (await self._slot(agent)).agent.metadata

    async def agent_save_state(self, agent: AgentId) -> Mapping[str, Any]:
        return await (await self._slot(agent)).agent.save_state()

    async def agent_load_state(self, agent: AgentId, state: Mapping[str, Any]) -> None:
        await (await self._slot(agent)).agent.load_state(state)

    async def save_state(self) -> dict[str, dict[str, Any]]:
        """``{"type/key": agent.save_state()}`` for every instantiated agent.

        State calls do not go through mailboxes: call them while idle.
        Subscriptions are not saved.
        """
        state: dict[str, dict[str, Any]] = {}
        for agent_id, slot in list(self._slots.items()):
            state[str(agent_id)] = dict(await slot.agent.save_state())
        return state

    async def load_state(self, state: Mapping[str, Mapping[str, Any]]) -> None:
        """Load every entry whose agent type is registered (activating agents)."""
        for key, agent_state in state.items():
            agent_id = AgentId.from_str(key)
            if agent_id.type in self._registrations:
                await (await self._slot(agent_id)).agent.load_state(agent_state)

    # -- public API: lifecycle and introspection -------------------------------------------------

    @property
    def closed(self) -> bool:
        return self._closed

    async def wait_idle(self) -> None:
        """Wait until no agent has work (every cascade finished).

        With ``ignore_unhandled_exceptions=False``, raises the first publish
        handler exception as soon as it happens. Calling it from a handler
        would wait for that handler itself, so it raises ``RuntimeError``.
        """
        if _rpc_chain.get():
            raise RuntimeError(
                "wait_idle()/stop_when_idle() called from a handler would wait for itself"
            )
        while self._busy or self._activating:
            if self._background_error is not None:
                break
            await self._idle.park()
        else:
            await trio.lowlevel.checkpoint()
        self._raise_background_error()

    async def stop_when_idle(self) -> None:
        """Wait until idle, then stop: later sends raise ``RuntimeClosedError``."""
        try:
            await self.wait_idle()
        finally:
            self._stop()

    def statistics(self) -> RuntimeStatistics:
        pending = self._pending.statistics()
        return RuntimeStatistics(
            agent_types=len(self._registrations),
            agents=len(self._slots),
            busy_agents=self._busy,
            queued=self._queued,
            in_flight=self._in_flight,
            pending_rpcs=pending.pending,
            late_responses=pending.late,
            subscriptions=len(self.subscriptions),
            closed=self._closed,
        )

    def _check_invariants(self) -> None:
        """Assert the module's invariants (for tests; O(number of agents))."""
        busy = 0
        queued = 0
        for slot in self._slots.values():
            assert not slot.queue or slot.busy or self._closed, f"{slot.id} queued but idle"
            busy += slot.busy
            queued += len(slot.queue or ())
        assert busy == self._busy, (busy, self._busy)
        assert queued == self._queued, (queued, self._queued)
        assert self._in_flight >= 0
        if not self._busy:
            assert self._queued == 0

    # -- the router seam: traffic into the core -----------------------------------------------

    async def deliver_request(
        self, message: Any, recipient: AgentId, *, sender: AgentId | None, message_id: str
    ) -> Any:
        """Run *recipient*'s handler for an RPC and return its result (see above)."""
        # Yield (every _FAIRNESS calls) *before* choosing the path: between the
        # choice and marking the agent busy there must be no checkpoint.
        budget = self._budget - 1
        if budget <= 0:
            self._budget = _FAIRNESS
            await trio.lowlevel.checkpoint()
        else:
            self._budget = budget
            await trio.lowlevel.checkpoint_if_cancelled()
        if self._closed:
            raise RuntimeClosedError("the runtime is closed; the request cannot be delivered")
        slot = self._slots.get(recipient)
        if slot is None:
            slot = await self._activate(recipient)
        chain = _rpc_chain.get()
        if not slot.busy:
            result = await self._call_inline(slot, message, sender, message_id, chain, False)
        elif recipient in chain:
            result = await self._call_inline(slot, message, sender, message_id, chain, True)
        else:
            result = await self._call_queued(slot, message, sender, message_id, chain)
        if result.__class__ not in self._result_types:
            self._note_result_type(result.__class__)
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
        if self._closed:
            raise RuntimeClosedError("the runtime is closed; the event cannot be delivered")
        budget = self._budget - 1
        if budget <= 0:
            self._budget = _FAIRNESS
            await trio.lowlevel.checkpoint()
        else:
            self._budget = budget
            await trio.lowlevel.checkpoint_if_cancelled()
        slots = self._slots
        may_wait = not _rpc_chain.get()  # handlers never wait for room: see "deadlocks"
        limit = self._mailbox_size
        # One context and one envelope serve every recipient (AutoGen, too,
        # shares the publish's cancellation token between recipients).
        envelope = _Envelope(
            message, MessageContext(sender, topic, is_rpc, message_id, Cancellation()), None, ()
        )
        for agent_id in self.subscriptions.recipients(topic):
            if sender is not None and agent_id == sender:
                continue
            slot = slots.get(agent_id)
            if slot is None:
                try:
                    slot = await self._activate(agent_id)
                except Exception as exc:
                    logger.error("cannot deliver a publish to %s: %s", agent_id, exc)
                    self._record_failure(exc)
                    continue
            queue = slot.queue
            if slot.busy and queue is not None and len(queue) < limit:  # common case, inlined
                queue.append(envelope)
                self._queued += 1
            else:
                await self._enqueue(slot, envelope, may_wait)

    # -- internals: delivery ------------------------------------------------------------------

    async def _call_inline(
        self,
        slot: _Slot,
        message: Any,
        sender: AgentId | None,
        message_id: str,
        chain: tuple[AgentId, ...],
        reentrant: bool,
    ) -> Any:
        # No checkpoint before this point since the caller saw the slot's state.
        if not reentrant:
            slot.busy = True
            self._busy += 1
        # No cancel scope of its own: the handler runs in the caller's task,
        # so the caller's cancellation reaches it directly (and entering a
        # scope would double the cost of an in-process RPC).
        cancellation = Cancellation()
        ctx = MessageContext(sender, None, True, message_id, cancellation)
        agent_token = current_agent_id.set(slot.id)
        chain_token = _rpc_chain.set((*chain, slot.id))
        self._in_flight += 1
        try:
            result = await slot.agent.on_message(message, ctx)
            if cancellation._called:
                raise self._cancelled_error(slot.id)
            return result
        finally:
            self._in_flight -= 1
            _rpc_chain.reset(chain_token)
            current_agent_id.reset(agent_token)
            if not reentrant:
                self._release(slot)

    async def _call_queued(
        self,
        slot: _Slot,
        message: Any,
        sender: AgentId | None,
        message_id: str,
        chain: tuple[AgentId, ...],
    ) -> Any:
        key = next(self._keys)
        scope = trio.CancelScope(deadline=trio.current_effective_deadline())
        ctx = MessageContext(sender, None, True, message_id, Cancellation(scope))
        envelope = _Envelope(message, ctx, key, (*chain, slot.id))
        with self._pending.register(key, on_abandon=scope.cancel) as waiter:
            await self._enqueue(slot, envelope, not chain)
            return await waiter.wait()

    def _cancelled_error(self, agent_id: AgentId) -> Exception:
        if self._closed:
            return RuntimeClosedError(
                f"the runtime closed while {agent_id} was handling the request"
            )
        return RequestCancelledError(f"the handler of {agent_id} was cancelled")

    async def _enqueue(self, slot: _Slot, envelope: _Envelope, may_wait: bool) -> None:
        if self._closed:
            raise RuntimeClosedError("the runtime is closed; the message cannot be queued")
        queue = slot.queue
        if queue is None:
            queue = slot.queue = deque()
        while may_wait and len(queue) >= self._mailbox_size:
            space = slot.space
            if space is None:
                space = slot.space = trio.lowlevel.ParkingLot()
            await space.park()
            if self._closed:
                raise RuntimeClosedError("the runtime closed while waiting for mailbox room")
        queue.append(envelope)
        self._queued += 1
        if not slot.busy:
            slot.busy = True
            self._busy += 1
            self._nursery.start_soon(self._drain, slot)

    def _release(self, slot: _Slot) -> None:
        """A handler run inline finished: hand over to a drain task or go idle."""
        if slot.queue and not self._closed:
            self._nursery.start_soon(self._drain, slot)
            return
        slot.busy = False
        self._busy -= 1
        if not self._busy and self._idle:
            self._idle.unpark_all()

    async def _drain(self, slot: _Slot) -> None:
        queue = slot.queue
        assert queue is not None
        agent = slot.agent
        # Every handler run by this task belongs to this agent.
        agent_token = current_agent_id.set(slot.id)
        chain_token = _rpc_chain.set(slot.chain)
        try:
            while queue:
                envelope = queue.popleft()
                self._queued -= 1
                space = slot.space
                if space:
                    space.unpark()
                if envelope.key is None:
                    self._in_flight += 1
                    try:
                        await agent.on_message(envelope.message, envelope.ctx)
                    except Exception as exc:
                        logger.error(
                            "handler of %s failed on a published message", slot.id, exc_info=exc
                        )
                        self._record_failure(exc)
                    finally:
                        self._in_flight -= 1
                else:
                    await self._run_request(slot, envelope)
                budget = self._budget - 1
                if budget <= 0:
                    self._budget = _FAIRNESS
                    await trio.lowlevel.checkpoint()
                else:
                    self._budget = budget
        finally:
            _rpc_chain.reset(chain_token)
            current_agent_id.reset(agent_token)
            space = slot.space
            if space:
                space.unpark_all()
            slot.busy = False
            self._busy -= 1
            if not self._busy and self._idle:
                self._idle.unpark_all()

    async def _run_request(self, slot: _Slot, envelope: _Envelope) -> None:
        ctx = envelope.ctx
        cancellation = ctx.cancellation
        scope = cancellation._scope
        key = envelope.key
        assert key is not None
        assert scope is not None
        if scope.cancel_called:  # the caller gave up before we started
            return
        chain_token = _rpc_chain.set(envelope.chain)
        self._in_flight += 1
        try:
            with scope:
                result = await slot.agent.on_message(envelope.message, ctx)
        except Exception as exc:
            self._pending.resolve(key, outcome.Error(exc))
        else:
            if scope.cancelled_caught or cancellation._called:
                self._pending.resolve(key, outcome.Error(self._cancelled_error(slot.id)))
            else:
                self._pending.resolve(key, outcome.Value(result))
        finally:
            self._in_flight -= 1
            _rpc_chain.reset(chain_token)

    def _record_failure(self, exc: BaseException) -> None:
        if not self._ignore_unhandled and self._background_error is None:
            self._background_error = exc
            if self._idle:
                self._idle.unpark_all()

    def _raise_background_error(self) -> None:
        error = self._background_error
        if error is not None:
            self._background_error = None
            raise error

    def _note_result_type(self, result_type: type) -> None:
        self._result_types.add(result_type)
        try:
            self.serialization.add_type(result_type)
        except Exception as exc:
            logger.debug("no serializer for result type %r (fine in-process): %s", result_type, exc)

    # -- internals: activation -----------------------------------------------------------------

    async def _slot(self, agent_id: AgentId) -> _Slot:
        slot = self._slots.get(agent_id)
        if slot is None:
            slot = await self._activate(agent_id)
        return slot

    async def _activate(self, agent_id: AgentId) -> _Slot:
        while True:
            registration = self._registrations.get(agent_id.type)
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
            activating = self._activating.get(agent_id)
            if activating is None:
                break
            await activating.wait()  # another task is creating it
            slot = self._slots.get(agent_id)
            if slot is not None:
                return slot
        factory = registration.factory
        done = self._activating[agent_id] = trio.Event()
        try:
            with AgentInstantiationContext.populate_context(self, agent_id):
                agent = factory(self, agent_id) if registration.two_args else factory()
                if inspect.isawaitable(agent):
                    agent = await agent
            expected = registration.expected_class
            if expected is not None and not isinstance(agent, expected):
                raise ValueError(
                    f"the factory of {agent_id.type!r} made a {agent.__class__.__name__}, "
                    f"expected a {expected.__name__}"
                )
            await agent.bind_id_and_runtime(agent_id, self)
            slot = self._slots[agent_id] = _Slot(agent, agent_id)
            return slot
        except Exception:
            logger.exception("creating agent %s failed", agent_id)
            raise
        finally:
            del self._activating[agent_id]
            done.set()
            if not self._busy and not self._activating and self._idle:
                self._idle.unpark_all()

    # -- internals: interventions ----------------------------------------------------------------

    def _intervention_result(self, result: Any, message: Any, hook: str) -> Any:
        if result is None:
            warnings.warn(
                f"intervention handler {hook} returned None; treated as 'no change' "
                "(return DropMessage to drop)",
                RuntimeWarning,
                stacklevel=3,
            )
            return message
        return result

    async def _intercept_send(
        self, message: Any, recipient: AgentId, sender: AgentId | None, message_id: str
    ) -> Any:
        ctx = MessageContext(sender, None, True, message_id)
        for handler in self._interventions:
            result = await handler.on_send(message, message_context=ctx, recipient=recipient)
            if result is DropMessage or isinstance(result, DropMessage):
                raise MessageDroppedError(f"an intervention dropped the message to {recipient}")
            message = self._intervention_result(result, message, "on_send")
        return message

    async def _intercept_response(
        self, response: Any, responder: AgentId, caller: AgentId | None
    ) -> Any:
        for handler in self._interventions:
            result = await handler.on_response(response, sender=responder, recipient=caller)
            if result is DropMessage or isinstance(result, DropMessage):
                raise MessageDroppedError(f"an intervention dropped the response of {responder}")
            response = self._intervention_result(result, response, "on_response")
        return response

    # -- internals: shutdown ---------------------------------------------------------------------

    def _stop(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._pending.close(lambda key: RuntimeClosedError("the runtime closed"))
        for slot in self._slots.values():
            if slot.space:
                slot.space.unpark_all()
        self._nursery.cancel_scope.cancel()

    async def _close_agents(self) -> None:
        with trio.CancelScope(shield=True):
            for agent_id, slot in list(self._slots.items()):
                try:
                    await slot.agent.close()
                except Exception:
                    logger.exception("close() of agent %s failed", agent_id)


@asynccontextmanager
async def open_core(
    make_router: Callable[[Runtime], Router],
    *,
    runtime_class: type[Runtime] = Runtime,
    mailbox_size: int = 64,
    ignore_unhandled_exceptions: bool = True,
    intervention_handlers: Sequence[InterventionHandler] = (),
) -> AsyncIterator[Runtime]:
    """A :class:`Runtime` with the router ``make_router(runtime)``; closes on exit.

    On exit (normal or not) the runtime stops at once: waiting RPCs fail with
    ``RuntimeClosedError``, running handlers are cancelled, agents' ``close()``
    is called. Call ``await runtime.stop_when_idle()`` first to let cascades
    finish. An exception from the body propagates as is (not in a group);
    with ``ignore_unhandled_exceptions=False`` a recorded publish handler
    exception is raised on a normal exit. *runtime_class* may be a subclass of
    :class:`Runtime` (the worker's adds connection methods).
    """
    body_error: BaseException | None = None
    async with trio.open_nursery() as nursery:
        runtime = runtime_class(
            nursery,
            mailbox_size=mailbox_size,
            ignore_unhandled_exceptions=ignore_unhandled_exceptions,
            intervention_handlers=intervention_handlers,
        )
        runtime._set_router(make_router(runtime))
        try:
            yield runtime
        except BaseException as exc:
            body_error = exc
        finally:
            runtime._stop()
    await runtime._close_agents()
    if body_error is not None:
        raise body_error
    runtime._raise_background_error()
