"""The agent protocol and its plumbing: ``Agent``, ``BaseAgent``, contexts, subscriptions.

See the package docstring for how agents are written.
"""

from __future__ import annotations

import builtins
import contextlib
import contextvars
import inspect
import logging
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from typing import Any, ClassVar, Protocol, TypeVar, overload, runtime_checkable

import attrs
import trio

from .._errors import CantHandleError, DuplicateSubscriptionError
from .._ids import AgentId, AgentType, TopicId
from .._serialization import serializers_for_type
from .._subscriptions import (
    Subscription,
    TypePrefixSubscription,
    TypeSubscription,
    subscription_instantiation_context,
)

__all__ = [
    "Agent",
    "AgentInstantiationContext",
    "AgentMetadata",
    "AgentRuntime",
    "BaseAgent",
    "Cancellation",
    "MessageContext",
    "default_subscription",
    "type_subscription",
]

logger = logging.getLogger("agentwire.agents")

BaseAgentT = TypeVar("BaseAgentT", bound="BaseAgent")


class Cancellation:
    """Cancellation of the handling of one message (AutoGen's CancellationToken).

    * ``cancel()`` marks the message's handling as cancelled: an RPC caller
      gets :class:`~agentwire.RequestCancelledError` instead of the result.
      When the handler runs in a cancel scope of its own (a queued RPC, see
      the runtime's delivery model) that scope is cancelled too, so the
      handler is interrupted at its next checkpoint. ``cancel()`` is
      idempotent.
    * ``cancel_called`` / ``is_cancelled()``: whether it was cancelled -- by
      the handler, or by the runtime because the RPC's caller gave up.

    * ``linked_scope()``: a cancel scope that ``cancel()`` cancels too (what
      ``send_message(..., cancellation_token=...)`` runs the call in).

    An RPC handled inline runs in the caller's own task: the caller's
    cancellation (cancel scope, deadline) reaches it directly as
    ``trio.Cancelled``, with no need for this object.
    """

    __slots__ = ("_called", "_linked", "_scope")

    def __init__(self, scope: trio.CancelScope | None = None) -> None:
        self._scope = scope
        self._called = False
        # _linked (the scopes of linked_scope()) is set on first use: most
        # cancellations never have one, and one is made for every message.

    def cancel(self) -> None:
        self._called = True
        if self._scope is not None:
            self._scope.cancel()
        for scope in getattr(self, "_linked", ()):
            scope.cancel()

    @contextlib.contextmanager
    def linked_scope(self) -> Iterator[trio.CancelScope]:
        """``with cancellation.linked_scope() as scope:`` runs the block in a cancel
        scope that ``cancel()`` cancels (already cancelled if ``cancel()`` was called)."""
        scope = trio.CancelScope()
        if self.cancel_called:
            scope.cancel()
        linked: list[trio.CancelScope] | None = getattr(self, "_linked", None)
        if linked is None:
            linked = []
            self._linked = linked
        linked.append(scope)
        try:
            with scope:
                yield scope
        finally:
            linked.remove(scope)

    @property
    def cancel_called(self) -> bool:
        return self._called or (self._scope is not None and self._scope.cancel_called)

    def is_cancelled(self) -> bool:
        return self.cancel_called

    def __repr__(self) -> str:
        return f"<Cancellation {'cancelled' if self.cancel_called else 'active'}>"


@attrs.define(unsafe_hash=True, repr=False)
class MessageContext:
    """What a handler knows about the message it is handling (read-only).

    * ``sender``: the sending agent, or ``None`` (sent from outside any agent);
    * ``topic_id``: the topic of a published message, ``None`` for an RPC;
    * ``is_rpc``: whether the sender waits for the handler's return value;
    * ``message_id``: the id of this message (unique per send/publish);
    * ``cancellation``: a :class:`Cancellation` for this message's handling.

    Contexts compare and hash by the first four (not by ``cancellation``).
    """

    # The fields are private slots behind read-only properties rather than an
    # attrs frozen class: a frozen class stores each field through
    # object.__setattr__, which made building a context (one per message)
    # cost three times as much as these plain stores.
    _sender: AgentId | None
    _topic_id: TopicId | None
    _is_rpc: bool
    _message_id: str
    # None until first asked for: most handlers never look at it (see below).
    _cancellation: Cancellation | None = attrs.field(default=None, eq=False)

    @property
    def sender(self) -> AgentId | None:
        return self._sender

    @property
    def topic_id(self) -> TopicId | None:
        return self._topic_id

    @property
    def is_rpc(self) -> bool:
        return self._is_rpc

    @property
    def message_id(self) -> str:
        return self._message_id

    @property
    def cancellation(self) -> Cancellation:
        cancellation = self._cancellation
        if cancellation is None:
            # Made on first use: an RPC handled inline needs none unless its
            # handler asks (the runtime checks ``_cancellation`` afterwards).
            cancellation = self._cancellation = Cancellation()
        return cancellation

    @property
    def cancellation_token(self) -> Cancellation:
        """``cancellation`` under AutoGen's name."""
        return self.cancellation

    def __repr__(self) -> str:
        return (
            f"MessageContext(sender={self._sender!r}, topic_id={self._topic_id!r}, "
            f"is_rpc={self._is_rpc!r}, message_id={self._message_id!r}, "
            f"cancellation={self.cancellation!r})"
        )


@attrs.frozen
class AgentMetadata:
    type: str
    key: str
    description: str


@runtime_checkable
class AgentRuntime(Protocol):
    """What an agent may ask of the runtime it runs in (in-process or worker)."""

    async def send_message(
        self,
        message: Any,
        recipient: AgentId,
        *,
        sender: AgentId | None = None,
        cancellation_token: Cancellation | None = None,
        message_id: str | None = None,
    ) -> Any: ...

    async def publish_message(
        self,
        message: Any,
        topic_id: TopicId,
        *,
        sender: AgentId | None = None,
        cancellation_token: Cancellation | None = None,
        message_id: str | None = None,
    ) -> None: ...

    async def register_factory(
        self,
        type: str | AgentType,
        agent_factory: Callable[[], Any],
        *,
        expected_class: type[Any] | None = None,
    ) -> AgentType: ...

    async def register_agent_instance(
        self, agent_instance: Agent, agent_id: AgentId
    ) -> AgentId: ...

    async def add_subscription(self, subscription: Subscription) -> None: ...

    def add_message_serializer(self, serializer: Any) -> None: ...


@runtime_checkable
class Agent(Protocol):
    """The protocol every agent implements (``BaseAgent`` does the plumbing)."""

    @property
    def id(self) -> AgentId: ...

    @property
    def metadata(self) -> AgentMetadata: ...

    async def bind_id_and_runtime(self, id: AgentId, runtime: AgentRuntime) -> None: ...

    async def on_message(self, message: Any, ctx: MessageContext) -> Any: ...

    async def save_state(self) -> Mapping[str, Any]: ...

    async def load_state(self, state: Mapping[str, Any]) -> None: ...

    async def close(self) -> None: ...


_instantiation: contextvars.ContextVar[tuple[AgentRuntime, AgentId] | None] = (
    contextvars.ContextVar("agentwire.agent_instantiation", default=None)
)


class AgentInstantiationContext:
    """The runtime and agent id being instantiated, readable inside a factory.

    ``BaseAgent.__init__`` binds itself from it, so factories need no arguments.
    """

    def __init__(self) -> None:
        raise RuntimeError("AgentInstantiationContext is a namespace; do not instantiate it")

    @staticmethod
    @contextlib.contextmanager
    def populate_context(runtime: AgentRuntime, agent_id: AgentId) -> Iterator[None]:
        """(For runtimes.) Make *runtime* and *agent_id* current inside the block."""
        token = _instantiation.set((runtime, agent_id))
        try:
            yield
        finally:
            _instantiation.reset(token)

    @staticmethod
    def is_in_factory_call() -> bool:
        return _instantiation.get() is not None

    @staticmethod
    def current_runtime() -> AgentRuntime:
        value = _instantiation.get()
        if value is None:
            raise RuntimeError(
                "no agent is being instantiated here: AgentInstantiationContext is only "
                "available inside an agent factory called by the runtime"
            )
        return value[0]

    @staticmethod
    def current_agent_id() -> AgentId:
        value = _instantiation.get()
        if value is None:
            raise RuntimeError(
                "no agent is being instantiated here: AgentInstantiationContext is only "
                "available inside an agent factory called by the runtime"
            )
        return value[1]


UnboundSubscription = Callable[[], "list[Subscription] | Awaitable[list[Subscription]]"]


async def _bind_subscriptions(
    agent_type: str, unbound: Sequence[Callable[[], Any]]
) -> list[Subscription]:
    subscriptions: list[Subscription] = []
    with subscription_instantiation_context(agent_type):
        for make in unbound:
            result = make()
            if inspect.isawaitable(result):
                result = await result
            subscriptions.extend(result)
    return subscriptions


def _register_serializers(runtime: AgentRuntime, message_types: Sequence[type]) -> None:
    """Register serializers for *message_types* where the serializer registry can.

    In-process, messages are never serialized, so types the registry does not
    support (plain classes, ``str``) are skipped with a debug log; a worker
    runtime reports them when such a message has to cross the wire.
    """
    for message_type in message_types:
        if message_type is type(None):
            continue
        try:
            serializers = serializers_for_type(message_type)
        except Exception as exc:
            logger.debug("no serializer for %r (fine in-process): %s", message_type, exc)
            continue
        runtime.add_message_serializer(serializers)


def message_types_of(agent_class: type) -> list[type]:
    """The message types an agent class's handlers take and are annotated to return.

    Registering the class (``register_factory(..., expected_class=cls)``,
    ``register_agent_instance``) teaches them to the runtime's serializer
    registry, so a worker can decode any of them from any peer.
    """
    if not issubclass(agent_class, BaseAgent):
        return []
    types_ = agent_class._handled_types()
    types_ += [t for t in agent_class._produced_types() if t not in types_]
    return types_


class BaseAgent:
    """An agent with the plumbing done: id, runtime, metadata, registration.

    Subclasses implement :meth:`on_message_impl`. Constructed by the runtime's
    factory call, it picks up its id and runtime from
    :class:`AgentInstantiationContext`.
    """

    _unbound_subscriptions: ClassVar[list[Callable[[], Any]]] = []
    _extra_handled_types: ClassVar[list[type]] = []

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # Each class gets its own lists (not shared with its base).
        cls._unbound_subscriptions = []
        cls._extra_handled_types = []

    def __init__(self, description: str = "") -> None:
        if not isinstance(description, str):
            raise ValueError("agent description must be a str")
        self._description = description
        context = _instantiation.get()
        if context is not None:
            self._runtime: AgentRuntime = context[0]
            self._id: AgentId = context[1]

    @property
    def id(self) -> AgentId:
        try:
            return self._id
        except AttributeError:
            raise RuntimeError(
                "this agent is not bound to a runtime yet: create it in a factory "
                "registered with the runtime, or use register_agent_instance"
            ) from None

    @property
    def type(self) -> str:
        return self.id.type

    @property
    def runtime(self) -> AgentRuntime:
        try:
            return self._runtime
        except AttributeError:
            raise RuntimeError("this agent is not bound to a runtime yet") from None

    @property
    def metadata(self) -> AgentMetadata:
        agent_id = self.id
        return AgentMetadata(type=agent_id.type, key=agent_id.key, description=self._description)

    async def bind_id_and_runtime(self, id: AgentId, runtime: AgentRuntime) -> None:
        existing_id = getattr(self, "_id", None)
        if existing_id is not None and existing_id is not id and existing_id != id:
            raise RuntimeError(f"agent already bound to id {existing_id}, not {id}")
        existing_runtime = getattr(self, "_runtime", None)
        if existing_runtime is not None and existing_runtime is not runtime:
            raise RuntimeError("agent already bound to a different runtime")
        self._id = id
        self._runtime = runtime

    async def on_message(self, message: Any, ctx: MessageContext) -> Any:
        return await self.on_message_impl(message, ctx)

    async def on_message_impl(self, message: Any, ctx: MessageContext) -> Any:
        raise NotImplementedError(f"{type(self).__name__} must implement on_message_impl")

    async def send_message(
        self,
        message: Any,
        recipient: AgentId,
        *,
        cancellation_token: Cancellation | None = None,
        message_id: str | None = None,
    ) -> Any:
        """Send an RPC as this agent; return the recipient's response."""
        return await self.runtime.send_message(
            message,
            recipient,
            sender=self.id,
            cancellation_token=cancellation_token,
            message_id=message_id,
        )

    async def publish_message(
        self,
        message: Any,
        topic_id: TopicId,
        *,
        cancellation_token: Cancellation | None = None,
        message_id: str | None = None,
    ) -> None:
        """Publish as this agent (this agent does not receive its own publish)."""
        await self.runtime.publish_message(
            message,
            topic_id,
            sender=self.id,
            cancellation_token=cancellation_token,
            message_id=message_id,
        )

    async def save_state(self) -> Mapping[str, Any]:
        return {}

    async def load_state(self, state: Mapping[str, Any]) -> None:
        return None

    async def close(self) -> None:
        return None

    @classmethod
    def _handled_types(cls) -> list[builtins.type]:
        return list(cls._extra_handled_types)

    @classmethod
    def _produced_types(cls) -> list[builtins.type]:
        """The types this class's handlers are annotated to return (None excluded)."""
        return []

    @classmethod
    async def register(
        cls: builtins.type[BaseAgentT],
        runtime: AgentRuntime,
        type: str,
        factory: Callable[[], BaseAgentT | Awaitable[BaseAgentT]],
        *,
        skip_class_subscriptions: bool = False,
        skip_direct_message_subscription: bool = False,
    ) -> AgentType:
        """Register *factory* for agent *type*, as AutoGen's ``Agent.register`` does.

        Adds the class's subscriptions (``@default_subscription``,
        ``@type_subscription``), the direct-message subscription
        ``TypePrefixSubscription(type + ":", type)``, and serializers for the
        message types its handlers take and return (the runtime learns them
        from *factory*'s class: see ``message_types_of``).
        """
        agent_type = await runtime.register_factory(type, factory, expected_class=cls)
        if not skip_class_subscriptions:
            for subscription in await _bind_subscriptions(
                agent_type.type, cls._unbound_subscriptions
            ):
                await runtime.add_subscription(subscription)
        if not skip_direct_message_subscription:
            await runtime.add_subscription(
                TypePrefixSubscription(agent_type.type + ":", agent_type.type)
            )
        return agent_type

    async def register_instance(
        self,
        runtime: AgentRuntime,
        agent_id: AgentId,
        *,
        skip_class_subscriptions: bool = True,
        skip_direct_message_subscription: bool = False,
    ) -> AgentId:
        """Register this instance as *agent_id* (AutoGen's ``register_instance``).

        Also subscribes it to topic type ``agent_id.key`` and, unless skipped,
        to the direct-message prefix (an existing one is fine).
        """
        agent_id = await runtime.register_agent_instance(self, agent_id)
        await runtime.add_subscription(TypeSubscription(agent_id.key, agent_id.type))
        if not skip_class_subscriptions:
            for subscription in await _bind_subscriptions(
                agent_id.type, type(self)._unbound_subscriptions
            ):
                await runtime.add_subscription(subscription)
        if not skip_direct_message_subscription:
            with contextlib.suppress(DuplicateSubscriptionError):  # another instance's
                await runtime.add_subscription(
                    TypePrefixSubscription(agent_id.type + ":", agent_id.type)
                )
        return agent_id


# -- class decorators ----------------------------------------------------------------


@overload
def default_subscription(cls: type[BaseAgentT]) -> type[BaseAgentT]: ...
@overload
def default_subscription(
    cls: None = None,
) -> Callable[[type[BaseAgentT]], type[BaseAgentT]]: ...
def default_subscription(
    cls: type[BaseAgentT] | None = None,
) -> type[BaseAgentT] | Callable[[type[BaseAgentT]], type[BaseAgentT]]:
    """Subscribe the agent type to topic type ``"default"`` (source -> key).

    ``@default_subscription`` and ``@default_subscription()`` are the same (AutoGen
    accepts both).
    """
    if cls is None:
        return type_subscription("default")
    return type_subscription("default")(cls)


def type_subscription(topic_type: str) -> Callable[[type[BaseAgentT]], type[BaseAgentT]]:
    """Subscribe the agent type to *topic_type* (the topic source becomes the key)."""
    TopicId(topic_type, "validate")  # fail at decoration time on a bad topic type

    def decorator(cls: type[BaseAgentT]) -> type[BaseAgentT]:
        def bind() -> list[Subscription]:
            from .._subscriptions import subscription_agent_type

            agent_type = subscription_agent_type.get()
            if agent_type is None:  # pragma: no cover - register always sets it
                raise CantHandleError("no agent type is being registered")
            return [TypeSubscription(topic_type, agent_type)]

        cls._unbound_subscriptions.append(bind)
        return cls

    return decorator
