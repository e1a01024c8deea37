"""How RPC failures reach an agentwire caller: error kinds, oversize messages, refusals."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio
import trio.testing
from google.protobuf import any_pb2

import agentwire
from agentwire import (
    AgentId,
    CantHandleError,
    ConnectionLostError,
    InvalidRequestError,
    MessageTooLargeError,
    OverloadedError,
    RemoteError,
    RpcTimeoutError,
    TopicId,
    UndeliverableError,
    WorkerRuntime,
    open_gateway,
    open_worker,
    serializers_for_type,
)
from agentwire._proto import agent_worker_pb2 as pb
from agentwire._proto import cloudevent_pb2 as ce_pb
from agentwire._wire import ERROR_KIND_KEY, ERROR_TYPE_KEY, ErrorKind
from agentwire._worker._protocol import OPEN_CHANNEL, OPEN_CONTROL_CHANNEL, request_ids
from agentwire._worker._session import open_session

from .fakes import FakeChannel
from .messages import BetterEcho, Echo, Ping, Pong
from .test_session import Handler, parse, request_to
from .test_worker_wire import fake_connect

GUARD = 20  # seconds: a hang guard, never a synchronisation


@asynccontextmanager
async def gateway_with_two_workers() -> AsyncIterator[tuple[WorkerRuntime, WorkerRuntime]]:
    """A gateway on loopback and two workers; the first decodes ``Pong`` answers."""
    async with (
        open_gateway("127.0.0.1:0") as gateway,
        open_worker(gateway.address) as a,
        open_worker(gateway.address) as b,
    ):
        a.add_message_serializer(serializers_for_type(Pong))
        yield a, b


@pytest.mark.parametrize(
    ("kind", "exception"),
    [
        (ErrorKind.UNDELIVERABLE, UndeliverableError),
        (ErrorKind.CONNECTION_LOST, ConnectionLostError),
        (ErrorKind.SHUTTING_DOWN, ConnectionLostError),
        (ErrorKind.TIMEOUT, RpcTimeoutError),
        (ErrorKind.OVERLOADED, OverloadedError),
        (ErrorKind.INVALID_ARGUMENT, InvalidRequestError),
        (ErrorKind.TOO_LARGE, MessageTooLargeError),
        (ErrorKind.CANT_HANDLE, CantHandleError),
        ("a-kind-from-the-future", RemoteError),
        (None, RemoteError),
    ],
)
async def test_an_error_kind_raises_the_in_process_exception(
    kind: str | None, exception: type[Exception]
) -> None:
    channel = FakeChannel()
    caught: list[BaseException] = []
    async with open_worker("fake:1", connect=fake_connect(channel)) as runtime:
        runtime.add_message_serializer(serializers_for_type(Ping))

        async def call() -> None:
            try:
                await runtime.send_message(Ping("x"), AgentId("far", "k"))
            except agentwire.AgentwireError as exc:
                caught.append(exc)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(call)
            server = channel.end_for(OPEN_CHANNEL)
            request = parse(await server.receive()).request
            response = pb.RpcResponse(request_id=request.request_id, error="it went wrong")
            if kind is not None:
                response.metadata[ERROR_KIND_KEY] = kind
            await server.send(pb.Message(response=response).SerializeToString())
    assert len(caught) == 1
    assert type(caught[0]) is exception
    assert "it went wrong" in str(caught[0])


def test_a_remote_too_large_error_names_size_and_limit_when_told() -> None:
    from agentwire._worker._kinds import error_from_response

    response = pb.RpcResponse(error="request too large: 5242880 bytes, over the 4194304-byte limit")
    response.metadata[ERROR_KIND_KEY] = ErrorKind.TOO_LARGE
    error = error_from_response(response, limit=1000)
    assert isinstance(error, MessageTooLargeError)
    assert (error.size, error.limit) == (5242880, 4194304)
    # a text that names neither: the size is unknown, the limit the caller's own
    response.error = "request too large"
    unsaid = error_from_response(response, limit=1000)
    assert isinstance(unsaid, MessageTooLargeError)
    assert (unsaid.size, unsaid.limit) == (None, 1000)


async def test_an_oversize_request_fails_only_that_call() -> None:
    channel = FakeChannel()
    async with (
        open_session(channel, Handler(), request_ids(), max_message_size=1000) as session,
        trio.open_nursery() as nursery,
    ):
        server = channel.end_for(OPEN_CHANNEL)
        answered: list[pb.RpcResponse] = []

        async def other_call() -> None:
            answered.append(await session.rpc(request_to("echo/k")))

        nursery.start_soon(other_call)
        in_flight = parse(await server.receive()).request
        big = request_to("echo/k")
        big.payload.data = b"x" * 2000
        with trio.fail_after(GUARD), pytest.raises(MessageTooLargeError) as info:
            await session.rpc(big)
        assert info.value.limit == 1000
        assert info.value.size is not None
        assert info.value.size > 2000
        assert f"{info.value.size} bytes" in str(info.value)
        assert "1000-byte" in str(info.value)
        await server.send(
            pb.Message(response=pb.RpcResponse(request_id=in_flight.request_id)).SerializeToString()
        )
    assert len(answered) == 1
    assert not session.lost.is_set() or session.loss_reason == "closed"
    assert session.statistics().messages_sent == 1  # the big one was never written


async def test_an_oversize_publish_is_refused_at_the_publisher() -> None:
    channel = FakeChannel()
    async with open_session(channel, Handler(), request_ids(), max_message_size=1000) as session:
        with pytest.raises(MessageTooLargeError, match="published event"):
            await session.publish(ce_pb.CloudEvent(id="big", binary_data=b"x" * 2000))
        await session.publish(ce_pb.CloudEvent(id="small"))
        assert parse(await channel.end_for(OPEN_CHANNEL).receive()).cloudEvent.id == "small"


async def test_an_oversize_result_is_answered_with_a_too_large_error() -> None:
    class BigAnswers(Handler):
        async def handle_request(self, request: pb.RpcRequest) -> pb.RpcResponse:
            return pb.RpcResponse(payload=pb.Payload(data=b"x" * 5000))

    channel = FakeChannel()
    async with open_session(channel, BigAnswers(), request_ids(), max_message_size=1000):
        server = channel.end_for(OPEN_CHANNEL)
        request = request_to("echo/k")
        request.request_id = "r1"
        await server.send(pb.Message(request=request).SerializeToString())
        response = parse(await server.receive()).response
    assert response.request_id == "r1"
    assert not response.HasField("payload")
    assert response.metadata[ERROR_KIND_KEY] == ErrorKind.TOO_LARGE
    assert "1000-byte" in response.error
    assert "bytes" in response.error


async def test_oversize_messages_through_a_gateway_end_only_their_call() -> None:
    """5 MiB against the default 4 MiB limit, through a real gateway: the
    caller is told the size and the limit, its other calls and both
    connections carry on."""
    big = "x" * (5 * 2**20)

    class Big(Echo):
        @agentwire.rpc
        async def on_ping(self, message: Ping, ctx: agentwire.MessageContext) -> Pong:  # type: ignore[override]
            return Pong(big if message.text == "big" else message.text)

    with trio.fail_after(GUARD):
        async with gateway_with_two_workers() as (a, b):
            await Big.register(b, "big", Big)
            with pytest.raises(MessageTooLargeError) as request_error:
                await a.send_message(Ping(big), AgentId("big", "k"))
            assert request_error.value.limit == agentwire._wire.DEFAULT_MAX_MESSAGE_SIZE
            with pytest.raises(MessageTooLargeError) as result_error:
                await a.send_message(Ping("big"), AgentId("big", "k"))
            assert "result" in str(result_error.value)
            assert result_error.value.limit == agentwire._wire.DEFAULT_MAX_MESSAGE_SIZE
            with pytest.raises(MessageTooLargeError):
                await a.publish_message(Ping(big), TopicId("news", "s"))
            assert await a.send_message(Ping("small"), AgentId("big", "k")) == Pong("small")
            assert a.statistics().connects == 1
            assert b.statistics().connects == 1


async def only_pings(
    agent: agentwire.ClosureContext, message: Ping, ctx: agentwire.MessageContext
) -> None:
    return None


async def test_the_worker_sets_the_kind_of_the_failures_it_answers() -> None:
    with trio.fail_after(GUARD):
        async with gateway_with_two_workers() as (a, b):
            await BetterEcho.register(b, "b", BetterEcho)
            await agentwire.ClosureAgent.register_closure(
                b, "strict", only_pings, unknown_type_policy="error"
            )
            # a message type "strict" does not take: CantHandleError, as in-process
            with pytest.raises(CantHandleError, match="not in"):
                await a.send_message(Pong("?"), AgentId("strict", "k"))
            # a handler's own failure stays a RemoteError with the class name
            with pytest.raises(RemoteError) as info:
                await a.send_message(Ping("fail"), AgentId("b", "k"))
            assert info.value.type_name == "ValueError"


async def test_a_flood_of_control_requests_is_bounded_and_the_excess_refused() -> None:
    release = trio.Event()

    class Slow(Handler):
        async def handle_control(self, message: pb.ControlMessage) -> any_pb2.Any | None:
            await release.wait()
            return await super().handle_control(message)

    channel = FakeChannel()
    async with open_session(channel, Slow(), request_ids(), max_control_requests=2) as session:
        await trio.testing.wait_all_tasks_blocked()
        control = channel.end_for(OPEN_CONTROL_CHANNEL)
        request = any_pb2.Any()
        request.Pack(pb.SaveStateRequest(agentId=pb.AgentId(type="a", key="k")))
        for n in range(5):
            await control.send(
                pb.ControlMessage(
                    rpc_id=f"c{n}",
                    destination="agentid=a/k",
                    respond_to="clientid=o",
                    rpcMessage=request,
                ).SerializeToString()
            )
        await trio.testing.wait_all_tasks_blocked()
        stats = session.statistics()
        assert stats.control_requests_in_progress == 2
        assert stats.control_requests_refused == 3
        refused = {}
        for _ in range(3):
            reply = pb.ControlMessage.FromString(await control.receive())
            answer = pb.SaveStateResponse()
            assert reply.rpcMessage.Unpack(answer)
            refused[reply.rpc_id] = answer.error
        assert sorted(refused) == ["c2", "c3", "c4"]
        assert all("retry later" in text for text in refused.values())
        release.set()
        served = {pb.ControlMessage.FromString(await control.receive()).rpc_id for _ in range(2)}
        assert served == {"c0", "c1"}
        await trio.testing.wait_all_tasks_blocked()
        assert session.statistics().control_requests_in_progress == 0


async def test_a_request_for_a_type_not_served_here_is_answered_undeliverable() -> None:
    channel = FakeChannel()
    async with open_worker("fake:1", connect=fake_connect(channel)) as runtime:
        runtime.add_message_serializer(serializers_for_type(Ping))
        server = channel.end_for(OPEN_CHANNEL)
        request = request_to("elsewhere/k")
        request.request_id = "r1"
        request.payload.data = b'{"text": "x"}'
        await server.send(pb.Message(request=request).SerializeToString())
        response = parse(await server.receive()).response
    assert response.request_id == "r1"
    assert response.metadata[ERROR_KIND_KEY] == ErrorKind.UNDELIVERABLE
    assert "elsewhere" in response.error


def test_error_responses_carry_the_class_name() -> None:
    from agentwire._worker._kinds import error_response

    response = error_response(UndeliverableError("nobody"))
    assert response.metadata[ERROR_TYPE_KEY] == "UndeliverableError"
    assert response.metadata[ERROR_KIND_KEY] == ErrorKind.UNDELIVERABLE
    assert ERROR_KIND_KEY not in error_response(ValueError("x")).metadata
