"""What open_worker puts on the wire, checked against a recording fake gateway."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio

from agentwire import (
    AgentId,
    MessageContext,
    RoutedAgent,
    default_subscription,
    open_worker,
    rpc,
    serializers_for_type,
)
from agentwire._proto import agent_worker_pb2 as pb
from agentwire._worker._protocol import (
    ADD_SUBSCRIPTION,
    OPEN_CHANNEL,
    OPEN_CONTROL_CHANNEL,
    REGISTER_AGENT,
)

from .fakes import FakeChannel
from .messages import Ping, Pong


@default_subscription
class Greeter(RoutedAgent):
    def __init__(self) -> None:
        super().__init__("greets")

    @rpc
    async def greet(self, message: Ping, ctx: MessageContext) -> Pong:
        return Pong("hi " + message.text)


def fake_connect(channel: FakeChannel):  # type: ignore[no-untyped-def]
    @asynccontextmanager
    async def connect() -> AsyncIterator[FakeChannel]:
        yield channel

    return connect


async def test_registration_follows_autogens_call_order() -> None:
    channel = FakeChannel()
    async with open_worker("fake:1", connect=fake_connect(channel)) as runtime:
        await Greeter.register(runtime, "greeter", Greeter)
        client_id = runtime.statistics().client_id
    unary = [c for c in channel.calls if c.path not in (OPEN_CHANNEL, OPEN_CONTROL_CHANNEL)]
    assert channel.calls[0].path == OPEN_CHANNEL
    assert [c.path for c in unary] == [REGISTER_AGENT, ADD_SUBSCRIPTION, ADD_SUBSCRIPTION]
    assert pb.RegisterAgentTypeRequest.FromString(unary[0].request or b"").type == "greeter"
    first = pb.AddSubscriptionRequest.FromString(unary[1].request or b"").subscription
    second = pb.AddSubscriptionRequest.FromString(unary[2].request or b"").subscription
    assert first.WhichOneof("subscription") == "typeSubscription"
    assert (first.typeSubscription.topic_type, first.typeSubscription.agent_type) == (
        "default",
        "greeter",
    )
    assert second.typePrefixSubscription.topic_type_prefix == "greeter:"
    assert all(c.metadata == {"client-id": client_id} for c in channel.calls)


async def test_rpc_request_bytes_match_autogen() -> None:
    """Request id aside, the envelope is what AutoGen 0.7.5 sends (WIRE.md 2.12):
    JSON payload, no source field when there is no sender, no method."""
    channel = FakeChannel()
    async with (
        open_worker("fake:1", connect=fake_connect(channel)) as runtime,
        trio.open_nursery() as nursery,
    ):
        runtime.add_message_serializer(serializers_for_type(Ping))
        nursery.start_soon(runtime.send_message, Ping("nosender"), AgentId("echo", "k0"))
        server = channel.end_for(OPEN_CHANNEL)
        request = pb.Message.FromString(await server.receive()).request
        nursery.cancel_scope.cancel()
    assert not request.HasField("source")
    assert request.method == ""
    assert request.target == pb.AgentId(type="echo", key="k0")
    assert request.payload == pb.Payload(
        data_type="Ping", data_content_type="application/json", data=b'{"text": "nosender"}'
    )
