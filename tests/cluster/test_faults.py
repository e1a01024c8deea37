"""Faults of a cluster: Redis stopped and started again, a gateway process
killed, one stopped for longer than its lease. Local traffic goes on,
cross-gateway calls fail fast with a clear error, the cluster heals."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager

import pytest
import trio

from agentwire import (
    AgentId,
    ConnectionLostError,
    Gateway,
    UndeliverableError,
    WorkerRuntime,
    open_worker,
    serializers_for_type,
)
from tests.redis_server import RedisProcess
from tests.worker.messages import Echo, Ping, Pong

from .helpers import GUARD, Stuck, call_stuck, cluster_gateway, converged, open_cluster

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs POSIX signals")


async def test_without_redis_local_calls_go_on_and_remote_ones_fail_fast_until_it_is_back(
    redis_process: RedisProcess,
) -> None:
    with trio.fail_after(GUARD):
        async with (
            open_cluster(redis_process.url, 2) as (first, second),
            open_worker(first.address) as a,
            open_worker(first.address) as near,
            open_worker(second.address) as far,
        ):
            for worker in (a, far):
                worker.add_message_serializer(serializers_for_type(Pong))
            await Echo.register(near, "near", Echo)
            await Echo.register(far, "far", Echo)
            await converged([first, second], agent_types=2, subscriptions=2)
            assert await a.send_message(Ping("1"), AgentId("far", "k")) == Pong("far/k:1")

            await trio.to_thread.run_sync(redis_process.stop)
            await first.wait_until(lambda s: s.agent_types == 1)  # "far" is out of reach
            assert await a.send_message(Ping("2"), AgentId("near", "k")) == Pong("near/k:2")
            with pytest.raises(UndeliverableError, match="cannot reach its cluster's Redis"):
                await a.send_message(Ping("3"), AgentId("far", "k"))
            async with trio.open_nursery() as nursery:
                # Refused UNAVAILABLE while Redis is down: the worker retries.
                nursery.start_soon(Echo.register, a, "late", Echo)
                await trio.to_thread.run_sync(redis_process.start)
            await converged([first, second], agent_types=3, subscriptions=3)
            assert await a.send_message(Ping("4"), AgentId("far", "k")) == Pong("far/k:4")
            assert await far.send_message(Ping("5"), AgentId("late", "k")) == Pong("late/k:5")
            assert first.cluster is not None
            assert first.cluster.statistics().joins == 2


async def test_a_request_in_flight_when_redis_goes_fails_with_a_clear_error(
    redis_process: RedisProcess,
) -> None:
    Stuck.started = trio.Event()
    outcome: list[ConnectionLostError] = []
    with trio.fail_after(GUARD):
        async with (
            open_cluster(redis_process.url, 2) as (first, second),
            open_worker(first.address) as caller,
            open_worker(second.address) as server,
        ):
            await Stuck.register(server, "stuck", Stuck)
            await first.wait_until(lambda s: s.agent_types == 1)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(call_stuck, caller, outcome)
                await Stuck.started.wait()
                await trio.to_thread.run_sync(redis_process.stop)
    assert len(outcome) == 1
    assert "left the cluster or became unreachable" in str(outcome[0])


@contextmanager
def gateway_process(redis_url: str, lease: float) -> Iterator[subprocess.Popen[str]]:
    command = [sys.executable, "-m", "agentwire", "gateway", "--address", "127.0.0.1:0"]
    command += ["--cluster", redis_url, "--cluster-lease", str(lease), "--startup-grace", "0"]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


@asynccontextmanager
async def survivor_and_process(
    redis_url: str,
) -> AsyncIterator[tuple[subprocess.Popen[str], Gateway, WorkerRuntime, WorkerRuntime]]:
    """A gateway process (lease 1 s) and one in this program, each with a worker:
    (the process, the in-program gateway, its worker, the process's worker)."""
    with gateway_process(redis_url, lease=1.0) as proc:
        assert proc.stdout is not None
        line = await trio.to_thread.run_sync(proc.stdout.readline)
        assert line.startswith("agentwire gateway listening on "), line
        address = line.rsplit(" ", 1)[1].strip()
        async with (
            cluster_gateway(redis_url) as survivor,
            open_worker(survivor.address) as caller,
            open_worker(address) as server,
        ):
            yield proc, survivor, caller, server


async def test_a_killed_gateway_is_dropped_when_its_lease_expires_and_its_callers_are_answered(
    redis_url: str,
) -> None:
    Stuck.started = trio.Event()
    outcome: list[ConnectionLostError] = []
    with trio.fail_after(GUARD):
        async with survivor_and_process(redis_url) as (proc, survivor, caller, server):
            await Stuck.register(server, "stuck", Stuck)
            await survivor.wait_until(lambda s: s.agent_types == 1)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(call_stuck, caller, outcome)
                await Stuck.started.wait()
                proc.send_signal(signal.SIGKILL)
            await survivor.wait_until(lambda s: s.agent_types == 0)
            assert survivor.cluster is not None
            assert survivor.cluster.statistics().peers == 0
    assert proc.returncode == -signal.SIGKILL
    assert len(outcome) == 1
    assert "left the cluster or became unreachable" in str(outcome[0])


async def test_a_stopped_gateway_is_dropped_and_rejoins_with_its_types_when_it_resumes(
    redis_url: str,
) -> None:
    Stuck.started = trio.Event()
    outcome: list[ConnectionLostError] = []
    with trio.fail_after(GUARD):
        async with survivor_and_process(redis_url) as (proc, survivor, caller, server):
            caller.add_message_serializer(serializers_for_type(Pong))
            await Stuck.register(server, "stuck", Stuck)
            await Echo.register(server, "far", Echo)
            await survivor.wait_until(lambda s: s.agent_types == 2)
            assert await caller.send_message(Ping("1"), AgentId("far", "k")) == Pong("far/k:1")

            async with trio.open_nursery() as nursery:
                nursery.start_soon(call_stuck, caller, outcome)
                await Stuck.started.wait()
                proc.send_signal(signal.SIGSTOP)
            # The stopped gateway's lease ran out: its caller was answered, its types dropped.
            assert len(outcome) == 1
            assert "left the cluster or became unreachable" in str(outcome[0])
            await survivor.wait_until(lambda s: s.agent_types == 0 and s.subscriptions == 0)
            with pytest.raises(UndeliverableError):
                await caller.send_message(Ping("2"), AgentId("far", "k"))

            proc.send_signal(signal.SIGCONT)
            # It finds its lease gone, joins again and claims its agent types and
            # subscriptions again.
            await converged([survivor], agent_types=2, subscriptions=2)
            assert await caller.send_message(Ping("3"), AgentId("far", "k")) == Pong("far/k:3")
            assert survivor.cluster is not None
            assert survivor.cluster.statistics().peers == 1
            assert server.statistics().connects == 1  # the gateway, not the worker, healed it
