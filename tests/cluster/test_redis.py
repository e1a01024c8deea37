"""The cluster's Redis scripts and streams against a real redis-server."""

from __future__ import annotations

import struct
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import coredis
import pytest
import trio

from agentwire._cluster._redis import NotAMember, RedisBackend, pack_batch, unpack_batch
from agentwire._cluster._view import Change, Owner

LEASE = 5.0


@asynccontextmanager
async def backends(url: str, *names: str) -> AsyncIterator[list[RedisBackend]]:
    client: coredis.Redis[Any] = coredis.Redis.from_url(url)
    async with client:
        members = [RedisBackend(client, name) for name in names]
        for member in members:
            await member.heartbeat(LEASE)
        yield members


async def expire(url: str, gateway: str) -> None:
    """The lease of *gateway* runs out (its process died)."""
    async with coredis.Redis.from_url(url) as client:
        await client.delete([f"agentwire:lease:{gateway}"])


def test_a_batch_packs_and_unpacks_to_the_same_messages() -> None:
    messages = [b"", b"x", b"\x00" * 300, bytes(range(256))]
    assert unpack_batch(pack_batch(messages)) == messages


@pytest.mark.parametrize("cut", [1, 3, 5])
def test_a_batch_cut_short_is_refused(cut: int) -> None:
    blob = pack_batch([b"abc", b"defg"])
    with pytest.raises(struct.error):
        unpack_batch(blob[:-cut])


async def test_an_agent_type_is_claimed_once_and_released_only_by_its_owner(
    redis_url: str,
) -> None:
    async with backends(redis_url, "g1", "g2") as (g1, g2):
        assert await g1.claim_type("t", Owner("g1", "c1"), None) is None
        assert await g2.claim_type("t", Owner("g2", "c2"), None) == Owner("g1", "c1")
        await g2.release_type("t", Owner("g2", "c2"))  # not its claim: nothing happens
        assert await g2.claim_type("t", Owner("g2", "c2"), None) == Owner("g1", "c1")
        await g1.release_type("t", Owner("g1", "c1"))
        assert await g2.claim_type("t", Owner("g2", "c2"), None) is None


async def test_the_claim_of_a_gateway_without_a_lease_can_be_taken_over(redis_url: str) -> None:
    async with backends(redis_url, "g1", "g2") as (g1, g2):
        await g1.claim_type("t", Owner("g1", "c1"), None)
        await expire(redis_url, "g1")
        assert await g2.claim_type("t", Owner("g2", "c2"), None) is None
        with pytest.raises(NotAMember):
            await g1.claim_type("u", Owner("g1", "c1"), None)


async def test_subscriptions_are_duplicates_by_id_or_by_content(redis_url: str) -> None:
    async with backends(redis_url, "g1", "g2") as (g1, g2):
        owner1, owner2 = Owner("g1", "c1"), Owner("g2", "c2")
        assert await g1.add_subscription("s1", owner1, b"d1", "k", None)
        assert not await g2.add_subscription("s1", owner2, b"d2", "other", None)
        assert not await g2.add_subscription("s2", owner2, b"d2", "k", None)
        assert await g2.add_subscription("s3", owner2, b"d3", "", None)
        assert await g2.remove_subscription("s1")
        assert not await g2.remove_subscription("s1")
        assert await g2.add_subscription("s2", owner2, b"d2", "k", None)


async def test_the_snapshot_and_the_changes_tell_the_same_versions(redis_url: str) -> None:
    async with backends(redis_url, "g1") as (g1,):
        await g1.claim_type("t", Owner("g1", "c"), None)
        await g1.add_subscription("s", Owner("g1", "c"), b"\x00data", "", None)
        snapshot, last = await g1.snapshot()
        assert snapshot.version == 2
        assert snapshot.types == {"t": Owner("g1", "c")}
        assert snapshot.subs == {"s": (Owner("g1", "c"), b"\x00data")}
        changes = await g1.changes(b"0-0", 10)
        assert [c for _, c in changes] == [
            Change(1, "type+", "t", Owner("g1", "c")),
            Change(2, "sub+", "s", Owner("g1", "c"), b"\x00data"),
        ]
        assert changes[-1][0] == last
        assert await g1.changes(last, 10) == []


async def test_the_first_heartbeat_after_a_lease_expired_drops_that_gateway(
    redis_url: str,
) -> None:
    async with backends(redis_url, "g1", "g2") as (g1, g2):
        await g1.claim_type("t", Owner("g1", "c"), None)
        await g1.add_subscription("s", Owner("g1", "c"), b"d", "k", None)
        await expire(redis_url, "g1")
        had, live, version = await g2.heartbeat(LEASE)
        assert had
        assert live == ["g2"]
        snapshot, _ = await g2.snapshot()
        assert snapshot.types == {}
        assert snapshot.subs == {}
        assert version == snapshot.version == 3
        changes = await g2.changes(b"0-0", 10)
        assert changes[-1][1] == Change(3, "drop", "", Owner("g1", ""))
        # The dropped gateway learns it on its own next heartbeat.
        had, _, _ = await g1.heartbeat(LEASE)
        assert not had


async def test_a_batch_sent_to_a_live_gateway_is_read_once_and_never_to_a_gone_one(
    redis_url: str,
) -> None:
    async with backends(redis_url, "g1", "g2") as (g1, g2):
        await g1.ensure_inbox()
        await g1.ensure_inbox()  # idempotent
        assert await g2.send("g1", pack_batch([b"a", b"b"]))
        assert await g2.send("g1", pack_batch([b"c"]))
        entries = await g1.read_inbox(10, 10)
        assert [(sender, unpack_batch(blob)) for _, sender, blob in entries] == [
            ("g2", [b"a", b"b"]),
            ("g2", [b"c"]),
        ]
        assert await g1.read_inbox(10, 10, [entry_id for entry_id, _, _ in entries]) == []
        assert await g1.client.xlen(g1.inbox) == 0  # deleted
        assert not await g2.send("nobody", pack_batch([b"x"]))


async def test_a_blocking_read_of_an_empty_inbox_returns_after_its_block(redis_url: str) -> None:
    async with backends(redis_url, "g1") as (g1,):
        await g1.ensure_inbox()
        with trio.fail_after(5):
            assert await g1.read_inbox(10, 20) == []
