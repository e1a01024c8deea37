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
* no match: :meth:`RoutedAgent.on_unhandled_message`: an RPC fails with
  :class:`~agentwire.CantHandleError` (naming the agent class, the type and
  the types it takes as RPCs); a published message is ignored (DEBUG log).
  AutoGen logs both at INFO and answers an RPC with ``None``;
* ``strict=True`` (the default) checks the return value's exact type against
  the annotation (``ValueError`` if it is not one of them) and, when the
  handler is called directly with a wrong message type, raises
  :class:`~agentwire.CantHandleError`.

The message parameter may have any name (AutoGen insists on ``message``).
Annotations are resolved lazily (on first registration or instantiation), so
message classes may be defined after the agent class.
"""

from __future__ import annotations

from ._base import (
    Agent,
    AgentInstantiationContext,
    AgentMetadata,
    AgentRuntime,
    BaseAgent,
    Cancellation,
    MessageContext,
    default_subscription,
    type_subscription,
)
from ._closure import ClosureAgent, ClosureContext
from ._routed import RoutedAgent, event, message_handler, rpc

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
