"""Agents: the ``Agent`` protocol, ``BaseAgent``, ``RoutedAgent`` and ``ClosureAgent``.

Authoring mirrors autogen-core, with trio coroutines as handlers::

    @default_subscription
    class Greeter(RoutedAgent):
        def __init__(self) -> None:
            super().__init__("says hello")

        @rpc
        async def greet(self, message: Greet, ctx: MessageContext) -> Greeting:
            return Greeting(f"hello {message.name}")

        @event
        async def on_news(self, message: News, ctx: MessageContext) -> None:
            await self.publish_message(Ack(), DefaultTopicId())

    await Greeter.register(runtime, "greeter", Greeter)

Routing rules of :class:`RoutedAgent` (AutoGen's):

* dispatch is on the *exact* ``type(message)`` (no subclass matching);
* handlers for one type are tried in alphabetical order of their method
  names; the first whose ``match(message, ctx)`` is true is called;
* ``@event`` handlers match only when ``not ctx.is_rpc``, ``@rpc`` handlers
  only when ``ctx.is_rpc``, ``@message_handler`` both;
* no match: :meth:`RoutedAgent.on_unhandled_message` (logs, returns None);
* ``strict=True`` (the default) checks the return value's exact type against
  the annotation (``ValueError`` if it is not one of them) and, when the
  handler is called directly with a wrong message type, raises
  :class:`~agentwire.CantHandleError`.

The message parameter may have any name (AutoGen insists on ``message``).
Annotations are resolved lazily (on first registration or instantiation), so
message classes may be defined after the agent class.
"""

from __future__ import annotations

import builtins
import contextlib
import contextvars
import functools
import inspect
import logging
import sys
import types
import typing
from collections.abc import Awaitable, Callable, Coroutine, Iterator, Mapping, Sequence
from typing import Any, ClassVar, Literal, Protocol, TypeVar, overload, runtime_checkable

import attrs
import trio

from ._errors import CantHandleError, DuplicateSubscriptionError
from ._ids import AgentId, AgentType, TopicId
from ._serialization import serializers_for_type
from ._subscriptions import (
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
    "ClosureAgent",
    "ClosureContext",
    "MessageContext",
    "RoutedAgent",
    "default_subscription",
    "event",
    "message_handler",
    "rpc",
    "type_subscription",
]

logger = logging.getLogger("agentwire.agents")

T = TypeVar("T")
AgentT = TypeVar("AgentT", bound="Agent")
BaseAgentT = TypeVar("BaseAgentT", bound="BaseAgent")
ReceivesT = TypeVar("ReceivesT")
ProducesT = TypeVar("ProducesT")


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

    An RPC handled inline runs in the caller's own task: the caller's
    cancellation (cancel scope, deadline) reaches it directly as
    ``trio.Cancelled``, with no need for this object.
    """

    __slots__ = ("_called", "_scope")

    def __init__(self, scope: trio.CancelScope | None = None) -> None:
        self._scope = scope
        self._called = False

    def cancel(self) -> None:
        self._called = True
        if self._scope is not None:
            self._scope.cancel()

    @property
    def cancel_called(self) -> bool:
        return self._called or (self._scope is not None and self._scope.cancel_called)

    def is_cancelled(self) -> bool:
        return self.cancel_called

    def __repr__(self) -> str:
        return f"<Cancellation {'cancelled' if self.cancel_called else 'active'}>"


@attrs.frozen
class MessageContext:
    """What a handler knows about the message it is handling.

    * ``sender``: the sending agent, or ``None`` (sent from outside any agent);
    * ``topic_id``: the topic of a published message, ``None`` for an RPC;
    * ``is_rpc``: whether the sender waits for the handler's return value;
    * ``message_id``: the id of this message (unique per send/publish);
    * ``cancellation``: a :class:`Cancellation` for this message's handling.
    """

    sender: AgentId | None
    topic_id: TopicId | None
    is_rpc: bool
    message_id: str
    cancellation: Cancellation = attrs.field(factory=Cancellation, eq=False)


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
        message_id: str | None = None,
    ) -> Any: ...

    async def publish_message(
        self,
        message: Any,
        topic_id: TopicId,
        *,
        sender: AgentId | None = None,
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
        if existing_id is not None and existing_id != id:
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
        self, message: Any, recipient: AgentId, *, message_id: str | None = None
    ) -> Any:
        """Send an RPC as this agent; return the recipient's response."""
        return await self.runtime.send_message(
            message, recipient, sender=self.id, message_id=message_id
        )

    async def publish_message(
        self, message: Any, topic_id: TopicId, *, message_id: str | None = None
    ) -> None:
        """Publish as this agent (this agent does not receive its own publish)."""
        await self.runtime.publish_message(message, topic_id, sender=self.id, message_id=message_id)

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
        handled message types.
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
        _register_serializers(runtime, cls._handled_types())
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
        _register_serializers(runtime, type(self)._handled_types())
        return agent_id


# -- class decorators ----------------------------------------------------------------


def default_subscription(cls: type[BaseAgentT]) -> type[BaseAgentT]:
    """Subscribe the agent type to topic type ``"default"`` (source -> key)."""
    return type_subscription("default")(cls)


def type_subscription(topic_type: str) -> Callable[[type[BaseAgentT]], type[BaseAgentT]]:
    """Subscribe the agent type to *topic_type* (the topic source becomes the key)."""
    TopicId(topic_type, "validate")  # fail at decoration time on a bad topic type

    def decorator(cls: type[BaseAgentT]) -> type[BaseAgentT]:
        def bind() -> list[Subscription]:
            from ._subscriptions import subscription_agent_type

            agent_type = subscription_agent_type.get()
            if agent_type is None:  # pragma: no cover - register always sets it
                raise CantHandleError("no agent type is being registered")
            return [TypeSubscription(topic_type, agent_type)]

        cls._unbound_subscriptions.append(bind)
        return cls

    return decorator


# -- handlers -------------------------------------------------------------------------


class _AnyType:
    """Stands for ``typing.Any`` in a handler's types."""


def _types_of(annotation: object) -> tuple[type, ...] | None:
    origin = typing.get_origin(annotation)
    if origin is typing.Union or origin is types.UnionType:
        result: list[type] = []
        for arg in typing.get_args(annotation):
            sub = _types_of(arg)
            if sub is None:
                return None
            result.extend(sub)
        return tuple(result)
    if annotation is Any:
        return (_AnyType,)
    if annotation is None or annotation is type(None):
        return (type(None),)
    if origin is not None and isinstance(origin, type):
        return (origin,)
    if isinstance(annotation, type):
        return (annotation,)
    return None


class _HandlerSpec:
    """What a handler decorator recorded; the types are resolved lazily."""

    __slots__ = ("func", "kind", "localns", "match", "name", "produces", "strict", "targets")

    def __init__(
        self,
        func: Callable[..., Coroutine[Any, Any, Any]],
        kind: Literal["any", "event", "rpc"],
        match: Callable[[Any, MessageContext], bool] | None,
        strict: bool,
    ) -> None:
        if not inspect.iscoroutinefunction(func):
            raise TypeError(f"handler {func.__qualname__} must be an async def")
        params = list(inspect.signature(func).parameters)
        if len(params) != 3:
            raise TypeError(
                f"handler {func.__qualname__} must take (self, message, ctx), got {params}"
            )
        self.func = func
        self.name = func.__name__
        self.kind = kind
        self.match = match
        self.strict = strict
        self.targets: tuple[type, ...] | None = None
        self.produces: frozenset[type] | None = None
        self.localns = _defining_namespace()

    def resolve(self) -> None:
        if self.targets is not None:
            return
        func = self.func
        try:
            hints = typing.get_type_hints(func, localns=self.localns)
        except NameError as exc:
            raise TypeError(
                f"cannot resolve the annotations of handler {func.__qualname__}: {exc}"
            ) from exc
        message_param = list(inspect.signature(func).parameters)[1]
        if message_param not in hints:
            raise TypeError(f"handler {func.__qualname__}: annotate the message parameter")
        if "return" not in hints:
            raise TypeError(f"handler {func.__qualname__}: annotate the return type")
        targets = _types_of(hints[message_param])
        if targets is None:
            raise TypeError(
                f"handler {func.__qualname__}: unsupported message type {hints[message_param]!r}"
            )
        produces = _types_of(hints["return"])
        if produces is None:
            raise TypeError(
                f"handler {func.__qualname__}: unsupported return type {hints['return']!r}"
            )
        if self.kind == "event" and produces != (type(None),):
            raise TypeError(f"event handler {func.__qualname__} must return None")
        self.targets = targets
        self.produces = frozenset(produces)

    def router(self) -> Callable[[Any, MessageContext], bool] | None:
        """The predicate deciding whether this handler takes a message (None: always)."""
        match = self.match
        if self.kind == "any":
            return match
        want_rpc = self.kind == "rpc"
        if match is None:
            return lambda _message, ctx: ctx.is_rpc is want_rpc
        return lambda message, ctx: ctx.is_rpc is want_rpc and match(message, ctx)


_SPEC_ATTR = "_agentwire_handler"


def _defining_namespace() -> dict[str, Any]:
    """Names visible where a handler is defined: the class body and the function
    around it. With ``from __future__ import annotations``, a handler defined in
    a function may refer to that function's local names in its annotations."""
    frame = sys._getframe(1)
    while frame is not None and frame.f_globals.get("__name__") == __name__:
        frame = frame.f_back  # type: ignore[assignment]
    if frame is None:  # pragma: no cover
        return {}
    namespace = dict(frame.f_back.f_locals) if frame.f_back is not None else {}
    namespace.update(frame.f_locals)
    return namespace


HandlerFunc = Callable[[AgentT, ReceivesT, MessageContext], Coroutine[Any, Any, ProducesT]]


def _make_decorator(
    kind: Literal["any", "event", "rpc"],
    func: Callable[..., Any] | None,
    strict: bool,
    match: Callable[[Any, MessageContext], bool] | None,
) -> Any:
    def decorator(f: Callable[..., Any]) -> Callable[..., Any]:
        spec = _HandlerSpec(f, kind, match, strict)

        @functools.wraps(f)
        async def checked(self: Any, message: Any, ctx: MessageContext) -> Any:
            spec.resolve()
            assert spec.targets is not None
            if type(message) not in spec.targets and _AnyType not in spec.targets:
                if spec.strict:
                    raise CantHandleError(
                        f"{spec.name} handles {spec.targets}, not {type(message).__name__}"
                    )
                logger.warning("%s got a %s", spec.name, type(message).__name__)
            return await f(self, message, ctx)

        setattr(checked, _SPEC_ATTR, spec)
        return checked

    if func is not None:
        return decorator(func)
    return decorator


@overload
def message_handler(
    func: HandlerFunc[AgentT, ReceivesT, ProducesT],
) -> HandlerFunc[AgentT, ReceivesT, ProducesT]: ...
@overload
def message_handler(
    func: None = None,
    *,
    strict: bool = ...,
    match: Callable[[Any, MessageContext], bool] | None = ...,
) -> Callable[
    [HandlerFunc[AgentT, ReceivesT, ProducesT]], HandlerFunc[AgentT, ReceivesT, ProducesT]
]: ...
def message_handler(
    func: Callable[..., Any] | None = None,
    *,
    strict: bool = True,
    match: Callable[[Any, MessageContext], bool] | None = None,
) -> Any:
    """Mark a ``RoutedAgent`` method as the handler of its message type(s), RPC or event."""
    return _make_decorator("any", func, strict, match)


@overload
def event(func: HandlerFunc[AgentT, ReceivesT, None]) -> HandlerFunc[AgentT, ReceivesT, None]: ...
@overload
def event(
    func: None = None,
    *,
    strict: bool = ...,
    match: Callable[[Any, MessageContext], bool] | None = ...,
) -> Callable[[HandlerFunc[AgentT, ReceivesT, None]], HandlerFunc[AgentT, ReceivesT, None]]: ...
def event(
    func: Callable[..., Any] | None = None,
    *,
    strict: bool = True,
    match: Callable[[Any, MessageContext], bool] | None = None,
) -> Any:
    """Like :func:`message_handler`, but only for published messages (``not ctx.is_rpc``)."""
    return _make_decorator("event", func, strict, match)


@overload
def rpc(
    func: HandlerFunc[AgentT, ReceivesT, ProducesT],
) -> HandlerFunc[AgentT, ReceivesT, ProducesT]: ...
@overload
def rpc(
    func: None = None,
    *,
    strict: bool = ...,
    match: Callable[[Any, MessageContext], bool] | None = ...,
) -> Callable[
    [HandlerFunc[AgentT, ReceivesT, ProducesT]], HandlerFunc[AgentT, ReceivesT, ProducesT]
]: ...
def rpc(
    func: Callable[..., Any] | None = None,
    *,
    strict: bool = True,
    match: Callable[[Any, MessageContext], bool] | None = None,
) -> Any:
    """Like :func:`message_handler`, but only for RPCs (``ctx.is_rpc``)."""
    return _make_decorator("rpc", func, strict, match)


# One entry of a routing table: (predicate or None, the undecorated coroutine
# function, the exact return types to check or None when not strict).
_Route = tuple[
    Callable[[Any, MessageContext], bool] | None,
    Callable[..., Coroutine[Any, Any, Any]],
    frozenset[type] | None,
]


class RoutedAgent(BaseAgent):
    """An agent whose methods decorated with ``@message_handler``, ``@event`` or
    ``@rpc`` handle messages by exact type; see the module docstring for the rules.
    """

    _routes: ClassVar[dict[type, tuple[_Route, ...]] | None] = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._routes = None  # built on first use, once annotations resolve

    def __init__(self, description: str = "") -> None:
        super().__init__(description)
        self._table = type(self)._routing_table()

    @classmethod
    def _handler_specs(cls) -> list[_HandlerSpec]:
        specs = []
        for name in dir(cls):  # alphabetical: the order handlers are tried in
            spec = getattr(getattr(cls, name, None), _SPEC_ATTR, None)
            if isinstance(spec, _HandlerSpec):
                specs.append(spec)
        return specs

    @classmethod
    def _routing_table(cls) -> dict[type, tuple[_Route, ...]]:
        cached: dict[type, tuple[_Route, ...]] | None = cls.__dict__.get("_routes")
        if cached is not None:
            return cached
        built: dict[type, list[_Route]] = {}
        for spec in cls._handler_specs():
            spec.resolve()
            assert spec.targets is not None
            produces = (
                spec.produces if spec.strict and _AnyType not in (spec.produces or ()) else None
            )
            for target in spec.targets:
                built.setdefault(target, []).append((spec.router(), spec.func, produces))
        table = {target: tuple(routes) for target, routes in built.items()}
        cls._routes = table
        return table

    @classmethod
    def _handled_types(cls) -> list[type]:
        types_: list[type] = list(cls._extra_handled_types)
        for target in cls._routing_table():
            if target is not _AnyType and target not in types_:
                types_.append(target)
        return types_

    async def on_message(self, message: Any, ctx: MessageContext) -> Any:
        routes = self._table.get(type(message))
        if routes is not None:
            for router, func, produces in routes:
                if router is None or router(message, ctx):
                    result = await func(self, message, ctx)
                    if produces is not None and type(result) not in produces:
                        raise ValueError(
                            f"{func.__qualname__} returned a {type(result).__name__}, "
                            f"not one of its annotated types {sorted(t.__name__ for t in produces)}"
                        )
                    return result
        return await self.on_unhandled_message(message, ctx)

    async def on_message_impl(self, message: Any, ctx: MessageContext) -> Any:
        return await self.on_message(message, ctx)

    async def on_unhandled_message(self, message: Any, ctx: MessageContext) -> None:
        """Called when no handler takes *message*; logs it and returns None."""
        logger.info("Unhandled message: %r", message)


# -- closure agents ---------------------------------------------------------------------


class ClosureContext(Protocol):
    """What a closure agent's function gets as its first argument."""

    @property
    def id(self) -> AgentId: ...

    async def send_message(
        self, message: Any, recipient: AgentId, *, message_id: str | None = None
    ) -> Any: ...

    async def publish_message(
        self, message: Any, topic_id: TopicId, *, message_id: str | None = None
    ) -> None: ...


def _closure_types(closure: Callable[..., Any]) -> tuple[type, ...]:
    params = list(inspect.signature(closure).parameters)
    if len(params) != 3:
        raise TypeError("a closure agent's function must take (agent, message, ctx)")
    hints = typing.get_type_hints(closure)
    if "return" not in hints:
        raise TypeError("annotate the closure's return type")
    targets = _types_of(hints.get(params[1], Any))
    if targets is None:
        raise TypeError(f"unsupported message type {hints.get(params[1])!r}")
    return targets


class ClosureAgent(BaseAgent):
    """An agent made of one function ``async def f(agent, message, ctx)``.

    Messages whose exact type is not among the annotated ones are handled by
    *unknown_type_policy*: ``"warn"`` (log a warning, return None),
    ``"error"`` (raise CantHandleError) or ``"ignore"`` (call the function
    anyway, as AutoGen does).
    """

    def __init__(
        self,
        description: str,
        closure: Callable[[ClosureContext, Any, MessageContext], Awaitable[Any]],
        *,
        unknown_type_policy: Literal["error", "warn", "ignore"] = "warn",
    ) -> None:
        if not AgentInstantiationContext.is_in_factory_call():
            raise RuntimeError(
                "a ClosureAgent is created by the runtime: use ClosureAgent.register_closure"
            )
        super().__init__(description)
        self._closure = closure
        self._expected = _closure_types(closure)
        self._policy = unknown_type_policy

    async def on_message(self, message: Any, ctx: MessageContext) -> Any:
        if type(message) not in self._expected and _AnyType not in self._expected:
            if self._policy == "warn":
                logger.warning(
                    "%s: message type %s not in %s", self.id, type(message).__name__, self._expected
                )
                return None
            if self._policy == "error":
                raise CantHandleError(
                    f"{self.id}: message type {type(message).__name__} not in {self._expected}"
                )
        return await self._closure(self, message, ctx)

    async def on_message_impl(self, message: Any, ctx: MessageContext) -> Any:
        return await self.on_message(message, ctx)

    @classmethod
    async def register_closure(
        cls,
        runtime: AgentRuntime,
        type: str,
        closure: Callable[[ClosureContext, Any, MessageContext], Awaitable[Any]],
        *,
        unknown_type_policy: Literal["error", "warn", "ignore"] = "warn",
        skip_direct_message_subscription: bool = False,
        description: str = "",
        subscriptions: Callable[[], list[Subscription] | Awaitable[list[Subscription]]]
        | None = None,
    ) -> AgentType:
        """Register an agent type whose every instance runs *closure*.

        *subscriptions* is called with the registration context set, so
        ``lambda: [DefaultSubscription()]`` subscribes this type.
        """
        handled = _closure_types(closure)

        def factory() -> ClosureAgent:
            return cls(description, closure, unknown_type_policy=unknown_type_policy)

        agent_type = await runtime.register_factory(type, factory, expected_class=cls)
        if not skip_direct_message_subscription:
            await runtime.add_subscription(
                TypePrefixSubscription(agent_type.type + ":", agent_type.type)
            )
        if subscriptions is not None:
            for subscription in await _bind_subscriptions(agent_type.type, [subscriptions]):
                await runtime.add_subscription(subscription)
        _register_serializers(runtime, [t for t in handled if t is not _AnyType])
        return agent_type
