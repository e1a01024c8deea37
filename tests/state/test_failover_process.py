"""Failover with state across a SIGKILL: the worker owning a counter is another
process, killed mid-run; the counter goes on, on the survivor, from the last
version the dead process committed to the shared SQLite file, or to the
gateway's state store."""

from __future__ import annotations

import itertools
import pathlib
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Literal

import pytest
import trio

from agentwire import open_gateway
from agentwire.state import MemoryStateStore

from .test_failover import (
    GUARD,
    Count,
    Trap,
    increment,
    open_caller,
    serve_counter,
    stored_counter,
)

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs POSIX signals")

ROOT = pathlib.Path(__file__).resolve().parents[2]
CALLS = 240
KILL_AFTER = 100  # acknowledged increments before the owner is killed

_WORKER = textwrap.dedent(
    """
    import pathlib, sys, trio
    sys.path.insert(0, sys.argv[1])
    from tests.state.test_failover import Trap, serve_counter

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(
                serve_counter, "process", sys.argv[2],
                pathlib.Path(sys.argv[3]) if sys.argv[3] else None,
                Trap(0, "before-commit", armed=False),
            )
            print("ready", flush=True)

    trio.run(main)
    """
)


@contextmanager
def worker_process(address: str, path: pathlib.Path | None) -> Iterator[subprocess.Popen[str]]:
    """A worker process serving type ``counter``, its state in the SQLite file
    *path*, or with ``None`` in the gateway's state store."""
    proc = subprocess.Popen(
        [sys.executable, "-c", _WORKER, str(ROOT), address, "" if path is None else str(path)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        yield proc
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.parametrize("kept", ["worker-sqlite", "gateway"])
async def test_a_counter_goes_on_after_its_worker_process_is_killed(
    tmp_path: pathlib.Path, kept: Literal["worker-sqlite", "gateway"]
) -> None:
    gateway_store = MemoryStateStore() if kept == "gateway" else None
    path = None if kept == "gateway" else tmp_path / "state.db"
    answers: list[Count] = []
    lost = 0
    with trio.fail_after(GUARD):
        async with (
            open_gateway("127.0.0.1:0", placement="hash", state_store=gateway_store) as gateway,
            trio.open_nursery() as nursery,
        ):
            with worker_process(gateway.address, path) as proc:
                assert proc.stdout is not None
                ready = await trio.to_thread.run_sync(proc.stdout.readline)
                assert ready.strip() == "ready"
                async with open_caller(gateway.address) as caller:
                    first = await increment(caller)
                    assert first == Count("process", 1)  # placed on the only worker
                    assert first is not None
                    answers.append(first)
                    # the survivor joins after the counter was placed: it takes only new agents
                    disarmed = Trap(0, "before-commit", armed=False)
                    await nursery.start(serve_counter, "survivor", gateway.address, path, disarmed)
                    await gateway.wait_until(lambda s: s.placement["counter"].workers == 2)
                    for _ in range(CALLS - 1):
                        if len(answers) == KILL_AFTER and proc.returncode is None:
                            proc.send_signal(signal.SIGKILL)
                        answer = await increment(caller)
                        if answer is None:
                            lost += 1
                        else:
                            answers.append(answer)
                await trio.to_thread.run_sync(proc.wait)
            nursery.cancel_scope.cancel()
    stored = await stored_counter(gateway_store, path)
    assert proc.returncode == -signal.SIGKILL
    workers = [a.worker for a in answers]
    assert workers == ["process"] * KILL_AFTER + ["survivor"] * (len(answers) - KILL_AFTER)
    assert lost <= 1  # at most the one call in flight when the process died
    totals = [a.total for a in answers]
    # each acknowledged increment counted once; the one in flight, if any, maybe too
    steps = [b - a for a, b in itertools.pairwise(totals)]
    assert steps.count(1) >= len(steps) - lost
    assert all(step in (1, 2) for step in steps)
    assert stored.materialize() == {"count": totals[-1]}
    assert len(answers) <= totals[-1] <= len(answers) + lost
