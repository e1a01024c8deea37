"""``agentwire status`` on a clustered gateway, one with a state service and
one with shared agent types: each shows its subsystem."""

from __future__ import annotations

import json

import trio

from agentwire import AgentId, open_gateway, open_worker, serializers_for_type
from agentwire._operator._status import format_status
from agentwire.state import MemoryStateStore, Snapshot
from agentwire.state._remote import GatewayStateStore
from tests.cluster.helpers import cluster_gateway
from tests.operator.cli import agentwire
from tests.worker.messages import Echo, EchoBase, Inbox, Ping, Pong

GUARD = 30.0  # seconds: a hang guard, never a synchronisation


async def test_status_of_a_clustered_gateway_shows_the_cluster_and_counts_workers_only(
    redis_url: str,
) -> None:
    with trio.fail_after(GUARD):
        async with (
            cluster_gateway(redis_url) as first,
            cluster_gateway(redis_url) as second,
            open_worker(first.address),
        ):
            for gateway in (first, second):
                await gateway.wait_until(lambda s: s.cluster.peers == 1)
            as_json = await agentwire("status", "--gateway", first.address, "--json")
            text = await agentwire("status", "--gateway", first.address)
            other = await agentwire("status", "--gateway", second.address, "--json")
    assert as_json.status == text.status == other.status == 0, as_json.err + text.err
    statistics = json.loads(as_json.out)["statistics"]
    assert (statistics["data_connections"], statistics["peer_connections"]) == (1, 1)
    assert json.loads(other.out)["statistics"]["data_connections"] == 0
    cluster = statistics["cluster"]
    assert first.cluster is not None
    assert cluster["gateway_id"] == first.cluster.id
    assert (cluster["peers"], cluster["joined"], cluster["messages_lost"]) == (1, True, 0)
    assert f"cluster: gateway {cluster['gateway_id']}, 1 peers, Redis reachable" in text.out
    assert "  peer_connections: 1" in text.out


async def test_status_shows_the_state_service_and_the_shared_agent_types() -> None:
    EchoBase.inbox = Inbox()
    with trio.fail_after(GUARD):
        async with (
            open_gateway(
                "127.0.0.1:0", placement="hash", startup_grace=0, state_store=MemoryStateStore()
            ) as gateway,
            open_worker(gateway.address) as a,
            open_worker(gateway.address) as b,
            open_worker(gateway.address) as caller,
        ):
            await Echo.register(a, "shared", Echo)
            await Echo.register(b, "shared", Echo)
            caller.add_message_serializer(serializers_for_type(Pong))
            reply = await caller.send_message(Ping("hi"), AgentId("shared", "k"))
            assert reply == Pong("shared/k:hi")
            remote = GatewayStateStore(caller._worker.link)
            assert await remote.commit(AgentId("counter", "one"), 0, Snapshot({"n": 1})) == 1
            as_json = await agentwire("status", "--gateway", gateway.address, "--json")
            text = await agentwire("status", "--gateway", gateway.address)
    assert as_json.status == text.status == 0, as_json.err + text.err
    statistics = json.loads(as_json.out)["statistics"]
    assert statistics["cluster"] is None
    assert statistics["state"] == {"served": 1, "failed": 0, "refused": 0, "waiting": 0}
    shared = statistics["placement"]["shared"]
    assert (shared["workers"], sum(shared["keys"].values()), shared["draining"]) == (2, 1, [])
    assert statistics["placed_agents"] == 1
    assert "state service:\n  failed: 0\n  refused: 0\n  served: 1\n  waiting: 0" in text.out
    assert "shared agent types: 1\n  shared  workers: 2  agents: 1" in text.out


def test_the_text_status_names_draining_workers_and_an_unreachable_redis() -> None:
    status = {
        "statistics": {
            "clients": 1,
            "cluster": {"gateway_id": "g1", "peers": 0, "joined": False, "joins": 2},
            "placement": {"shared": {"workers": 2, "keys": {"w1": 3, "w2": 0}, "draining": ["w2"]}},
        }
    }
    text = format_status(status)
    assert "cluster: gateway g1, 0 peers, Redis UNREACHABLE\n  joins: 2" in text
    assert "  shared  workers: 2  agents: 3  draining: w2\n    w1: 3\n    w2: 0" in text
    assert "  clients: 1" in text
    assert "cluster: {" not in text


async def test_status_lists_the_other_gateways_of_a_cluster_apart_from_its_clients(
    redis_url: str,
) -> None:
    EchoBase.inbox = Inbox()
    with trio.fail_after(GUARD):
        async with (
            cluster_gateway(redis_url) as first,
            cluster_gateway(redis_url) as second,
            open_worker(first.address) as near,
            open_worker(second.address) as far,
        ):
            await Echo.register(far, "far-echo", Echo)
            await first.wait_until(lambda s: s.agent_types == 1)
            near_id = near.statistics().client_id
            as_json = await agentwire("status", "--gateway", first.address, "--json")
            text = await agentwire("status", "--gateway", first.address)
    assert as_json.status == text.status == 0, as_json.err + text.err
    status = json.loads(as_json.out)
    assert [client["client_id"] for client in status["clients"]] == [near_id]
    assert len(status["clients"]) == status["statistics"]["clients"]
    [gateway] = status["gateways"]
    assert second.cluster is not None
    assert gateway["client_id"].endswith(second.cluster.id)
    assert gateway["agent_types"] == ["far-echo"]
    assert "clients: 1\n" in text.out
    assert "other gateways of the cluster: 1\n" in text.out
