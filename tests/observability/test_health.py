"""The gRPC health service, checked with grpcio's own health client (grpcio-health-checking)."""

from __future__ import annotations

import queue
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import grpc
import pytest
import trio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from agentwire._observability._health import (
    AGENT_RPC_SERVICE,
    HEALTH_SERVICE_PREFIX,
    HealthService,
    HealthStatus,
)
from agentwire._transport import GRPCError, Status, open_channel, open_grpc_server

WAIT = 10.0
ServingStatus = health_pb2.HealthCheckResponse.ServingStatus


@asynccontextmanager
async def serving(service: HealthService) -> AsyncIterator[str]:
    async with open_grpc_server(service.methods(), "127.0.0.1", 0, grace_period=1.0) as server:
        yield server.address


@contextmanager
def health_stub(address: str) -> Iterator[health_pb2_grpc.HealthStub]:
    with grpc.insecure_channel(address) as channel:
        yield health_pb2_grpc.HealthStub(channel)


async def check(address: str, service: str) -> int:
    def call() -> int:
        with health_stub(address) as stub:
            request = health_pb2.HealthCheckRequest(service=service)
            return int(stub.Check(request, timeout=WAIT).status)

    return await trio.to_thread.run_sync(call)


class Watcher:
    """A grpcio Watch call read by a thread; answers (or the final error) land in a queue."""

    def __init__(self, address: str, service: str) -> None:
        self.answers: queue.Queue[Any] = queue.Queue()
        self._channel = grpc.insecure_channel(address)
        stub = health_pb2_grpc.HealthStub(self._channel)
        self._call = stub.Watch(health_pb2.HealthCheckRequest(service=service), timeout=WAIT * 3)

    def run(self) -> None:
        try:
            for response in self._call:
                self.answers.put(int(response.status))
        except grpc.RpcError as exc:
            self.answers.put(exc.code())
        else:
            self.answers.put("ended")

    async def next(self) -> Any:
        return await trio.to_thread.run_sync(self.answers.get, True, WAIT)

    def close(self) -> None:
        self._call.cancel()
        self._channel.close()


@asynccontextmanager
async def watching(address: str, service: str) -> AsyncIterator[Watcher]:
    watcher = Watcher(address, service)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(trio.to_thread.run_sync, watcher.run)
            yield watcher
            watcher.close()
    finally:
        watcher.close()


async def test_check_answers_serving_for_the_server_and_its_services() -> None:
    health = HealthService()
    health.set_status(AGENT_RPC_SERVICE, HealthStatus.SERVING)
    async with serving(health) as address:
        assert await check(address, "") == ServingStatus.SERVING
        assert await check(address, "agents.AgentRpc") == ServingStatus.SERVING
        health.set_status(AGENT_RPC_SERVICE, HealthStatus.NOT_SERVING)
        assert await check(address, "agents.AgentRpc") == ServingStatus.NOT_SERVING
        assert await check(address, "") == ServingStatus.SERVING


async def test_check_of_an_unknown_service_fails_with_not_found() -> None:
    async with serving(HealthService()) as address:
        with pytest.raises(grpc.RpcError) as info:
            await check(address, "no.Such")
    assert info.value.code() == grpc.StatusCode.NOT_FOUND


async def test_check_answers_not_serving_once_shutdown_begins() -> None:
    health = HealthService()
    health.set_status(AGENT_RPC_SERVICE, HealthStatus.SERVING)
    async with serving(health) as address:
        health.begin_shutdown()
        assert await check(address, "") == ServingStatus.NOT_SERVING
        health.set_status(AGENT_RPC_SERVICE, HealthStatus.SERVING)
        assert await check(address, "agents.AgentRpc") == ServingStatus.NOT_SERVING


async def test_watch_sees_each_change_then_shutdown_ends_the_call_unavailable() -> None:
    health = HealthService()
    health.set_status(AGENT_RPC_SERVICE, HealthStatus.SERVING)
    async with serving(health) as address, watching(address, AGENT_RPC_SERVICE) as watcher:
        assert await watcher.next() == ServingStatus.SERVING
        health.set_status(AGENT_RPC_SERVICE, HealthStatus.NOT_SERVING)
        assert await watcher.next() == ServingStatus.NOT_SERVING
        health.set_status(AGENT_RPC_SERVICE, HealthStatus.SERVING)
        assert await watcher.next() == ServingStatus.SERVING
        health.begin_shutdown()
        assert await watcher.next() == ServingStatus.NOT_SERVING
        assert await watcher.next() == grpc.StatusCode.UNAVAILABLE


async def test_watch_of_an_unknown_service_answers_service_unknown_then_its_status() -> None:
    health = HealthService()
    async with serving(health) as address, watching(address, "later.Service") as watcher:
        assert await watcher.next() == ServingStatus.SERVICE_UNKNOWN
        health.set_status("later.Service", HealthStatus.SERVING)
        assert await watcher.next() == ServingStatus.SERVING


async def test_a_watcher_that_reads_late_gets_the_latest_status() -> None:
    health = HealthService()
    async with (
        serving(health) as address,
        open_channel(address) as channel,
        channel.stream(HEALTH_SERVICE_PREFIX + "Watch") as stream,
    ):
        await stream.send(health_pb2.HealthCheckRequest(service="").SerializeToString())
        first = health_pb2.HealthCheckResponse.FromString(await stream.receive())
        assert first.status == ServingStatus.SERVING
        for status in [HealthStatus.NOT_SERVING, HealthStatus.SERVING] * 3:
            health.set_status("", status)
        health.set_status("", HealthStatus.NOT_SERVING)
        health.begin_shutdown()
        latest = health_pb2.HealthCheckResponse.FromString(await stream.receive())
        assert latest.status == ServingStatus.NOT_SERVING
        with pytest.raises(GRPCError) as info:
            await stream.receive()
        assert info.value.status is Status.UNAVAILABLE


async def test_a_malformed_request_fails_only_that_call_with_invalid_argument() -> None:
    async with serving(HealthService()) as address, open_channel(address) as channel:
        with pytest.raises(GRPCError) as info:
            await channel.unary(HEALTH_SERVICE_PREFIX + "Check", b"\xff\xff")
        assert info.value.status is Status.INVALID_ARGUMENT
        assert "HealthCheckRequest" in str(info.value.message)
        reply = await channel.unary(HEALTH_SERVICE_PREFIX + "Check", b"")
        assert health_pb2.HealthCheckResponse.FromString(reply).status == ServingStatus.SERVING
