"""The in-process runtime: the core with the loopback router."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any

from .._errors import UndeliverableError
from .._ids import AgentId
from .._subscriptions import Subscription
from ._core import Runtime, open_core
from ._interventions import InterventionHandler

__all__ = ["LocalRouter", "open_runtime"]


class LocalRouter:
    """Routes everything back into the same core: no serialization, no copies."""

    __slots__ = ("publish", "send")

    def __init__(self, core: Runtime) -> None:
        # The router's send and publish *are* the core's entry points: no
        # coroutine of their own in between (one frame less per message).
        self.send = core.deliver_request
        self.publish = core.deliver_event

    async def register_agent_type(self, agent_type: str) -> None:
        return None

    async def add_subscription(self, subscription: Subscription) -> None:
        return None

    async def remove_subscription(self, subscription_id: str) -> None:
        return None

    async def save_remote_state(self, agent: AgentId) -> Mapping[str, Any]:
        raise _unknown_type(agent)

    async def load_remote_state(self, agent: AgentId, state: Mapping[str, Any]) -> None:
        raise _unknown_type(agent)


def _unknown_type(agent: AgentId) -> UndeliverableError:
    return UndeliverableError(
        f"no agent type {agent.type!r} is registered with this runtime "
        f"(cannot reach {agent}); register it first"
    )


@asynccontextmanager
async def open_runtime(
    *,
    mailbox_size: int = 64,
    max_overflow: int = 10_000,
    ignore_unhandled_exceptions: bool = True,
    intervention_handlers: Sequence[InterventionHandler] = (),
) -> AsyncIterator[Runtime]:
    """An in-process agent runtime; ``async with open_runtime() as runtime:``.

    * *mailbox_size*: messages each agent may have queued before senders wait.
    * *max_overflow*: messages handlers may queue past full mailboxes, for the
      whole runtime (handlers never wait for room); beyond it their sends and
      publishes raise :class:`~agentwire.OverloadedError` (see ``_mailbox``).
    * *ignore_unhandled_exceptions*: if False, the first exception raised by a
      handler of a published message is re-raised from ``stop_when_idle()``
      (and ``wait_idle()``) or when the block exits.
    * *intervention_handlers*: see :class:`~agentwire.InterventionHandler`.

    Leaving the block stops the runtime at once (pending RPCs fail with
    ``RuntimeClosedError``, handlers are cancelled, agents are closed); call
    ``await runtime.stop_when_idle()`` first to let all work finish. Stopping
    never cancels the code in the block.
    """
    async with open_core(
        lambda services: Runtime(
            services,
            LocalRouter,
            mailbox_size=mailbox_size,
            max_overflow=max_overflow,
            ignore_unhandled_exceptions=ignore_unhandled_exceptions,
            intervention_handlers=intervention_handlers,
        )
    ) as runtime:
        yield runtime
