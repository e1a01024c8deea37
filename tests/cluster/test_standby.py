"""``WorkerRuntime.register_standby``: a worker on one gateway of a cluster
waits for an agent type a worker on another gateway holds, and takes it over
when that worker leaves."""

from __future__ import annotations

import pytest
import trio

from agentwire import (
    AgentId,
    GatewayRejectedError,
    WorkerRuntime,
    open_worker,
    serializers_for_type,
)
from agentwire._cluster._config import ClusterConfig
from agentwire._cluster._node import ClusterNode
from agentwire._gateway._hub import open_hub
from tests.worker.messages import Echo, Ping, Pong

from .helpers import GUARD, converged, open_cluster

RETRY = 0.01


async def test_a_standby_takes_an_agent_type_over_once_its_owner_leaves(redis_url: str) -> None:
    attempts = 0
    refused_twice = trio.Event()
    taken = trio.Event()

    async def stand_by(standby: WorkerRuntime) -> None:
        async def register() -> str:
            nonlocal attempts
            attempts += 1
            if attempts == 3:  # two refusals so far: the standby is waiting
                refused_twice.set()
            await Echo.register(standby, "echo", Echo)
            return "registered"

        assert await standby.register_standby(register, retry_every=RETRY) == "registered"
        taken.set()

    with trio.fail_after(GUARD):
        async with (
            open_cluster(redis_url, 3) as (first, second, third),
            open_worker(second.address) as standby,
            open_worker(third.address) as caller,
            trio.open_nursery() as nursery,
        ):
            caller.add_message_serializer(serializers_for_type(Pong))
            async with open_worker(first.address) as owner:
                await Echo.register(owner, "echo", Echo)
                await converged([first, second, third], agent_types=1, subscriptions=1)
                nursery.start_soon(stand_by, standby)
                await refused_twice.wait()
                assert not taken.is_set()
            await taken.wait()
            await converged([first, second, third], agent_types=1, subscriptions=1)
            reply = await caller.send_message(Ping("hi"), AgentId("echo", "k"))
            assert reply == Pong("echo/k:hi")
            assert standby.statistics().agents == 1  # the standby served it


async def test_a_standby_gives_up_at_once_on_any_other_refusal(redis_url: str) -> None:
    calls = 0

    async def register() -> None:
        nonlocal calls
        calls += 1
        raise GatewayRejectedError("agent type x", "PERMISSION_DENIED", "not yours")

    with trio.fail_after(GUARD):
        async with open_cluster(redis_url, 1) as (gateway,), open_worker(gateway.address) as w:
            with pytest.raises(GatewayRejectedError, match="not yours"):
                await w.register_standby(register, retry_every=RETRY)
            with pytest.raises(ValueError, match="retry_every must be positive"):
                await w.register_standby(register, retry_every=0)
    assert calls == 1


class _RecordingBackend:
    """The two release calls of the cluster's Redis backend, recorded in order."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    async def remove_subscription(self, subscription_id: str, owner: object) -> bool:
        self.calls.append(("subscription", subscription_id))
        return True

    async def release_type(self, agent_type: str, owner: object) -> None:
        self.calls.append(("type", agent_type))


async def test_a_leaving_workers_subscriptions_are_removed_before_its_types_are_freed() -> None:
    # Once a type is free a standby elsewhere claims it and adds the same
    # subscriptions at once: the old ones must be gone by then.
    async with open_hub() as hub:
        node = ClusterNode(hub, ClusterConfig("redis://127.0.0.1:1"))
        node._dropped("owner", ["counter", "other"], ["s1", "s2"])
        backend = _RecordingBackend()
        await node._flush_releases(backend)  # type: ignore[arg-type]
    kinds = [kind for kind, _ in backend.calls]
    assert kinds == ["subscription", "subscription", "type", "type"]
    assert sorted(name for _, name in backend.calls) == ["counter", "other", "s1", "s2"]
