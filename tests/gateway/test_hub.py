"""The gateway hub over trio memory channels: no sockets."""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncIterator, Callable

import pytest
import trio
import trio.testing
from grpclib.const import Status

from agentwire._gateway import ConnKind, GatewayConfig, GatewayHub, RoutingError, open_hub
from agentwire._gateway._held import SUBSCRIPTION_SETTLE
from agentwire._gateway._hub import Connection
from agentwire._proto import agent_worker_pb2 as pb
from agentwire._wire import ERROR_KIND_KEY, ErrorKind

from .helpers import control, event, parse, request, response, type_sub


@pytest.fixture
async def hub() -> AsyncIterator[GatewayHub]:
    config = GatewayConfig(
        rpc_timeout=10.0, queue_size=2, max_in_flight=4, send_timeout=5.0, startup_grace=0
    )
    async with open_hub(config) as hub:
        yield hub


async def receive(conn: Connection) -> pb.Message:
    return parse(await conn.from_gateway.receive())


async def test_rpc_round_trip(hub: GatewayHub) -> None:
    async with hub.connect("A") as a, hub.connect("B") as b:
        hub.register_agent("B", "echo")
        await a.to_gateway.send(request("1", "echo/k", source="caller/c"))
        forwarded = (await receive(b)).request
        assert forwarded.target.key == "k"
        await b.to_gateway.send(response(forwarded.request_id))
        answered = (await receive(a)).response
        assert answered.request_id == "1"
        assert answered.payload.data == b'{"text": "pong"}'
        stats = hub.statistics()
        assert (stats.rpcs_forwarded, stats.responses_forwarded, stats.rpcs_in_flight) == (1, 1, 0)
        hub.check_invariants()


async def test_publish_reaches_subscribers_with_original_bytes(hub: GatewayHub) -> None:
    async with hub.connect("A") as a, hub.connect("B") as b:
        hub.register_agent("B", "listener")
        hub.add_subscription("B", type_sub("news", "listener", "s1"))
        raw = event("news", "src")
        await a.to_gateway.send(raw)
        assert await b.from_gateway.receive() == raw
        hub.remove_subscription("A", "s1")
        await a.to_gateway.send(event("news", "src", event_id="e2"))
        await a.to_gateway.send(request("9", "ghost/k"))
        # The event went nowhere; the next thing A sees is its own error answer.
        assert "ghost" in (await receive(a)).response.error
        assert b.from_gateway.statistics().current_buffer_used == 0  # type: ignore[attr-defined]


async def test_rpc_timeout_answers_caller(hub: GatewayHub, autojump_clock: trio.abc.Clock) -> None:
    async with hub.connect("A") as a, hub.connect("B") as b:
        hub.register_agent("B", "slow")
        start = trio.current_time()
        await a.to_gateway.send(request("1", "slow/k"))
        gid = (await receive(b)).request.request_id
        answered = (await receive(a)).response
        assert trio.current_time() - start == pytest.approx(10.0)
        assert answered.request_id == "1"
        assert "within 10 s" in answered.error
        await b.to_gateway.send(response(gid))  # too late: dropped
        await a.to_gateway.send(request("2", "ghost/k"))
        assert (await receive(a)).response.request_id == "2"
        assert hub.statistics().responses_dropped == 1


async def test_earlier_caller_deadline_wakes_the_timer(
    hub: GatewayHub, autojump_clock: trio.abc.Clock
) -> None:
    async with hub.connect("A") as a, hub.connect("B") as b:
        hub.register_agent("B", "slow")
        start = trio.current_time()
        await a.to_gateway.send(request("long", "slow/k"))
        await receive(b)
        await a.to_gateway.send(request("short", "slow/k", metadata={"agentwire-timeout": "2"}))
        await receive(b)
        first = (await receive(a)).response
        assert first.request_id == "short"
        assert trio.current_time() - start == pytest.approx(2.0)
        assert (await receive(a)).response.request_id == "long"
        assert trio.current_time() - start == pytest.approx(10.0)


async def test_timer_rearms_after_idle(hub: GatewayHub, autojump_clock: trio.abc.Clock) -> None:
    async with hub.connect("A") as a, hub.connect("B") as b:
        hub.register_agent("B", "slow")
        for rid in ("1", "2"):
            await a.to_gateway.send(request(rid, "slow/k"))
            await receive(b)
            assert (await receive(a)).response.request_id == rid


async def test_target_disconnect_answers_callers(hub: GatewayHub) -> None:
    async with hub.connect("A") as a:
        async with hub.connect("B") as b:
            hub.register_agent("B", "echo")
            hub.add_subscription("B", type_sub("default", "echo", "s1"))
            await a.to_gateway.send(request("1", "echo/k"))
            await receive(b)
        answered = (await receive(a)).response
        assert answered.request_id == "1"
        assert "disconnected before answering" in answered.error
        assert hub.subscriptions() == []
        hub.register_agent("C", "echo")  # free again
        hub.check_invariants()


async def test_malformed_message_ends_only_that_stream(hub: GatewayHub) -> None:
    async with hub.connect("A") as a, hub.connect("B") as b:
        hub.register_agent("A", "echo")
        await b.to_gateway.send(b"\xff\xff\xff")
        with pytest.raises(trio.EndOfChannel):
            await b.from_gateway.receive()
        assert b.close_reason is not None
        assert b.close_reason[0] is Status.INVALID_ARGUMENT
        with pytest.raises(trio.BrokenResourceError):
            await b.to_gateway.send(request("1", "echo/k"))
        # A is unaffected.
        await a.to_gateway.send(request("1", "echo/k"))
        assert (await receive(a)).request.target.type == "echo"
        assert a.close_reason is None


async def test_slow_consumer_is_disconnected_not_the_sender(
    hub: GatewayHub, autojump_clock: trio.abc.Clock
) -> None:
    async with hub.connect("A") as a, hub.connect("B") as b:
        hub.register_agent("B", "sink")
        hub.add_subscription("B", type_sub("flood", "sink", "s1"))
        await a.to_gateway.send(request("r", "sink/k"))
        # B never reads: two queue slots fill up (one is the request), the
        # third event waits send_timeout, then B is cut off.
        for i in range(4):
            await a.to_gateway.send(event("flood", event_id=str(i)))
        answered = (await receive(a)).response
        assert answered.request_id == "r"
        assert "disconnected" in answered.error
        assert b.close_reason is not None
        assert b.close_reason[0] is Status.UNAVAILABLE
        assert "slow consumer" in b.close_reason[1]
        with pytest.raises(trio.EndOfChannel):
            await b.from_gateway.receive()  # what was queued is discarded
        assert hub.statistics().slow_disconnects == 1
        # A keeps working.
        await a.to_gateway.send(request("2", "sink/k"))
        assert "sink" in (await receive(a)).response.error


async def test_answers_never_wait_for_a_caller_that_does_not_read(hub: GatewayHub) -> None:
    async with hub.connect("A") as a, hub.connect("B") as b:
        hub.register_agent("B", "echo")
        hub.register_agent("A", "listener")
        hub.add_subscription("A", type_sub("news", "listener", "s1"))
        for i in range(4):  # max_in_flight
            await a.to_gateway.send(request(str(i), "echo/k"))
        gids = [(await receive(b)).request.request_id for _ in range(4)]
        for gid in gids:  # A does not read; these must not block B's routing
            await b.to_gateway.send(response(gid))
        await a.to_gateway.send(request("5", "echo/k"))
        await trio.testing.wait_all_tasks_blocked()  # the fifth is routed before A reads
        # A receives its four answers, then the refusal of the fifth request.
        got = [(await receive(a)).response for _ in range(5)]
        assert [r.request_id for r in got] == ["0", "1", "2", "3", "5"]
        assert "too many requests in flight" in got[-1].error
        hub.check_invariants()


async def test_half_close_means_leaving(hub: GatewayHub) -> None:
    async with hub.connect("A") as a, hub.connect("B") as b:
        hub.register_agent("B", "echo")
        await b.to_gateway.aclose()
        with pytest.raises(trio.EndOfChannel):
            await b.from_gateway.receive()
        assert b.close_reason is None
        await a.to_gateway.send(request("1", "echo/k"))
        assert "no worker has registered" in (await receive(a)).response.error


async def test_newer_stream_supersedes_older(hub: GatewayHub) -> None:
    async with hub.connect("A") as old:
        hub.register_agent("A", "echo")
        async with hub.connect("A") as new:
            with pytest.raises(trio.EndOfChannel):
                await old.from_gateway.receive()
            assert old.close_reason is not None
            assert old.close_reason[0] is Status.ABORTED
            hub.register_agent("A", "echo")  # the old registration went with it
            await new.to_gateway.send(request("1", "echo/k"))
            assert (await receive(new)).request.target.type == "echo"
        hub.check_invariants()
    assert hub.statistics().clients == 0


async def test_shutdown_answers_pending_and_ends_streams() -> None:
    async with open_hub() as hub, hub.connect("A") as a, hub.connect("B") as b:
        hub.register_agent("B", "echo")
        await a.to_gateway.send(request("1", "echo/k"))
        await receive(b)
        hub.begin_shutdown()
        answered = (await receive(a)).response
        assert "shutting down" in answered.error
        with pytest.raises(trio.EndOfChannel):
            await a.from_gateway.receive()
        assert a.close_reason == (Status.UNAVAILABLE, "agentwire gateway: shutting down")
        with pytest.raises(RoutingError):
            async with hub.connect("C"):
                pass  # pragma: no cover


async def test_wait_closing_returns_once_shutdown_begins_and_not_for_traffic() -> None:
    async with open_hub() as hub, hub.connect("A") as a, hub.connect("B") as b:
        hub.register_agent("B", "echo")
        returned = []

        async def closing() -> None:
            await hub.wait_closing()
            returned.append(hub.closing)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(closing)
            await a.to_gateway.send(request("1", "echo/k"))
            await receive(b)
            await trio.testing.wait_all_tasks_blocked()
            assert returned == []
            hub.begin_shutdown()
        assert returned == [True]


async def test_control_channel_routes_and_answers(hub: GatewayHub) -> None:
    async with (
        hub.connect("A", ConnKind.CONTROL) as ca,
        hub.connect("B", ConnKind.CONTROL) as cb,
        hub.connect("B") as b,
    ):
        hub.register_agent("B", "echo")
        raw = control("r1", "agentid=echo/k", respond_to="clientid=A")
        await ca.to_gateway.send(raw)
        assert await cb.from_gateway.receive() == raw
        assert b.from_gateway.statistics().current_buffer_used == 0  # type: ignore[attr-defined]
        await ca.to_gateway.send(control("r2", "clientid=nobody", respond_to="clientid=A"))
        reply = pb.ControlMessage.FromString(await ca.from_gateway.receive())
        assert reply.rpc_id == "r2"
        body = pb.SaveStateResponse()
        assert reply.rpcMessage.Unpack(body)
        assert body.error


async def test_many_clients_concurrently(hub: GatewayHub) -> None:
    """Ten callers with colliding ids against one echo worker, concurrently."""
    async with hub.connect("server") as server:
        hub.register_agent("server", "echo")

        async def serve() -> None:
            async for data in server.from_gateway:
                req = parse(data).request
                await server.to_gateway.send(response(req.request_id, data=req.target.key.encode()))

        async def call(name: str, results: dict[str, list[bytes]]) -> None:
            async with hub.connect(name) as conn:
                got = []
                for i in range(3):
                    await conn.to_gateway.send(request(str(i), f"echo/{name}-{i}"))
                    answered = (await receive(conn)).response
                    assert answered.request_id == str(i)
                    got.append(answered.payload.data)
                results[name] = got

        results: dict[str, list[bytes]] = {}
        async with trio.open_nursery() as nursery:
            nursery.start_soon(serve)
            async with trio.open_nursery() as callers:
                for n in range(10):
                    callers.start_soon(call, f"c{n}", results)
            nursery.cancel_scope.cancel()
        assert results == {f"c{n}": [f"c{n}-{i}".encode() for i in range(3)] for n in range(10)}
        hub.check_invariants()


async def test_direct_writes_keep_order_and_release_answer_space(hub: GatewayHub) -> None:
    async with hub.connect("A") as a, hub.connect("B") as b:
        hub.register_agent("B", "listener")
        hub.register_agent("A", "echo")
        hub.add_subscription("B", type_sub("news", "listener", "s1"))
        wire: list[tuple[str, bytes]] = []
        flushes: list[bool] = []
        accept = [False]

        def direct(message: bytes, *, flush: bool = True) -> bool:
            if not accept[0]:
                return False
            wire.append(("direct", message))
            flushes.append(flush)
            return True

        async def pump() -> None:
            async for data in b.from_gateway:
                wire.append(("pump", data))
                b.message_sent()

        b.enable_direct(direct)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(pump)
            raws = [event("news", event_id=f"e{n}") for n in range(4)]
            await a.send(raws[0])  # refused: queued
            accept[0] = True
            await a.send(raws[1])  # e0 not sent yet: queued behind it, not direct
            await trio.testing.wait_all_tasks_blocked()
            await a.send(raws[2], more=True)  # nothing queued: direct, no flush
            await a.send(raws[3])
            await trio.testing.wait_all_tasks_blocked()
            assert wire == [
                ("pump", raws[0]),
                ("pump", raws[1]),
                ("direct", raws[2]),
                ("direct", raws[3]),
            ]
            assert flushes == [False, True]
            # Answers written directly give their answer space back (max_in_flight=4).
            for n in range(10):
                await b.send(request(str(n), "echo/k"))
                gid = (await receive(a)).request.request_id
                wire.clear()
                await a.send(response(gid))
                assert [how for how, _ in wire] == ["direct"]
                assert parse(wire[0][1]).response.request_id == str(n)
            assert hub.statistics().rpcs_in_flight == 0
            hub.check_invariants()
            nursery.cancel_scope.cancel()


async def test_a_backlog_is_taken_without_a_scheduler_pass_per_message() -> None:
    # A pass per message taken would mean a pass (and a socket write) per
    # message for a busy connection's pump.
    config = GatewayConfig(queue_size=16, startup_grace=0)
    async with open_hub(config) as hub, hub.connect("A") as a, hub.connect("B") as b:
        hub.register_agent("B", "listener")
        hub.add_subscription("B", type_sub("news", "listener", "s1"))
        raws = [event("news", event_id=f"e{n}") for n in range(8)]
        for raw in raws:
            await a.send(raw)
        passes = 0
        taken = False

        async def bystander() -> None:
            nonlocal passes
            while not taken:
                passes += 1
                await trio.lowlevel.checkpoint()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(bystander)
            while passes == 0:
                await trio.lowlevel.checkpoint()
            before = passes
            got = [await b.from_gateway.receive() for _ in raws]
            taken = True
        assert got == raws
        assert passes - before <= 1


async def test_try_send_routes_without_waiting_or_declines(hub: GatewayHub) -> None:
    async with hub.connect("A") as a, hub.connect("B") as b:
        hub.register_agent("B", "sink")
        hub.add_subscription("B", type_sub("news", "sink", "s1"))
        # queue_size=2: two events fill B's queue; then nothing is routed at once
        assert a.try_send(event("news", event_id="e0"))
        assert a.try_send(event("news", event_id="e1"))
        before = hub.statistics()
        assert not a.try_send(event("news", event_id="e2"))
        assert not a.try_send(request("r", "sink/k"))
        after = hub.statistics()
        assert (after.events_received, after.rpcs_forwarded) == (
            before.events_received,
            before.rpcs_forwarded,
        )
        # once B has read, routing without waiting works again, in order
        assert parse(await b.from_gateway.receive()).cloudEvent.id == "e0"
        assert a.try_send(event("news", event_id="e2"))
        assert parse(await b.from_gateway.receive()).cloudEvent.id == "e1"
        assert parse(await b.from_gateway.receive()).cloudEvent.id == "e2"
        hub.check_invariants()
    # a connection that ended declines
    assert not a.try_send(event("news", event_id="late"))


async def test_a_slot_freed_for_a_waiting_sender_is_not_offered_to_the_reader_route(
    hub: GatewayHub,
) -> None:
    # B's queue is full and A's routing task waits for space in it. B reads one
    # message: that slot belongs to A's waiting event from that moment on, so
    # a message routed without waiting (C's, from the transport's reader) must
    # be declined, not fail for want of queue space and end B's stream.
    async with hub.connect("A") as a, hub.connect("B") as b, hub.connect("C") as c:
        hub.register_agent("B", "sink")
        hub.add_subscription("B", type_sub("news", "sink", "s1"))
        async with trio.open_nursery() as nursery:
            for n in range(3):  # queue_size=2: the third one waits
                await a.to_gateway.send(event("news", event_id=f"a{n}"))
            await trio.testing.wait_all_tasks_blocked()
            assert parse(await b.from_gateway.receive()).cloudEvent.id == "a0"
            # No checkpoint since B's read: A's routing task has not run yet.
            assert not c.try_send(event("news", event_id="c0"))
            nursery.start_soon(c.send, event("news", event_id="c0"))
            got = [parse(await b.from_gateway.receive()).cloudEvent.id for _ in range(3)]
            assert got == ["a1", "a2", "c0"]
        assert b.close_reason is None
        hub.check_invariants()


class _StreamRpcs:
    """What a stream's pump hands :meth:`Connection.enable_overtaking`: RPC
    messages that arrived behind the event being routed."""

    def __init__(self) -> None:
        self.queued: deque[bytes] = deque()
        self.hook: Callable[[], object] | None = None

    def receive_urgent_nowait(self) -> bytes | None:
        return self.queued.popleft() if self.queued else None

    def on_urgent(self, hook: Callable[[], object] | None) -> None:
        self.hook = hook

    def arrive(self, data: bytes) -> None:
        self.queued.append(data)
        if self.hook is not None:
            self.hook()


async def test_a_sender_waiting_for_room_for_an_event_still_routes_its_rpcs(
    hub: GatewayHub,
) -> None:
    async with hub.connect("A") as a, hub.connect("B") as b, hub.connect("C") as c:
        hub.register_agent("B", "sink")
        hub.register_agent("C", "echo")
        hub.add_subscription("B", type_sub("news", "sink", "s1"))
        rpcs = _StreamRpcs()
        a.enable_overtaking(rpcs)

        async def publish() -> None:
            for n in range(3):  # queue_size=2: the third waits for B to read
                await a.send(event("news", event_id=f"e{n}"))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(publish)
            await trio.testing.wait_all_tasks_blocked()
            assert rpcs.hook is not None  # A's routing waits, listening for RPCs
            rpcs.arrive(request("r1", "echo/k"))
            with trio.fail_after(5):
                forwarded = (await receive(c)).request
            assert forwarded.target.type == "echo"
            assert rpcs.hook is not None  # e2 is still waiting
            await c.to_gateway.send(response(forwarded.request_id))
            assert (await receive(a)).response.request_id == "r1"
            got = [parse(await b.from_gateway.receive()).cloudEvent.id for _ in range(3)]
            assert got == ["e0", "e1", "e2"]  # the events kept their order
        assert rpcs.hook is None
        hub.check_invariants()


async def test_rpcs_to_and_from_a_client_pass_its_full_event_lane(hub: GatewayHub) -> None:
    async with hub.connect("A") as a, hub.connect("B") as b, hub.connect("C") as c:
        hub.register_agent("B", "sink")
        hub.register_agent("C", "echo")
        hub.add_subscription("B", type_sub("news", "sink", "s1"))
        async with trio.open_nursery() as nursery:
            for n in range(3):  # queue_size=2: B's event lane is full, A waits
                await a.to_gateway.send(event("news", event_id=f"e{n}"))
            await trio.testing.wait_all_tasks_blocked()
            assert hub.statistics().queued_messages == 2
            # C calls B: the request is queued ahead of the events.
            await c.to_gateway.send(request("to-b", "sink/k"))
            await trio.testing.wait_all_tasks_blocked()
            forwarded = (await receive(b)).request
            assert forwarded.target.type == "sink"
            await b.to_gateway.send(response(forwarded.request_id))
            assert (await receive(c)).response.request_id == "to-b"
            # B calls C, and gets C's answer ahead of its events too.
            await b.to_gateway.send(request("from-b", "echo/k"))
            gid = (await receive(c)).request.request_id
            await c.to_gateway.send(response(gid))
            await trio.testing.wait_all_tasks_blocked()
            assert (await receive(b)).response.request_id == "from-b"
            got = [parse(await b.from_gateway.receive()).cloudEvent.id for _ in range(3)]
            assert got == ["e0", "e1", "e2"]
            nursery.cancel_scope.cancel()
        assert b.close_reason is None
        hub.check_invariants()


async def test_events_are_not_starved_by_rpc_traffic() -> None:
    config = GatewayConfig(queue_size=8, max_in_flight=8, rpc_burst=2)
    async with open_hub(config) as hub, hub.connect("A") as a, hub.connect("B") as b:
        hub.register_agent("B", "sink")
        hub.add_subscription("B", type_sub("news", "sink", "s1"))
        for n in range(3):
            await a.send(event("news", event_id=f"e{n}"))
        for n in range(5):
            await a.send(request(f"r{n}", "sink/k"))
        kinds = [parse(await b.from_gateway.receive()).WhichOneof("message") for _ in range(8)]
        rpc, ev = "request", "cloudEvent"
        assert kinds == [rpc, rpc, ev, rpc, rpc, ev, rpc, ev]
        hub.check_invariants()


async def test_channel_less_registrations_expire_on_the_gateway_clock(
    autojump_clock: trio.abc.Clock,
) -> None:
    config = GatewayConfig(registration_grace=30.0)
    async with open_hub(config) as hub:
        for n in range(50):
            hub.register_agent(f"ghost{n}", f"phantom{n}")
            hub.add_subscription(f"ghost{n}", type_sub("news", f"phantom{n}", f"s{n}"))
        hub.register_agent("worker", "real")
        await trio.sleep(29)
        async with hub.connect("worker"):
            await trio.sleep(2)
            stats = hub.statistics()
            assert (stats.clients, stats.agent_types, stats.subscriptions) == (1, 1, 0)
            assert stats.registrations_expired == 50
            hub.check_invariants()


@pytest.fixture
async def restarted_hub() -> AsyncIterator[GatewayHub]:
    config = GatewayConfig(startup_grace=5.0, max_held=3)
    async with open_hub(config) as hub:
        yield hub


def since_start(hub: GatewayHub) -> float:
    return trio.current_time() - hub.started_at


async def test_a_request_during_the_startup_grace_waits_for_its_worker(
    restarted_hub: GatewayHub, autojump_clock: trio.abc.Clock
) -> None:
    hub = restarted_hub
    async with hub.connect("A") as a:
        await a.send(request("1", "echo/k"))
        await trio.sleep(2)
        assert hub.statistics().held_messages == 1
        async with hub.connect("B") as b:
            hub.register_agent("B", "echo")
            forwarded = (await receive(b)).request
            await b.send(response(forwarded.request_id))
            assert (await receive(a)).response.request_id == "1"
            assert since_start(hub) < 5
        hub.check_invariants()


async def test_a_held_request_gets_the_usual_error_when_the_grace_ends(
    restarted_hub: GatewayHub, autojump_clock: trio.abc.Clock
) -> None:
    hub = restarted_hub
    async with hub.connect("A") as a:
        for rid in "123":
            await a.send(request(rid, "ghost/k"))
        await a.send(request("4", "ghost/k"))  # max_held=3: the usual error at once
        answered = (await receive(a)).response
        assert (answered.request_id, since_start(hub)) == ("4", 0)
        answers = [(await receive(a)).response for _ in range(3)]
        assert since_start(hub) == 5
        assert [r.request_id for r in answers] == ["1", "2", "3"]
        for r in [answered, *answers]:
            assert "no worker has registered agent type 'ghost'" in r.error
            assert r.metadata[ERROR_KIND_KEY] == ErrorKind.UNDELIVERABLE
        await a.send(request("5", "ghost/k"))  # after the grace: at once
        assert (await receive(a)).response.request_id == "5"
        assert since_start(hub) == 5
        hub.check_invariants()


@pytest.mark.parametrize("held", [0, 1])
async def test_the_startup_grace_ends_on_time_without_traffic(
    restarted_hub: GatewayHub, autojump_clock: trio.abc.Clock, held: int
) -> None:
    hub = restarted_hub
    async with hub.connect("A") as a:
        for _ in range(held):
            await a.send(event("news"))  # held: nobody subscribed
        await trio.sleep(4.9)
        await trio.testing.wait_all_tasks_blocked()
        assert hub._table.holding
        await trio.sleep(0.1)
        await trio.testing.wait_all_tasks_blocked()
        assert not hub._table.holding
        stats = hub.statistics()
        assert (stats.held_messages, stats.events_dropped) == (0, held)
        hub.check_invariants()


async def test_events_during_the_startup_grace_wait_for_a_subscriber(
    restarted_hub: GatewayHub, autojump_clock: trio.abc.Clock
) -> None:
    hub = restarted_hub
    async with hub.connect("A") as a:
        await a.send(event("news", event_id="early"))
        await a.send(event("weather", event_id="nobody-wants-it"))
        await trio.sleep(1)
        hub.register_agent("B", "listener")
        hub.add_subscription("B", type_sub("news", "listener", "s1"))
        subscribed = trio.current_time()
        async with hub.connect("B") as b:
            assert parse(await b.from_gateway.receive()).cloudEvent.id == "early"
            # Not before the subscriber can know its subscription (G5), nor much later.
            assert trio.current_time() - subscribed == pytest.approx(SUBSCRIPTION_SETTLE)
            await trio.sleep(5)
            stats = hub.statistics()
            assert (stats.held_messages, stats.events_dropped) == (0, 1)
            await a.send(event("news", event_id="later"))
            assert parse(await b.from_gateway.receive()).cloudEvent.id == "later"
            hub.check_invariants()


async def test_dropping_a_slow_subscriber_leaves_the_other_subscribers_connected(
    hub: GatewayHub, autojump_clock: trio.abc.Clock
) -> None:
    async with hub.connect("A") as a, hub.connect("R") as r, hub.connect("S") as s:
        for client in "RS":
            hub.register_agent(client, f"sink-{client}")
            hub.add_subscription(client, type_sub("news", f"sink-{client}", f"s-{client}"))
        received: list[str] = []

        async def read_r() -> None:
            async for data in r.from_gateway:
                received.append(parse(data).cloudEvent.id)
                await trio.sleep(1)  # slower than A publishes: R's lane stays full

        async with trio.open_nursery() as nursery:
            nursery.start_soon(read_r)
            sent = []
            for n in range(10):  # S never reads: A waits on S, then S is dropped
                for name in (f"e{n}", f"t{n}"):
                    sent.append(name)
                    # as the network pump does: route in the reader, else wait
                    if not a.try_send(event("news", event_id=name)):
                        await a.send(event("news", event_id=name))
            await trio.sleep(30)
            nursery.cancel_scope.cancel()
        assert s.close_reason is not None
        assert "slow consumer" in s.close_reason[1]
        assert r.close_reason is None
        assert received == sent
        hub.check_invariants()


async def test_rpc_traffic_is_written_directly_while_events_wait_for_the_pump(
    hub: GatewayHub,
) -> None:
    async with hub.connect("A") as a, hub.connect("B") as b, hub.connect("C") as c:
        hub.register_agent("B", "sink")
        hub.add_subscription("B", type_sub("news", "sink", "s1"))
        written: list[pb.Message] = []

        def direct(message: bytes, *, flush: bool = True) -> bool:
            parsed = parse(message)
            if parsed.HasField("cloudEvent"):
                return False  # as a stream whose window is full of events
            written.append(parsed)
            return True

        b.enable_direct(direct)
        for n in range(2):  # queue_size=2: both queued, the pump has not taken them
            await a.send(event("news", event_id=f"e{n}"))
        assert hub.statistics().queued_messages == 2
        await c.send(request("to-b", "sink/k"))
        assert [m.request.target.type for m in written] == ["sink"]
        assert hub.statistics().queued_messages == 2
        got = []
        for _ in range(2):
            got.append(parse(await b.from_gateway.receive()).cloudEvent.id)
            b.message_sent()
        assert got == ["e0", "e1"]
        await b.send(response(written[0].request.request_id))
        assert (await receive(c)).response.request_id == "to-b"
        hub.check_invariants()


async def test_a_pump_that_takes_a_batch_reports_each_message_in_its_own_lane(
    hub: GatewayHub,
) -> None:
    async with hub.connect("A") as a, hub.connect("B") as b, hub.connect("C") as c:
        hub.register_agent("B", "sink")
        hub.add_subscription("B", type_sub("news", "sink", "s1"))
        accepting = False
        written: list[pb.Message] = []

        def direct(message: bytes, *, flush: bool = True) -> bool:
            if accepting:
                written.append(parse(message))
            return accepting

        b.enable_direct(direct)
        await a.send(event("news", event_id="e0"))
        await c.send(request("r0", "sink/k"))
        # One batch, mixed lanes: the request first (its lane goes first), then the event.
        batch = [await b.from_gateway.receive(), b.from_gateway.receive_nowait()]
        with pytest.raises(trio.WouldBlock):
            b.from_gateway.receive_nowait()
        assert [parse(m).WhichOneof("message") for m in batch] == ["request", "cloudEvent"]
        for _ in batch:
            b.message_sent()
        # Nothing is left unsent in either lane: the next request is written directly.
        accepting = True
        await c.send(request("r1", "sink/k"))
        assert [m.request.target.type for m in written] == ["sink"]
        hub.check_invariants()
