"""open_worker against the agentwire gateway, in-process over loopback sockets."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
import trio.testing

import agentwire
from agentwire import (
    AgentId,
    ConnectionLostError,
    ConnectionState,
    RemoteError,
    TopicId,
    TypeSubscription,
    WorkerRuntime,
    open_gateway,
    open_worker,
    serializers_for_type,
)
from agentwire._cloudevents import serialized_cloud_event

from .messages import (
    BetterEcho,
    BetterProtoMessage,
    Echo,
    EchoBase,
    GoogleProtoMessage,
    Inbox,
    Ping,
    Pong,
)
from .proxy import open_proxy

GUARD = 20  # seconds: a hang guard, never a synchronisation


@pytest.fixture(autouse=True)
def fresh_inbox() -> Inbox:
    EchoBase.inbox = Inbox()
    return EchoBase.inbox


class Counter:
    """A count that tests can wait for (``await counter.reach(n)``)."""

    def __init__(self) -> None:
        self.value = 0
        self._changed = trio.Event()

    def add(self) -> None:
        self.value += 1
        self._changed.set()
        self._changed = trio.Event()

    async def reach(self, target: int) -> None:
        while self.value < target:
            await self._changed.wait()


@asynccontextmanager
async def two_workers(
    payload_format: Any = "json", **options: Any
) -> AsyncIterator[tuple[WorkerRuntime, WorkerRuntime]]:
    async with (
        # No start-up grace: an unknown target is answered at once.
        open_gateway("127.0.0.1:0", startup_grace=0) as gateway,
        open_worker(gateway.address, payload_format=payload_format, **options) as a,
        open_worker(gateway.address, payload_format=payload_format, **options) as b,
    ):
        await Echo.register(a, "a", Echo)
        await BetterEcho.register(b, "b", BetterEcho)
        for worker, agent in ((a, "a"), (b, "b")):
            worker.add_message_serializer(serializers_for_type(Pong))
            await worker.add_subscription(TypeSubscription("news", agent))
        yield a, b


@pytest.mark.parametrize("payload_format", ["json", "protobuf"])
async def test_rpc_both_ways(payload_format: str) -> None:
    with trio.fail_after(GUARD):
        async with two_workers(payload_format) as (a, b):
            assert await a.send_message(Ping("hi"), AgentId("b", "k")) == Pong("b/k:hi")
            reply = await b.send_message(Ping("yo"), AgentId("a", "k"), sender=AgentId("b", "k"))
            assert reply == Pong("a/k:yo")
            assert a.worker_statistics().remote_rpcs == 1
            assert a.worker_statistics().incoming_rpcs == 1
            stats = a.statistics()
            assert stats.connection_state is ConnectionState.CONNECTED
            assert stats.client_id is not None
            assert stats.client_id != b.statistics().client_id
            assert stats.agent_types == 1  # the core's counters are there too
            assert stats.remote_pending_rpcs == 0


@pytest.mark.parametrize("payload_format", ["json", "protobuf"])
async def test_publish_both_ways(payload_format: str, fresh_inbox: Inbox) -> None:
    with trio.fail_after(GUARD):
        async with two_workers(payload_format) as (a, b):
            await a.publish_message(Ping("from-a"), TopicId("news", "s"), sender=AgentId("a", "p"))
            await fresh_inbox.wait_for(2)
            await b.publish_message(Ping("from-b"), TopicId("news", "s"))
            await fresh_inbox.wait_for(4)
    assert sorted(fresh_inbox.items) == [
        ("a/s", "from-a", "a/p"),
        ("a/s", "from-b", "unknown/unknown"),  # AutoGen's sender for "no sender"
        ("b/s", "from-a", "a/p"),
        ("b/s", "from-b", None),  # delivered locally: the sender is None
    ]


async def test_protobuf_events_between_google_and_betterproto2(fresh_inbox: Inbox) -> None:
    with trio.fail_after(GUARD):
        async with two_workers("protobuf") as (a, b):
            await a.publish_message(GoogleProtoMessage(message="g"), TopicId("news", "s"))
            await fresh_inbox.wait_for(2)
            await b.publish_message(BetterProtoMessage(message="bp"), TopicId("news", "s"))
            await fresh_inbox.wait_for(4)
    assert sorted(text for _, text, _ in fresh_inbox.items) == [
        "proto:bp",
        "proto:bp",
        "proto:g",
        "proto:g",
    ]


async def test_handler_error_is_remote_error() -> None:
    with trio.fail_after(GUARD):
        async with two_workers() as (a, _):
            with pytest.raises(RemoteError) as info:
                await a.send_message(Ping("fail"), AgentId("b", "k"))
    assert info.value.remote_message == "kaboom"
    assert info.value.type_name == "ValueError"


async def test_unknown_target_fails_promptly() -> None:
    with trio.fail_after(GUARD):
        async with two_workers() as (a, _):
            # The gateway's answer carries its kind (agentwire-error-kind): the
            # same exception as in-process, not a RemoteError.
            with pytest.raises(agentwire.UndeliverableError, match="nobody"):
                await a.send_message(Ping("x"), AgentId("nobody", "k"))


async def test_removed_subscription_stops_delivery(fresh_inbox: Inbox) -> None:
    with trio.fail_after(GUARD):
        async with two_workers() as (a, b):
            sub = TypeSubscription("gone", "b")
            await b.add_subscription(sub)
            assert sub.id in {s.id for s in await a.gateway_subscriptions()}
            await b.remove_subscription(sub.id)
            assert sub.id not in {s.id for s in await a.gateway_subscriptions()}
            await a.publish_message(Ping("lost"), TopicId("gone", "s"))
            # A marker published after it, on the same connection, arrives; the
            # removed subscription's event never does.
            await a.publish_message(Ping("marker"), TopicId("news", "s"))
            await fresh_inbox.wait_for(2)
    assert sorted(text for _, text, _ in fresh_inbox.items) == ["marker", "marker"]


async def test_local_rpc_and_publish_short_circuit(fresh_inbox: Inbox) -> None:
    with trio.fail_after(GUARD):
        async with two_workers() as (a, _):
            session = a.worker_statistics().link.session
            assert session is not None
            sent_before = session.messages_sent
            assert await a.send_message(Ping("local"), AgentId("a", "k")) == Pong("a/k:local")
            stats = a.worker_statistics()
            assert stats.local_rpcs == 1
            assert stats.link.session is not None
            assert stats.link.session.messages_sent == sent_before  # nothing crossed the wire
            await a.publish_message(Ping("once"), TopicId("news", "s"))
            await fresh_inbox.wait_for(2)
            # Our own echo comes back from the gateway and is dropped, not delivered again.
            await a.wait_until(lambda _: a.worker_statistics().echoes_dropped >= 1)
            await a.send_message(Ping("sync"), AgentId("b", "k"))
    assert sorted(fresh_inbox.items) == [("a/s", "once", None), ("b/s", "once", "unknown/unknown")]


async def test_echo_mode_delivers_once_through_the_gateway(fresh_inbox: Inbox) -> None:
    with trio.fail_after(GUARD):
        async with two_workers(local_publish="echo") as (a, _):
            await a.publish_message(Ping("via-gw"), TopicId("news", "s"))
            await fresh_inbox.wait_for(2)
            assert a.worker_statistics().echoes_dropped == 0
    assert sorted(text for _, text, _ in fresh_inbox.items) == ["via-gw", "via-gw"]


async def test_remote_state_save_and_load() -> None:
    with trio.fail_after(GUARD):
        async with two_workers() as (a, b):
            await a.send_message(Ping("1"), AgentId("b", "k"))
            await a.send_message(Ping("2"), AgentId("b", "k"))
            assert await a.agent_save_state(AgentId("b", "k")) == {"count": 2}
            await a.agent_load_state(AgentId("b", "k"), {"count": 40})
            assert await b.agent_save_state(AgentId("b", "k")) == {"count": 40}
            with pytest.raises(RemoteError, match="nobody"):
                await a.agent_save_state(AgentId("nobody", "k"))


async def run_gateway(
    address: str, stop: trio.Event, *, task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED
) -> None:
    async with open_gateway(address, grace_period=0.1) as gateway:
        task_status.started(gateway.address)
        await stop.wait()


async def test_gateway_restart_workers_reconnect_and_resume() -> None:
    policy = agentwire.RetryPolicy(initial_delay=0.05, max_delay=0.2, max_attempts=200)
    release = trio.Event()
    entered = trio.Event()

    class Slow(Echo):
        @agentwire.rpc
        async def on_ping(self, message: Ping, ctx: agentwire.MessageContext) -> Pong:  # type: ignore[override]
            if message.text == "stuck":
                entered.set()
                await release.wait()
            return await super().on_ping(message, ctx)

    with trio.fail_after(GUARD):
        async with trio.open_nursery() as nursery:
            first_stop = trio.Event()
            address = await nursery.start(run_gateway, "127.0.0.1:0", first_stop)
            async with (
                open_worker(address, reconnect=policy, disconnected_wait=GUARD) as a,
                open_worker(address, reconnect=policy, disconnected_wait=GUARD) as b,
            ):
                await Echo.register(a, "a", Echo)
                await Slow.register(b, "b", Slow)
                a.add_message_serializer(serializers_for_type(Pong))
                old_id = a.worker_statistics().link.client_id
                failures: list[BaseException] = []

                async def stuck_call() -> None:
                    try:
                        await a.send_message(Ping("stuck"), AgentId("b", "k"))
                    except (ConnectionLostError, RemoteError) as exc:
                        failures.append(exc)

                async with trio.open_nursery() as calls:
                    calls.start_soon(stuck_call)
                    await entered.wait()
                    first_stop.set()  # the gateway goes away with a call in flight
                assert len(failures) == 1  # failed, not hung
                release.set()
                await a.wait_connection_state(ConnectionState.DISCONNECTED)
                second_stop = trio.Event()
                await nursery.start(run_gateway, address, second_stop)
                await a.wait_connection_state(ConnectionState.CONNECTED)
                await b.wait_connection_state(ConnectionState.CONNECTED)
                assert await a.send_message(Ping("again"), AgentId("b", "k")) == Pong("b/k:again")
                assert a.worker_statistics().link.client_id != old_id
                assert a.worker_statistics().link.connects == 2
                assert a.statistics().connects == 2
                second_stop.set()


async def wait_reconnected(worker: WorkerRuntime, connects: int) -> None:
    async for state in worker.connection_states():
        stats = worker.worker_statistics().link
        if state is ConnectionState.CONNECTED and stats.connects >= connects:
            return


async def test_network_cut_reconnects_and_replays_registrations() -> None:
    policy = agentwire.RetryPolicy(initial_delay=0.05, max_delay=0.2, max_attempts=200)
    with trio.fail_after(GUARD):
        async with (
            open_gateway("127.0.0.1:0") as gateway,
            open_proxy(gateway.address) as proxy,
            open_worker(proxy.address, reconnect=policy) as a,
            open_worker(gateway.address) as b,
        ):
            await Echo.register(a, "a", Echo)
            await BetterEcho.register(b, "b", BetterEcho)
            b.add_message_serializer(serializers_for_type(Pong))
            await proxy.cut()  # sockets closed under the worker
            await wait_reconnected(a, 2)
            # "a" was registered again on the new connection.
            assert await b.send_message(Ping("back"), AgentId("a", "k")) == Pong("a/k:back")
            assert proxy.connections == 2


async def test_pending_call_fails_when_the_network_is_cut() -> None:
    policy = agentwire.RetryPolicy(initial_delay=0.05, max_delay=0.2, max_attempts=200)
    release = trio.Event()
    entered = trio.Event()

    class Slow(Echo):
        @agentwire.rpc
        async def on_ping(self, message: Ping, ctx: agentwire.MessageContext) -> Pong:  # type: ignore[override]
            entered.set()
            await release.wait()
            return Pong("late")

    with trio.fail_after(GUARD):
        async with (
            open_gateway("127.0.0.1:0") as gateway,
            open_proxy(gateway.address) as proxy,
            open_worker(proxy.address, reconnect=policy) as a,
            open_worker(gateway.address) as b,
        ):
            await Echo.register(a, "a", Echo)
            await Slow.register(b, "slow", Slow)
            a.add_message_serializer(serializers_for_type(Pong))
            failures: list[BaseException] = []

            async def call() -> None:
                try:
                    await a.send_message(Ping("x"), AgentId("slow", "k"))
                except ConnectionLostError as exc:
                    failures.append(exc)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(call)
                await entered.wait()
                await proxy.cut()
            release.set()
            assert len(failures) == 1
            await a.wait_connection_state(ConnectionState.CONNECTED)


async def test_slow_consumer_backpressure(fresh_inbox: Inbox) -> None:
    """A consumer that does not keep up makes the publisher wait; nothing is lost."""
    release = trio.Event()
    total = 4000  # x 8 KiB: more than every window and socket buffer on the way
    padding = "x" * 8192

    class Slow(EchoBase):
        @agentwire.event
        async def on_ping_event(self, message: Ping, ctx: agentwire.MessageContext) -> None:  # type: ignore[override]
            await release.wait()
            EchoBase.inbox.add(str(self.id), message.text, ctx.sender)

    published = 0
    all_published = trio.Event()
    with trio.fail_after(60):
        async with (
            open_gateway("127.0.0.1:0", queue_size=16) as gateway,
            open_worker(gateway.address, mailbox_size=4) as producer,
            open_worker(gateway.address, mailbox_size=4, max_concurrent_requests=4) as consumer,
        ):
            await Slow.register(consumer, "slow", Slow)
            await consumer.add_subscription(TypeSubscription("flood", "slow"))

            async def publish_all() -> None:
                nonlocal published
                for n in range(total):
                    await producer.publish_message(Ping(f"{n}:{padding}"), TopicId("flood", "s"))
                    published += 1
                all_published.set()

            async with trio.open_nursery() as nursery:
                nursery.start_soon(publish_all)
                with trio.move_on_after(2):  # ample time to finish, were nothing bounded
                    await all_published.wait()
                stuck_at = published
                assert consumer.statistics().queued <= 4
                release.set()
            await fresh_inbox.wait_for(total)
    assert stuck_at < total  # the producer had to wait for the consumer
    received = [text.partition(":")[0] for _, text, _ in fresh_inbox.items]
    assert received == [str(n) for n in range(total)]


async def test_caller_deadline_is_enforced_locally_and_remotely() -> None:
    cancelled = trio.Event()
    entered = trio.Event()

    class Stuck(Echo):
        @agentwire.rpc
        async def on_ping(self, message: Ping, ctx: agentwire.MessageContext) -> Pong:  # type: ignore[override]
            entered.set()
            try:
                await trio.sleep_forever()
            finally:
                cancelled.set()

    with trio.fail_after(GUARD):
        async with two_workers() as (a, b):
            await Stuck.register(b, "stuck", Stuck)
            with trio.move_on_after(0.5) as scope:
                await a.send_message(Ping("x"), AgentId("stuck", "k"))
            assert scope.cancelled_caught
            assert entered.is_set()
            session = a.worker_statistics().link.session
            assert session is not None
            assert session.pending_rpcs == 0  # the caller's entry left with it
            await cancelled.wait()  # the responder gave up too (agentwire-timeout)


async def test_rpc_responses_are_not_stuck_behind_events_for_a_full_mailbox(
    fresh_inbox: Inbox,
) -> None:
    """An agent whose event handler makes an RPC, flooded with more events than
    its mailbox holds: the RPC responses still get through."""

    class Relay(EchoBase):
        @agentwire.event
        async def on_ping_event(self, message: Ping, ctx: agentwire.MessageContext) -> None:  # type: ignore[override]
            reply = await self.send_message(Ping(message.text), AgentId("b", "k"))
            EchoBase.inbox.add(str(self.id), reply.text, None)

    with trio.fail_after(GUARD):
        async with (
            open_gateway("127.0.0.1:0") as gateway,
            open_worker(gateway.address, mailbox_size=2) as a,
            open_worker(gateway.address) as b,
        ):
            await Relay.register(a, "relay", Relay)
            await BetterEcho.register(b, "b", BetterEcho)
            a.add_message_serializer(serializers_for_type(Pong))
            await a.add_subscription(TypeSubscription("flood", "relay"))
            for n in range(50):
                await b.publish_message(Ping(str(n)), TopicId("flood", "s"))
            await fresh_inbox.wait_for(50)
    assert [text for _, text, _ in fresh_inbox.items] == [f"b/k:{n}" for n in range(50)]


async def test_no_gateway_fails_open_worker_promptly() -> None:
    with trio.fail_after(GUARD), pytest.raises(ConnectionLostError, match="could not connect"):
        async with open_worker("127.0.0.1:1", connect_timeout=0):
            pass  # pragma: no cover


@pytest.mark.parametrize("address", ["localhost", "127.0.0.1:http", ":50051", "host:99999", ""])
async def test_a_bad_address_is_refused_before_connecting(address: str) -> None:
    with pytest.raises(ValueError, match=r"HOST:PORT|port") as info:
        async with open_worker(address):
            pass  # pragma: no cover
    assert repr(address) in str(info.value)


async def test_a_worker_started_before_its_gateway_waits_for_it() -> None:
    async with open_gateway("127.0.0.1:0") as probe:
        address = probe.address  # a port that was free a moment ago
    with trio.fail_after(GUARD):
        async with trio.open_nursery() as nursery:
            stop = trio.Event()
            connected = trio.Event()

            async def worker() -> None:
                async with open_worker(address, connect_timeout=GUARD) as runtime:
                    assert runtime.connection_state is ConnectionState.CONNECTED
                    connected.set()

            nursery.start_soon(worker)
            await trio.testing.wait_all_tasks_blocked()
            assert not connected.is_set()
            await nursery.start(run_gateway, address, stop)
            await connected.wait()
            stop.set()


async def test_body_exception_comes_out_bare() -> None:
    with trio.fail_after(GUARD):
        async with open_gateway("127.0.0.1:0") as gateway:
            with pytest.raises(KeyError, match="body"):
                async with open_worker(gateway.address):
                    raise KeyError("body")


async def test_repeated_cuts_under_traffic_never_hang_or_cross_replies() -> None:
    """Calls through a connection cut again and again either get their own
    reply or fail with ConnectionLostError; none hangs, none gets another's."""
    policy = agentwire.RetryPolicy(initial_delay=0.01, max_delay=0.05, max_attempts=10_000)
    ok = Counter()
    lost = 0
    with trio.fail_after(60):
        async with (
            open_gateway("127.0.0.1:0") as gateway,
            open_proxy(gateway.address) as proxy,
            open_worker(proxy.address, reconnect=policy, disconnected_wait=30) as a,
            open_worker(gateway.address) as b,
        ):
            await BetterEcho.register(b, "b", BetterEcho)
            a.add_message_serializer(serializers_for_type(Pong))

            async def caller(k: int) -> None:
                nonlocal lost
                for i in range(150):
                    try:
                        reply = await a.send_message(Ping(f"{k}.{i}"), AgentId("b", str(k)))
                    except ConnectionLostError:
                        lost += 1
                    else:
                        assert reply == Pong(f"b/{k}:{k}.{i}")
                        ok.add()

            async with trio.open_nursery() as nursery:
                for k in range(8):
                    nursery.start_soon(caller, k)
                for cut in range(5):
                    await ok.reach(ok.value + 40)
                    await proxy.cut()
                    await wait_reconnected(a, cut + 2)
            assert a.statistics().remote_pending_rpcs == 0
    assert ok.value + lost == 8 * 150
    assert proxy.connections == 6


async def test_protobuf_rpc_payloads_travel_as_any() -> None:
    """A message type with no JSON serializer goes as a protobuf Any; the
    receiver decodes by the payload's content type (JSON or protobuf)."""

    class ProtoEcho(EchoBase):
        @agentwire.rpc
        async def on_proto(
            self,
            message: GoogleProtoMessage,  # type: ignore[valid-type]
            ctx: agentwire.MessageContext,
        ) -> GoogleProtoMessage:  # type: ignore[valid-type]
            return GoogleProtoMessage(message="echo:" + message.message)  # type: ignore[attr-defined]

    with trio.fail_after(GUARD):
        async with two_workers() as (a, b):
            await ProtoEcho.register(b, "proto", ProtoEcho)
            a.add_message_serializer(serializers_for_type(GoogleProtoMessage))
            reply = await a.send_message(GoogleProtoMessage(message="x"), AgentId("proto", "k"))
    assert reply.message == "echo:x"


async def test_default_keepalive_is_one_grpc_core_accepts(monkeypatch: pytest.MonkeyPatch) -> None:
    """grpc-core servers GOAWAY clients pinging more often than every 5 minutes."""
    import agentwire._transport as transport

    seen: list[dict[str, Any]] = []
    real = transport.open_channel

    def recording(address: str, **kwargs: Any) -> Any:
        seen.append(kwargs)
        return real(address, **kwargs)

    monkeypatch.setattr(transport, "open_channel", recording)
    with trio.fail_after(GUARD):
        async with open_gateway("127.0.0.1:0") as gateway, open_worker(gateway.address):
            pass
    assert seen[0]["keepalive_interval"] >= 300


async def test_rpc_timeout_fails_every_call_and_cancels_the_handlers() -> None:
    """rpc_timeout is kept by one timer per session: each of several calls in
    flight still fails with UndeliverableError (and RpcTimeoutError), leaves no pending entry, and
    the remote handlers give up too (the timeout travels with the request)."""
    calls = 3
    entered = 0
    cancelled = 0
    all_cancelled = trio.Event()

    class Stuck(Echo):
        @agentwire.rpc
        async def on_ping(self, message: Ping, ctx: agentwire.MessageContext) -> Pong:  # type: ignore[override]
            nonlocal entered, cancelled
            entered += 1
            try:
                await trio.sleep_forever()
            finally:
                cancelled += 1
                if cancelled == calls:
                    all_cancelled.set()

    errors: list[BaseException] = []

    async def call(worker: WorkerRuntime, key: str) -> None:
        try:
            await worker.send_message(Ping("x"), AgentId("stuck", key))
        except agentwire.UndeliverableError as exc:
            errors.append(exc)

    with trio.fail_after(GUARD):
        async with two_workers(rpc_timeout=0.5) as (a, b):
            await Stuck.register(b, "stuck", Stuck)
            async with trio.open_nursery() as nursery:
                for n in range(calls):
                    nursery.start_soon(call, a, str(n))
            assert len(errors) == calls
            assert all("rpc_timeout=0.5" in str(exc) for exc in errors)
            assert all(isinstance(exc, agentwire.RpcTimeoutError) for exc in errors)
            assert entered == calls
            session = a.worker_statistics().link.session
            assert session is not None
            assert session.pending_rpcs == 0
            await all_cancelled.wait()
            # The session still works after its timer fired.
            assert (await a.send_message(Ping("y"), AgentId("b", "k"))).text


async def test_a_worker_bounds_what_its_handlers_queue_like_an_in_process_runtime() -> None:
    from tests.test_runtime import Flood, Flooder, GatedSink, Msg, Result

    with trio.fail_after(GUARD):
        async with (
            open_gateway("127.0.0.1:0", startup_grace=0) as gateway,
            open_worker(gateway.address, mailbox_size=1, max_overflow=0) as worker,
        ):
            await GatedSink.register(worker, "sink", GatedSink)
            await Flooder.register(worker, "flooder", Flooder)
            await worker.add_subscription(TypeSubscription("t", "sink"))
            await worker.publish_message(Msg(-1), TopicId("t", "k"))  # handled, blocked
            await worker.publish_message(Msg(-2), TopicId("t", "k"))  # fills the mailbox
            await worker.wait_until(lambda s: s.busy_agents == 1 and s.queued == 1)
            flood = Flood(3, rpc=True)
            assert await worker.send_message(flood, AgentId("flooder", "k")) == Result(3)
            assert worker.statistics().dropped == 3


async def test_event_bytes_that_are_not_a_cloud_event_are_counted_and_the_next_is_delivered(
    fresh_inbox: Inbox,
) -> None:
    with trio.fail_after(GUARD):
        async with two_workers() as (_a, b):
            router = b._worker  # what the session hands each event the gateway sends
            await router.handle_event(b"\x0a\x02e1\xff\xff\xff")
            statistics = b.worker_statistics()
            assert (statistics.incoming_events, statistics.undecodable_events) == (1, 1)
            good = serialized_cloud_event(
                topic=TopicId("news", "k"),
                sender=AgentId("a", "k"),
                type_name=b.serialization.serialize(Ping("hi"), content_type="application/json")[0],
                content_type="application/json",
                data=b'{"text": "hi"}',
                event_id="e2",
            )
            await router.handle_event(good)
            await fresh_inbox.wait_for(1)
            assert fresh_inbox.items == [("b/k", "hi", "a/k")]
            assert b.worker_statistics().undecodable_events == 1
