"""The gateway's state service on a hub, without sockets: it answers each
request once, refuses at once what does not fit its queue, and keeps serving
however long it runs (it registers nothing, so nothing of it expires)."""

from __future__ import annotations

import attrs
import trio
import trio.testing

from agentwire import AgentId
from agentwire._gateway._hub import Connection, GatewayConfig, open_hub
from agentwire._gateway._routing import ConnKind
from agentwire._gateway._state import StateService, serve_state_service
from agentwire._proto import agent_worker_pb2 as pb
from agentwire._proto import agentwire_state_pb2 as spb
from agentwire._security import AccessGuard
from agentwire._wire import STATE_DESTINATION
from agentwire.state import Change, MemoryStateStore, Snapshot, StoredState
from agentwire.state._sync import sync_of

AGENT = AgentId("counter", "c")


def request(rpc_id: str, version: int) -> bytes:
    update = sync_of(AGENT, version, Snapshot({"n": version}))
    message = pb.ControlMessage(
        rpc_id=rpc_id, destination=STATE_DESTINATION, respond_to="clientid=worker"
    )
    message.rpcMessage.Pack(spb.StateSyncRequest(state_updates=[update]))
    return message.SerializeToString()


async def answer(conn: Connection) -> tuple[str, spb.StateSyncResponse]:
    message = pb.ControlMessage.FromString(await conn.from_gateway.receive())
    response = spb.StateSyncResponse()
    assert message.rpcMessage.Unpack(response)
    return message.rpc_id, response


async def test_the_service_serves_after_the_registration_grace_has_long_passed(
    autojump_clock: trio.abc.Clock,
) -> None:
    store = MemoryStateStore()
    async with open_hub(GatewayConfig(registration_grace=1.0)) as hub, trio.open_nursery() as n:
        await n.start(serve_state_service, hub, AccessGuard(), store)
        await trio.sleep(3600)
        async with hub.connect("worker", ConnKind.CONTROL) as conn:
            await conn.send(request("r1", 1))
            assert await answer(conn) == ("r1", spb.StateSyncResponse(states=[sync(1)]))
        n.cancel_scope.cancel()
    assert (await store.load(AGENT)).version == 1


def sync(version: int) -> spb.StateSync:
    return spb.StateSync(agent_id=str(AGENT), version=version)


@attrs.define
class Blocking:
    """A store whose commits wait until ``release`` is set."""

    release: trio.Event = attrs.Factory(trio.Event)
    inner: MemoryStateStore = attrs.Factory(MemoryStateStore)

    async def load(self, agent_id: AgentId) -> StoredState:
        return await self.inner.load(agent_id)

    async def commit(self, agent_id: AgentId, base_version: int, change: Change) -> int:
        await self.release.wait()
        return await self.inner.commit(agent_id, base_version, change)


async def test_a_request_beyond_the_queue_is_refused_at_once_and_the_others_are_served() -> None:
    store = Blocking()
    with trio.fail_after(30):  # a hang guard, never a synchronisation
        await serve_with_a_queue_of_one(store)


async def serve_with_a_queue_of_one(store: Blocking) -> None:
    async with open_hub() as hub, trio.open_nursery() as nursery:
        service: StateService = await nursery.start(
            lambda task_status: serve_state_service(
                hub, AccessGuard(), store, max_requests=1, max_concurrency=1,
                task_status=task_status,
            )
        )  # fmt: skip
        async with hub.connect("worker", ConnKind.CONTROL) as conn:
            await conn.send(request("served", 1))
            await trio.testing.wait_all_tasks_blocked()  # the one server waits in the store
            await conn.send(request("queued", 2))
            await conn.send(request("refused", 3))
            rpc_id, refusal = await answer(conn)
            assert rpc_id == "refused"
            assert refusal.error_kind == "unavailable"
            assert "1 requests waiting" in refusal.error
            store.release.set()
            assert await answer(conn) == ("served", spb.StateSyncResponse(states=[sync(1)]))
            assert await answer(conn) == ("queued", spb.StateSyncResponse(states=[sync(2)]))
        assert (service.served, service.refused) == (2, 1)
        nursery.cancel_scope.cancel()
