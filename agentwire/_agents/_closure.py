"""``ClosureAgent``: an agent made of one function."""

from __future__ import annotations

import inspect
import logging
import typing
from collections.abc import Awaitable, Callable
from typing import Any, Literal, Protocol

from .._errors import CantHandleError
from .._ids import AgentId, AgentType, TopicId
from .._subscriptions import Subscription, TypePrefixSubscription
from ._base import (
    AgentInstantiationContext,
    AgentRuntime,
    BaseAgent,
    Cancellation,
    MessageContext,
    _bind_subscriptions,
    _register_serializers,
)
from ._routed import _AnyType, _types_of

__all__ = ["ClosureAgent", "ClosureContext"]

logger = logging.getLogger("agentwire.agents")


# -- closure agents ---------------------------------------------------------------------


class ClosureContext(Protocol):
    """What a closure agent's function gets as its first argument."""

    @property
    def id(self) -> AgentId: ...

    async def send_message(
        self,
        message: Any,
        recipient: AgentId,
        *,
        cancellation_token: Cancellation | None = None,
        message_id: str | None = None,
    ) -> Any: ...

    async def publish_message(
        self,
        message: Any,
        topic_id: TopicId,
        *,
        cancellation_token: Cancellation | None = None,
        message_id: str | None = None,
    ) -> None: ...


def _closure_types(closure: Callable[..., Any]) -> tuple[tuple[type, ...], tuple[type, ...]]:
    """The message types *closure* takes, and those it is annotated to return."""
    params = list(inspect.signature(closure).parameters)
    if len(params) != 3:
        raise TypeError("a closure agent's function must take (agent, message, ctx)")
    hints = typing.get_type_hints(closure)
    if "return" not in hints:
        raise TypeError("annotate the closure's return type")
    targets = _types_of(hints.get(params[1], Any))
    if targets is None:
        raise TypeError(f"unsupported message type {hints.get(params[1])!r}")
    produces = _types_of(hints["return"])
    if produces is None:
        raise TypeError(f"unsupported return type {hints['return']!r}")
    return targets, produces


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
        self._expected = _closure_types(closure)[0]
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
        handled, produced = _closure_types(closure)

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
        _register_serializers(runtime, [t for t in handled + produced if t is not _AnyType])
        return agent_type
