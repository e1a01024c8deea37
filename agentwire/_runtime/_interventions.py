"""Intervention handlers: see, change or drop messages as they enter the runtime.

``on_send`` and ``on_publish`` run in the sender's task before the message is
routed; ``on_response`` runs in the caller's task when an RPC's result comes
back. Handlers run in the order given to ``open_runtime``.

* Returning :class:`DropMessage` (the class or an instance) drops the
  message: a dropped send or response raises
  :class:`~agentwire.MessageDroppedError` to the caller; a dropped publish
  is logged and not delivered.
* An exception raised by ``on_send``/``on_response`` reaches the caller; one
  raised by ``on_publish`` is logged and the publish is dropped (AutoGen).
* Returning ``None`` warns (``RuntimeWarning``) and means "no change".
"""

from __future__ import annotations

from typing import Any, Protocol, final

from .._agents import MessageContext
from .._ids import AgentId

__all__ = ["DefaultInterventionHandler", "DropMessage", "InterventionHandler"]


@final
class DropMessage:
    """Return this (the class) from an intervention handler to drop the message."""


class InterventionHandler(Protocol):
    async def on_send(
        self, message: Any, *, message_context: MessageContext, recipient: AgentId
    ) -> Any | type[DropMessage]: ...

    async def on_publish(
        self, message: Any, *, message_context: MessageContext
    ) -> Any | type[DropMessage]: ...

    async def on_response(
        self, message: Any, *, sender: AgentId, recipient: AgentId | None
    ) -> Any | type[DropMessage]: ...


class DefaultInterventionHandler:
    """Passes everything through unchanged; subclass and override what you need."""

    async def on_send(
        self, message: Any, *, message_context: MessageContext, recipient: AgentId
    ) -> Any | type[DropMessage]:
        return message

    async def on_publish(
        self, message: Any, *, message_context: MessageContext
    ) -> Any | type[DropMessage]:
        return message

    async def on_response(
        self, message: Any, *, sender: AgentId, recipient: AgentId | None
    ) -> Any | type[DropMessage]:
        return message
