"""The runtime object: the public API over the delivery machinery and a router.

One :class:`Runtime` class serves ``open_runtime`` (in-process) and
``open_worker`` (gRPC); what differs is the :class:`Router` underneath. The
runtime never knows whether a message crossed a socket. How messages reach
handlers (mailboxes, activation, inline and queued RPCs, publish fan-out,
ordering, re-entrancy, cancellation) is :mod:`._delivery`'s business (and of
the parts it names) and is described there.

* Publish handler exceptions are logged; with
  ``ignore_unhandled_exceptions=False`` the first one is re-raised from
  ``stop_when_idle()``/``wait_idle()`` and when the runtime block exits.
* Closing the runtime fails every waiting RPC with
  :class:`~agentwire.RuntimeClosedError`, cancels every handler running in
  the runtime's tasks and then calls ``close()`` on every instantiated agent.
  It never cancels the code in the ``async with`` block: the runtime's tasks
  run in a service nursery of their own (``agentwire._nursery``).

The router seam (what ``open_worker`` plugs in)
===============================================

A runtime is built with a router factory, ``Runtime(services, make_router)``,
and calls ``make_router(runtime)`` once. A router implements :class:`Router`:

* ``send(message, recipient, *, sender, message_id) -> result``: called by
  ``Runtime.send_message`` after the ``on_send`` interventions. Return the
  response or raise. The local router calls ``runtime.deliver_request``; a
  worker serializes, writes the request and waits (it calls
  ``runtime.deliver_request`` itself for types where
  ``runtime.has_agent_type(type)``).
* ``publish(message, topic, *, sender, message_id)``: called by
  ``publish_message`` after ``on_publish``. The local router calls
  ``runtime.deliver_event``; a worker sends a CloudEvent to the gateway.
* ``register_agent_type(type)``, ``add_subscription(sub)``,
  ``remove_subscription(id)``: called after the runtime updated its own
  tables; when they raise, the runtime's change is rolled back.
* ``save_remote_state(agent)`` / ``load_remote_state(agent, state)``: the
  state of an agent whose type is not registered here (``agent_save_state``,
  ``agent_load_state``). The local router raises ``UndeliverableError``; a
  worker asks the owning worker.

What a router calls on the runtime, for traffic coming from elsewhere:

* ``await runtime.deliver_request(message, recipient, sender=..., message_id=...)``
  runs the local handler (inline or queued) and returns its result, or raises
  the handler's exception (``UndeliverableError`` for a type not registered
  here). Run it in a task per incoming request; cancel that task to cancel the
  handler. The result's type is registered with ``runtime.serialization``.
* ``await runtime.deliver_event(message, topic, sender=..., message_id=..., is_rpc=False)``
  queues the event for the *local* recipients (from ``runtime.subscriptions``,
  the subscriptions added through this runtime), excluding ``sender``; it
  returns once queued. It may wait for mailbox room: do not call it from the
  task that reads RPC responses, or a handler awaiting a response while its
  mailbox is full would wait on that task forever.
* ``runtime.has_agent_type(type)``, ``runtime.agent_types()`` (to register
  again after a reconnect), ``runtime.serialization`` (the registry),
  ``runtime.subscriptions`` (the local table), ``runtime.closed``, and
  ``runtime.notify_change()`` (wake ``wait_until`` after the router's own
  state changed).
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any, Protocol, TypeVar

import attrs
import trio

from .._agents import Agent, AgentMetadata, Cancellation
from .._agents._base import message_types_of
from .._errors import RequestCancelledError, RuntimeClosedError, UnknownSubscriptionError
from .._ids import AgentId, AgentType, TopicId
from .._nursery import open_service_nursery
from .._serialization import MessageSerializer, SerializationRegistry
from .._subscriptions import Subscription, SubscriptionTable
from ._delivery import Delivery, in_handler
from ._interventions import (
    DropMessage,
    InterventionHandler,
    intercept_publish,
    intercept_response,
    intercept_send,
)
from ._registration import Registration

__all__ = ["Router", "Runtime", "RuntimeStatistics", "open_core"]

T = TypeVar("T")
RuntimeT = TypeVar("RuntimeT", bound="Runtime")


class Router(Protocol):
    """Where sends, publishes, registrations and remote state go (see the module docstring)."""

    async def send(
        self, message: Any, recipient: AgentId, *, sender: AgentId | None, message_id: str
    ) -> Any: ...

    async def publish(
        self, message: Any, topic: TopicId, *, sender: AgentId | None, message_id: str
    ) -> None: ...

    async def register_agent_type(self, agent_type: str) -> None: ...

    async def add_subscription(self, subscription: Subscription) -> None: ...

    async def remove_subscription(self, subscription_id: str) -> None: ...

    async def save_remote_state(self, agent: AgentId) -> Mapping[str, Any]: ...

    async def load_remote_state(self, agent: AgentId, state: Mapping[str, Any]) -> None: ...


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
    overflow: int
    """Messages handlers queued past full mailboxes (at most ``max_overflow``)."""
    dropped: int
    """Messages refused because the overflow was at ``max_overflow`` (senders got
    ``OverloadedError``)."""


class Runtime:
    """An agent runtime (see the module docstring); get one from ``open_runtime``."""

    def __init__(
        self,
        services: trio.Nursery,
        make_router: Callable[[Runtime], Router],
        *,
        mailbox_size: int = 64,
        max_overflow: int = 10_000,
        ignore_unhandled_exceptions: bool = True,
        intervention_handlers: Sequence[InterventionHandler] = (),
    ) -> None:
        self._interventions = tuple(intervention_handlers)
        self.serialization = SerializationRegistry()
        """The serializer registry (used by the worker; unused in-process)."""
        self.subscriptions = SubscriptionTable()
        """The subscriptions added through this runtime."""
        self._delivery = delivery = Delivery(
            self,
            services,
            self.serialization,
            self.subscriptions,
            mailbox_size=mailbox_size,
            max_overflow=max_overflow,
            ignore_unhandled_exceptions=ignore_unhandled_exceptions,
        )
        self._message_ids = itertools.count()
        self._id_prefix = uuid.uuid4().hex[:12] + "-"
        # Bound once: the routers' entry points into delivery, without a call in between.
        self.deliver_request = delivery.deliver_request
        self.deliver_event = delivery.deliver_event
        self.has_local_recipients = delivery.has_recipients
        """Whether a publish to a topic reaches any agent of this runtime."""
        self._router = make_router(self)

    # -- public API: messages ---------------------------------------------------------

    async def send_message(
        self,
        message: Any,
        recipient: AgentId,
        *,
        sender: AgentId | None = None,
        cancellation_token: Cancellation | None = None,
        message_id: str | None = None,
    ) -> Any:
        """Send *message* to *recipient* and return its handler's result (an RPC).

        Raises the handler's exception (in-process), ``UndeliverableError`` for
        an unknown agent type, ``MessageDroppedError`` if an intervention
        dropped it, ``RuntimeClosedError`` once the runtime is closed.
        Cancelling the caller cancels the handler's work for this request.
        *cancellation_token* (for code written for AutoGen): its ``cancel()``
        cancels the call, which then raises ``RequestCancelledError``.
        """
        if cancellation_token is not None:
            with cancellation_token.linked_scope():
                return await self.send_message(
                    message, recipient, sender=sender, message_id=message_id
                )
            raise RequestCancelledError(f"the RPC to {recipient} was cancelled by its token")
        if self._delivery.closed:
            raise RuntimeClosedError("the runtime is closed; no more messages can be sent")
        if message_id is None:
            message_id = self._id_prefix + str(next(self._message_ids))
        if self._interventions:
            message = await intercept_send(
                self._interventions, message, recipient, sender, message_id
            )
        result = await self._router.send(message, recipient, sender=sender, message_id=message_id)
        if self._interventions:
            result = await intercept_response(self._interventions, result, recipient, sender)
        return result

    async def publish_message(
        self,
        message: Any,
        topic_id: TopicId,
        *,
        sender: AgentId | None = None,
        cancellation_token: Cancellation | None = None,
        message_id: str | None = None,
    ) -> None:
        """Queue *message* for every agent subscribed to *topic_id* except *sender*.

        Returns once queued (it may wait for room in a full mailbox).
        *cancellation_token*'s ``cancel()`` cancels that wait (then
        ``RequestCancelledError``); the recipients' handlers are not affected.
        """
        if cancellation_token is not None:
            with cancellation_token.linked_scope():
                await self.publish_message(message, topic_id, sender=sender, message_id=message_id)
                return
            raise RequestCancelledError(f"the publish to {topic_id} was cancelled by its token")
        if self._delivery.closed:
            raise RuntimeClosedError("the runtime is closed; no more messages can be published")
        if message_id is None:
            message_id = self._id_prefix + str(next(self._message_ids))
        if self._interventions:
            message = await intercept_publish(
                self._interventions, message, topic_id, sender, message_id
            )
            if message is DropMessage:
                return
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
        registrations = self._delivery.registrations
        if agent_type.type in registrations:
            raise ValueError(f"agent type {agent_type.type!r} is already registered")
        if expected_class is not None:
            self._learn_message_types(expected_class)
        registrations[agent_type.type] = Registration(agent_factory, expected_class)
        try:
            await self._router.register_agent_type(agent_type.type)
        except BaseException:
            del registrations[agent_type.type]
            raise
        self.notify_change()
        return agent_type

    async def register_agent_instance(self, agent_instance: Agent, agent_id: AgentId) -> AgentId:
        """Register an existing agent object as *agent_id*.

        A type may hold several instances, all of one class; it cannot also
        have a factory.
        """
        delivery = self._delivery
        if agent_id in delivery.slots:
            raise ValueError(f"agent {agent_id} already exists")
        registration = delivery.registrations.get(agent_id.type)
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
        self._learn_message_types(type(agent_instance))
        await agent_instance.bind_id_and_runtime(agent_id, self)
        delivery.add_instance(agent_instance, agent_id)
        if registration is None:
            delivery.registrations[agent_id.type] = Registration(
                None, None, instance_class=type(agent_instance)
            )
            try:
                await self._router.register_agent_type(agent_id.type)
            except BaseException:
                del delivery.registrations[agent_id.type]
                delivery.remove_instance(agent_id)
                raise
        self.notify_change()
        return agent_id

    def _learn_message_types(self, agent_class: type) -> None:
        """Serializers for what *agent_class* handles and returns (see ``message_types_of``)."""
        for message_type in message_types_of(agent_class):
            self._delivery.note_message_type(message_type)

    def agent_types(self) -> list[str]:
        """The registered agent types, in registration order."""
        return list(self._delivery.registrations)

    def has_agent_type(self, agent_type: str) -> bool:
        """Whether *agent_type* is registered with this runtime (its agents live here)."""
        return agent_type in self._delivery.registrations

    # -- public API: subscriptions and serializers ------------------------------------------

    async def add_subscription(self, subscription: Subscription) -> None:
        """Add a subscription (``DuplicateSubscriptionError`` if an equal one exists)."""
        self.subscriptions.add(subscription)
        self._delivery.subscriptions_changed(subscription, None)
        try:
            await self._router.add_subscription(subscription)
        except BaseException:
            self.subscriptions.remove(subscription.id)
            self._delivery.subscriptions_changed(None, subscription)
            raise
        self.notify_change()

    async def remove_subscription(self, id: str) -> None:
        """Remove a subscription by id (``UnknownSubscriptionError`` if unknown).

        The router is told first: when it refuses, the subscription stays.
        """
        if id not in self.subscriptions:
            raise UnknownSubscriptionError(id)
        await self._router.remove_subscription(id)
        removed = self.subscriptions.remove(id)
        self._delivery.subscriptions_changed(None, removed)
        self.notify_change()

    def get_subscriptions(self) -> list[Subscription]:
        """The subscriptions added through this runtime, in insertion order."""
        return self.subscriptions.subscriptions()

    def add_message_serializer(
        self, serializer: MessageSerializer[Any] | Sequence[MessageSerializer[Any]]
    ) -> None:
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
            await self._delivery.slot(agent_id)
        return agent_id

    async def try_get_underlying_agent_instance(
        self,
        id: AgentId,
        type: type[T] = Agent,  # type: ignore[assignment]
    ) -> T:
        """The agent object for *id*, instantiating it if needed.

        ``LookupError`` for an unknown type, ``TypeError`` if it is not a *type*.
        """
        if not self.has_agent_type(id.type):
            raise LookupError(f"agent type {id.type!r} is not registered")
        agent = (await self._delivery.slot(id)).agent
        if not isinstance(agent, type):
            raise TypeError(f"agent {id} is a {agent.__class__.__name__}, not a {type.__name__}")
        return agent

    async def agent_metadata(self, agent: AgentId) -> AgentMetadata:
        return (await self._delivery.slot(agent)).agent.metadata

    async def agent_save_state(self, agent: AgentId) -> Mapping[str, Any]:
        """The agent's state; for a type not registered here, the router's answer
        (a worker asks the owning worker)."""
        if not self.has_agent_type(agent.type):
            return await self._router.save_remote_state(agent)
        return await (await self._delivery.slot(agent)).agent.save_state()

    async def agent_load_state(self, agent: AgentId, state: Mapping[str, Any]) -> None:
        """Load the agent's state, here or through the router (see ``agent_save_state``)."""
        if not self.has_agent_type(agent.type):
            await self._router.load_remote_state(agent, state)
            return
        await (await self._delivery.slot(agent)).agent.load_state(state)

    async def save_state(self) -> dict[str, dict[str, Any]]:
        """``{"type/key": agent.save_state()}`` for every instantiated agent.

        State calls do not go through mailboxes: call them while idle.
        Subscriptions are not saved.
        """
        state: dict[str, dict[str, Any]] = {}
        for agent_id, slot in list(self._delivery.slots.items()):
            state[str(agent_id)] = dict(await slot.agent.save_state())
        return state

    async def load_state(self, state: Mapping[str, Mapping[str, Any]]) -> None:
        """Load every entry whose agent type is registered (activating agents)."""
        for key, agent_state in state.items():
            agent_id = AgentId.from_str(key)
            if self.has_agent_type(agent_id.type):
                await (await self._delivery.slot(agent_id)).agent.load_state(agent_state)

    # -- public API: lifecycle and introspection -------------------------------------------------

    @property
    def closed(self) -> bool:
        return self._delivery.closed

    async def wait_idle(self) -> None:
        """Wait until no agent has work (every cascade finished).

        With ``ignore_unhandled_exceptions=False``, raises the first publish
        handler exception as soon as it happens. Calling it from a handler
        would wait for that handler itself, so it raises ``RuntimeError``.
        """
        if in_handler():
            raise RuntimeError(
                "wait_idle()/stop_when_idle() called from a handler would wait for itself"
            )
        await self._delivery.wait_idle()
        self._delivery.raise_background_error()

    async def stop_when_idle(self) -> None:
        """Wait until idle, then stop: later sends raise ``RuntimeClosedError``.

        Stopping ends the runtime's own tasks only; the code after this call
        in the ``async with`` block keeps running.
        """
        try:
            await self.wait_idle()
        finally:
            self._delivery.stop()

    async def wait_until(self, predicate: Callable[[RuntimeStatistics], bool]) -> None:
        """Wait until ``predicate(runtime.statistics())`` holds, e.g.
        ``await runtime.wait_until(lambda s: s.queued >= 10)``.

        Re-checked whenever a message is queued, a handler finishes, an agent
        is created, a registration or subscription changes, the router reports
        a change (``notify_change``) or the runtime stops; wrap it in
        ``trio.fail_after`` to bound it.
        """
        delivery = self._delivery
        delivery.watchers += 1
        try:
            while not predicate(self.statistics()):
                await delivery.changed.park()
        finally:
            delivery.watchers -= 1

    def notify_change(self) -> None:
        """Wake ``wait_until`` callers to check their predicate again (for routers)."""
        self._delivery.changed.unpark_all()

    def statistics(self) -> RuntimeStatistics:
        delivery = self._delivery
        pending = delivery.pending.statistics()
        return RuntimeStatistics(
            agent_types=len(delivery.registrations),
            agents=len(delivery.slots),
            busy_agents=delivery.busy,
            queued=delivery.queued,
            in_flight=delivery.in_flight,
            pending_rpcs=pending.pending,
            late_responses=pending.late,
            subscriptions=len(self.subscriptions),
            closed=delivery.closed,
            overflow=delivery.overflow,
            dropped=delivery.dropped,
        )

    def _check_invariants(self) -> None:
        """Assert the delivery invariants (for tests; O(number of agents))."""
        self._delivery.check_invariants()


@asynccontextmanager
async def open_core(make_runtime: Callable[[trio.Nursery], RuntimeT]) -> AsyncIterator[RuntimeT]:
    """The runtime ``make_runtime(services)`` for the block; closes it on exit.

    *services* is the nursery the runtime's tasks run in, under a cancel scope
    of their own: stopping the runtime (``stop_when_idle()``) cancels them and
    never the code in the block. On exit (normal or not) the runtime stops at
    once: waiting RPCs fail with ``RuntimeClosedError``, running handlers are
    cancelled, agents' ``close()`` is called. Call ``await
    runtime.stop_when_idle()`` first to let cascades finish. An exception from
    the body propagates as is (not in a group); with
    ``ignore_unhandled_exceptions=False`` a recorded publish handler exception
    is raised on a normal exit.
    """
    runtime: RuntimeT | None = None
    try:
        async with open_service_nursery() as services:
            runtime = make_runtime(services)
            try:
                yield runtime
            finally:
                runtime._delivery.stop()
    finally:
        if runtime is not None:
            await runtime._delivery.close_agents()
    runtime._delivery.raise_background_error()
