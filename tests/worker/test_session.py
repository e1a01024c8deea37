"""The worker's session (one client-id's streams and calls) against an in-memory fake gateway."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio
import trio.testing
from google.protobuf import any_pb2

from agentwire import AgentId, ConnectionLostError, RemoteError, TopicId
from agentwire._cloudevents import to_cloud_event
from agentwire._observability._trace_context import TraceContext
from agentwire._proto import agent_worker_pb2 as pb
from agentwire._proto import cloudevent_pb2 as ce_pb
from agentwire._worker._kinds import error_from_response
from agentwire._worker._protocol import (
    OPEN_CHANNEL,
    OPEN_CONTROL_CHANNEL,
    REGISTER_AGENT,
    enveloped,
    event_body,
    request_ids,
)
from agentwire._worker._session import WorkerSession, open_session

from .fakes import FakeChannel, ServerEnd


class Handler:
    def __init__(self) -> None:
        self.requests: list[pb.RpcRequest] = []
        self.events: list[ce_pb.CloudEvent] = []
        self.controls: list[pb.ControlMessage] = []

    async def handle_request(self, request: pb.RpcRequest) -> pb.RpcResponse:
        self.requests.append(request)
        if request.payload.data == b"boom":
            raise ValueError("boom")
        return pb.RpcResponse(
            payload=pb.Payload(data_type="Pong", data_content_type="application/json", data=b"{}")
        )

    async def handle_event(self, event: ce_pb.CloudEvent | bytes) -> None:
        if isinstance(event, bytes):
            event = ce_pb.CloudEvent.FromString(event)
        self.events.append(event)

    async def handle_control(self, message: pb.ControlMessage) -> any_pb2.Any | None:
        self.controls.append(message)
        out = any_pb2.Any()
        out.Pack(pb.SaveStateResponse(state='{"n": 1}'))
        return out


def parse(data: bytes) -> pb.Message:
    message = pb.Message()
    message.ParseFromString(data)
    return message


def request_to(target: str) -> pb.RpcRequest:
    agent_type, key = target.split("/")
    return pb.RpcRequest(
        target=pb.AgentId(type=agent_type, key=key),
        payload=pb.Payload(data_type="Ping", data_content_type="application/json", data=b"{}"),
    )


async def test_open_channel_first_and_client_id_on_every_call() -> None:
    channel = FakeChannel()
    async with open_session(channel, Handler(), request_ids()) as session:
        await session.register_agent_type("echo")
        await session.add_subscription(pb.Subscription(id="s1"))
        client_id = session.client_id
    assert channel.calls[0].path == OPEN_CHANNEL
    assert REGISTER_AGENT in [c.path for c in channel.calls]
    assert OPEN_CONTROL_CHANNEL in [c.path for c in channel.calls]
    assert all(c.metadata == {"client-id": client_id} for c in channel.calls)
    assert channel.end_for(OPEN_CHANNEL).cancelled.is_set()

    async with open_session(channel, Handler(), request_ids()) as second:
        assert second.client_id != client_id


async def test_rpc_round_trip_and_unique_ids_without_source() -> None:
    channel = FakeChannel()
    ids = request_ids()
    async with open_session(channel, Handler(), ids) as session, trio.open_nursery() as nursery:
        server = channel.end_for(OPEN_CHANNEL)
        results: list[pb.RpcResponse] = []

        async def call() -> None:
            results.append(await session.rpc(request_to("echo/k")))

        nursery.start_soon(call)
        nursery.start_soon(call)
        seen = [parse(await server.receive()).request for _ in range(2)]
        assert seen[0].request_id != seen[1].request_id
        assert not seen[0].HasField("source")
        for request in reversed(seen):
            await server.send(
                pb.Message(
                    response=pb.RpcResponse(request_id=request.request_id, error="")
                ).SerializeToString()
            )
    assert len(results) == 2
    assert session.statistics().pending_rpcs == 0


def test_an_error_response_without_a_kind_is_a_remote_error() -> None:
    error = error_from_response(pb.RpcResponse(request_id="1", error="kaboom x"), limit=1024)
    assert isinstance(error, RemoteError)
    assert "kaboom" in str(error)


async def test_connection_loss_fails_pending_rpcs_at_once() -> None:
    channel = FakeChannel()
    async with open_session(channel, Handler(), request_ids()) as session:
        server = channel.end_for(OPEN_CHANNEL)
        errors: list[BaseException] = []

        async def call() -> None:
            try:
                await session.rpc(request_to("echo/k"))
            except ConnectionLostError as exc:
                errors.append(exc)

        async with trio.open_nursery() as nursery:
            for _ in range(3):
                nursery.start_soon(call)
            for _ in range(3):
                await server.receive()
            await server.end()
        assert len(errors) == 3
        assert session.lost.is_set()
        with pytest.raises(ConnectionLostError):
            await session.rpc(request_to("echo/k"))
        assert session.statistics().pending_rpcs == 0


async def test_deadline_removes_pending_entry(autojump_clock: trio.testing.MockClock) -> None:
    channel = FakeChannel()
    async with open_session(channel, Handler(), request_ids()) as session:
        with pytest.raises(trio.TooSlowError):
            with trio.fail_after(5):
                await session.rpc(request_to("echo/k"))
        assert session.statistics().pending_rpcs == 0
        # A late response is counted and dropped.
        request = parse(await channel.end_for(OPEN_CHANNEL).receive()).request
        await channel.end_for(OPEN_CHANNEL).send(
            pb.Message(response=pb.RpcResponse(request_id=request.request_id)).SerializeToString()
        )
        await trio.testing.wait_all_tasks_blocked()
        assert session.statistics().late_responses == 1


async def test_write_failure_fails_the_rest_in_order() -> None:
    channel = FakeChannel()
    async with open_session(channel, Handler(), request_ids()) as session:
        server: ServerEnd = channel.end_for(OPEN_CHANNEL)
        server.fail_writes_after = 2
        outcomes: dict[int, str] = {}

        async def publish(n: int) -> None:
            event = ce_pb.CloudEvent(id=str(n), source="s", type="t", spec_version="1.0")
            try:
                await session.publish(event)
                outcomes[n] = "ok"
            except ConnectionLostError:
                outcomes[n] = "lost"

        async with trio.open_nursery() as nursery:
            for n in range(6):
                nursery.start_soon(publish, n)
                await trio.testing.wait_all_tasks_blocked()
        written = []
        while True:
            try:
                written.append(parse(server.to_server_recv.receive_nowait()).cloudEvent.id)
            except (trio.WouldBlock, trio.EndOfChannel):
                break
    assert written == ["0", "1"]
    assert [n for n, o in sorted(outcomes.items()) if o == "ok"] == [0, 1]
    assert [n for n, o in sorted(outcomes.items()) if o == "lost"] == [2, 3, 4, 5]


async def test_many_small_messages_are_batched() -> None:
    channel = FakeChannel()
    async with open_session(channel, Handler(), request_ids()) as session:

        async def publish(n: int) -> None:
            await session.publish(ce_pb.CloudEvent(id=str(n), source="s", type="t"))

        async with trio.open_nursery() as nursery:
            for n in range(50):
                nursery.start_soon(publish, n)
        stats = session.statistics()
        server = channel.end_for(OPEN_CHANNEL)
        ids = [parse(server.to_server_recv.receive_nowait()).cloudEvent.id for _ in range(50)]
    assert stats.messages_sent == 50
    assert stats.batches_written < 50
    assert sorted(ids, key=int) == [str(n) for n in range(50)]


async def test_incoming_requests_events_and_handler_errors() -> None:
    channel = FakeChannel()
    handler = Handler()
    async with open_session(channel, handler, request_ids()):
        server = channel.end_for(OPEN_CHANNEL)
        ok = request_to("echo/k")
        ok.request_id = "r1"
        bad = request_to("echo/k")
        bad.request_id = "r2"
        bad.payload.data = b"boom"
        await server.send(pb.Message(request=ok).SerializeToString())
        await server.send(pb.Message(request=bad).SerializeToString())
        await server.send(
            pb.Message(cloudEvent=ce_pb.CloudEvent(id="e1", type="t")).SerializeToString()
        )
        responses = {}
        for _ in range(2):
            response = parse(await server.receive()).response
            responses[response.request_id] = response
    assert responses["r1"].payload.data_type == "Pong"
    assert not responses["r1"].error
    assert responses["r2"].error == "boom"
    assert [e.id for e in handler.events] == ["e1"]


async def test_control_call_and_control_request() -> None:
    channel = FakeChannel()
    handler = Handler()
    async with open_session(channel, handler, request_ids()) as session:
        await trio.testing.wait_all_tasks_blocked()
        control = channel.end_for(OPEN_CONTROL_CHANNEL)
        assert control.metadata == {"client-id": session.client_id}
        result: list[any_pb2.Any] = []

        async def call() -> None:
            result.append(
                await session.control_call(
                    "agentid=a/k", pb.SaveStateRequest(agentId=pb.AgentId(type="a", key="k"))
                )
            )

        async with trio.open_nursery() as nursery:
            nursery.start_soon(call)
            sent = pb.ControlMessage()
            sent.ParseFromString(await control.receive())
            assert sent.destination == "agentid=a/k"
            assert sent.respond_to == f"clientid={session.client_id}"
            answer = any_pb2.Any()
            answer.Pack(pb.SaveStateResponse(state="{}"))
            reply_to = sent.respond_to
            await control.send(
                pb.ControlMessage(
                    rpc_id=sent.rpc_id, destination=reply_to, rpcMessage=answer
                ).SerializeToString()
            )
        assert result[0].Is(pb.SaveStateResponse.DESCRIPTOR)

        # A request from another worker is answered, reusing rpc_id.
        await control.send(
            pb.ControlMessage(
                rpc_id="x1", destination="agentid=a/k", respond_to="clientid=other"
            ).SerializeToString()
        )
        reply = pb.ControlMessage()
        reply.ParseFromString(await control.receive())
    assert reply.rpc_id == "x1"
    assert reply.destination == "clientid=other"
    assert not reply.HasField("respond_to")
    assert len(handler.controls) == 1


async def test_closing_the_session_fails_unwritten_messages() -> None:
    channel = FakeChannel(buffer=0)  # the "network" takes nothing: writes block
    outcomes: list[str] = []

    async def publish(session: object, n: int) -> None:
        assert isinstance(session, WorkerSession)
        try:
            await session.publish(ce_pb.CloudEvent(id=str(n)))
            outcomes.append("ok")
        except ConnectionLostError:
            outcomes.append("lost")

    async with (
        trio.open_nursery() as nursery,
        open_session(channel, Handler(), request_ids(), control_channel=False) as s,
    ):
        for n in range(5):
            nursery.start_soon(publish, s, n)
        await trio.testing.wait_all_tasks_blocked()
        assert s.statistics().messages_sent == 0
    assert outcomes == ["lost"] * 5


async def test_control_call_without_control_channel_fails_at_once() -> None:
    channel = FakeChannel()
    async with open_session(channel, Handler(), request_ids(), control_channel=False) as session:
        with pytest.raises(ConnectionLostError, match="control channel"):
            await session.control_call("agentid=a/k", pb.SaveStateRequest())


async def test_a_burst_of_events_is_dispatched_in_order() -> None:
    channel = FakeChannel()
    handler = Handler()
    async with open_session(channel, handler, request_ids()):
        server = channel.end_for(OPEN_CHANNEL)
        for n in range(300):
            await server.send(
                pb.Message(cloudEvent=ce_pb.CloudEvent(id=str(n), type="t")).SerializeToString()
            )
        probe = request_to("echo/k")
        probe.request_id = "probe"
        await server.send(pb.Message(request=probe).SerializeToString())
        assert parse(await server.receive()).response.request_id == "probe"
        while len(handler.events) < 300:
            await trio.testing.wait_all_tasks_blocked()
    assert [e.id for e in handler.events] == [str(n) for n in range(300)]


async def test_an_rpc_request_is_written_before_queued_events() -> None:
    channel = FakeChannel(buffer=0)  # the "network" takes a message only when the test reads
    async with (
        open_session(channel, Handler(), request_ids(), control_channel=False) as session,
        trio.open_nursery() as nursery,
    ):
        server = channel.end_for(OPEN_CHANNEL)
        for n in range(20):  # one at a time: trio starts a batch of tasks in any order
            nursery.start_soon(session.publish, ce_pb.CloudEvent(id=str(n), type="t"))
            await trio.testing.wait_all_tasks_blocked()
        assert session.statistics().event_lane_used >= 19  # one more is being written
        nursery.start_soon(session.rpc, request_to("echo/k"))
        await trio.testing.wait_all_tasks_blocked()
        assert session.statistics().rpc_lane_used == 1
        written = [parse(await server.receive()) for _ in range(21)]
        kinds = [m.WhichOneof("message") for m in written]
        # Only the event already being written when the RPC was queued goes first.
        assert kinds[:2] == ["cloudEvent", "request"]
        assert [m.cloudEvent.id for m in written if m.HasField("cloudEvent")] == [
            str(n) for n in range(20)
        ]
        nursery.cancel_scope.cancel()


async def test_a_full_event_lane_makes_publishers_wait_not_rpcs() -> None:
    channel = FakeChannel(buffer=0)
    async with (
        open_session(
            channel, Handler(), request_ids(), control_channel=False, outbox_size=4
        ) as session,
        trio.open_nursery() as nursery,
    ):
        server = channel.end_for(OPEN_CHANNEL)
        for n in range(10):  # one at a time: trio starts a batch of tasks in any order
            nursery.start_soon(session.publish, ce_pb.CloudEvent(id=str(n), type="t"))
            await trio.testing.wait_all_tasks_blocked()
        stats = session.statistics()
        assert stats.event_lane_used == 4  # bounded: the other publishers wait
        nursery.start_soon(session.rpc, request_to("echo/k"))
        await trio.testing.wait_all_tasks_blocked()
        assert session.statistics().rpc_lane_used == 1  # queued at once, not behind them
        ids = []
        for _ in range(11):
            message = parse(await server.receive())
            ids.append(message.cloudEvent.id if message.HasField("cloudEvent") else "rpc")
        assert ids.index("rpc") == 1
        assert [i for i in ids if i != "rpc"] == [str(n) for n in range(10)]
        nursery.cancel_scope.cancel()


async def test_publishers_waiting_for_room_fail_when_the_session_ends() -> None:
    channel = FakeChannel(buffer=0)
    outcomes: list[str] = []

    async def publish(session: WorkerSession, n: int) -> None:
        try:
            await session.publish(ce_pb.CloudEvent(id=str(n)))
            outcomes.append("ok")
        except ConnectionLostError:
            outcomes.append("lost")

    async with trio.open_nursery() as nursery:
        async with open_session(
            channel, Handler(), request_ids(), control_channel=False, outbox_size=2
        ) as session:
            for n in range(6):
                nursery.start_soon(publish, session, n)
            await trio.testing.wait_all_tasks_blocked()
            # one being written, two queued, three waiting for room
            assert session.statistics().event_lane_used == 2
        await trio.testing.wait_all_tasks_blocked()
        assert outcomes == ["lost"] * 6


class SlowHandler(Handler):
    """Answers each request after ``seconds`` (its metadata ``sleep``), noting its task;
    ``shielded`` requests sleep where the caller's deadline cannot interrupt them."""

    def __init__(self) -> None:
        super().__init__()
        self.tasks: list[trio.lowlevel.Task] = []
        self.cancelled: list[str] = []

    async def handle_request(self, request: pb.RpcRequest) -> pb.RpcResponse:
        self.tasks.append(trio.lowlevel.current_task())
        seconds = float(request.metadata.get("sleep", "0"))
        try:
            with trio.CancelScope(shield="shielded" in request.metadata):
                await trio.sleep(seconds)
        except trio.Cancelled:
            self.cancelled.append(request.request_id)
            raise
        return await super().handle_request(request)


def timed_request(request_id: str, timeout: str | None, sleep: float = 0.0) -> pb.RpcRequest:
    request = request_to("echo/k")
    request.request_id = request_id
    request.metadata["sleep"] = str(sleep)
    if timeout is not None:
        request.metadata["agentwire-timeout"] = timeout
    return request


@asynccontextmanager
async def serving() -> AsyncIterator[tuple[WorkerSession, ServerEnd, SlowHandler]]:
    """A session with a :class:`SlowHandler`, and the gateway's end of its channel."""
    channel = FakeChannel()
    handler = SlowHandler()
    async with open_session(channel, handler, request_ids()) as session:
        yield session, channel.end_for(OPEN_CHANNEL), handler


async def answer_to(server: ServerEnd, request: pb.RpcRequest) -> pb.RpcResponse:
    await server.send(pb.Message(request=request).SerializeToString())
    return parse(await server.receive()).response


async def test_requests_one_after_another_are_served_by_one_task() -> None:
    async with serving() as (session, server, handler):
        for n in range(5):
            response = await answer_to(server, timed_request(f"r{n}", "30"))
            assert response.request_id == f"r{n}"
            assert not response.error
        assert len(set(handler.tasks)) == 1
        assert session.statistics().requests_in_progress == 0


async def test_a_passed_deadline_cancels_only_its_request_and_the_server_goes_on(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with serving() as (session, server, handler):
        late = await answer_to(server, timed_request("late", "1", sleep=5))
        assert late.error.startswith("deadline exceeded")
        assert "echo/k" in late.error
        assert late.metadata["agentwire-error-kind"] == "timeout"
        assert handler.cancelled == ["late"]
        # the same server, a fresh deadline: a slow request without one, then a quick one
        slow = await answer_to(server, timed_request("slow", None, sleep=5))
        quick = await answer_to(server, timed_request("quick", "1"))
        assert (slow.error, quick.error) == ("", "")
        assert handler.cancelled == ["late"]
        assert len(set(handler.tasks)) == 1
        assert session.statistics().requests_in_progress == 0


async def test_an_answer_that_comes_as_the_deadline_passes_stands(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with serving() as (session, server, handler):
        shielded = timed_request("shielded", "1", sleep=3)
        shielded.metadata["shielded"] = "yes"
        answered = await answer_to(server, shielded)
        assert answered.error == ""
        assert answered.payload.data_type == "Pong"
        # the next request is not hit by the deadline that already passed
        after = await answer_to(server, timed_request("after", "10", sleep=2))
        assert after.error == ""
        assert handler.cancelled == []
        assert session.statistics().requests_in_progress == 0


async def test_concurrent_deadlines_in_order_each_cancel_their_own_request(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with serving() as (session, server, handler):
        for name, timeout, sleep in (("a", "1", 10), ("b", "2", 0.5), ("c", "3", 10)):
            request = timed_request(name, timeout, sleep=sleep)
            await server.send(pb.Message(request=request).SerializeToString())
        answers = [parse(await server.receive()).response for _ in range(3)]
        assert [(a.request_id, a.error[:17]) for a in answers] == [
            ("b", ""),
            ("a", "deadline exceeded"),
            ("c", "deadline exceeded"),
        ]
        assert handler.cancelled == ["a", "c"]
        assert session.statistics().requests_in_progress == 0


async def test_a_deadline_earlier_than_one_before_it_is_kept_too(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with serving() as (session, server, handler):
        for name, timeout, sleep in (("long", "100", 50), ("short", "1", 5)):
            request = timed_request(name, timeout, sleep=sleep)
            await server.send(pb.Message(request=request).SerializeToString())
        first = parse(await server.receive()).response
        assert (first.request_id, first.error[:17]) == ("short", "deadline exceeded")
        second = parse(await server.receive()).response
        assert (second.request_id, second.error) == ("long", "")
        assert handler.cancelled == ["short"]
        # both servers go on: two more requests, one slow, are answered in full
        for name in ("again-1", "again-2"):
            request = timed_request(name, "10", sleep=2)
            await server.send(pb.Message(request=request).SerializeToString())
        again = {parse(await server.receive()).response.error for _ in range(2)}
        assert again == {""}
        assert handler.cancelled == ["short"]
        assert len(set(handler.tasks)) == 2
        assert session.statistics().requests_in_progress == 0


async def test_concurrent_requests_get_servers_of_their_own_and_reuse_them() -> None:
    async with serving() as (session, server, handler):
        for burst in range(3):
            for n in range(4):
                request = timed_request(f"b{burst}-{n}", "30", sleep=0.001)
                await server.send(pb.Message(request=request).SerializeToString())
            ids = {parse(await server.receive()).response.request_id for _ in range(4)}
            assert ids == {f"b{burst}-{n}" for n in range(4)}
        assert len(set(handler.tasks)) <= 4
        assert len(handler.tasks) == 12
        assert session.statistics().requests_in_progress == 0


@pytest.mark.parametrize("size", [0, 1, 127, 128, 300, 16_383, 16_384, 2_000_000])
def test_an_enveloped_message_is_the_bytes_of_a_message_holding_it(size: int) -> None:
    request = pb.RpcRequest(request_id="r1", payload=pb.Payload(data=b"x" * size))
    response = pb.RpcResponse(request_id="r1", error="e" * size)
    event = ce_pb.CloudEvent(id="e1", binary_data=b"y" * size)
    published = to_cloud_event(
        topic=TopicId("t", "s"),
        sender=AgentId("a", "k"),
        type_name="T",
        content_type="application/json",
        data=b"z" * size,
        event_id="e2",
    )
    TraceContext("1" * 32, "2" * 16, 1, "k=v").inject_event(published.attributes)
    for field, inner in (("request", request), ("response", response), ("cloudEvent", event)):
        data = enveloped(field, inner.SerializeToString())
        assert data == pb.Message(**{field: inner}).SerializeToString()
        assert getattr(parse(data), field) == inner
    # With a map (the attributes) only the order of its entries may differ, which
    # protobuf leaves open: the message read back is the same.
    data = enveloped("cloudEvent", published.SerializeToString())
    assert len(data) == len(pb.Message(cloudEvent=published).SerializeToString())
    assert parse(data).cloudEvent == published


@pytest.mark.parametrize("size", [0, 1, 127, 128, 300, 16_383, 16_384, 2_000_000])
def test_an_event_body_is_taken_back_out_of_its_envelope(size: int) -> None:
    body = ce_pb.CloudEvent(id="e1", binary_data=b"y" * size).SerializeToString()
    data = enveloped("cloudEvent", body)
    assert event_body(data) == body
    assert event_body(data + b"\x00") is None  # more than the event
    assert event_body(data[:-1]) is None  # less than the event
    assert event_body(data[:2]) is None  # cut inside a long length, or before the body
    assert event_body(enveloped("request", body)) is None  # not an event
