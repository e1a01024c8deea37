"""Authentication and rights at the gateway: tokens, principals, and
identities that cannot be borrowed."""

from __future__ import annotations

import pathlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, ClassVar

import pytest
import trio
from grpclib.const import Status
from grpclib.exceptions import GRPCError

import agentwire as aw
from agentwire import (
    AgentId,
    GatewayRejectedError,
    TopicId,
    TypeSubscription,
    open_gateway,
    open_worker,
    serializers_for_type,
)
from agentwire._gateway import Gateway
from agentwire._proto import agent_worker_pb2 as pb
from agentwire._transport import Channel, open_channel
from agentwire.security import (
    AccessFileAuthenticator,
    GatewayRefusedError,
    PermissionDeniedError,
    bearer_metadata,
)

from ..gateway.helpers import control
from .conftest import Reply, Shout, Shouter

GUARD = 20  # seconds: a hang guard, never a synchronisation
P = "/agents.AgentRpc/"
ALICE = "alice-token-0123456789"
MALLORY = "mallory-token-0123456789"
ACCESS = f"""
[principals.alice]
token = "{ALICE}"
register = ["shouter", "alice.*"]
publish = ["news"]
subscribe = ["news"]

[principals.mallory]
token = "{MALLORY}"
register = ["*"]
subscribe = ["*"]
publish = ["*"]
call = ["alice.public"]
"""


@pytest.fixture
async def gateway(tmp_path: pathlib.Path) -> AsyncIterator[Gateway]:
    path = tmp_path / "access.toml"
    path.write_text(ACCESS)
    async with open_gateway("127.0.0.1:0", authenticator=AccessFileAuthenticator(path)) as gw:
        yield gw


@pytest.fixture
async def channel(gateway: Gateway) -> AsyncIterator[Channel]:
    async with open_channel(gateway.address) as ch:
        yield ch


def as_(token: str, client_id: str) -> tuple[tuple[str, str], ...]:
    return (("client-id", client_id), *bearer_metadata(token))


async def register(ch: Channel, token: str, client_id: str, agent_type: str) -> None:
    req = pb.RegisterAgentTypeRequest(type=agent_type).SerializeToString()
    await ch.unary(P + "RegisterAgent", req, metadata=as_(token, client_id))


async def subscribe(ch: Channel, token: str, client_id: str, sub_id: str) -> None:
    sub = pb.Subscription(
        id=sub_id, typeSubscription=pb.TypeSubscription(topic_type="news", agent_type="shouter")
    )
    req = pb.AddSubscriptionRequest(subscription=sub).SerializeToString()
    await ch.unary(P + "AddSubscription", req, metadata=as_(token, client_id))


async def subscription_ids(ch: Channel, token: str, client_id: str) -> list[str]:
    data = await ch.unary(P + "GetSubscriptions", b"", metadata=as_(token, client_id))
    return [s.id for s in pb.GetSubscriptionsResponse.FromString(data).subscriptions]


@pytest.mark.parametrize("metadata", [(), tuple(bearer_metadata("wrong-token-0123456789"))])
async def test_calls_without_a_valid_token_are_unauthenticated(
    channel: Channel, metadata: tuple[tuple[str, str], ...]
) -> None:
    with trio.fail_after(GUARD):
        with pytest.raises(GRPCError) as unary:
            await channel.unary(
                P + "GetSubscriptions", b"", metadata=(("client-id", "c"), *metadata)
            )
        async with channel.stream(P + "OpenChannel", metadata=(("client-id", "c"), *metadata)) as s:
            with pytest.raises(GRPCError) as stream:
                await s.receive()
    for info in (unary, stream):
        assert info.value.status is Status.UNAUTHENTICATED
        assert "wrong-token" not in (info.value.message or "")


async def test_a_worker_with_a_bad_token_stops_with_a_clear_error(gateway: Gateway) -> None:
    with trio.fail_after(GUARD), pytest.raises(GatewayRefusedError) as info:
        async with open_worker(gateway.address, token="wrong-token-0123456789"):
            await trio.sleep_forever()
    assert "UNAUTHENTICATED" in str(info.value)
    assert "wrong-token" not in str(info.value)


async def test_a_principal_registers_only_the_agent_types_it_may(
    channel: Channel, gateway: Gateway
) -> None:
    with trio.fail_after(GUARD):
        await register(channel, ALICE, "a1", "alice.worker")
        with pytest.raises(GRPCError) as info:
            await register(channel, ALICE, "a1", "payroll")
    assert info.value.status is Status.PERMISSION_DENIED
    assert info.value.message == (
        "principal 'alice' may not register agent type 'payroll' "
        "(its 'register' right allows: shouter, alice.*)"
    )
    assert gateway.access_statistics().denials == 1


async def test_an_identity_cannot_be_borrowed(channel: Channel) -> None:
    with trio.fail_after(GUARD):
        await register(channel, ALICE, "alice-1", "shouter")
        await subscribe(channel, ALICE, "alice-1", "alice-sub")
        # mallory cannot see alice's subscriptions, nor learn alice's client-id
        assert await subscription_ids(channel, MALLORY, "m1") == []
        assert await subscription_ids(channel, ALICE, "alice-1") == ["alice-sub"]
        with pytest.raises(GRPCError) as taken:
            await register(channel, MALLORY, "m1", "shouter")
        assert taken.value.status is Status.INVALID_ARGUMENT
        assert "alice-1" not in (taken.value.message or "")
        # mallory cannot act as alice's client-id
        for attempt in (
            register(channel, MALLORY, "alice-1", "mallory.x"),
            subscribe(channel, MALLORY, "alice-1", "m-sub"),
        ):
            with pytest.raises(GRPCError) as borrowed:
                await attempt
            assert borrowed.value.status is Status.PERMISSION_DENIED
        async with channel.stream(P + "OpenChannel", metadata=as_(MALLORY, "alice-1")) as s:
            with pytest.raises(GRPCError) as kick:
                await s.receive()
        assert kick.value.status is Status.PERMISSION_DENIED
        # nor remove alice's subscription: it looks like an unknown one
        req = pb.RemoveSubscriptionRequest(id="alice-sub").SerializeToString()
        with pytest.raises(GRPCError) as removal:
            await channel.unary(P + "RemoveSubscription", req, metadata=as_(MALLORY, "m1"))
        assert removal.value.status is Status.UNKNOWN
        assert await subscription_ids(channel, ALICE, "alice-1") == ["alice-sub"]


class Listener(aw.RoutedAgent):
    heard: ClassVar[list[str]] = []
    news: ClassVar[trio.Event]

    def __init__(self) -> None:
        super().__init__("listens")

    @aw.event
    async def hear(self, message: Reply, ctx: aw.MessageContext) -> None:
        Listener.heard.append(message.text)
        if message.text == "news":
            Listener.news.set()


async def test_workers_with_tokens_register_subscribe_call_and_publish_within_their_rights(
    gateway: Gateway,
) -> None:
    Listener.heard, Listener.news = [], trio.Event()
    with trio.fail_after(GUARD):
        async with (
            open_worker(gateway.address, token=ALICE) as alice,
            open_worker(gateway.address, token=MALLORY) as mallory,
        ):
            await Shouter.register(alice, "shouter", Shouter)
            await alice.add_subscription(TypeSubscription("news", "shouter"))
            with pytest.raises(GatewayRejectedError, match="PERMISSION_DENIED: principal 'alice'"):
                await alice.add_subscription(TypeSubscription("gossip", "shouter"))
            with pytest.raises(GatewayRejectedError, match="may not register agent type 'payroll'"):
                await Shouter.register(alice, "payroll", Shouter)
            # mallory may not call shouter: an error answer, not a hang
            with pytest.raises(PermissionDeniedError, match="'mallory' may not call agent type"):
                await mallory.send_message(Shout("x"), AgentId("shouter", "1"))
            # alice's own worker may
            alice.add_message_serializer(serializers_for_type(Reply))
            assert await alice.send_message(Shout("hi"), AgentId("shouter", "1")) == Reply("HI")
            # an event to a topic alice may not publish to is dropped at the gateway
            await Listener.register(mallory, "listener", Listener)
            for topic in ("news", "gossip"):
                await mallory.add_subscription(TypeSubscription(topic, "listener"))
            await alice.publish_message(Reply("gossip"), TopicId("gossip", "s"))
            await alice.publish_message(Reply("news"), TopicId("news", "s"))
            await Listener.news.wait()  # published after the gossip, on the same stream
    assert Listener.heard == ["news"]
    assert gateway.statistics().events_dropped == 1
    assert gateway.access_statistics().denials == 4


@asynccontextmanager
async def mallory_and_alice_control_streams(
    channel: Channel, gateway: Gateway
) -> AsyncIterator[tuple[Any, Any]]:
    """Control streams of mallory (client-id m1) and alice (a1), both attached."""
    async with (
        channel.stream(P + "OpenControlChannel", metadata=as_(MALLORY, "m1")) as mallory,
        channel.stream(P + "OpenControlChannel", metadata=as_(ALICE, "a1")) as alice,
    ):
        await gateway.wait_until(lambda s: s.control_connections == 2)
        yield mallory, alice


async def refusal(stream: Any) -> str:
    """The error of the SaveStateResponse *stream* receives next."""
    reply = pb.ControlMessage.FromString(await stream.receive() or b"")
    body = pb.SaveStateResponse()
    assert reply.rpcMessage.Unpack(body)
    return body.error


async def test_a_control_message_to_an_agent_needs_the_call_right(
    channel: Channel, gateway: Gateway
) -> None:
    with trio.fail_after(GUARD):
        async with mallory_and_alice_control_streams(channel, gateway) as (mallory, alice):
            await register(channel, ALICE, "a1", "shouter")
            await mallory.send(control("r1", "agentid=shouter/k", respond_to="clientid=m1"))
            assert "'mallory' may not call agent type 'shouter'" in await refusal(mallory)
            # alice's own request reaches her agent type's control channel
            own = control("r2", "agentid=shouter/k", respond_to="clientid=a1")
            await alice.send(own)
            assert await alice.receive() == own


async def test_a_control_request_to_another_principals_client_id_is_refused(
    channel: Channel, gateway: Gateway
) -> None:
    with trio.fail_after(GUARD):
        async with mallory_and_alice_control_streams(channel, gateway) as (mallory, alice):
            # A request straight to alice's worker, its error answer aimed at alice too.
            await mallory.send(control("r1", "clientid=a1", respond_to="clientid=a1"))
            error = await refusal(mallory)
            assert "'mallory' may not send a control request" in error
            assert "'call' right" in error
            assert "a1" not in error
            # An answer to alice's client-id still reaches her: the first thing she gets.
            answer = control("r0", "clientid=a1", save=False)
            await mallory.send(answer)
            assert await alice.receive() == answer
    assert gateway.access_statistics().denials == 1
