"""Agents and helpers shared by the flow tests."""

from __future__ import annotations

import dataclasses
from typing import Any

import agentwire as aw
from agentwire.flow import FlowTransition, TaskEvent


@dataclasses.dataclass
class Work:
    """A request to an agent: ``payload`` and an idempotency key."""

    payload: str
    key: str = ""


@dataclasses.dataclass
class Done:
    payload: str
    served_by: str


async def register_events_recorder(runtime: aw.AgentRuntime, topic: str) -> list[Any]:
    """Subscribe an agent to *topic* that records every FlowTransition and TaskEvent."""
    seen: list[Any] = []

    async def record(
        _: aw.ClosureContext, event: FlowTransition | TaskEvent, ctx: aw.MessageContext
    ) -> None:
        seen.append(event)

    await aw.ClosureAgent.register_closure(
        runtime,
        "recorder",
        record,
        subscriptions=lambda: [aw.TypeSubscription(topic, "recorder")],
    )
    return seen


class Worker(aw.RoutedAgent):
    """Answers ``Work`` with ``Done``, naming the agent (and so its key) that served it."""

    @aw.rpc
    async def work(self, message: Work, ctx: aw.MessageContext) -> Done:
        return Done(message.payload.upper(), str(self.id))
