"""``RoutedAgent``: handlers chosen by the message's exact type, and their decorators.

See the package docstring for the routing rules.
"""

from __future__ import annotations

import ast
import builtins
import functools
import inspect
import logging
import sys
import types
import typing
from collections.abc import Callable, Coroutine
from typing import Any, ClassVar, Literal, TypeVar, overload

from .._errors import CantHandleError
from .._ids import AgentId
from ._base import BaseAgent, MessageContext

__all__ = ["RoutedAgent", "event", "message_handler", "rpc"]

logger = logging.getLogger("agentwire.agents")

AgentT = TypeVar("AgentT")
ReceivesT = TypeVar("ReceivesT")
ProducesT = TypeVar("ProducesT")


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
        self.localns = _local_annotation_names(func)

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


def _local_annotation_names(func: Callable[..., Any]) -> dict[str, Any]:
    """The local names *func*'s string annotations use, from where it is defined.

    With ``from __future__ import annotations`` a handler defined in a function
    may name that function's local classes (or the class body's) in its
    annotations. Only the names its annotations use and its module's globals do
    not define are looked up in those frames and kept; the frames and their other
    locals are not kept alive.
    """
    wanted: set[str] = set()
    for annotation in func.__annotations__.values():
        if isinstance(annotation, str):
            try:
                tree = ast.parse(annotation, mode="eval")
            except SyntaxError:
                continue  # get_type_hints reports it
            wanted.update(node.id for node in ast.walk(tree) if isinstance(node, ast.Name))
    wanted = {n for n in wanted if n not in func.__globals__ and not hasattr(builtins, n)}
    if not wanted:
        return {}
    found: dict[str, Any] = {}
    frame: types.FrameType | None = sys._getframe(1)
    try:
        while frame is not None and frame.f_globals.get("__name__") == __name__:
            frame = frame.f_back
        # The class body first, then the function around it.
        for scope in (frame, frame.f_back if frame is not None else None):
            if scope is None:
                continue
            local_names = scope.f_locals
            for name in wanted - found.keys():
                if name in local_names:
                    found[name] = local_names[name]
    finally:
        del frame
    return found


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
    def _produced_types(cls) -> list[type]:
        cls._routing_table()  # resolves every handler's annotations
        produced: list[type] = []
        for spec in cls._handler_specs():
            for result_type in sorted(spec.produces or (), key=lambda t: t.__qualname__):
                if result_type not in (_AnyType, type(None)) and result_type not in produced:
                    produced.append(result_type)
        return produced

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
        """Called when no handler takes *message*.

        An RPC raises :class:`~agentwire.CantHandleError` naming this agent, the
        message's type and the types it takes as RPCs (the caller gets it); a
        published message is ignored (logged at DEBUG). Override to change that.
        """
        if not ctx.is_rpc:
            logger.debug("%s ignores a published %s: no handler", self.id, type(message).__name__)
            return
        raise CantHandleError(self._unhandled_rpc_text(self.id, type(message)))

    @classmethod
    def _unhandled_rpc_text(cls, agent_id: AgentId, message_type: type) -> str:
        rpc_types: list[str] = []
        event_only = False
        for spec in cls._handler_specs():
            names = [t.__qualname__ for t in spec.targets or () if t is not _AnyType]
            if spec.kind == "event":
                event_only = event_only or message_type in (spec.targets or ())
                continue
            rpc_types += [name for name in names if name not in rpc_types]
        takes = ", ".join(sorted(rpc_types)) or "nothing"
        why = (
            "its handlers of that type take it only as a published event"
            if event_only
            else "no handler matched it"
            if message_type in cls._routing_table()
            else "it has no handler for that type"
        )
        return (
            f"agent {agent_id} ({cls.__qualname__}) cannot handle an RPC of type "
            f"{message_type.__qualname__} "
            f"({why}); as RPCs it takes: {takes}"
        )
