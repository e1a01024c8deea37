"""Failover with state through a cluster of three gateways: a caller on
gateway A counts to 1,000 on a counter whose worker, a process on gateway B,
is killed with SIGKILL midway. A standby worker on gateway C
(``register_standby``) keeps asking to register the agent type, refused
("already registered") while the owner lives; once the owner is gone its
registration goes through and the counter goes on there, from the last
version the dead process committed to Redis.
The caller retries an increment that failed with ``ConnectionLostError``
(kinds ``connection-lost``, ``gateway-unreachable``) or ``UndeliverableError``
(``undeliverable``: nobody serves the type, between the death and the standby's
registration)."""

from __future__ import annotations

import itertools
import pathlib
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from contextlib import AsyncExitStack, contextmanager

import pytest
import trio

from agentwire import (
    ConnectionLostError,
    UndeliverableError,
    WorkerRuntime,
    open_worker,
    serializers_for_type,
)
from agentwire.state import open_redis_store

from ..cluster.helpers import cluster_gateway
from .test_failover import COUNTER, Count, Increment, SharedCounter, Trap

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs POSIX signals")

ROOT = pathlib.Path(__file__).resolve().parents[2]
GUARD = 120  # seconds: a hang guard, never a synchronisation
CALLS = 1000
KILL_AFTER = 500  # acknowledged increments before the owner is killed
RETRY = 0.05  # seconds between a standby's registration attempts, and between a caller's

_OWNER = textwrap.dedent(
    """
    import sys, trio
    sys.path.insert(0, sys.argv[1])
    from tests.state.test_failover_cluster import serve_counter

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(serve_counter, "owner", sys.argv[2], sys.argv[3])
            print("ready", flush=True)

    trio.run(main)
    """
)


async def serve_counter(
    name: str,
    address: str,
    redis_url: str,
    *,
    standby: bool = False,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """A worker serving type ``counter`` (its state in Redis) until cancelled;
    a *standby* waits for the type to be free, then takes it."""
    async with AsyncExitStack() as stack:
        store = await stack.enter_async_context(open_redis_store(redis_url))
        runtime = await stack.enter_async_context(open_worker(address))
        runtime.add_message_serializer(serializers_for_type(Count))
        disarmed = Trap(0, "before-commit", armed=False)

        async def register() -> None:
            await SharedCounter.register(
                runtime, "counter", lambda: SharedCounter(name, store, disarmed)
            )

        if standby:
            await runtime.register_standby(register, retry_every=RETRY)
        else:
            await register()
        task_status.started()
        await trio.sleep_forever()


@contextmanager
def owner_process(address: str, redis_url: str) -> Iterator[subprocess.Popen[str]]:
    proc = subprocess.Popen(
        [sys.executable, "-c", _OWNER, str(ROOT), address, redis_url],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        yield proc
    finally:
        proc.kill()
        proc.wait()


async def increment_until_answered(caller: WorkerRuntime, failures: list[str]) -> Count:
    """One increment, retried while its worker is lost or the type unserved
    (each failure's class name goes to *failures*)."""
    while True:
        try:
            answer = await caller.send_message(Increment(), COUNTER)
        except (ConnectionLostError, UndeliverableError) as exc:
            failures.append(type(exc).__name__)
            await trio.sleep(RETRY)
            continue
        assert isinstance(answer, Count)
        return answer


async def test_a_counter_goes_on_on_a_standby_of_another_gateway_after_its_owner_is_killed(
    redis_url: str,
) -> None:
    answers: list[Count] = []
    failures: list[str] = []
    with trio.fail_after(GUARD):
        async with (
            cluster_gateway(redis_url) as a,
            cluster_gateway(redis_url) as b,
            cluster_gateway(redis_url) as c,
            trio.open_nursery() as nursery,
        ):
            with owner_process(b.address, redis_url) as proc:
                assert proc.stdout is not None
                ready = await trio.to_thread.run_sync(proc.stdout.readline)
                assert ready.strip() == "ready"
                await a.wait_until(lambda s: s.agent_types == 1)
                nursery.start_soon(
                    lambda: serve_counter("standby", c.address, redis_url, standby=True)
                )
                async with open_worker(a.address) as caller:
                    caller.add_message_serializer(serializers_for_type(Increment))
                    caller.add_message_serializer(serializers_for_type(Count))
                    for _ in range(CALLS):
                        if len(answers) == KILL_AFTER and proc.returncode is None:
                            proc.send_signal(signal.SIGKILL)
                        answers.append(await increment_until_answered(caller, failures))
                await trio.to_thread.run_sync(proc.wait)
            nursery.cancel_scope.cancel()
        async with open_redis_store(redis_url) as store:
            stored = await store.load(COUNTER)
    assert proc.returncode == -signal.SIGKILL
    assert [a.worker for a in answers] == ["owner"] * KILL_AFTER + ["standby"] * KILL_AFTER
    assert set(failures) <= {"ConnectionLostError", "UndeliverableError"}
    totals = [a.total for a in answers]
    # every increment counted once; the one in flight at the kill maybe twice
    # (committed by the owner before it died, unanswered, retried)
    steps = [b - a for a, b in itertools.pairwise(totals)]
    assert steps.count(1) >= len(steps) - 1
    assert all(step in (1, 2) for step in steps)
    assert CALLS <= totals[-1] <= CALLS + 1
    assert stored.materialize() == {"count": totals[-1]}
