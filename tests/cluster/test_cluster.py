"""Three gateways on one Redis act as one host: agentwire workers spread over
them call and publish to each other, registrations and subscriptions are
checked cluster-wide, and a gateway that leaves takes its agent types along."""

from __future__ import annotations

import pytest
import trio
from grpclib.const import Status

from agentwire import (
    AgentId,
    DuplicateSubscriptionError,
    GatewayRejectedError,
    TopicId,
    TypeSubscription,
    WorkerRuntime,
    open_worker,
    serializers_for_type,
)
from agentwire._proto import agent_worker_pb2 as pb
from agentwire._transport import open_channel
from agentwire._wire import OPERATOR_ADD_SUBSCRIPTION_METHOD
from tests.operator.agents import RECEIVED, Greet, setup
from tests.worker.messages import Echo, Inbox, Ping, Pong

from .helpers import (
    GUARD,
    Stuck,
    call_stuck,
    cluster_gateway,
    converged,
    new_inbox,
    open_cluster,
    open_workers,
)


@pytest.fixture(autouse=True)
def fresh_inbox() -> Inbox:
    return new_inbox()


async def test_workers_on_three_gateways_call_and_publish_to_each_other(
    redis_url: str, fresh_inbox: Inbox
) -> None:
    with trio.fail_after(GUARD):
        async with open_cluster(redis_url, 3) as gateways:
            async with open_workers(gateways) as (a, b, c):
                for worker, name in ((a, "a"), (b, "b"), (c, "c")):
                    await Echo.register(worker, name, Echo)
                    worker.add_message_serializer(serializers_for_type(Pong))
                    await worker.add_subscription(TypeSubscription("news", name))
                await converged(gateways, agent_types=3, subscriptions=6)  # news + default
                assert await a.send_message(Ping("1"), AgentId("b", "k")) == Pong("b/k:1")
                assert await b.send_message(Ping("2"), AgentId("c", "k")) == Pong("c/k:2")
                assert await c.send_message(Ping("3"), AgentId("a", "k")) == Pong("a/k:3")
                await a.publish_message(Ping("hello"), TopicId("news", "s"))
                await fresh_inbox.wait_for(3)
                # Every subscriber got it once, on its own gateway: nothing loops back.
                await c.publish_message(Ping("bye"), TopicId("news", "s"))
                await fresh_inbox.wait_for(6)
            for gateway in gateways:
                assert gateway.cluster is not None
                assert gateway.cluster.statistics().peers == 2
    assert sorted((agent, text) for agent, text, _ in fresh_inbox.items) == [
        ("a/s", "bye"),
        ("a/s", "hello"),
        ("b/s", "bye"),
        ("b/s", "hello"),
        ("c/s", "bye"),
        ("c/s", "hello"),
    ]


async def test_an_agent_type_has_one_owner_in_the_whole_cluster(redis_url: str) -> None:
    with trio.fail_after(GUARD):
        async with open_cluster(redis_url, 2) as gateways, open_workers(gateways) as (a, b):
            await Echo.register(a, "echo", Echo)
            with pytest.raises(GatewayRejectedError) as info:
                await Echo.register(b, "echo", Echo)
            owner = a.statistics().client_id
            # AutoGen's text, naming the owning client on the other gateway.
            assert f"Agent type echo already registered with client {owner}." in str(info.value)


async def test_a_duplicate_subscription_is_refused_across_gateways(redis_url: str) -> None:
    with trio.fail_after(GUARD):
        async with open_cluster(redis_url, 2) as gateways, open_workers(gateways) as (a, b):
            await a.add_subscription(TypeSubscription("news", "echo"))
            with pytest.raises(DuplicateSubscriptionError, match="Subscription already exists"):
                await b.add_subscription(TypeSubscription("news", "echo"))


async def test_get_subscriptions_shows_the_whole_cluster(redis_url: str) -> None:
    with trio.fail_after(GUARD):
        async with open_cluster(redis_url, 3) as gateways, open_workers(gateways[:2]) as (a, b):
            await a.add_subscription(TypeSubscription("news", "a"))
            await b.add_subscription(TypeSubscription("sports", "b"))
            await converged(gateways, agent_types=0, subscriptions=2)
            async with open_worker(gateways[2].address) as c:
                seen = await c.gateway_subscriptions()
    assert sorted((s.typeSubscription.topic_type, s.typeSubscription.agent_type) for s in seen) == [
        ("news", "a"),
        ("sports", "b"),
    ]


async def test_a_gateway_that_shuts_down_takes_its_types_and_fails_requests_to_them(
    redis_url: str,
) -> None:
    Stuck.started = trio.Event()
    with trio.fail_after(GUARD):
        async with cluster_gateway(redis_url) as first, open_worker(first.address) as caller:
            leave = trio.Event()
            outcome: list[BaseException] = []

            async def second_gateway(*, task_status: trio.TaskStatus[None]) -> None:
                async with (
                    cluster_gateway(redis_url) as second,
                    open_worker(second.address) as server,
                ):
                    await Stuck.register(server, "stuck", Stuck)
                    task_status.started()
                    await leave.wait()

            async with trio.open_nursery() as nursery:
                await nursery.start(second_gateway)
                await first.wait_until(lambda s: s.agent_types == 1)
                nursery.start_soon(call_stuck, caller, outcome)
                await Stuck.started.wait()
                leave.set()
            await first.wait_until(lambda s: s.agent_types == 0 and s.rpcs_in_flight == 0)
    assert len(outcome) == 1


async def test_a_subscription_removed_through_another_gateway_is_gone_everywhere(
    redis_url: str,
) -> None:
    with trio.fail_after(GUARD):
        async with open_cluster(redis_url, 2) as gateways, open_workers(gateways[:1]) as (a,):
            subscription = TypeSubscription("news", "a")
            await a.add_subscription(subscription)
            await converged(gateways, agent_types=0, subscriptions=1)
            # Any client may remove any subscription (as AutoGen): what RemoveSubscription
            # of a client of the second gateway does.
            await gateways[1]._hub.unsubscribe("another-client", subscription.id)
            await converged(gateways, agent_types=0, subscriptions=0)
            assert await a.gateway_subscriptions() == []


async def test_a_peer_connection_the_hub_ends_is_opened_again(redis_url: str) -> None:
    with trio.fail_after(GUARD):
        async with open_cluster(redis_url, 2) as gateways, open_workers(gateways) as (a, b):
            await Echo.register(b, "echo", Echo)
            a.add_message_serializer(serializers_for_type(Pong))
            first = gateways[0]
            await first.wait_until(lambda s: s.agent_types == 1)
            node = first.cluster
            assert node is not None
            [peer] = node._peers.values()
            peer.abort(Status.UNAVAILABLE, "a slow consumer")  # what the hub does to one
            assert first.statistics().agent_types == 0
            await first.wait_until(lambda s: s.agent_types == 1)
            assert await a.send_message(Ping("x"), AgentId("echo", "k")) == Pong("echo/k:x")


async def test_an_operator_subscription_on_one_gateway_relays_events_published_on_any(
    redis_url: str,
) -> None:
    start = len(RECEIVED.items)
    subscription = pb.Subscription(
        id="ops-orders",
        typeSubscription=pb.TypeSubscription(topic_type="orders", agent_type="greeter"),
    )
    request = pb.AddSubscriptionRequest(subscription=subscription).SerializeToString()
    with trio.fail_after(GUARD):
        async with open_cluster(redis_url, 2) as gateways, open_workers(gateways) as (a, b):
            await setup(b)  # the greeter, on the second gateway
            async with open_channel(gateways[0].address) as channel:
                await channel.unary(OPERATOR_ADD_SUBSCRIPTION_METHOD, request)
            # greeter: its default and "greetings" subscriptions; the operator's
            await converged(gateways, agent_types=1, subscriptions=3)
            await a.publish_message(Greet("ada"), TopicId("orders", "o1"))
            await RECEIVED.wait_for(start + 1)
            await b.publish_message(Greet("bob"), TopicId("orders", "o2"))
            await RECEIVED.wait_for(start + 2)
    # Each once, as a direct message: the greeter's own subscriptions do not hold it.
    assert sorted(RECEIVED.items[start:]) == [
        ("greeter:orders", "o1", "ada"),
        ("greeter:orders", "o2", "bob"),
    ]


async def test_of_two_gateways_claiming_one_agent_type_at_once_exactly_one_wins(
    redis_url: str,
) -> None:
    outcomes: list[str] = []

    async def register(worker: WorkerRuntime) -> None:
        try:
            await Echo.register(worker, "echo", Echo)
            outcomes.append("registered")
        except GatewayRejectedError as exc:
            outcomes.append(str(exc))

    with trio.fail_after(GUARD):
        async with open_cluster(redis_url, 2) as gateways, open_workers(gateways) as workers:
            async with trio.open_nursery() as nursery:
                for worker in workers:
                    nursery.start_soon(register, worker)
            await converged(gateways, agent_types=1, subscriptions=1)
    assert len(outcomes) == 2
    assert "registered" in outcomes
    [refusal] = [o for o in outcomes if o != "registered"]
    assert "Agent type echo already registered with client" in refusal


async def test_a_busy_inbox_keeps_only_the_entries_of_its_last_deletes(redis_url: str) -> None:
    import coredis

    from agentwire._cluster._node import DELETE_EVERY

    with trio.fail_after(GUARD):
        async with (
            open_cluster(redis_url, 2) as (first, second),
            open_workers([first, second]) as (caller, server),
            coredis.Redis.from_url(redis_url) as redis,
        ):
            caller.add_message_serializer(serializers_for_type(Pong))
            await Echo.register(server, "far", Echo)
            await first.wait_until(lambda s: s.agent_types == 1)
            for i in range(4 * DELETE_EVERY):
                assert await caller.send_message(Ping(str(i)), AgentId("far", "k")) == Pong(
                    f"far/k:{i}"
                )
            for gateway in (first, second):
                assert gateway.cluster is not None
                inbox = f"{gateway.cluster.config.prefix}inbox:{gateway.cluster.id}"
                # What was read is deleted once DELETE_EVERY entries were (with the
                # next read); a read takes at most 64 more.
                assert await redis.xlen(inbox) < 2 * DELETE_EVERY
