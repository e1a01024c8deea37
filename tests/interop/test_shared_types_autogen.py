"""Shared agent types with real AutoGen 0.7.5 workers (subprocesses, unchanged)
on the agentwire gateway: several workers register one agent type, each
agent lives on one of them, and a killed worker's agents move to a survivor.

The peers are ``autogen_peers/gateway_peer.py`` (see there); their printed
lines and the gateway's ``wait_until`` are the only synchronisation, and every
wait is bounded so a regression fails instead of hanging.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio

from agentwire import Gateway, open_gateway, open_worker, serializers_for_type

from ..worker.messages import Echo, Pong
from .test_gateway_autogen import WAIT, Peer, error_text, spawn_peer, wait_stats

pytestmark = pytest.mark.interop

KEYS = [f"k{i}" for i in range(12)]


@pytest.fixture
async def gateway() -> AsyncIterator[Gateway]:
    # Least-loaded placement alternates between two workers, so each gets a share
    # of the keys. Hash placement spreads keys by the workers' client ids, which
    # AutoGen draws at random: all of a dozen keys land on one worker once in ~2,000.
    async with open_gateway(
        "127.0.0.1:0", rpc_timeout=120.0, startup_grace=0, placement="least-loaded"
    ) as gw:
        yield gw


@asynccontextmanager
async def two_workers_and(
    gateway: Gateway, name: str, *subscriptions: str
) -> AsyncIterator[tuple[Peer, Peer, Peer]]:
    """Two AutoGen workers registering type ``echo`` (with *subscriptions*
    each, e.g. ``topic=news``), and a third peer called *name*."""
    async with (
        spawn_peer(gateway, "w1") as w1,
        spawn_peer(gateway, "w2") as w2,
        spawn_peer(gateway, name) as other,
    ):
        await w1.register("echo", *subscriptions)
        await w2.register("echo", *subscriptions)  # AutoGen's host would refuse this one
        yield w1, w2, other


async def held_on(peer: Peer, count: int) -> set[str]:
    """The agents whose "hold" calls *peer* reported, *count* of them."""
    return {(await peer.expect("HELD"))[1] for _ in range(count)}


async def test_two_autogen_workers_of_one_type_each_serve_a_share(gateway: Gateway) -> None:
    async with two_workers_and(gateway, "caller") as (w1, w2, caller):
        for i, key in enumerate(KEYS):
            words = await caller.command(f"send t{i} echo/{key} hi", "REPLY", f"t{i}")
            assert words[2] == f"echo/{key}:hi"
        placed = gateway.statistics().placement["echo"]
    assert placed.workers == 2
    assert set(placed.keys) == {w1.client_id, w2.client_id}
    assert all(n > 0 for n in placed.keys.values())
    assert sum(placed.keys.values()) == len(KEYS)


async def test_a_killed_autogen_worker_fails_its_calls_and_its_agents_move(
    gateway: Gateway,
) -> None:
    async with two_workers_and(gateway, "caller") as (w1, w2, caller):
        for i, key in enumerate(KEYS):
            await caller.send(f"send h{i} echo/{key} hold")
        await wait_stats(gateway, lambda s: s.rpcs_in_flight == len(KEYS))
        placed = gateway.statistics().placement["echo"].keys
        on_w1 = await held_on(w1, placed[w1.client_id])
        on_w2 = await held_on(w2, placed[w2.client_id])
        assert on_w1
        assert on_w2
        w1.process.kill()
        with trio.fail_after(WAIT):
            failed = {i for i in range(len(KEYS)) if f"echo/{KEYS[i]}" in on_w1}
            for i in sorted(failed):
                words = await caller.expect("ERROR", f"h{i}")
                assert "disconnected before answering" in error_text(words)
        # The survivor serves the dead worker's agents from now on.
        for i, key in enumerate(KEYS):
            if f"echo/{key}" in on_w1:
                await caller.send(f"send a{i} echo/{key} hold-again")
        assert await held_on(w2, len(on_w1)) == on_w1
        await w2.command("release", "RELEASED")
        for i, key in enumerate(KEYS):
            if f"echo/{key}" in on_w1:
                words = await caller.expect("REPLY", f"a{i}")
                assert words[2] == f"echo/{key}:hold-again"
        placed_after = gateway.statistics().placement["echo"]
    assert placed_after.workers == 1
    assert placed_after.keys == {w2.client_id: len(KEYS)}


async def test_a_publish_to_a_shared_type_is_handled_once_across_autogen_workers(
    gateway: Gateway,
) -> None:
    # Both workers add an equal subscription: accepted with shared types.
    async with two_workers_and(gateway, "pub", "topic=news") as (w1, w2, pub):
        sources = [f"s{i}" for i in range(10)]
        for source in sources:
            await pub.command(f"publish news {source} json hello", "PUBLISHED")
        await wait_stats(gateway, lambda s: s.event_deliveries == len(sources))
        handled: Counter[str] = Counter()
        placed = gateway.statistics().placement["echo"].keys
        for peer in (w1, w2):
            for _ in range(placed[peer.client_id]):
                handled[(await peer.expect("EVENT"))[1]] += 1
        stats = gateway.statistics()
    assert handled == Counter(f"echo/{s}" for s in sources)
    assert stats.event_deliveries == len(sources)
    assert all(n > 0 for n in placed.values())


async def test_autogen_and_agentwire_workers_share_a_type_and_take_over_each_other(
    gateway: Gateway,
) -> None:
    async with (
        spawn_peer(gateway, "autogen") as autogen,
        spawn_peer(gateway, "caller") as caller,
        open_worker(gateway.address, shared_types=True) as ours,
    ):
        await autogen.register("echo")
        await Echo.register(ours, "echo", Echo)
        ours.add_message_serializer(serializers_for_type(Pong))
        for i, key in enumerate(KEYS):
            await caller.send(f"send h{i} echo/{key} hold")
        # Our Echo answers "hold" at once; AutoGen's holds it.
        await wait_stats(gateway, lambda s: s.placed_agents == len(KEYS))
        placed = gateway.statistics().placement["echo"].keys
        on_autogen = await held_on(autogen, placed[autogen.client_id])
        assert on_autogen
        for i, key in enumerate(KEYS):
            if f"echo/{key}" not in on_autogen:
                assert (await caller.expect("REPLY", f"h{i}"))[2] == f"echo/{key}:hold"
        assert ours.worker_statistics().incoming_rpcs == len(KEYS) - len(on_autogen)
        autogen.process.kill()
        for i, key in enumerate(KEYS):
            if f"echo/{key}" in on_autogen:
                words = await caller.expect("ERROR", f"h{i}")
                assert "disconnected before answering" in error_text(words)
                words = await caller.command(f"send a{i} echo/{key} again", "REPLY", f"a{i}")
                assert words[2] == f"echo/{key}:again"
        assert ours.worker_statistics().incoming_rpcs == len(KEYS)
