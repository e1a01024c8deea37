"""Reconnect, replay and the disconnected-call policy of the worker link (fake gateway)."""

from __future__ import annotations

import functools
import itertools
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

from agentwire import ConnectionLostError
from agentwire._proto import agent_worker_pb2 as pb
from agentwire._retry import RetryPolicy
from agentwire._worker._link import ConnectionState, Rotation, WorkerLink
from agentwire._worker._protocol import ADD_SUBSCRIPTION, OPEN_CHANNEL, REGISTER_AGENT

from .fakes import FakeChannel
from .test_session import Handler, request_to


class FakeNetwork:
    """Hands out a fresh FakeChannel per connection; ``down`` refuses connections."""

    def __init__(self) -> None:
        self.channels: list[FakeChannel] = []
        self.down = False
        self.attempts = 0
        self.attempt_times: list[float] = []
        self.new_channel = trio.Event()
        self.error: Exception = OSError("connection refused")

    @asynccontextmanager
    async def connect(self) -> AsyncIterator[FakeChannel]:
        self.attempts += 1
        self.attempt_times.append(trio.current_time())
        refused = self.down
        await trio.lowlevel.checkpoint()
        if refused:
            raise self.error
        channel = FakeChannel()
        self.channels.append(channel)
        self.new_channel.set()
        self.new_channel = trio.Event()
        yield channel

    async def cut(self) -> None:
        """End the current OpenChannel stream, as a dead connection would."""
        self.cut_at = trio.current_time()
        await self.channels[-1].end_for(OPEN_CHANNEL).end()

    def gaps_since_cut(self, first_attempt: int) -> list[float]:
        """The time before each attempt from ``first_attempt`` on (the first from the cut)."""
        times = [self.cut_at, *self.attempt_times[first_attempt:]]
        return [after - before for before, after in itertools.pairwise(times)]


def unary_log(channel: FakeChannel) -> list[tuple[str, str]]:
    out = []
    for call in channel.calls:
        if call.path == REGISTER_AGENT:
            out.append(("type", pb.RegisterAgentTypeRequest.FromString(call.request or b"").type))
        elif call.path == ADD_SUBSCRIPTION:
            request = pb.AddSubscriptionRequest.FromString(call.request or b"")
            out.append(("sub", request.subscription.id))
    return out


FAST = RetryPolicy(initial_delay=0.1, max_delay=1.0, max_attempts=50, jitter=0.5)


async def test_reconnect_replays_registrations_with_a_new_client_id(
    autojump_clock: trio.testing.MockClock,
) -> None:
    net = FakeNetwork()
    link = WorkerLink(net.connect, Handler(), reconnect=FAST)
    async with trio.open_nursery() as nursery:
        await nursery.start(link.run)
        await link.register_agent_type("a")
        await link.add_subscription(pb.Subscription(id="s1"))
        await link.add_subscription(pb.Subscription(id="s2"))
        await link.remove_subscription("s1")
        first_id = link.statistics().client_id
        await net.cut()
        await link.wait_for_state(ConnectionState.DISCONNECTED)
        await link.wait_for_state(ConnectionState.CONNECTED)
        second_id = link.statistics().client_id
        nursery.cancel_scope.cancel()
    assert first_id != second_id
    second = net.channels[1]
    assert second.calls[0].path == OPEN_CHANNEL
    assert unary_log(second) == [("type", "a"), ("sub", "s2")]
    assert {c.metadata["client-id"] for c in second.calls} == {second_id}
    assert link.state is ConnectionState.CLOSED


async def test_in_flight_rpc_fails_and_later_call_waits_for_reconnect(
    autojump_clock: trio.testing.MockClock,
) -> None:
    net = FakeNetwork()
    link = WorkerLink(net.connect, Handler(), reconnect=FAST, disconnected_wait=60)
    async with trio.open_nursery() as nursery:
        await nursery.start(link.run)
        failures: list[BaseException] = []

        async def in_flight() -> None:
            with pytest.raises(ConnectionLostError) as info:
                await link.rpc(request_to("x/1"))
            failures.append(info.value)

        nursery.start_soon(in_flight)
        await net.channels[0].end_for(OPEN_CHANNEL).receive()
        net.down = True
        await net.cut()
        await link.wait_for_state(ConnectionState.DISCONNECTED)
        assert len(failures) == 1

        answered = trio.Event()

        async def waiting_call() -> None:
            await link.rpc(request_to("x/2"))
            answered.set()

        nursery.start_soon(waiting_call)
        await trio.sleep(5)  # several failed attempts go by (mock clock)
        assert link.state is not ConnectionState.CONNECTED
        assert not answered.is_set()
        net.down = False
        await link.wait_for_state(ConnectionState.CONNECTED)
        server = net.channels[-1].end_for(OPEN_CHANNEL)
        request = pb.Message.FromString(await server.receive()).request
        assert request.target.key == "2"
        await server.send(
            pb.Message(response=pb.RpcResponse(request_id=request.request_id)).SerializeToString()
        )
        await answered.wait()
        assert link.statistics().failed_attempts >= 1
        nursery.cancel_scope.cancel()


async def test_call_while_disconnected_is_bounded(autojump_clock: trio.testing.MockClock) -> None:
    net = FakeNetwork()
    link = WorkerLink(net.connect, Handler(), reconnect=FAST, disconnected_wait=3)
    async with trio.open_nursery() as nursery:
        await nursery.start(link.run)
        net.down = True
        await net.cut()
        await link.wait_for_state(ConnectionState.DISCONNECTED)
        start = trio.current_time()
        with pytest.raises(ConnectionLostError, match="reconnecting"):
            await link.rpc(request_to("x/1"))
        assert trio.current_time() - start == pytest.approx(3)
        # A caller's own, shorter deadline wins.
        with trio.move_on_after(1) as scope:
            await link.publish(pb.Message().cloudEvent)
        assert scope.cancelled_caught
        nursery.cancel_scope.cancel()


async def test_gives_up_when_the_policy_runs_out(autojump_clock: trio.testing.MockClock) -> None:
    net = FakeNetwork()
    policy = RetryPolicy(initial_delay=0.5, max_delay=1.0, max_attempts=4)
    link = WorkerLink(net.connect, Handler(), reconnect=policy)
    async with trio.open_nursery() as nursery:
        await nursery.start(link.run)
        net.down = True
        await net.cut()
        await link.wait_for_state(ConnectionState.CLOSED)
        with pytest.raises(ConnectionLostError, match="closed"):
            await link.rpc(request_to("x/1"))
    # the first connection, an immediate retry, then the policy's three delays
    assert net.attempts == 5
    assert net.gaps_since_cut(1) == [0, 0.5, 1.0, 1.0]


async def test_first_connection_failure_raises() -> None:
    net = FakeNetwork()
    net.down = True
    link = WorkerLink(net.connect, Handler())
    async with trio.open_nursery() as nursery:
        with pytest.raises(ConnectionLostError, match="could not connect"):
            await nursery.start(link.run)
    assert link.state is ConnectionState.CLOSED


async def test_states_iterator_reports_changes(autojump_clock: trio.testing.MockClock) -> None:
    net = FakeNetwork()
    link = WorkerLink(net.connect, Handler(), reconnect=FAST)
    seen: list[ConnectionState] = []
    async with trio.open_nursery() as nursery:
        await nursery.start(link.run)

        async def watch() -> None:
            async for state in link.states():
                seen.append(state)

        nursery.start_soon(watch)
        await trio.testing.wait_all_tasks_blocked()
        await net.cut()
        await link.wait_for_state(ConnectionState.DISCONNECTED)
        await link.wait_for_state(ConnectionState.CONNECTED)
        await trio.testing.wait_all_tasks_blocked()
        nursery.cancel_scope.cancel()
    assert seen[0] is ConnectionState.CONNECTED
    assert ConnectionState.DISCONNECTED in seen
    assert seen[-1] is ConnectionState.CONNECTED


@settings(max_examples=40, deadline=None)
@given(
    initial=st.floats(0.01, 2.0),
    factor=st.floats(1.0, 4.0),
    cap_factor=st.floats(1.0, 50.0),
    jitter=st.floats(0.0, 1.0),
    outage=st.integers(0, 12),
    cuts=st.integers(1, 3),
)
def test_backoff_invariants(
    initial: float, factor: float, cap_factor: float, jitter: float, outage: int, cuts: int
) -> None:
    """Whatever the policy and outage: the first attempt after a loss is made
    at once, the later waits stay within [initial*(1-j), cap] with caps that
    never decrease within an outage, the link comes back after exactly
    ``outage`` failed attempts per cut, with a fresh client-id and a full replay."""
    policy = RetryPolicy(
        initial_delay=initial,
        max_delay=initial * cap_factor,
        multiplier=factor,
        max_attempts=100,
        jitter=jitter,
    )

    async def main() -> None:
        net = FakeNetwork()
        link = WorkerLink(net.connect, Handler(), reconnect=policy)
        async with trio.open_nursery() as nursery:
            await nursery.start(link.run)
            await link.register_agent_type("a")
            await link.add_subscription(pb.Subscription(id="s"))
            client_ids = {link.statistics().client_id}
            for _ in range(cuts):
                base = net.attempts
                net.down = outage > 0
                await net.cut()
                await link.wait_for_state(ConnectionState.DISCONNECTED)
                while net.attempts - base < outage:
                    await link.wait_state_change()
                net.down = False
                await link.wait_for_state(ConnectionState.CONNECTED)
                gaps = net.gaps_since_cut(base)
                assert len(gaps) == outage + 1
                assert gaps[0] == 0
                for i, delay in enumerate(gaps[1:]):
                    cap = min(initial * factor**i, policy.max_delay)
                    assert cap * (1 - jitter) - 1e-6 <= delay <= cap + 1e-6
                assert unary_log(net.channels[-1]) == [("type", "a"), ("sub", "s")]
                client_ids.add(link.statistics().client_id)
            nursery.cancel_scope.cancel()
        assert len(client_ids) == cuts + 1

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


op_strategy = st.one_of(
    st.tuples(st.just("type"), st.sampled_from(["a", "b", "c", "d"])),
    st.tuples(st.just("add"), st.sampled_from(["s1", "s2", "s3", "s4"])),
    st.tuples(st.just("remove"), st.sampled_from(["s1", "s2", "s3", "s4"])),
    st.tuples(st.just("cut"), st.integers(0, 3)),
)


@settings(max_examples=60, deadline=None)
@given(ops=st.lists(op_strategy, max_size=25))
def test_replay_matches_the_model_after_any_history(ops: list[tuple[str, object]]) -> None:
    """Whatever mix of registrations, removals and connection cuts (each with
    some failed reconnect attempts): every new session replays exactly the
    live registrations, in the order they were first accepted, under a fresh
    client-id; and no call hangs."""

    async def main() -> None:
        net = FakeNetwork()
        link = WorkerLink(net.connect, Handler(), reconnect=FAST, disconnected_wait=1000)
        model: dict[tuple[str, str], None] = {}
        client_ids: set[str | None] = set()
        async with trio.open_nursery() as nursery:
            await nursery.start(link.run)
            client_ids.add(link.statistics().client_id)
            for kind, arg in ops:
                if kind == "type":
                    await link.register_agent_type(str(arg))
                    model.setdefault(("type", str(arg)), None)
                elif kind == "add":
                    await link.add_subscription(pb.Subscription(id=str(arg)))
                    model.setdefault(("sub", str(arg)), None)
                elif kind == "remove":
                    await link.remove_subscription(str(arg))
                    model.pop(("sub", str(arg)), None)
                else:
                    base = net.attempts
                    failures = int(str(arg))
                    net.down = failures > 0
                    await net.cut()
                    await link.wait_for_state(ConnectionState.DISCONNECTED)
                    while net.attempts - base < failures:
                        await link.wait_state_change()
                    net.down = False
                    await link.wait_for_state(ConnectionState.CONNECTED)
                    replayed = unary_log(net.channels[-1])
                    assert replayed == list(model)
                    client_ids.add(link.statistics().client_id)
            nursery.cancel_scope.cancel()
        cuts = sum(1 for kind, _ in ops if kind == "cut")
        assert len(client_ids) == cuts + 1

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


async def test_the_first_attempt_after_a_loss_is_immediate(
    autojump_clock: trio.testing.MockClock,
) -> None:
    net = FakeNetwork()
    link = WorkerLink(net.connect, Handler(), reconnect=FAST)
    async with trio.open_nursery() as nursery:
        await nursery.start(link.run)
        await net.cut()
        await link.wait_for_state(ConnectionState.DISCONNECTED)
        await link.wait_for_state(ConnectionState.CONNECTED)
        nursery.cancel_scope.cancel()
    assert net.gaps_since_cut(1) == [0]


async def test_a_link_waits_for_a_gateway_that_starts_later(
    autojump_clock: trio.testing.MockClock,
) -> None:
    net = FakeNetwork()
    net.down = True
    link = WorkerLink(net.connect, Handler(), reconnect=FAST, connect_timeout=30)

    async def gateway_comes_up() -> None:
        await trio.sleep(3)
        net.down = False

    async with trio.open_nursery() as nursery:
        nursery.start_soon(gateway_comes_up)
        await nursery.start(link.run)
        assert link.state is ConnectionState.CONNECTED
        assert trio.current_time() >= 3
        nursery.cancel_scope.cancel()
    assert link.statistics().failed_attempts >= 2


async def test_the_first_connection_gives_up_after_connect_timeout_naming_the_cause(
    autojump_clock: trio.testing.MockClock,
) -> None:
    net = FakeNetwork()
    net.down = True
    net.error = ExceptionGroup("connect", [OSError("connection refused")])
    link = WorkerLink(net.connect, Handler(), reconnect=FAST, connect_timeout=5)
    async with trio.open_nursery() as nursery:
        with pytest.raises(ConnectionLostError) as info:
            await nursery.start(link.run)
    message = str(info.value)
    assert "OSError: connection refused" in message
    assert "ExceptionGroup" not in message
    assert "tried for 5 s" in message
    assert 4 <= trio.current_time() <= 5
    assert net.attempts > 2


async def test_reconnect_log_lines_name_the_cause(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    net = FakeNetwork()
    link = WorkerLink(net.connect, Handler(), reconnect=FAST)
    caplog.set_level(logging.INFO, logger="agentwire.worker")
    async with trio.open_nursery() as nursery:
        await nursery.start(link.run)
        net.down = True
        net.error = ExceptionGroup("connect", [OSError("connection refused")])
        await net.cut()
        while net.attempts < 3:
            await link.wait_state_change()
        net.down = False
        await link.wait_for_state(ConnectionState.CONNECTED)
        nursery.cancel_scope.cancel()
    failures = [r.getMessage() for r in caplog.records if "attempt failed" in r.getMessage()]
    assert failures
    assert all(m.endswith("OSError: connection refused") for m in failures)


# -- several gateways ---------------------------------------------------------------------------


async def test_a_rotation_goes_on_with_the_next_gateway_at_once_after_a_loss(
    autojump_clock: trio.testing.MockClock,
) -> None:
    first, second = FakeNetwork(), FakeNetwork()
    rotation = Rotation([first.connect, second.connect], ["a:1", "b:2"])
    link = WorkerLink(rotation, Handler(), reconnect=FAST)
    async with trio.open_nursery() as nursery:
        await nursery.start(link.run)
        await link.register_agent_type("a")
        assert (rotation.current, first.attempts, second.attempts) == ("a:1", 1, 0)
        first.down = True  # the first gateway dies
        await first.cut()
        await link.wait_for_state(ConnectionState.DISCONNECTED)
        await link.wait_for_state(ConnectionState.CONNECTED)
        assert (rotation.current, first.attempts, second.attempts) == ("b:2", 1, 1)
        assert unary_log(second.channels[0]) == [("type", "a")]  # replayed on the second
        # The second dies while the first is back: the next rotation starts with the first.
        first.down = False
        await second.cut()
        await link.wait_for_state(ConnectionState.DISCONNECTED)
        await link.wait_for_state(ConnectionState.CONNECTED)
        assert (rotation.current, first.attempts, second.attempts) == ("a:1", 2, 1)
        nursery.cancel_scope.cancel()
    assert first.gaps_since_cut(1) == [0]  # no backoff: the next gateway answered


async def test_a_rotation_backs_off_only_after_trying_every_gateway(
    autojump_clock: trio.testing.MockClock,
) -> None:
    networks = [FakeNetwork(), FakeNetwork(), FakeNetwork()]
    rotation = Rotation([n.connect for n in networks], ["a:1", "b:2", "c:3"])
    policy = RetryPolicy(initial_delay=0.5, max_delay=1.0, max_attempts=3)
    link = WorkerLink(rotation, Handler(), reconnect=policy)
    async with trio.open_nursery() as nursery:
        await nursery.start(link.run)
        for network in networks:
            network.down = True
        await networks[0].cut()
        await link.wait_for_state(ConnectionState.CLOSED)
    # After the loss: one immediate rotation, then one after each of the policy's two delays.
    assert [n.attempts for n in networks] == [1 + 3, 3, 3]
    times = sorted({t for n in networks for t in n.attempt_times[1 if n is networks[0] else 0 :]})
    cut = networks[0].cut_at
    assert [t - cut for t in times] == [0, 0.5, 1.5]
    assert link.statistics().failed_attempts == 3


async def test_a_rotation_that_reaches_no_gateway_names_each_failure() -> None:
    first, second = FakeNetwork(), FakeNetwork()
    first.down = second.down = True
    second.error = OSError("no route to host")
    link = WorkerLink(Rotation([first.connect, second.connect], ["a:1", "b:2"]), Handler())
    async with trio.open_nursery() as nursery:
        with pytest.raises(ConnectionLostError) as info:
            await nursery.start(link.run)
    assert "a:1: OSError: connection refused" in str(info.value)
    assert "b:2: OSError: no route to host" in str(info.value)


class HeldChannel(FakeChannel):
    """A FakeChannel whose unary calls wait for ``release`` while ``held``."""

    held = False
    release = trio.Event()

    async def unary(self, path: str, request: bytes, **kwargs: object) -> bytes:
        answer = await super().unary(path, request, **kwargs)  # type: ignore[arg-type]
        if HeldChannel.held:
            await HeldChannel.release.wait()
        return answer


async def test_a_reconnect_issues_every_registration_before_the_first_answer(
    autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("tests.worker.test_link.FakeChannel", HeldChannel)
    monkeypatch.setattr(HeldChannel, "release", trio.Event())
    net = FakeNetwork()
    link = WorkerLink(net.connect, Handler(), reconnect=FAST)
    async with trio.open_nursery() as nursery:
        await nursery.start(link.run)
        await link.register_agent_type("a")
        for name in ("s1", "s2", "s3"):
            await link.add_subscription(pb.Subscription(id=name))
        monkeypatch.setattr(HeldChannel, "held", True)
        await net.cut()
        await link.wait_for_state(ConnectionState.CONNECTING)
        await trio.testing.wait_all_tasks_blocked()
        # All four are out, none answered: the link is not ready yet.
        assert unary_log(net.channels[1]) == [
            ("type", "a"),
            ("sub", "s1"),
            ("sub", "s2"),
            ("sub", "s3"),
        ]
        assert link.state is ConnectionState.CONNECTING
        assert link.session is None
        HeldChannel.release.set()
        await link.wait_for_state(ConnectionState.CONNECTED)
        nursery.cancel_scope.cancel()


async def test_a_failed_replay_fails_the_attempt_with_the_first_failure_in_order(
    autojump_clock: trio.testing.MockClock,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    def refuse_all_but_s1(path: str, request: bytes, metadata: dict[str, str]) -> bytes:
        name = pb.AddSubscriptionRequest.FromString(request).subscription.id
        if name != "s1":
            raise RuntimeError(f"refused {name}")
        return b""

    net = FakeNetwork()
    link = WorkerLink(net.connect, Handler(), reconnect=FAST)
    async with trio.open_nursery() as nursery:
        await nursery.start(link.run)
        for name in ("s1", "s2", "s3"):
            await link.add_subscription(pb.Subscription(id=name))
        monkeypatch.setattr(
            "tests.worker.test_link.FakeChannel",
            functools.partial(FakeChannel, unary_handler=refuse_all_but_s1),
        )
        with caplog.at_level(logging.INFO, logger="agentwire.worker"):
            await net.cut()
            while link.statistics().failed_attempts < 2:
                await link.wait_state_change()
        nursery.cancel_scope.cancel()
    failures = [r.getMessage() for r in caplog.records if "attempt failed" in r.getMessage()]
    assert len(failures) >= 2
    assert all("refused s2" in failure for failure in failures)
    assert link.statistics().registrations == 3  # nothing taken out of the log


async def test_registrations_made_at_once_are_all_in_flight_at_once(
    autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("tests.worker.test_link.FakeChannel", HeldChannel)
    monkeypatch.setattr(HeldChannel, "release", trio.Event())
    monkeypatch.setattr(HeldChannel, "held", True)
    net = FakeNetwork()
    link = WorkerLink(net.connect, Handler(), reconnect=FAST)
    async with trio.open_nursery() as nursery:
        await nursery.start(link.run)
        async with trio.open_nursery() as calls:
            calls.start_soon(link.register_agent_type, "a")
            for name in ("s1", "s2"):
                calls.start_soon(link.add_subscription, pb.Subscription(id=name))
            await trio.testing.wait_all_tasks_blocked()
            assert sorted(unary_log(net.channels[0])) == [
                ("sub", "s1"),
                ("sub", "s2"),
                ("type", "a"),
            ]
            assert link.statistics().registrations == 0  # none answered yet
            HeldChannel.release.set()
        assert link.statistics().registrations == 3
        nursery.cancel_scope.cancel()
