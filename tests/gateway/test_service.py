"""The AgentRpc service over real sockets, driven by agentwire's transport client."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator

import pytest
import trio
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from agentwire import open_gateway, serve_gateway
from agentwire._gateway import Gateway
from agentwire._proto import agent_worker_pb2 as pb
from agentwire._transport import Channel, ClientStream, open_channel

from .helpers import control, event, parse, request, response, type_sub

P = "/agents.AgentRpc/"


@pytest.fixture
async def gateway() -> AsyncIterator[Gateway]:
    async with open_gateway("127.0.0.1:0", rpc_timeout=30.0) as gw:
        yield gw


@pytest.fixture
async def channel(gateway: Gateway) -> AsyncIterator[Channel]:
    async with open_channel(gateway.address) as ch:
        yield ch


def ipv6_loopback() -> bool:
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


def cid(client_id: str) -> list[tuple[str, str]]:
    return [("client-id", client_id)]


async def register(ch: Channel, client_id: str, agent_type: str) -> None:
    req = pb.RegisterAgentTypeRequest(type=agent_type).SerializeToString()
    await ch.unary(P + "RegisterAgent", req, metadata=cid(client_id))


@pytest.mark.parametrize(
    "method", ["RegisterAgent", "AddSubscription", "RemoveSubscription", "GetSubscriptions"]
)
async def test_client_id_required(channel: Channel, method: str) -> None:
    with pytest.raises(GRPCError) as info:
        await channel.unary(P + method, b"")
    assert info.value.status is Status.INVALID_ARGUMENT
    assert info.value.message == "client-id metadata not found."


async def test_client_id_required_on_open_channel(channel: Channel) -> None:
    async with channel.stream(P + "OpenChannel") as stream:
        with pytest.raises(GRPCError) as info:
            await stream.receive()
    assert info.value.status is Status.INVALID_ARGUMENT
    assert info.value.message == "client-id metadata not found."


async def test_unary_calls_with_autogen_errors(channel: Channel) -> None:
    await register(channel, "A", "echo")
    with pytest.raises(GRPCError) as info:
        await register(channel, "B", "echo")
    assert info.value.status is Status.INVALID_ARGUMENT
    assert info.value.message == "Agent type echo already registered with client A."
    add = pb.AddSubscriptionRequest(subscription=type_sub("default", "echo", "s1"))
    await channel.unary(P + "AddSubscription", add.SerializeToString(), metadata=cid("A"))
    with pytest.raises(GRPCError) as info:
        await channel.unary(P + "AddSubscription", add.SerializeToString(), metadata=cid("B"))
    assert (info.value.status, info.value.message) == (
        Status.INVALID_ARGUMENT,
        "Subscription already exists",
    )
    got = pb.GetSubscriptionsResponse.FromString(
        await channel.unary(P + "GetSubscriptions", b"", metadata=cid("C"))
    )
    assert [s.id for s in got.subscriptions] == ["s1"]
    remove = pb.RemoveSubscriptionRequest(id="s1").SerializeToString()
    await channel.unary(P + "RemoveSubscription", remove, metadata=cid("B"))
    with pytest.raises(GRPCError) as info:
        await channel.unary(P + "RemoveSubscription", remove, metadata=cid("B"))
    assert info.value.status is Status.UNKNOWN
    assert info.value.message == "Unexpected <class 'ValueError'>: Subscription does not exist"
    with pytest.raises(GRPCError) as info:
        await channel.unary(P + "RegisterAgent", b"\xff\xff", metadata=cid("A"))
    assert info.value.status is Status.INVALID_ARGUMENT


async def test_rpc_and_publish_over_streams(gateway: Gateway, channel: Channel) -> None:
    async with (
        channel.stream(P + "OpenChannel", metadata=cid("A")) as a,
        channel.stream(P + "OpenChannel", metadata=cid("B")) as b,
    ):
        await register(channel, "B", "echo")
        add = pb.AddSubscriptionRequest(subscription=type_sub("news", "echo", "s1"))
        await channel.unary(P + "AddSubscription", add.SerializeToString(), metadata=cid("B"))
        await a.send(request("1", "echo/k"))
        received = await b.receive()
        assert received is not None
        gid = parse(received).request.request_id
        await b.send(response(gid))
        answered = await a.receive()
        assert answered is not None
        assert parse(answered).response.request_id == "1"
        raw = event("news")
        await a.send(raw)
        assert await b.receive() == raw
        assert gateway.statistics().event_deliveries == 1
    with trio.fail_after(5):
        await gateway.wait_until(lambda s: s.data_connections == 0)
    assert gateway.statistics().agent_types == 0
    assert gateway.statistics().subscriptions == 0


async def test_headers_are_sent_at_once(gateway: Gateway, channel: Channel) -> None:
    async with channel.stream(P + "OpenChannel", metadata=cid("A")) as a:
        with trio.fail_after(5):
            await gateway.wait_until(lambda s: s.data_connections == 1)
        # The gateway wrote the stream's headers before it counted the
        # connection, so they precede this call's response on the wire.
        await channel.unary(P + "GetSubscriptions", b"", metadata=cid("A"))
        assert a.initial_metadata is not None


async def test_malformed_message_ends_stream(channel: Channel) -> None:
    async with channel.stream(P + "OpenChannel", metadata=cid("A")) as a:
        await a.send(b"\xff\xff\xff")
        with pytest.raises(GRPCError) as info:
            await a.receive()
    assert info.value.status is Status.INVALID_ARGUMENT


async def test_half_close_ends_call_ok(gateway: Gateway, channel: Channel) -> None:
    async with channel.stream(P + "OpenChannel", metadata=cid("A")) as a:
        await register(channel, "A", "echo")
        await a.end()
        assert await a.receive() is None
    assert gateway.statistics().agent_types == 0


async def test_shutdown_answers_pending_and_ends_streams() -> None:
    async with (
        open_gateway("127.0.0.1:0") as gw,
        open_channel(gw.address) as ch,
        ch.stream(P + "OpenChannel", metadata=cid("A")) as a,
        ch.stream(P + "OpenChannel", metadata=cid("B")) as b,
    ):
        await register(ch, "B", "echo")
        await a.send(request("1", "echo/k"))
        assert await b.receive() is not None
        async with trio.open_nursery() as nursery:
            nursery.start_soon(gw.shutdown)
            answered = await a.receive()
            assert answered is not None
            assert "shutting down" in parse(answered).response.error
            with pytest.raises(GRPCError) as info:
                await a.receive()
            assert info.value.status is Status.UNAVAILABLE


@pytest.mark.parametrize("host", ["localhost", "[::1]"])
async def test_localhost_and_ipv6_addresses(host: str) -> None:
    if host == "[::1]" and not ipv6_loopback():
        pytest.skip("no IPv6 loopback on this machine")
    async with open_gateway(f"{host}:0") as gw:
        assert gw.port > 0
        async with open_channel(f"{host}:{gw.port}") as ch:
            await register(ch, "A", "echo")
        assert gw.statistics().agent_types == 1


async def test_oversized_message_ends_only_that_stream() -> None:
    async with (
        open_gateway("127.0.0.1:0", max_message_size=1024) as gw,
        open_channel(gw.address) as ch,
        ch.stream(P + "OpenChannel", metadata=cid("A")) as a,
        ch.stream(P + "OpenChannel", metadata=cid("B")) as b,
    ):
        await register(ch, "B", "echo")
        await a.send(request("1", "echo/k", data=b"x" * 4096))
        with pytest.raises(GRPCError) as info:
            await a.receive()
        assert info.value.status is Status.RESOURCE_EXHAUSTED
        with trio.fail_after(5):
            await gw.wait_until(lambda s: s.data_connections == 1)
        # B is still there and reachable.
        async with ch.stream(P + "OpenChannel", metadata=cid("C")) as c:
            await c.send(request("2", "echo/k"))
            received = await b.receive()
            assert received is not None
            assert parse(received).request.target.key == "k"


async def test_control_channel_over_sockets(gateway: Gateway, channel: Channel) -> None:
    async with (
        channel.stream(P + "OpenControlChannel", metadata=cid("A")) as ca,
        channel.stream(P + "OpenControlChannel", metadata=cid("B")) as cb,
    ):
        await register(channel, "B", "stateful")
        with trio.fail_after(5):
            await gateway.wait_until(lambda s: s.control_connections == 2)
        raw = control("r1", "agentid=stateful/k", respond_to="clientid=A")
        await ca.send(raw)
        assert await cb.receive() == raw
        await ca.send(control("r2", "agentid=nobody/k", respond_to="clientid=A", save=False))
        reply_raw = await ca.receive()
        assert reply_raw is not None
        reply = pb.ControlMessage.FromString(reply_raw)
        body = pb.LoadStateResponse()
        assert reply.rpcMessage.Unpack(body)
        assert "cannot deliver control message 'r2'" in body.error


async def test_serve_gateway_returns_after_shutdown() -> None:
    finished = trio.Event()

    async def run(task_status: trio.TaskStatus[Gateway]) -> None:
        await serve_gateway("127.0.0.1:0", rpc_timeout=None, task_status=task_status)
        finished.set()

    async with trio.open_nursery() as nursery:
        gw: Gateway = await nursery.start(run)
        assert gw.config.rpc_timeout is None
        async with open_channel(gw.address) as ch:
            await register(ch, "A", "echo")
        await gw.shutdown(grace=1.0)
        with trio.fail_after(5):
            await finished.wait()


async def _read_until_the_end(stream: ClientStream) -> None:
    while await stream.receive() is not None:
        pass


async def test_a_dropped_slow_subscriber_is_told_unavailable_not_cancelled() -> None:
    async with (
        open_gateway("127.0.0.1:0", send_timeout=0.5, startup_grace=0) as gw,
        open_channel(gw.address) as slow,
        open_channel(gw.address) as publisher,
    ):
        await register(slow, "slow", "reader")
        add = pb.AddSubscriptionRequest(subscription=type_sub("news", "reader", "s1"))
        await slow.unary(P + "AddSubscription", add.SerializeToString(), metadata=cid("slow"))
        async with (
            slow.stream(P + "OpenChannel", metadata=cid("slow")) as slow_stream,
            publisher.stream(P + "OpenChannel", metadata=cid("pub")) as pub_stream,
        ):
            await gw.wait_until(lambda s: s.data_connections == 2)
            big = event("news", data=b"x" * 60_000)
            # The slow client reads nothing: its window, then its queue fill, then
            # the gateway gives up on it after send_timeout.
            with trio.fail_after(60):
                while gw.statistics().slow_disconnects == 0:
                    await pub_stream.send(big)
            with trio.fail_after(30), pytest.raises(GRPCError) as info:
                await _read_until_the_end(slow_stream)
    assert info.value.status is Status.UNAVAILABLE
    assert "slow consumer" in (info.value.message or "")
