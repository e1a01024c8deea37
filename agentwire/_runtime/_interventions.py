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

import logging
import warnings
from collections.abc import Sequence
from typing import Any, Protocol, final

from .._agents import MessageContext
from .._errors import MessageDroppedError
from .._ids import AgentId, TopicId

__all__ = [
    "DefaultInterventionHandler",
    "DropMessage",
    "InterventionHandler",
    "intercept_publish",
    "intercept_response",
    "intercept_send",
]

logger = logging.getLogger("agentwire.runtime")


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


def _changed(result: Any, message: Any, hook: str) -> Any:
    if result is None:
        warnings.warn(
            f"intervention handler {hook} returned None; treated as 'no change' "
            "(return DropMessage to drop)",
            RuntimeWarning,
            stacklevel=3,
        )
        return message
    return result


def _dropped(result: Any) -> bool:
    return result is DropMessage or isinstance(result, DropMessage)


async def intercept_send(
    handlers: Sequence[InterventionHandler],
    message: Any,
    recipient: AgentId,
    sender: AgentId | None,
    message_id: str,
) -> Any:
    """Run ``on_send`` of every handler; the message to send, or ``MessageDroppedError``."""
    ctx = MessageContext(sender, None, True, message_id)
    for handler in handlers:
        result = await handler.on_send(message, message_context=ctx, recipient=recipient)
        if _dropped(result):
            raise MessageDroppedError(f"an intervention dropped the message to {recipient}")
        message = _changed(result, message, "on_send")
    return message


async def intercept_response(
    handlers: Sequence[InterventionHandler],
    response: Any,
    responder: AgentId,
    caller: AgentId | None,
) -> Any:
    """Run ``on_response`` of every handler; the response, or ``MessageDroppedError``."""
    for handler in handlers:
        result = await handler.on_response(response, sender=responder, recipient=caller)
        if _dropped(result):
            raise MessageDroppedError(f"an intervention dropped the response of {responder}")
        response = _changed(result, response, "on_response")
    return response


async def intercept_publish(
    handlers: Sequence[InterventionHandler],
    message: Any,
    topic: TopicId,
    sender: AgentId | None,
    message_id: str,
) -> Any:
    """Run ``on_publish`` of every handler; the message to publish, or :class:`DropMessage`."""
    ctx = MessageContext(sender, topic, False, message_id)
    for handler in handlers:
        try:
            result = await handler.on_publish(message, message_context=ctx)
        except Exception:
            logger.exception("on_publish intervention failed; message dropped")
            return DropMessage
        if _dropped(result):
            logger.debug("publish to %s dropped by an intervention", topic)
            return DropMessage
        message = _changed(result, message, "on_publish")
    return message
