"""The Redis store against a real server: one hash per agent under its
namespace, passwords in the URL, an outage refused within the timeout and
the store working again once the server is back; coredis imported only
when a store is opened."""

from __future__ import annotations

import subprocess
import sys

import coredis
import pytest
import trio

from agentwire import AgentId
from agentwire.state import (
    Delta,
    Snapshot,
    StateConflictError,
    StateStoreUnavailableError,
    open_redis_store,
)
from tests.redis_server import RedisProcess

AGENT = AgentId("counter", "k")
GUARD = 30  # seconds: a hang guard, never a synchronisation


async def test_the_state_of_an_agent_is_one_hash_under_the_namespace(redis_url: str) -> None:
    async with open_redis_store(redis_url, namespace="app1:") as store:
        assert store.key(AGENT) == "app1:counter/k"
        await store.commit(AGENT, 0, Snapshot({"n": 1}))
        await store.commit(AGENT, 1, Delta([{"op": "replace", "path": "/n", "value": 2}]))
    async with open_redis_store(redis_url, namespace="app2:") as other:
        assert (await other.load(AGENT)).version == 0  # namespaces do not see each other
    async with coredis.Redis.from_url(redis_url) as client:
        assert await client.keys("*") == {b"app1:counter/k"}
        fields = await client.hgetall("app1:counter/k")
    assert fields == {
        b"v": b"2",
        b"sv": b"1",
        b"s": b'{"n":1}',
        b"d:2": b'[{"op":"replace","path":"/n","value":2}]',
    }


async def test_a_snapshot_replaces_the_deltas_before_it(redis_url: str) -> None:
    async with open_redis_store(redis_url) as store:
        await store.commit(AGENT, 0, Snapshot({"n": 1}))
        await store.commit(AGENT, 1, Delta([{"op": "replace", "path": "/n", "value": 2}]))
        assert await store.commit(AGENT, 2, Snapshot({"n": 3})) == 3
        stored = await store.load(AGENT)
        async with coredis.Redis.from_url(redis_url) as client:
            fields = await client.hkeys(store.key(AGENT))
    assert (stored.version, stored.snapshot_version, stored.deltas) == (3, 3, ())
    assert set(fields) == {b"v", b"sv", b"s"}


async def test_a_password_in_the_url_is_used(redis_url: str) -> None:
    async with coredis.Redis.from_url(redis_url) as admin:
        await admin.config_set({"requirepass": "s3cret"})
    try:
        with_password = redis_url.replace("redis://", "redis://:s3cret@")
        async with open_redis_store(with_password) as store:
            assert await store.commit(AGENT, 0, Snapshot({"n": 1})) == 1
        async with open_redis_store(redis_url) as store:
            with pytest.raises(coredis.exceptions.AuthenticationRequiredError):
                await store.load(AGENT)
    finally:
        async with coredis.Redis.from_url(with_password) as admin:
            await admin.config_set({"requirepass": ""})


async def test_an_outage_fails_the_writer_and_the_store_works_once_the_server_is_back(
    redis_process: RedisProcess,
) -> None:
    with trio.fail_after(GUARD):
        async with open_redis_store(redis_process.url, command_timeout=2.0) as store:
            await store.commit(AGENT, 0, Snapshot({"n": 1}))
            redis_process.stop()
            with pytest.raises(
                StateStoreUnavailableError, match=r"is unavailable \(.*; a call waits at most 2 s\)"
            ):
                await store.commit(AGENT, 1, Snapshot({"n": 2}))
            with pytest.raises(StateStoreUnavailableError, match="retry once the server is back"):
                await store.load(AGENT)
            redis_process.start()  # empty: persistence is off
            with pytest.raises(StateConflictError) as caught:
                await store.commit(AGENT, 1, Snapshot({"n": 2}))
            assert caught.value.current_version == 0
            assert await store.commit(AGENT, 0, Snapshot({"n": 2})) == 1
            assert (await store.load(AGENT)).materialize() == {"n": 2}


async def test_a_server_that_does_not_answer_fails_the_writer_within_the_timeout(
    redis_process: RedisProcess,
) -> None:
    assert redis_process.process is not None
    with trio.fail_after(GUARD):
        async with open_redis_store(redis_process.url, command_timeout=0.5) as store:
            await store.commit(AGENT, 0, Snapshot({"n": 1}))
            redis_process.process.send_signal(19)  # SIGSTOP: the socket stays open, silent
            try:
                with pytest.raises(StateStoreUnavailableError, match="no answer"):
                    await store.commit(AGENT, 1, Snapshot({"n": 2}))
            finally:
                redis_process.process.send_signal(18)  # SIGCONT
            assert (await store.load(AGENT)).version in (1, 2)


async def test_only_redis_urls_are_taken() -> None:
    with pytest.raises(ValueError, match=r"starts with redis:// or rediss://"):
        async with open_redis_store("http://localhost:6379"):
            pass


def test_importing_agentwire_state_does_not_import_coredis() -> None:
    code = "import sys, agentwire.state; print('coredis' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stdout.strip() == "False", result.stderr
