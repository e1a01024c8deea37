"""The test suite's redis-server fixture: a real server that coredis reaches under trio."""

from __future__ import annotations

import coredis
import pytest

from tests.redis_server import RedisProcess


async def test_coredis_reaches_the_test_server_under_trio(redis_url: str) -> None:
    client = coredis.Redis.from_url(redis_url)
    async with client:
        await client.set("greeting", "hello")
        assert await client.get("greeting") == b"hello"


async def test_each_test_starts_with_an_empty_server(redis_url: str) -> None:
    client = coredis.Redis.from_url(redis_url)
    async with client:
        assert await client.dbsize() == 0
        await client.set("left-over", "1")


async def test_a_stopped_server_refuses_and_comes_back_on_the_same_port(
    redis_process: RedisProcess,
) -> None:
    redis_process.stop()
    client = coredis.Redis.from_url(redis_process.url)
    with pytest.RaisesGroup(coredis.exceptions.ConnectionError, flatten_subgroups=True):
        async with client:
            await client.ping()
    redis_process.start()
    async with coredis.Redis.from_url(redis_process.url) as again:
        assert await again.ping() == b"PONG"
