"""Gateways of one cluster in one trio program, and agents for the cluster tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import trio

from agentwire import (
    AgentId,
    ConnectionLostError,
    Gateway,
    MessageContext,
    RoutedAgent,
    WorkerRuntime,
    open_gateway,
    open_worker,
    rpc,
)
from tests.worker.messages import EchoBase, Inbox, Ping, Pong

GUARD = 30  # seconds: a hang guard, never a synchronisation
LEASE = 2.0
HEARTBEAT = 0.2


def cluster_gateway(redis_url: str, **options: Any) -> Any:
    """One gateway of the cluster on *redis_url*: short lease, no start-up grace."""
    return open_gateway(
        "127.0.0.1:0",
        startup_grace=0,
        grace_period=0.1,
        cluster=redis_url,
        cluster_lease=LEASE,
        cluster_heartbeat=HEARTBEAT,
        **options,
    )


@asynccontextmanager
async def open_cluster(redis_url: str, size: int) -> AsyncIterator[list[Gateway]]:
    async with AsyncExitStack() as stack:
        yield [await stack.enter_async_context(cluster_gateway(redis_url)) for _ in range(size)]


@asynccontextmanager
async def open_workers(gateways: list[Gateway]) -> AsyncIterator[list[WorkerRuntime]]:
    """One agentwire worker on each of *gateways*."""
    async with AsyncExitStack() as stack:
        yield [await stack.enter_async_context(open_worker(g.address)) for g in gateways]


async def converged(gateways: list[Gateway], agent_types: int, subscriptions: int) -> None:
    """Wait until every gateway holds *agent_types* and *subscriptions* (all of the cluster's)."""
    for gateway in gateways:
        await gateway.wait_until(
            lambda s: s.agent_types == agent_types and s.subscriptions == subscriptions
        )


class Stuck(RoutedAgent):
    """Answers "ping" requests never: they stay in flight until something fails them."""

    started = trio.Event()

    def __init__(self) -> None:
        super().__init__("stuck")

    @rpc
    async def on_ping(self, message: Ping, ctx: MessageContext) -> Pong:
        Stuck.started.set()
        await trio.sleep_forever()
        raise AssertionError("unreachable")


async def call_stuck(caller: WorkerRuntime, outcome: list[ConnectionLostError]) -> None:
    """Call a :class:`Stuck` agent; the error that ends the call goes to *outcome*."""
    try:
        await caller.send_message(Ping("x"), AgentId("stuck", "k"))
    except ConnectionLostError as exc:
        outcome.append(exc)


def new_inbox() -> Inbox:
    EchoBase.inbox = Inbox()
    return EchoBase.inbox
