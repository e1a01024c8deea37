"""Human in the loop: a state that waits for an answer sent to its run.

``inbox = await Inbox.register(runtime, "approvals")`` registers an agent type whose agent
``AgentId("approvals", run_id)`` takes an answer for that run; a state whose action is
``Wait(inbox)`` waits for it (bounded by the state's ``timeout``) and outputs it. One
answer per wait: an answer for a run that is not waiting, or a second one, is refused
with an error for its sender only.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import attrs
import trio

from .._agents import AgentRuntime, BaseAgent, MessageContext
from .._serialization import serializers_for_type
from ._errors import FlowError

__all__ = ["Answer", "Inbox", "Wait"]


@dataclasses.dataclass
class Answer:
    """An answer to a waiting run (any registered message type works too)."""

    text: str
    by: str = ""


class Inbox:
    """Where the answers to waiting runs arrive; get one from :meth:`Inbox.register`."""

    def __init__(self, agent_type: str) -> None:
        self.agent_type = agent_type
        self._waiting: dict[str, trio.MemorySendChannel[Any]] = {}

    @classmethod
    async def register(cls, runtime: AgentRuntime, agent_type: str = "flow-inbox") -> Inbox:
        """Register *agent_type* on *runtime*: ``AgentId(agent_type, run_id)`` takes answers."""
        inbox = cls(agent_type)
        await runtime.register_factory(agent_type, lambda: _InboxAgent(inbox))
        runtime.add_message_serializer(serializers_for_type(Answer))
        return inbox

    def waiting(self) -> frozenset[str]:
        """The runs waiting for an answer now."""
        return frozenset(self._waiting)

    async def wait(self, run_id: str) -> Any:
        """Wait for the answer sent to *run_id* (cancel the caller to stop waiting)."""
        if run_id in self._waiting:
            raise FlowError(f"run {run_id!r} is already waiting for an answer")
        send, receive = trio.open_memory_channel[Any](1)
        self._waiting[run_id] = send
        try:
            with receive:
                return await receive.receive()
        finally:
            del self._waiting[run_id]

    def deliver(self, run_id: str, answer: Any) -> None:
        """Hand *answer* to the run *run_id*; FlowError if it is not waiting for one."""
        send = self._waiting.get(run_id)
        if send is None:
            raise FlowError(
                f"run {run_id!r} is not waiting for an answer in inbox {self.agent_type!r} "
                "(it has not reached its waiting state yet, or it already has its answer)"
            )
        try:
            send.send_nowait(answer)
        except trio.WouldBlock:
            raise FlowError(f"run {run_id!r} already has an answer") from None


class _InboxAgent(BaseAgent):
    def __init__(self, inbox: Inbox) -> None:
        super().__init__("takes answers for waiting flow runs")
        self._inbox = inbox

    async def on_message_impl(self, message: Any, ctx: MessageContext) -> Any:
        self._inbox.deliver(self.id.key, message)
        return None


@attrs.frozen
class Wait:
    """Action: wait for an answer sent to ``AgentId(inbox.agent_type, run_id)``; output it."""

    inbox: Inbox
