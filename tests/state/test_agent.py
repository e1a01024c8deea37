"""StatefulAgent in the in-process runtime: loaded on activation, committed after
each message (or on checkpoint), deltas between snapshots, conflicts, crashes."""

from __future__ import annotations

from typing import Any, Literal

import attrs
import pytest
import trio

from agentwire import AgentId, MessageContext, open_runtime, rpc
from agentwire.state import (
    MemoryStateStore,
    Snapshot,
    StateConflictError,
    StateError,
    StatefulAgent,
    StateStore,
)

COUNTER = AgentId("counter", "k")


@attrs.define
class Add:
    amount: int
    then: Literal["return", "raise", "hang"] = "return"


class Counter(StatefulAgent):
    def __init__(self, store: StateStore, label: str = "", **options: Any) -> None:
        self.label = label  # initial_state() needs it
        super().__init__("counts", store=store, **options)
        self.hanging = trio.Event()

    def initial_state(self) -> dict[str, Any]:
        state: dict[str, Any] = {"total": 0, "amounts": []}
        if self.label:
            state["label"] = self.label
        return state

    @rpc
    async def add(self, message: Add, ctx: MessageContext) -> int:
        self.state["total"] += message.amount
        self.state["amounts"].append(message.amount)
        if message.then == "raise":
            raise ValueError("refused after the change")
        if message.then == "hang":
            self.hanging.set()
            await trio.sleep_forever()
        return int(self.state["total"])


async def add(store: StateStore, *amounts: int, **options: Any) -> list[int]:
    """Send each amount to a fresh activation of the counter (a new runtime)."""
    async with open_runtime() as runtime:
        await Counter.register(runtime, "counter", lambda: Counter(store, **options))
        return [await runtime.send_message(Add(a), COUNTER) for a in amounts]


async def test_a_new_activation_continues_from_the_last_committed_state() -> None:
    store = MemoryStateStore()
    assert await add(store, 1, 2) == [1, 3]
    assert await add(store, 4) == [7]  # another runtime, same store
    stored = await store.load(COUNTER)
    assert stored.version == 3
    assert stored.materialize() == {"total": 7, "amounts": [1, 2, 4]}


async def test_changes_are_written_as_deltas_with_a_snapshot_after_every_n() -> None:
    store = MemoryStateStore()
    label = "a label that makes the state longer than SMALL_STATE " * 5
    await add(store, *range(1, 11), snapshot_every=4, label=label)
    stored = await store.load(COUNTER)
    assert stored.version == 10
    assert stored.snapshot_version == 6  # v1 snapshot, v2-v5 deltas, v6 snapshot
    assert len(stored.deltas) == 4
    assert all(len(patch) == 2 for patch in stored.deltas)  # total and one amount
    assert stored.materialize() == {"total": 55, "amounts": list(range(1, 11)), "label": label}


async def test_with_explicit_commits_only_a_checkpoint_writes() -> None:
    store = MemoryStateStore()
    async with open_runtime() as runtime:
        agents: list[Counter] = []

        def make() -> Counter:
            agents.append(Counter(store, commit="explicit"))
            return agents[-1]

        await Counter.register(runtime, "counter", make)
        await runtime.send_message(Add(5), COUNTER)
        assert (await store.load(COUNTER)).version == 0
        assert await agents[0].checkpoint() == 1
        assert await agents[0].checkpoint() == 1  # unchanged: nothing written
        assert agents[0].state_version == 1
    assert (await store.load(COUNTER)).materialize() == {"total": 5, "amounts": [5]}


async def test_a_handler_that_raises_commits_nothing_until_the_next_message() -> None:
    store = MemoryStateStore()
    async with open_runtime() as runtime:
        await Counter.register(runtime, "counter", lambda: Counter(store))
        with pytest.raises(ValueError, match="refused after the change"):
            await runtime.send_message(Add(5, "raise"), COUNTER)
        assert (await store.load(COUNTER)).version == 0
        assert await runtime.send_message(Add(1), COUNTER) == 6
    assert (await store.load(COUNTER)).materialize() == {"total": 6, "amounts": [5, 1]}


async def test_a_crash_loses_only_the_message_in_flight() -> None:
    store = MemoryStateStore()
    with trio.CancelScope() as crash:
        async with open_runtime() as runtime:
            agents: list[Counter] = []

            def make() -> Counter:
                agents.append(Counter(store))
                return agents[-1]

            await Counter.register(runtime, "counter", make)
            assert await runtime.send_message(Add(1), COUNTER) == 1
            assert await runtime.send_message(Add(2), COUNTER) == 3
            async with trio.open_nursery() as nursery:
                nursery.start_soon(runtime.send_message, Add(100, "hang"), COUNTER)
                await agents[0].hanging.wait()
                assert agents[0].state["total"] == 103  # changed, not committed
                crash.cancel()
    assert crash.cancelled_caught
    assert await add(store, 0) == [3]


async def test_a_stale_activation_is_refused_and_reloads_before_its_next_message() -> None:
    store = MemoryStateStore()
    async with open_runtime() as first, open_runtime() as second:
        for runtime in (first, second):
            await Counter.register(runtime, "counter", lambda: Counter(store))
        assert await first.send_message(Add(1), COUNTER) == 1
        assert await second.agent_save_state(COUNTER) == {"total": 1, "amounts": [1]}
        assert await first.send_message(Add(2), COUNTER) == 3  # version 2
        with pytest.raises(StateConflictError, match="at version 2, not 1") as caught:
            await second.send_message(Add(20), COUNTER)  # built on version 1
        assert caught.value.current_version == 2
        assert await second.send_message(Add(30), COUNTER) == 33  # reloaded version 2
    assert (await store.load(COUNTER)).materialize() == {"total": 33, "amounts": [1, 2, 30]}


async def test_the_runtime_saves_and_loads_the_state_of_a_stateful_agent() -> None:
    store = MemoryStateStore()
    async with open_runtime() as runtime:
        await Counter.register(runtime, "counter", lambda: Counter(store))
        await runtime.send_message(Add(4), COUNTER)
        assert await runtime.agent_save_state(COUNTER) == {"total": 4, "amounts": [4]}
        await runtime.agent_load_state(COUNTER, {"total": 40, "amounts": []})
        assert await runtime.send_message(Add(2), COUNTER) == 42
    stored = await store.load(COUNTER)
    assert stored.version == 3
    assert stored.materialize() == {"total": 42, "amounts": [2]}


async def test_an_unknown_commit_mode_is_refused() -> None:
    with pytest.raises(ValueError, match="commit must be"):
        Counter(MemoryStateStore(), commit="sometimes")


@attrs.define
class Entry:
    amount: int
    note: str = ""


@attrs.define
class Ledger:
    total: int = 0
    entries: list[Entry] = attrs.Factory(list)
    owner: str | None = None


class LedgerAgent(StatefulAgent):
    def __init__(self, store: StateStore) -> None:
        super().__init__("a ledger", store=store)

    def initial_state(self) -> Ledger:
        return Ledger()

    @rpc
    async def add(self, message: Add, ctx: MessageContext) -> int:
        if message.then == "raise":
            self.state = {"total": 0}  # not a Ledger
            return 0
        self.state.total += message.amount
        self.state.entries.append(Entry(message.amount, f"+{message.amount}"))
        return int(self.state.total)


async def test_a_state_that_is_an_attrs_class_is_stored_as_its_json_and_given_back() -> None:
    store = MemoryStateStore()
    async with open_runtime() as runtime:
        await LedgerAgent.register(runtime, "counter", lambda: LedgerAgent(store))
        assert [await runtime.send_message(Add(a), COUNTER) for a in (2, 3)] == [2, 5]
    stored = await store.load(COUNTER)
    assert stored.materialize() == {
        "total": 5,
        "entries": [{"amount": 2, "note": "+2"}, {"amount": 3, "note": "+3"}],
        "owner": None,
    }
    async with open_runtime() as runtime:
        agents: list[LedgerAgent] = []

        def make() -> LedgerAgent:
            agents.append(LedgerAgent(store))
            return agents[-1]

        await LedgerAgent.register(runtime, "counter", make)
        assert await runtime.send_message(Add(4), COUNTER) == 9
        assert agents[0].state == Ledger(9, [Entry(2, "+2"), Entry(3, "+3"), Entry(4, "+4")])
        assert await runtime.agent_save_state(COUNTER) == {
            "total": 9,
            "entries": [
                {"amount": 2, "note": "+2"},
                {"amount": 3, "note": "+3"},
                {"amount": 4, "note": "+4"},
            ],
            "owner": None,
        }
        with pytest.raises(StateError, match="not the Ledger initial_state"):
            await runtime.send_message(Add(1, "raise"), COUNTER)


async def test_a_stored_state_that_does_not_fit_the_class_is_refused_precisely() -> None:
    store = MemoryStateStore()
    await store.commit(COUNTER, 0, Snapshot({"total": "many", "entries": []}))
    async with open_runtime() as runtime:
        await LedgerAgent.register(runtime, "counter", lambda: LedgerAgent(store))
        with pytest.raises(StateError, match="does not fit Ledger"):
            await runtime.send_message(Add(1), COUNTER)
