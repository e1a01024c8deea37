"""``agentwire subscriptions add / remove``: subscriptions the gateway keeps for operators."""

from __future__ import annotations

import json
import pathlib
from collections.abc import AsyncIterator

import pytest
import trio
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from agentwire import Gateway, WorkerRuntime, open_gateway, open_worker
from agentwire._proto import agent_worker_pb2 as pb
from agentwire._transport import open_channel
from agentwire._wire import OPERATOR_ADD_SUBSCRIPTION_METHOD, SERVICE_PREFIX
from agentwire.security import AccessFileAuthenticator
from tests.operator.agents import RECEIVED, setup
from tests.operator.cli import agentwire

OPS_TOKEN = "operator-token-0123456789"
WORKER_TOKEN = "worker-token-0123456789ab"
NOSUB_TOKEN = "no-subscribe-0123456789ab"
OTHER_TOKEN = "other-operator-0123456789"


async def _publish(gateway: Gateway, topic: str, name: str, *token: str) -> None:
    """``agentwire publish`` a Greet; it returns once the gateway has routed it."""
    done = await agentwire(
        "publish", *token, "--gateway", gateway.address, topic, "--type", "Greet", "--json",
        json.dumps({"name": name}),
    )  # fmt: skip
    assert done.status == 0, done.err


async def _received_after(start: int, sentinel: str, gateway: Gateway, *token: str) -> list[str]:
    """The names the greeter received since *start*, up to a sentinel event
    published to its own ``greetings`` subscription after what came before
    (one worker stream: the events arrive in the order the gateway routed them)."""
    await _publish(gateway, "greetings/sentinel", sentinel, *token)
    with trio.fail_after(10):
        while sentinel not in [name for _, _, name in RECEIVED.items[start:]]:
            await RECEIVED.wait_for(len(RECEIVED.items) + 1)
    return [name for _, _, name in RECEIVED.items[start:]]


async def test_an_added_subscription_outlives_the_command_until_removed(
    gateway: Gateway, greeter: WorkerRuntime
) -> None:
    start = len(RECEIVED.items)
    added = await agentwire(
        "subscriptions", "add", "--gateway", gateway.address, "--type", "orders", "greeter"
    )
    assert added.status == 0, added.err
    subscription_id = added.out.strip()
    assert subscription_id
    assert added.out.count("\n") == 1
    # The command has exited (its connection is gone); the gateway still routes.
    await _publish(gateway, "orders/o1", "ada")
    with trio.fail_after(10):
        await RECEIVED.wait_for(start + 1)
    # The agent gets it as a direct message: its own subscriptions do not hold it.
    assert RECEIVED.items[start] == ("greeter:orders", "o1", "ada")

    removed = await agentwire(
        "subscriptions", "remove", "--gateway", gateway.address, subscription_id
    )
    assert removed.status == 0, removed.err
    assert removed.out == f"removed {subscription_id}\n"
    await _publish(gateway, "orders/o2", "bob")
    assert await _received_after(start, "after-remove", gateway) == ["ada", "after-remove"]


async def test_a_prefix_subscription_with_an_id_reaches_the_agent_of_the_topic_source(
    gateway: Gateway, greeter: WorkerRuntime
) -> None:
    start = len(RECEIVED.items)
    added = await agentwire(
        "subscriptions", "add", "--gateway", gateway.address, "--type-prefix", "shop.",
        "greeter", "--id", "shop-events", "--json",
    )  # fmt: skip
    assert added.status == 0, added.err
    assert json.loads(added.out) == {
        "id": "shop-events",
        "agent_type": "greeter",
        "topic_type_prefix": "shop.",
    }
    await _publish(gateway, "shop.refunds/r7", "cy")
    with trio.fail_after(10):
        await RECEIVED.wait_for(start + 1)
    assert RECEIVED.items[start] == ("greeter:shop.refunds", "r7", "cy")
    removed = await agentwire(
        "subscriptions", "remove", "shop-events", "--json", "--gateway", gateway.address
    )
    assert removed.status == 0, removed.err
    assert json.loads(removed.out) == {"removed": "shop-events"}


async def test_list_and_status_show_operator_made_subscriptions(
    gateway: Gateway, greeter: WorkerRuntime
) -> None:
    added = await agentwire(
        "subscriptions", "--gateway", gateway.address, "add", "--type", "audits", "greeter",
        "--id", "audit-1",
    )  # fmt: skip
    assert added.status == 0, added.err
    listed = await agentwire("subscriptions", "--gateway", gateway.address, "--json")
    assert listed.status == 0, listed.err
    assert {"id": "audit-1", "agent_type": "greeter", "topic_type": "audits"} in json.loads(
        listed.out
    )
    text = await agentwire("subscriptions", "--gateway", gateway.address)
    assert "audits -> greeter  (audit-1)" in text.out
    status = await agentwire("status", "--gateway", gateway.address, "--json")
    clients = {c["client_id"]: c for c in json.loads(status.out)["clients"]}
    assert clients["agentwire-operator"]["subscriptions"] == 1


async def test_an_equal_subscription_is_refused_in_one_line(
    gateway: Gateway, greeter: WorkerRuntime
) -> None:
    args = ("subscriptions", "add", "--gateway", gateway.address, "--type", "orders")
    first = await agentwire(*args, "greeter", "--id", "s1")
    assert first.status == 0, first.err
    for again in (("greeter", "--id", "s1"), ("greeter", "--id", "s2")):
        refused = await agentwire(*args, *again)
        assert refused.status == 1
        assert refused.out == ""
        assert refused.err.startswith("agentwire subscriptions add: ")
        assert "already exists" in refused.err
        assert refused.err.count("\n") == 1
    # The worker's own subscription is a row like any other.
    own = await agentwire(
        "subscriptions", "add", "--gateway", gateway.address, "--type", "greetings", "greeter"
    )
    assert own.status == 1
    assert "already exists" in own.err


async def test_removing_an_unknown_id_is_one_line_and_exit_1(gateway: Gateway) -> None:
    done = await agentwire("subscriptions", "remove", "--gateway", gateway.address, "nope")
    assert done.status == 1
    assert done.err == "agentwire subscriptions remove: the gateway answered NOT_FOUND: " \
        "there is no subscription with the id 'nope'\n"  # fmt: skip


@pytest.mark.parametrize(
    "args",
    [
        ("add", "greeter"),  # neither --type nor --type-prefix
        ("add", "--type", "a", "--type-prefix", "b", "greeter"),
        ("add", "--type", "orders"),  # no agent type
        ("add", "--type", "orders", "no such type"),
        ("add", "--type", "bad topic!", "greeter"),
        ("remove",),
    ],
)
async def test_bad_arguments_exit_2(gateway: Gateway, args: tuple[str, ...]) -> None:
    done = await agentwire("subscriptions", *args, "--gateway", gateway.address)
    assert done.status == 2
    assert done.out == ""
    assert gateway.statistics().subscriptions == 0


async def test_no_client_may_act_as_the_operator_client(
    gateway: Gateway, greeter: WorkerRuntime
) -> None:
    added = await agentwire(
        "subscriptions", "add", "--gateway", gateway.address, "--type", "orders", "greeter"
    )
    assert added.status == 0, added.err
    request = pb.RemoveSubscriptionRequest(id=added.out.strip()).SerializeToString()
    async with open_channel(gateway.address) as channel:
        for client_id in ("agentwire-operator", "agentwire-operator/ops"):
            with pytest.raises(GRPCError) as refused:
                await channel.unary(
                    SERVICE_PREFIX + "RemoveSubscription",
                    request,
                    metadata=(("client-id", client_id),),
                )
            assert refused.value.status is Status.PERMISSION_DENIED
            assert "reserved for the gateway's own operator client" in str(refused.value.message)
    listed = await agentwire("subscriptions", "--gateway", gateway.address, "--json")
    assert added.out.strip() in [s["id"] for s in json.loads(listed.out)]


# -- with an access file ------------------------------------------------------------------------


@pytest.fixture
async def secured(tmp_path: pathlib.Path) -> AsyncIterator[Gateway]:
    access = tmp_path / "access.toml"
    access.write_text(
        f'[principals.ops]\ntoken = "{OPS_TOKEN}"\nsubscribe = ["orders"]\ncall = ["greeter"]\n'
        f'publish = ["orders", "greetings"]\n'
        f'[principals.other]\ntoken = "{OTHER_TOKEN}"\nsubscribe = ["*"]\n'
        f'[principals.nosub]\ntoken = "{NOSUB_TOKEN}"\npublish = ["*"]\n'
        f'[principals.worker]\ntoken = "{WORKER_TOKEN}"\nregister = ["greeter"]\n'
        f'subscribe = ["greetings"]\n'
    )
    async with open_gateway(
        "127.0.0.1:0", startup_grace=0, authenticator=AccessFileAuthenticator(access)
    ) as gw:
        yield gw


@pytest.fixture
async def secured_greeter(secured: Gateway) -> AsyncIterator[WorkerRuntime]:
    async with open_worker(secured.address, token=WORKER_TOKEN) as runtime:
        await setup(runtime)
        yield runtime


async def test_adding_needs_the_subscribe_right(
    secured: Gateway, secured_greeter: WorkerRuntime
) -> None:
    add = ("subscriptions", "add", "--gateway", secured.address, "greeter")
    refused = await agentwire(*add, "--type", "orders", "--token", NOSUB_TOKEN)
    assert refused.status == 1
    assert "PERMISSION_DENIED" in refused.err
    assert "'subscribe' right" in refused.err
    assert refused.err.count("\n") == 1
    outside = await agentwire(*add, "--type", "refunds", "--token", OPS_TOKEN)
    assert outside.status == 1
    assert "'subscribe' right allows: orders" in outside.err
    # Its events would be messages to that agent type: that needs the call right.
    uncallable = await agentwire(
        "subscriptions", "add", "--gateway", secured.address, "auditor", "--type", "orders",
        "--token", OPS_TOKEN,
    )  # fmt: skip
    assert uncallable.status == 1
    assert "'call' right allows: greeter" in uncallable.err
    assert secured.statistics().subscriptions == 2  # the worker's two


async def test_an_operator_sees_and_removes_only_its_own(
    secured: Gateway, secured_greeter: WorkerRuntime
) -> None:
    start = len(RECEIVED.items)
    ops, other = ("--token", OPS_TOKEN), ("--token", OTHER_TOKEN)
    added = await agentwire(
        "subscriptions", "add", "--gateway", secured.address, "--type", "orders", "greeter",
        "--id", "ops-orders", *ops,
    )  # fmt: skip
    assert added.status == 0, added.err
    await _publish(secured, "orders/o1", "ada", *ops)
    with trio.fail_after(10):
        await RECEIVED.wait_for(start + 1)
    assert RECEIVED.items[start] == ("greeter:orders", "o1", "ada")

    mine = await agentwire("subscriptions", "--gateway", secured.address, "--json", *ops)
    assert json.loads(mine.out) == [
        {"id": "ops-orders", "agent_type": "greeter", "topic_type": "orders"}
    ]
    theirs = await agentwire("subscriptions", "--gateway", secured.address, "--json", *other)
    assert json.loads(theirs.out) == []
    refused = await agentwire(
        "subscriptions", "remove", "--gateway", secured.address, "ops-orders", *other
    )
    assert refused.status == 1
    assert "NOT_FOUND" in refused.err
    assert "agentwire-operator" not in refused.err
    removed = await agentwire(
        "subscriptions", "remove", "--gateway", secured.address, "ops-orders", *ops
    )
    assert removed.status == 0, removed.err
    assert secured.statistics().subscriptions == 2


async def test_concurrent_first_subscriptions_share_one_operator_client(gateway: Gateway) -> None:
    def request(topic: str) -> bytes:
        sub = pb.Subscription(
            id=topic, typeSubscription=pb.TypeSubscription(topic_type=topic, agent_type="x")
        )
        return pb.AddSubscriptionRequest(subscription=sub).SerializeToString()

    async with open_channel(gateway.address) as channel, trio.open_nursery() as nursery:
        for topic in ("t1", "t2", "t3"):
            nursery.start_soon(channel.unary, OPERATOR_ADD_SUBSCRIPTION_METHOD, request(topic))
    assert sorted(s.id for s in gateway._hub.subscriptions()) == ["t1", "t2", "t3"]
    assert [c for c in gateway._hub.clients() if c[0] == "agentwire-operator"] == [
        ("agentwire-operator", (), 3, True)
    ]
