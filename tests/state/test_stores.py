"""Each store (memory, SQLite, Redis, and the gateway's state store as a worker
sees it, here on a memory store) keeps snapshots and deltas, refuses stale
writes with the current version, and gives back exactly what was written; the
SQLite store across reopening and between two stores on one file."""

from __future__ import annotations

import itertools
import pathlib
import sqlite3
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agentwire import AgentId, open_gateway, open_worker
from agentwire.state import (
    Delta,
    MemoryStateStore,
    Snapshot,
    StateConflictError,
    StateError,
    StateStore,
    StoredState,
    open_redis_store,
    open_sqlite_store,
)
from agentwire.state._log import StateLog, StateTracker, replay
from agentwire.state._remote import GatewayStateStore

from .strategies import STATES, histories

AGENT = AgentId("counter", "k")

# A fresh, empty store each call (several per test with Hypothesis).
StoreFactory = Callable[[], AbstractAsyncContextManager[StateStore]]

_namespaces = itertools.count()


@pytest.fixture(params=["memory", "sqlite", "redis", "gateway"])
def open_store(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """Opens an empty store of each kind (Redis: the test server, a fresh namespace)."""

    @asynccontextmanager
    async def memory() -> AsyncIterator[StateStore]:
        yield MemoryStateStore()

    @asynccontextmanager
    async def sqlite() -> AsyncIterator[StateStore]:
        async with open_sqlite_store(tmp_path_factory.mktemp("store") / "state.db") as store:
            yield store

    @asynccontextmanager
    async def redis() -> AsyncIterator[StateStore]:
        namespace = f"test{next(_namespaces)}:"
        async with open_redis_store(url, namespace=namespace) as store:
            yield store

    @asynccontextmanager
    async def gateway() -> AsyncIterator[StateStore]:
        async with (
            open_gateway(state_store=MemoryStateStore()) as gw,
            open_worker(gw.address) as runtime,
        ):
            yield GatewayStateStore(runtime._worker.link)

    if request.param == "redis":
        url = request.getfixturevalue("redis_url")
    stores = {"memory": memory, "sqlite": sqlite, "redis": redis, "gateway": gateway}
    return stores[request.param]


EXAMPLES = settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


async def write_history(store: StateStore, states: list[dict[str, Any]], every: int) -> list[Any]:
    """Write *states* as an agent would; the state of each version, in order."""
    tracker = StateTracker(every)
    written: list[Any] = []
    for state in states:
        prepared = tracker.prepare(state)
        if prepared is None:
            continue
        change, normal = prepared
        version = await store.commit(AGENT, tracker.version, change)
        assert version == tracker.version + 1
        tracker.committed_as(change, normal, version)
        written.append(state)
    return written


async def test_an_agent_never_written_loads_as_version_zero(
    open_store: StoreFactory,
) -> None:
    async with open_store() as store:
        assert await store.load(AGENT) == StoredState()


async def test_a_stale_write_is_refused_with_the_current_version(
    open_store: StoreFactory,
) -> None:
    async with open_store() as store:
        assert await store.commit(AGENT, 0, Snapshot({"n": 1})) == 1
        replace = Delta([{"op": "replace", "path": "/n", "value": 2}])
        assert await store.commit(AGENT, 1, replace) == 2
        with pytest.raises(StateConflictError, match="at version 2, not 1") as caught:
            await store.commit(AGENT, 1, Snapshot({"n": 9}))
        assert caught.value.current_version == 2
        with pytest.raises(StateConflictError):
            await store.commit(AGENT, 0, Snapshot({"n": 9}))
        stored = await store.load(AGENT)
    assert stored.version == 2
    assert stored.materialize() == {"n": 2}


async def test_a_first_write_that_is_a_delta_is_refused(
    open_store: StoreFactory,
) -> None:
    async with open_store() as store:
        with pytest.raises(StateError, match=r"first write .* must be a snapshot"):
            await store.commit(AGENT, 0, Delta([{"op": "add", "path": "/n", "value": 1}]))
        assert await store.load(AGENT) == StoredState()


async def test_agents_have_separate_versions(open_store: StoreFactory) -> None:
    other = AgentId("counter", "other")
    async with open_store() as store:
        await store.commit(AGENT, 0, Snapshot({"n": 1}))
        await store.commit(AGENT, 1, Snapshot({"n": 2}))
        assert await store.commit(other, 0, Snapshot({"m": 1})) == 1
        assert (await store.load(other)).materialize() == {"m": 1}


@given(states=histories())
@EXAMPLES
def test_snapshot_and_deltas_round_trip_through_the_store(
    open_store: StoreFactory, states: list[dict[str, Any]]
) -> None:
    async def main() -> tuple[list[Any], StoredState]:
        async with open_store() as store:
            written = await write_history(store, states, every=1000)
            return written, await store.load(AGENT)

    written, stored = trio.run(main)
    assert stored.version == len(written)
    assert stored.materialize() == written[-1]
    first = stored.snapshot_version - 1
    assert stored.snapshot == written[first]
    assert replay(written[first], stored.deltas) == written[first:]


@given(
    writes=st.lists(st.tuples(st.integers(-2, 1), STATES), min_size=1, max_size=12),
)
@EXAMPLES
def test_versions_strictly_increase_and_a_stale_write_is_always_refused(
    open_store: StoreFactory, writes: list[tuple[int, dict[str, Any]]]
) -> None:
    """Each write is based on the current version plus an offset (0: current,
    else stale); the store agrees with a model log on every outcome."""

    async def main() -> None:
        model = StateLog(str(AGENT))
        async with open_store() as store:
            for offset, state in writes:
                base = max(0, model.version + offset)
                try:
                    expected: int | StateConflictError = model.write(base, Snapshot(state))
                except StateConflictError as exc:
                    expected = exc
                if isinstance(expected, int):
                    assert await store.commit(AGENT, base, Snapshot(state)) == expected
                    continue
                with pytest.raises(StateConflictError) as caught:
                    await store.commit(AGENT, base, Snapshot(state))
                assert caught.value.current_version == model.version
                assert caught.value.base_version == base
            stored = await store.load(AGENT)
        assert stored.version == model.version
        assert stored.materialize() == model.stored.materialize()

    trio.run(main)


async def test_the_sqlite_store_keeps_the_state_after_it_is_closed(tmp_path: pathlib.Path) -> None:
    states = [{"items": list(range(n))} for n in range(30)]
    async with open_sqlite_store(tmp_path / "state.db") as store:
        written = await write_history(store, states, every=8)
    async with open_sqlite_store(tmp_path / "state.db") as store:
        stored = await store.load(AGENT)
    assert stored.version == len(written) == 30
    assert stored.materialize() == states[-1]
    assert len(stored.deltas) <= 8  # a snapshot after every 8 deltas; older deltas dropped
    assert stored.snapshot_version == 30 - len(stored.deltas)


async def test_two_sqlite_stores_on_one_file_accept_only_one_of_two_writes_from_one_version(
    tmp_path: pathlib.Path,
) -> None:
    path = tmp_path / "state.db"
    async with open_sqlite_store(path) as first, open_sqlite_store(path) as second:
        await first.commit(AGENT, 0, Snapshot({"n": 0}))
        outcomes: list[str] = []

        async def write(store: StateStore, n: int) -> None:
            try:
                await store.commit(AGENT, 1, Snapshot({"n": n}))
                outcomes.append("accepted")
            except StateConflictError:
                outcomes.append("refused")

        async with trio.open_nursery() as nursery:
            nursery.start_soon(write, first, 1)
            nursery.start_soon(write, second, 2)
        stored = await second.load(AGENT)
    assert sorted(outcomes) == ["accepted", "refused"]
    assert stored.version == 2
    with sqlite3.connect(path) as check:
        assert check.execute("PRAGMA journal_mode").fetchone() == ("wal",)


async def test_an_unknown_synchronous_mode_is_refused(tmp_path: pathlib.Path) -> None:
    with pytest.raises(ValueError, match="synchronous must be"):
        async with open_sqlite_store(tmp_path / "state.db", synchronous="off"):  # type: ignore[arg-type]
            pass
