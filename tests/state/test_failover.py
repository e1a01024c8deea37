"""Failover with state: a counter agent served by two workers through a gateway
with hash placement, its state in one SQLite file the workers open, or in the
gateway's state store (the workers configure none). The worker owning it stops
abruptly while an increment is in flight; the next calls activate the counter
on the survivor from the last committed version, and the final count is the
number of acknowledged increments, plus the one in flight if the owner stopped
after committing it but before answering."""

from __future__ import annotations

import pathlib
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any, Literal

import attrs
import pytest
import trio

from agentwire import (
    AgentId,
    ConnectionLostError,
    MessageContext,
    WorkerRuntime,
    open_gateway,
    open_worker,
    rpc,
    serializers_for_type,
)
from agentwire.state import (
    MemoryStateStore,
    StatefulAgent,
    StateStore,
    StoredState,
    open_sqlite_store,
)

GUARD = 60  # seconds: a hang guard, never a synchronisation
CALLS = 240
TRAP_AT = 101  # the owner stops while handling the increment to this count
COUNTER = AgentId("counter", "c")


@attrs.define
class Increment:
    by: int = 1


@attrs.define
class Count:
    worker: str
    total: int


@attrs.define
class Trap:
    """Once: the increment reaching ``at`` hangs after changing the state, and
    the test stops the worker handling it."""

    at: int
    when: Literal["before-commit", "after-commit"]
    armed: bool = True
    worker: str = ""
    reached: trio.Event = attrs.field(factory=trio.Event)


class SharedCounter(StatefulAgent):
    def __init__(self, worker: str, store: StateStore | None, trap: Trap) -> None:
        super().__init__("a durable counter", store=store)
        self.worker = worker
        self.trap = trap
        self.hang_after_commit = False

    async def on_message(self, message: Any, ctx: MessageContext) -> Any:
        result = await super().on_message(message, ctx)  # handled and committed
        if self.hang_after_commit:
            self.trap.reached.set()
            await trio.sleep_forever()  # in flight, committed, when its worker stops
        return result

    def initial_state(self) -> dict[str, int]:
        return {"count": 0}

    @rpc
    async def increment(self, message: Increment, ctx: MessageContext) -> Count:
        self.state["count"] += message.by
        if self.trap.armed and self.state["count"] == self.trap.at:
            self.trap.armed = False
            self.trap.worker = self.worker
            if self.trap.when == "after-commit":
                self.hang_after_commit = True
            else:
                self.trap.reached.set()
                await trio.sleep_forever()  # in flight, not committed, when its worker stops
        return Count(self.worker, self.state["count"])


async def increment(caller: WorkerRuntime) -> Count | None:
    """One increment; ``None`` if the worker serving the counter was lost before answering."""
    try:
        answer = await caller.send_message(Increment(), COUNTER)
    except ConnectionLostError:
        return None
    assert isinstance(answer, Count)
    return answer


@asynccontextmanager
async def open_caller(address: str) -> AsyncIterator[WorkerRuntime]:
    async with open_worker(address, shared_types=True) as caller:
        caller.add_message_serializer(serializers_for_type(Increment))
        caller.add_message_serializer(serializers_for_type(Count))
        yield caller


async def serve_counter(
    name: str,
    address: str,
    path: pathlib.Path | None,
    trap: Trap,
    *,
    task_status: trio.TaskStatus[trio.CancelScope],
) -> None:
    """A worker serving type ``counter`` until the cancel scope it reports is
    cancelled; its counters keep their state in the SQLite file *path*, or
    with ``None`` in the gateway's state store."""
    with trio.CancelScope() as scope:
        async with AsyncExitStack() as stack:
            store: StateStore | None = None
            if path is not None:
                store = await stack.enter_async_context(open_sqlite_store(path))
            runtime = await stack.enter_async_context(open_worker(address, shared_types=True))
            await SharedCounter.register(
                runtime, "counter", lambda: SharedCounter(name, store, trap)
            )
            runtime.add_message_serializer(serializers_for_type(Count))
            task_status.started(scope)
            await trio.sleep_forever()


async def stored_counter(
    gateway_store: StateStore | None, path: pathlib.Path | None
) -> StoredState:
    """What the gateway's store, or else the SQLite file *path*, holds for the counter."""
    if gateway_store is not None:
        return await gateway_store.load(COUNTER)
    assert path is not None
    async with open_sqlite_store(path) as store:
        return await store.load(COUNTER)


@pytest.mark.parametrize("kept", ["worker-sqlite", "gateway"])
@pytest.mark.parametrize("when", ["before-commit", "after-commit"])
async def test_a_counter_survives_its_worker_stopping_with_every_acknowledged_increment(
    tmp_path: pathlib.Path,
    when: Literal["before-commit", "after-commit"],
    kept: Literal["worker-sqlite", "gateway"],
) -> None:
    gateway_store = MemoryStateStore() if kept == "gateway" else None
    path = None if kept == "gateway" else tmp_path / "state.db"
    trap = Trap(TRAP_AT, when)
    answers: list[Count] = []
    lost = 0
    with trio.fail_after(GUARD):
        async with (
            open_gateway("127.0.0.1:0", placement="hash", state_store=gateway_store) as gateway,
            trio.open_nursery() as nursery,
        ):
            workers = {
                name: await nursery.start(serve_counter, name, gateway.address, path, trap)
                for name in ("w1", "w2")
            }
            await gateway.wait_until(
                lambda s: "counter" in s.placement and s.placement["counter"].workers == 2
            )

            async def stop_the_owner_when_trapped() -> None:
                await trap.reached.wait()
                workers[trap.worker].cancel()

            nursery.start_soon(stop_the_owner_when_trapped)
            async with open_caller(gateway.address) as caller:
                for _ in range(CALLS):
                    answer = await increment(caller)
                    if answer is None:
                        lost += 1
                    else:
                        answers.append(answer)
            nursery.cancel_scope.cancel()
    stored = await stored_counter(gateway_store, path)
    owner = trap.worker
    survivor = "w2" if owner == "w1" else "w1"
    in_flight_committed = when == "after-commit"
    assert lost == 1  # the increment in flight
    assert len(answers) == CALLS - 1
    # every acknowledged increment counted once, in order, across the failover;
    # the one in flight counted too if it was committed before its worker stopped
    expected = list(range(1, TRAP_AT)) + list(range(TRAP_AT + in_flight_committed, CALLS + 1))
    assert [a.total for a in answers] == expected[: CALLS - 1]
    assert [a.worker for a in answers] == [owner] * (TRAP_AT - 1) + [survivor] * (CALLS - TRAP_AT)
    final = len(answers) + in_flight_committed
    assert stored.materialize() == {"count": final}
    assert stored.version == final
