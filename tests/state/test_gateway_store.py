"""The gateway's state store: agents registered without a store keep their
state in it through their worker's control channel; what it answers when it
refuses a write, when there is none, and the ``--state-store`` option."""

from __future__ import annotations

import json
import pathlib
from typing import Any

import pytest
import trio
from hypothesis import given, settings
from jsonpointer import JsonPointer  # type: ignore[import-untyped,unused-ignore]

from agentwire import (
    AgentId,
    open_gateway,
    open_runtime,
    open_worker,
    serializers_for_type,
)
from agentwire._cli import build_parser
from agentwire._proto import agent_worker_pb2 as pb
from agentwire._proto import agentwire_state_pb2 as spb
from agentwire._wire import STATE_DESTINATION
from agentwire.security import AccessFileAuthenticator
from agentwire.state import (
    MemoryStateStore,
    Snapshot,
    StateConflictError,
    StateError,
    StateStoreUnavailableError,
    open_sqlite_store,
)
from agentwire.state._log import StateLog, StateTracker
from agentwire.state._remote import GatewayStateStore
from agentwire.state._stores import open_state_store
from agentwire.state._sync import stored_of, syncs_of
from tests.redis_server import RedisProcess

from .strategies import histories
from .test_failover import COUNTER, GUARD, Count, Increment, SharedCounter, Trap

DISARMED = Trap(0, "before-commit", armed=False)


async def test_an_agent_without_a_store_keeps_its_state_in_the_gateways() -> None:
    store = MemoryStateStore()
    with trio.fail_after(GUARD):
        async with (
            open_gateway(state_store=store) as gateway,
            open_worker(gateway.address) as runtime,
        ):
            await SharedCounter.register(
                runtime, "counter", lambda: SharedCounter("w", None, DISARMED)
            )
            runtime.add_message_serializer(serializers_for_type(Increment))
            runtime.add_message_serializer(serializers_for_type(Count))
            for _ in range(3):
                await runtime.send_message(Increment(), COUNTER)
            stored = await store.load(COUNTER)
            # the service holds one control connection of the gateway
            assert gateway.statistics().control_connections == 2
    assert stored.version == 3
    assert stored.materialize() == {"count": 3}


async def test_an_agent_without_a_store_on_a_gateway_without_one_fails_its_caller() -> None:
    with trio.fail_after(GUARD):
        async with open_gateway() as gateway, open_worker(gateway.address) as runtime:
            await SharedCounter.register(
                runtime, "counter", lambda: SharedCounter("w", None, DISARMED)
            )
            runtime.add_message_serializer(serializers_for_type(Increment))
            runtime.add_message_serializer(serializers_for_type(Count))
            with pytest.raises(StateStoreUnavailableError) as caught:
                await runtime.send_message(Increment(), COUNTER)
    # the gateway's own answer, not the end of a wait
    assert "no control channel for destination 'clientid=agentwire-state'" in str(caught.value)


async def test_an_agent_without_a_store_needs_a_worker() -> None:
    async with open_runtime() as runtime:
        await SharedCounter.register(runtime, "counter", lambda: SharedCounter("w", None, DISARMED))
        with pytest.raises(StateError, match="must run on an agentwire worker"):
            await runtime.send_message(Increment(), COUNTER)


async def test_a_stale_write_through_the_gateway_raises_a_conflict_with_the_current_version() -> (
    None
):
    store = MemoryStateStore()
    await store.commit(COUNTER, 0, Snapshot({"count": 7}))
    await store.commit(COUNTER, 1, Snapshot({"count": 8}))
    with trio.fail_after(GUARD):
        async with open_gateway(state_store=store) as gateway, open_worker(gateway.address) as rt:
            remote = GatewayStateStore(rt._worker.link)
            with pytest.raises(StateConflictError) as caught:
                await remote.commit(COUNTER, 1, Snapshot({"count": 9}))
            assert await remote.commit(COUNTER, 2, Snapshot({"count": 9})) == 3
    assert (caught.value.base_version, caught.value.current_version) == (1, 2)
    assert (await store.load(COUNTER)).materialize() == {"count": 9}


async def test_a_malformed_update_is_refused_to_its_sender_and_the_service_goes_on() -> None:
    store = MemoryStateStore()
    with trio.fail_after(GUARD):
        async with open_gateway(state_store=store) as gateway, open_worker(gateway.address) as rt:
            link = rt._worker.link
            for update in (
                spb.StateSync(agent_id="no agent", version=1, state_delta="{}", snapshot=True),
                spb.StateSync(agent_id="counter/c", version=1, state_delta="[1]", snapshot=True),
                spb.StateSync(agent_id="counter/c", version=2, state_delta='{"op": 1}'),
            ):
                request = spb.StateSyncRequest(state_updates=[update])
                answer = spb.StateSyncResponse()
                assert (await link.control_call(STATE_DESTINATION, request)).Unpack(answer)
                assert answer.error_kind == "invalid"
                assert not answer.states
            remote = GatewayStateStore(link)
            assert await remote.commit(COUNTER, 0, Snapshot({"count": 1})) == 1
            not_a_request = pb.LoadStateRequest()
            reply = await link.control_call(STATE_DESTINATION, not_a_request)
            assert reply.Unpack(answer)
            assert answer.error_kind == "unavailable"
            assert "not a StateSyncRequest" in answer.error
    assert (await store.load(COUNTER)).version == 1


async def test_a_gateway_state_store_needs_no_authenticator(tmp_path: pathlib.Path) -> None:
    access = tmp_path / "access.toml"
    access.write_text("")
    with pytest.raises(ValueError, match="cannot be combined with an authenticator"):
        async with open_gateway(
            state_store="memory", authenticator=AccessFileAuthenticator(access)
        ):
            pass


@pytest.mark.parametrize("spec", ["memory", "sqlite:state.db", "redis://127.0.0.1:1/0"])
def test_the_gateway_command_takes_a_state_store(spec: str) -> None:
    args = build_parser().parse_args(["gateway", "--state-store", spec])
    assert args.state_store == spec


def test_the_gateway_command_refuses_an_unknown_state_store(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["gateway", "--state-store", "postgres://db"])
    assert "a state store is 'memory', 'sqlite:PATH' or a redis://" in capsys.readouterr().err


async def test_a_state_store_spec_opens_that_store(tmp_path: pathlib.Path, redis_url: str) -> None:
    agent = AgentId("counter", "spec")
    for spec in ("memory", f"sqlite:{tmp_path / 'state.db'}", redis_url):
        async with open_state_store(spec) as store:
            assert await store.commit(agent, 0, Snapshot({"n": 1})) == 1
    async with open_sqlite_store(tmp_path / "state.db") as sqlite:
        assert (await sqlite.load(agent)).version == 1


@given(states=histories())
@settings(max_examples=50, deadline=None)
def test_what_a_store_holds_travels_as_state_syncs_and_back(states: list[dict[str, Any]]) -> None:
    log = StateLog(str(COUNTER))
    tracker = StateTracker(snapshot_every=5)
    for state in states:
        prepared = tracker.prepare(state)
        if prepared is not None:
            tracker.committed_as(prepared[0], prepared[1], log.write(tracker.version, prepared[0]))
    syncs = syncs_of(COUNTER, log.stored)
    wire = [spb.StateSync.FromString(sync.SerializeToString()) for sync in syncs]
    assert stored_of(wire) == log.stored
    assert [s.snapshot for s in syncs] == [True] + [False] * len(log.stored.deltas)
    for sync in syncs[1:]:
        patch = json.loads(sync.state_delta)
        touched = {JsonPointer(op["path"]).parts[0] for op in patch}
        assert sorted(sync.affected_keys) == sorted(touched)


def test_state_syncs_whose_versions_do_not_follow_are_refused() -> None:
    first = spb.StateSync(agent_id="counter/c", version=1, state_delta="{}", snapshot=True)
    gap = spb.StateSync(agent_id="counter/c", version=3, state_delta="[]")
    with pytest.raises(StateError, match="do not follow"):
        stored_of([first, gap])


async def test_a_redis_outage_behind_the_gateway_fails_the_writer_until_it_is_back(
    redis_process: RedisProcess,
) -> None:
    with trio.fail_after(GUARD):
        async with (
            open_gateway(state_store=redis_process.url) as gateway,
            open_worker(gateway.address) as runtime,
        ):
            await SharedCounter.register(
                runtime, "counter", lambda: SharedCounter("w", None, DISARMED)
            )
            runtime.add_message_serializer(serializers_for_type(Increment))
            runtime.add_message_serializer(serializers_for_type(Count))
            assert await runtime.send_message(Increment(), COUNTER) == Count("w", 1)
            redis_process.stop()
            unavailable = (
                r"the gateway's state store failed: the Redis state store .* is unavailable"
            )
            with pytest.raises(StateStoreUnavailableError, match=unavailable):
                await runtime.send_message(Increment(), COUNTER)
            redis_process.start()  # empty: persistence is off, version 1 is gone
            with pytest.raises(StateConflictError) as caught:
                await runtime.send_message(Increment(), COUNTER)
            assert caught.value.current_version == 0
            # the agent reloaded (nothing stored: its initial state) and goes on
            assert await runtime.send_message(Increment(), COUNTER) == Count("w", 1)
