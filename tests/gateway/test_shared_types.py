"""Shared agent types end to end: agentwire workers serving one agent type
through a gateway with placement, over loopback sockets."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import attrs
import pytest
import trio

import agentwire
from agentwire import (
    AgentId,
    ConnectionLostError,
    MessageContext,
    RoutedAgent,
    TopicId,
    TypeSubscription,
    WorkerRuntime,
    event,
    open_gateway,
    open_worker,
    rpc,
    serializers_for_type,
)
from agentwire._gateway import Gateway
from agentwire._worker._session import WorkerSession
from tests.worker.proxy import CuttableProxy, open_proxy

GUARD = 20  # seconds: a hang guard, never a synchronisation


@attrs.define
class Call:
    text: str


@attrs.define
class Served:
    worker: str
    calls: int  # calls this agent instance has served, this one included


@attrs.define
class News:
    text: str


@attrs.define
class Relay:
    """Once released, call agent ``stateful/<key>`` and answer what it did."""

    key: str


class Tally:
    """Events handled, by (worker, agent), and a wake-up per new one."""

    def __init__(self) -> None:
        self.handled: Counter[tuple[str, str]] = Counter()
        self.changed = trio.Event()

    def add(self, worker: str, agent: AgentId) -> None:
        self.handled[(worker, str(agent))] += 1
        self.changed.set()
        self.changed = trio.Event()

    async def reach(self, total: int) -> None:
        while sum(self.handled.values()) < total:
            await self.changed.wait()


class Stateful(RoutedAgent):
    """Counts the calls it serves (so split state would show); "hold" waits."""

    def __init__(self, worker: str, tally: Tally, release: trio.Event) -> None:
        super().__init__("a stateful agent")
        self.worker = worker
        self.calls = 0
        self.tally = tally
        self.release = release

    @rpc
    async def on_call(self, message: Call, ctx: MessageContext) -> Served:
        self.calls += 1
        if message.text == "hold":
            await self.release.wait()
        return Served(self.worker, self.calls)

    @rpc
    async def on_relay(self, message: Relay, ctx: MessageContext) -> Served:
        await self.release.wait()
        served = await self.send_message(Call("relayed"), AgentId("stateful", message.key))
        assert isinstance(served, Served)
        return served

    @event
    async def on_news(self, message: News, ctx: MessageContext) -> None:
        self.tally.add(self.worker, self.id)


@attrs.define
class Cluster:
    gateway: Gateway
    workers: dict[str, WorkerRuntime]
    proxies: dict[str, CuttableProxy]
    caller: WorkerRuntime
    tally: Tally
    release: trio.Event


def factory(worker: str, tally: Tally, release: trio.Event) -> Callable[[], Stateful]:
    return lambda: Stateful(worker, tally, release)


@asynccontextmanager
async def cluster(
    names: list[str], *, max_concurrent_requests: int = 256, **gateway_options: Any
) -> AsyncIterator[Cluster]:
    """A gateway with shared agent types, a worker per name serving type
    ``stateful`` (each through a proxy that can cut it off), and a caller."""
    tally, release = Tally(), trio.Event()
    policy = agentwire.RetryPolicy(initial_delay=0.05, max_delay=0.2, max_attempts=3)
    async with AsyncExitStack() as stack:
        gateway_options.setdefault("placement", "hash")
        gateway = await stack.enter_async_context(open_gateway(**gateway_options))
        workers, proxies = {}, {}
        for name in names:
            proxy = await stack.enter_async_context(open_proxy(gateway.address))
            runtime = await stack.enter_async_context(
                open_worker(
                    proxy.address,
                    shared_types=True,
                    reconnect=policy,
                    max_concurrent_requests=max_concurrent_requests,
                )
            )
            await Stateful.register(runtime, "stateful", factory(name, tally, release))
            await runtime.add_subscription(TypeSubscription("news", "stateful"))
            runtime.add_message_serializer(serializers_for_type(Served))
            workers[name], proxies[name] = runtime, proxy
        caller = await stack.enter_async_context(open_worker(gateway.address, shared_types=True))
        caller.add_message_serializer(serializers_for_type(Served))
        try:
            yield Cluster(gateway, workers, proxies, caller, tally, release)
        finally:
            release.set()


async def call(runtime: WorkerRuntime, key: str, text: str = "hi") -> Served:
    result = await runtime.send_message(Call(text), AgentId("stateful", key))
    assert isinstance(result, Served)
    return result


@pytest.mark.parametrize("placement", ["hash", "least-loaded"])
async def test_each_worker_serves_a_share_of_the_agents_and_each_agent_lives_once(
    placement: str,
) -> None:
    with trio.fail_after(GUARD):
        async with cluster(["w1", "w2"], placement=placement) as c:
            keys = [f"k{i}" for i in range(24)]
            first = {key: await call(c.caller, key) for key in keys}
            second = {key: await call(c.caller, key) for key in keys}
            stats = c.gateway.statistics()
    assert all(s.calls == 1 for s in first.values())
    assert all(second[key] == Served(first[key].worker, 2) for key in keys)  # one instance
    shares = Counter(s.worker for s in first.values())
    assert set(shares) == {"w1", "w2"}
    placed = stats.placement["stateful"]
    assert placed.workers == 2
    assert sorted(placed.keys.values()) == sorted(shares.values())


async def test_a_worker_serving_the_type_reaches_agents_placed_elsewhere() -> None:
    with trio.fail_after(GUARD):
        async with cluster(["w1", "w2"]) as c:
            served = {(await call(c.workers["w1"], f"k{i}")).worker for i in range(16)}
            assert c.workers["w1"].worker_statistics().local_rpcs == 0
    assert served == {"w1", "w2"}


async def test_a_killed_worker_fails_its_calls_at_once_and_its_agents_move_to_a_survivor() -> None:
    with trio.fail_after(GUARD):
        async with cluster(["w1", "w2"], rpc_timeout=300.0) as c:
            owners = {f"k{i}": (await call(c.caller, f"k{i}")).worker for i in range(16)}
            doomed = [key for key, worker in owners.items() if worker == "w1"]
            assert doomed
            failures: list[BaseException] = []

            async def held_call(key: str) -> None:
                try:
                    await call(c.caller, key, "hold")
                except ConnectionLostError as exc:
                    failures.append(exc)

            async with trio.open_nursery() as nursery:
                for key in doomed:
                    nursery.start_soon(held_call, key)
                await c.gateway.wait_until(lambda s: s.rpcs_in_flight == len(doomed))
                c.proxies["w1"].refuse = True
                await c.proxies["w1"].cut()  # w1 is gone, and cannot come back
            assert len(failures) == len(doomed)
            assert all("disconnected before answering" in str(f) for f in failures)
            after = {key: await call(c.caller, key) for key in doomed}
            stats = c.gateway.statistics()
    assert all(served == Served("w2", 1) for served in after.values())
    assert stats.placement["stateful"].workers == 1


async def test_a_publish_to_a_shared_type_is_handled_once_in_all() -> None:
    with trio.fail_after(GUARD):
        async with cluster(["w1", "w2", "w3"]) as c:
            sources = [f"s{i}" for i in range(12)]
            for source in sources:
                await c.caller.publish_message(News("hello"), TopicId("news", source))
            await c.tally.reach(len(sources))
            # A call through the same gateway after the events: anything late
            # for the same agents would have arrived before its answer.
            for source in sources:
                await call(c.caller, source)
            stats = c.gateway.statistics()
    by_agent = Counter(agent for (_, agent) in c.tally.handled.elements())
    assert by_agent == Counter(f"stateful/{s}" for s in sources)
    assert len({worker for (worker, _) in c.tally.handled}) >= 2
    assert stats.event_deliveries == len(sources)


async def test_a_drained_worker_hands_its_agents_over_without_failing_a_call() -> None:
    with trio.fail_after(GUARD):
        async with cluster(["w1", "w2"]) as c:
            w1 = c.workers["w1"]
            w1_id = w1.statistics().client_id
            owners = {f"k{i}": (await call(c.caller, f"k{i}")).worker for i in range(16)}
            mine = [key for key, worker in owners.items() if worker == "w1"]
            assert mine
            drained = trio.Event()
            held: list[Served] = []

            async def drain() -> None:
                await w1.drain()
                drained.set()

            async def held_call() -> None:
                held.append(await call(c.caller, mine[0], "hold"))

            async with trio.open_nursery() as nursery:
                nursery.start_soon(held_call)
                await c.gateway.wait_until(lambda s: s.rpcs_in_flight == 1)
                nursery.start_soon(drain)
                await c.gateway.wait_until(lambda s: s.placement["stateful"].draining == (w1_id,))
                fresh = [await call(c.caller, f"new{i}") for i in range(8)]
                assert not drained.is_set()  # a call is still being served here
                c.release.set()
            assert held == [Served("w1", 2)]
            assert all(served.worker == "w2" for served in fresh)
            after = [await call(c.caller, key) for key in mine]
            stats = c.gateway.statistics()
    assert all(served == Served("w2", 1) for served in after)  # placed anew, on w2
    assert stats.placement["stateful"].workers == 1
    assert stats.data_connections == 3  # w1 is still connected, serving nothing


async def test_drain_without_shared_agent_types_is_refused() -> None:
    with trio.fail_after(GUARD):
        async with open_gateway() as gateway, open_worker(gateway.address) as runtime:
            await Stateful.register(runtime, "stateful", factory("w", Tally(), trio.Event()))
            with pytest.raises(agentwire.GatewayRejectedError, match="shared agent types"):
                await runtime.drain()


async def test_a_draining_worker_still_serves_calls_its_own_agents_make(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    waiting = trio.Event()  # the drain waits for the worker to be idle
    wait_idle = WorkerSession.wait_idle

    async def spied_wait_idle(session: WorkerSession) -> None:
        waiting.set()
        await wait_idle(session)

    monkeypatch.setattr(WorkerSession, "wait_idle", spied_wait_idle)
    with trio.fail_after(GUARD):
        async with cluster(["w1", "w2"], max_concurrent_requests=2) as c:
            w1 = c.workers["w1"]
            w1_id = w1.statistics().client_id
            owners = {f"k{i}": (await call(c.caller, f"k{i}")).worker for i in range(16)}
            first, second = [key for key, worker in owners.items() if worker == "w1"][:2]
            relayed: list[object] = []

            async def relay() -> None:
                relayed.append(
                    await c.caller.send_message(Relay(second), AgentId("stateful", first))
                )

            async with trio.open_nursery() as nursery:
                nursery.start_soon(relay)
                await c.gateway.wait_until(lambda s: s.rpcs_in_flight == 1)
                nursery.start_soon(w1.drain)
                await c.gateway.wait_until(lambda s: s.placement["stateful"].draining == (w1_id,))
                await waiting.wait()
                c.release.set()  # the relay now calls an agent on the draining worker
    assert relayed == [Served("w1", 2)]
