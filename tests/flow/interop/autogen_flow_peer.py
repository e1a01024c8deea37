"""An AutoGen 0.7.5 worker that serves flow steps and follows flow events.

``python autogen_flow_peer.py <gateway address>`` runs a ``GrpcWorkerAgentRuntime`` with
agent types ``ag_step`` (RPC ``Work`` -> ``Done`` with the payload upper-cased) and
``ag_router`` (RPC ``RouteRequest`` -> ``RouteDecision``: the last allowed target), and a
subscription of ``ag_follower`` to topic type ``flow-events`` that prints
``TRANSITION <source> <target> <reason>`` per ``FlowTransition`` and
``TASK <task> <kind>`` per ``TaskEvent``. Prints ``READY`` once registered; runs until
stdin closes. The dataclasses mirror agentwire.flow's by name and fields: that is all
AutoGen's JSON serializer needs.
"""

from __future__ import annotations

import asyncio
import sys
from dataclasses import dataclass

from autogen_core import (
    MessageContext,
    RoutedAgent,
    TypeSubscription,
    event,
    rpc,
    try_get_known_serializers_for_type,
)
from autogen_ext.runtimes.grpc import GrpcWorkerAgentRuntime


@dataclass
class Work:
    payload: str
    key: str = ""


@dataclass
class Done:
    payload: str
    served_by: str


@dataclass
class RouteRequest:
    flow: str
    run_id: str
    state: str
    allowed: list[str]
    output: str
    history: list[str]


@dataclass
class RouteDecision:
    target: str


@dataclass
class FlowTransition:
    flow: str
    run_id: str
    step: int
    source: str
    target: str
    reason: str
    at: float
    detail: str = ""


@dataclass
class TaskEvent:
    dag: str
    run_id: str
    task: str
    kind: str
    attempt: int
    at: float
    duration: float = 0.0
    delay: float = 0.0
    item: int = -1
    error: str = ""


def say(*parts: object) -> None:
    print(*parts, flush=True)


class Step(RoutedAgent):
    @rpc
    async def on_work(self, message: Work, ctx: MessageContext) -> Done:
        return Done(message.payload.upper(), f"autogen {self.id} {message.key}")


class Router(RoutedAgent):
    @rpc
    async def on_route(self, message: RouteRequest, ctx: MessageContext) -> RouteDecision:
        return RouteDecision(message.allowed[-1])


class Follower(RoutedAgent):
    @event
    async def on_transition(self, message: FlowTransition, ctx: MessageContext) -> None:
        say("TRANSITION", message.source or "-", message.target, message.reason)

    @event
    async def on_task(self, message: TaskEvent, ctx: MessageContext) -> None:
        say("TASK", message.task, message.kind)


async def main(address: str) -> None:
    runtime = GrpcWorkerAgentRuntime(address)
    await runtime.start()
    for cls in (Work, Done, RouteRequest, RouteDecision, FlowTransition, TaskEvent):
        runtime.add_message_serializer(try_get_known_serializers_for_type(cls))
    await Step.register(runtime, "ag_step", lambda: Step("serves flow steps"))
    await Router.register(runtime, "ag_router", lambda: Router("routes flows"))
    await Follower.register(runtime, "ag_follower", lambda: Follower("follows flows"))
    await runtime.add_subscription(TypeSubscription("flow-events", "ag_follower"))
    say("READY")
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    await runtime.stop()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
