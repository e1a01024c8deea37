"""The in-process runtime: AutoGen single-threaded semantics plus agentwire's
delivery model (per-agent order, backpressure, cancellation, re-entrancy)."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
import trio.lowlevel
import trio.testing

from agentwire import (
    JSON_DATA_CONTENT_TYPE,
    AgentId,
    BaseAgent,
    DefaultInterventionHandler,
    DefaultTopicId,
    DropMessage,
    GatewayRejectedError,
    MessageContext,
    MessageDroppedError,
    OverloadedError,
    RequestCancelledError,
    RoutedAgent,
    Runtime,
    RuntimeClosedError,
    Subscription,
    TopicId,
    TypePrefixSubscription,
    TypeSubscription,
    UndeliverableError,
    UnknownSubscriptionError,
    default_subscription,
    event,
    message_handler,
    open_runtime,
    open_worker,
    rpc,
)
from agentwire._budget import CheckpointBudget

from .refusing_router import open_refusing_runtime
from .worker.fakes import FakeChannel


@dataclasses.dataclass
class Msg:
    n: int


@dataclasses.dataclass
class Result:
    n: int


class Echo(RoutedAgent):
    def __init__(self) -> None:
        super().__init__("echo")
        self.received: list[tuple[int, AgentId | None]] = []

    @message_handler
    async def on_msg(self, message: Msg, ctx: MessageContext) -> Result:
        self.received.append((message.n, ctx.sender))
        return Result(message.n)


class Failing(RoutedAgent):
    def __init__(self) -> None:
        super().__init__("fails")

    @message_handler
    async def on_msg(self, message: Msg, ctx: MessageContext) -> None:
        raise KeyError(f"bad {message.n}")


# -- RPC basics -------------------------------------------------------------------------


async def test_send_returns_result_and_activates_lazily() -> None:
    created: list[AgentId] = []

    def factory() -> Echo:
        agent = Echo()
        created.append(agent.id)
        return agent

    async with open_runtime() as runtime:
        await Echo.register(runtime, "echo", factory)
        assert created == []
        assert await runtime.send_message(Msg(1), AgentId("echo", "a")) == Result(1)
        assert await runtime.send_message(Msg(2), AgentId("echo", "a")) == Result(2)
        assert created == [AgentId("echo", "a")]


async def test_async_factory_and_expected_class() -> None:
    async def make() -> Echo:
        await trio.lowlevel.checkpoint()
        return Echo()

    async with open_runtime() as runtime:
        await runtime.register_factory("echo", make, expected_class=Echo)
        await runtime.register_factory("wrong", make, expected_class=Failing)
        assert await runtime.send_message(Msg(3), AgentId("echo", "k")) == Result(3)
        with pytest.raises(ValueError, match="expected a Failing"):
            await runtime.send_message(Msg(3), AgentId("wrong", "k"))


async def test_handler_exception_reaches_caller_as_itself() -> None:
    async with open_runtime() as runtime:
        await Failing.register(runtime, "failing", Failing)
        with pytest.raises(KeyError, match="bad 7"):
            await runtime.send_message(Msg(7), AgentId("failing", "default"))


async def test_unknown_recipient_type_is_undeliverable() -> None:
    async with open_runtime() as runtime:
        with pytest.raises(UndeliverableError, match="nobody"):
            await runtime.send_message(Msg(1), AgentId("nobody", "default"))


async def test_duplicate_factory_refused() -> None:
    async with open_runtime() as runtime:
        await runtime.register_factory("echo", Echo)
        with pytest.raises(ValueError, match="already registered"):
            await runtime.register_factory("echo", Echo)


async def test_instance_registration_rules() -> None:
    async with open_runtime() as runtime:
        first = Echo.__new__(Echo)
        Echo.__init__(first)
        await runtime.register_agent_instance(first, AgentId("inst", "a"))
        assert await runtime.send_message(Msg(1), AgentId("inst", "a")) == Result(1)
        assert first.received == [(1, None)]
        with pytest.raises(ValueError, match="already exists"):
            await runtime.register_agent_instance(first, AgentId("inst", "a"))
        other = Failing.__new__(Failing)
        Failing.__init__(other)
        with pytest.raises(ValueError, match="must all be Echo"):
            await runtime.register_agent_instance(other, AgentId("inst", "b"))
        await runtime.register_factory("fact", Echo)
        with pytest.raises(ValueError, match="factories and instances"):
            await runtime.register_agent_instance(other, AgentId("fact", "x"))
        with pytest.raises(UndeliverableError, match="instances only"):
            await runtime.send_message(Msg(1), AgentId("inst", "unknown-key"))


async def test_try_get_get_and_lookup_errors() -> None:
    async with open_runtime() as runtime:
        await Echo.register(runtime, "echo", Echo)
        with pytest.raises(LookupError):
            await runtime.try_get_underlying_agent_instance(AgentId("nope", "k"))
        with pytest.raises(TypeError, match="not a Failing"):
            await runtime.try_get_underlying_agent_instance(AgentId("echo", "k"), Failing)
        assert await runtime.get("echo", "k2") == AgentId("echo", "k2")
        assert runtime.statistics().agents == 1
        assert await runtime.get("echo", "k3", lazy=False) == AgentId("echo", "k3")
        assert runtime.statistics().agents == 2


class Loose(RoutedAgent):
    def __init__(self) -> None:
        super().__init__("returns what no annotation names")

    @message_handler
    async def on_msg(self, message: Msg, ctx: MessageContext) -> Any:
        return Result(message.n)


async def test_a_result_type_no_annotation_names_is_registered_when_first_returned() -> None:
    async with open_runtime() as runtime:
        await Loose.register(runtime, "loose", Loose)
        assert not runtime.serialization.is_registered("Result", JSON_DATA_CONTENT_TYPE)
        await runtime.send_message(Msg(1), AgentId("loose", "k"))
        assert runtime.serialization.is_registered("Result", JSON_DATA_CONTENT_TYPE)


# -- publish ------------------------------------------------------------------------------


@default_subscription
class Cascader(RoutedAgent):
    """Re-publishes a decremented counter until it reaches zero (AutoGen's cascade)."""

    def __init__(self) -> None:
        super().__init__("cascade")
        self.received = 0

    @event
    async def on_msg(self, message: Msg, ctx: MessageContext) -> None:
        self.received += 1
        if message.n > 0:
            await self.publish_message(Msg(message.n - 1), DefaultTopicId())


async def test_cascade_counts() -> None:
    rounds = 5
    agents = 4
    async with open_runtime() as runtime:
        for i in range(agents):
            await Cascader.register(runtime, f"cascader{i}", Cascader)
        await runtime.publish_message(Msg(rounds), DefaultTopicId())
        await runtime.stop_when_idle()
        for i in range(agents):
            agent = await runtime.try_get_underlying_agent_instance(
                AgentId(f"cascader{i}", "default"), Cascader
            )
            # round r is published by every agent and received by the others
            expected = 1 + sum((agents - 1) ** r for r in range(1, rounds + 1))
            assert agent.received == expected


async def test_publish_skips_sender_and_keeps_duplicates() -> None:
    async with open_runtime() as runtime:
        await Echo.register(runtime, "echo", Echo)
        await runtime.add_subscription(TypeSubscription("t", "echo"))
        await runtime.add_subscription(TypePrefixSubscription("t", "echo"))
        await runtime.publish_message(Msg(1), TopicId("t", "a"), sender=AgentId("echo", "a"))
        await runtime.publish_message(Msg(2), TopicId("t", "b"), sender=AgentId("echo", "a"))
        await runtime.wait_idle()
        assert runtime.statistics().agents == 1  # echo/a was never created
        agent = await runtime.try_get_underlying_agent_instance(AgentId("echo", "b"), Echo)
        assert agent.received == [(2, AgentId("echo", "a")), (2, AgentId("echo", "a"))]


async def test_subscriptions_at_run_time() -> None:
    async with open_runtime() as runtime:
        await Echo.register(runtime, "echo", Echo, skip_direct_message_subscription=True)
        sub = TypeSubscription("late", "echo")
        await runtime.publish_message(Msg(1), TopicId("late", "k"))
        await runtime.add_subscription(sub)
        assert runtime.get_subscriptions() == [sub]
        await runtime.publish_message(Msg(2), TopicId("late", "k"))
        await runtime.remove_subscription(sub.id)
        await runtime.publish_message(Msg(3), TopicId("late", "k"))
        await runtime.wait_idle()
        agent = await runtime.try_get_underlying_agent_instance(AgentId("echo", "k"), Echo)
        assert [n for n, _ in agent.received] == [2]
        with pytest.raises(UnknownSubscriptionError):
            await runtime.remove_subscription(sub.id)


async def test_publish_handler_errors_ignored_by_default(caplog: pytest.LogCaptureFixture) -> None:
    async with open_runtime() as runtime:
        await Failing.register(runtime, "failing", Failing)
        await runtime.add_subscription(TypeSubscription("t", "failing"))
        await runtime.publish_message(Msg(1), TopicId("t", "k"))
        await runtime.stop_when_idle()
    assert "failed on a published message" in caplog.text


async def test_publish_handler_errors_surface_when_not_ignored() -> None:
    async with open_runtime(ignore_unhandled_exceptions=False) as runtime:
        await Failing.register(runtime, "failing", Failing)
        await runtime.add_subscription(TypeSubscription("t", "failing"))
        await runtime.publish_message(Msg(1), TopicId("t", "k"))
        with pytest.raises(KeyError, match="bad 1"):
            await runtime.stop_when_idle()


async def test_publish_handler_error_raised_on_exit() -> None:
    raised: list[BaseException] = []
    try:
        async with open_runtime(ignore_unhandled_exceptions=False) as runtime:
            await Failing.register(runtime, "failing", Failing)
            await runtime.add_subscription(TypeSubscription("t", "failing"))
            await runtime.publish_message(Msg(2), TopicId("t", "k"))
            await trio.testing.wait_all_tasks_blocked()
    except KeyError as exc:
        raised.append(exc)
    assert [str(e) for e in raised] == ["'bad 2'"]


async def test_publish_to_unknown_type_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    async with open_runtime() as runtime:
        await runtime.add_subscription(TypeSubscription("t", "ghost"))
        await runtime.publish_message(Msg(1), TopicId("t", "k"))
        await runtime.wait_idle()
    assert "cannot deliver a publish to ghost/k" in caplog.text


# -- state ----------------------------------------------------------------------------------


class Counter(RoutedAgent):
    def __init__(self) -> None:
        super().__init__("counts")
        self.count = 0

    @message_handler
    async def on_msg(self, message: Msg, ctx: MessageContext) -> None:
        self.count += message.n

    async def save_state(self) -> Mapping[str, Any]:
        return {"count": self.count}

    async def load_state(self, state: Mapping[str, Any]) -> None:
        self.count = state["count"]


async def test_state_round_trip() -> None:
    async with open_runtime() as runtime:
        await Counter.register(runtime, "counter", Counter)
        await runtime.send_message(Msg(3), AgentId("counter", "a"))
        await runtime.send_message(Msg(4), AgentId("counter", "b"))
        state = await runtime.save_state()
        single = await runtime.agent_save_state(AgentId("counter", "a"))
    assert state == {"counter/a": {"count": 3}, "counter/b": {"count": 4}}
    assert single == {"count": 3}
    async with open_runtime() as runtime:
        await Counter.register(runtime, "counter", Counter)
        await runtime.load_state({**state, "unknown/x": {"count": 1}})
        agent = await runtime.try_get_underlying_agent_instance(AgentId("counter", "b"), Counter)
        assert agent.count == 4
        await runtime.agent_load_state(AgentId("counter", "b"), {"count": 10})
        assert agent.count == 10
        assert runtime.statistics().agents == 2


# -- interventions ---------------------------------------------------------------------------


class Doubler(DefaultInterventionHandler):
    def __init__(self) -> None:
        self.published: list[Any] = []

    async def on_send(
        self, message: Any, *, message_context: MessageContext, recipient: AgentId
    ) -> Any:
        if isinstance(message, Msg) and message.n < 0:
            return DropMessage
        return Msg(message.n * 2) if isinstance(message, Msg) else message

    async def on_publish(self, message: Any, *, message_context: MessageContext) -> Any:
        self.published.append(message)
        return DropMessage

    async def on_response(self, message: Any, *, sender: AgentId, recipient: AgentId | None) -> Any:
        if isinstance(message, Result) and message.n == 100:
            return DropMessage
        return message


async def test_interventions() -> None:
    doubler = Doubler()
    async with open_runtime(intervention_handlers=[doubler]) as runtime:
        await Echo.register(runtime, "echo", Echo)
        await runtime.add_subscription(TypeSubscription("t", "echo"))
        assert await runtime.send_message(Msg(2), AgentId("echo", "k")) == Result(4)
        with pytest.raises(MessageDroppedError):
            await runtime.send_message(Msg(-1), AgentId("echo", "k"))
        with pytest.raises(MessageDroppedError):
            await runtime.send_message(Msg(50), AgentId("echo", "k"))
        await runtime.publish_message(Msg(9), TopicId("t", "k"))
        await runtime.wait_idle()
        agent = await runtime.try_get_underlying_agent_instance(AgentId("echo", "k"), Echo)
        assert [n for n, _ in agent.received] == [4, 100]
        assert doubler.published == [Msg(9)]


class Raising(DefaultInterventionHandler):
    async def on_send(
        self, message: Any, *, message_context: MessageContext, recipient: AgentId
    ) -> Any:
        raise PermissionError("no sending")

    async def on_response(self, message: Any, *, sender: AgentId, recipient: AgentId | None) -> Any:
        return None  # warns, means no change


async def test_intervention_exception_reaches_sender() -> None:
    async with open_runtime(intervention_handlers=[Raising()]) as runtime:
        await Echo.register(runtime, "echo", Echo)
        with pytest.raises(PermissionError):
            await runtime.send_message(Msg(1), AgentId("echo", "k"))


async def test_intervention_returning_none_warns() -> None:
    class NoneOnResponse(DefaultInterventionHandler):
        async def on_response(
            self, message: Any, *, sender: AgentId, recipient: AgentId | None
        ) -> Any:
            return None

    async with open_runtime(intervention_handlers=[NoneOnResponse()]) as runtime:
        await Echo.register(runtime, "echo", Echo)
        with pytest.warns(RuntimeWarning, match="returned None"):
            assert await runtime.send_message(Msg(1), AgentId("echo", "k")) == Result(1)


# -- ordering, backpressure, concurrency -----------------------------------------------------------


class Slow(RoutedAgent):
    """Yields inside every handler, so messages really queue up."""

    def __init__(self) -> None:
        super().__init__("slow")
        self.log: list[tuple[str, int]] = []
        self.active = 0
        self.max_active = 0

    @message_handler
    async def on_msg(self, message: Msg, ctx: MessageContext) -> Result:
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        self.log.append(("rpc" if ctx.is_rpc else "event", message.n))
        for _ in range(3):
            await trio.lowlevel.checkpoint()
        self.active -= 1
        return Result(message.n)


async def test_per_pair_order_and_one_message_at_a_time() -> None:
    async with open_runtime() as runtime:
        await Slow.register(runtime, "slow", Slow)
        await runtime.add_subscription(TypeSubscription("t", "slow"))
        target = AgentId("slow", "k")

        async def sender(base: int) -> None:
            for i in range(base, base + 20):
                if i % 3 == 0:
                    await runtime.send_message(Msg(i), target)
                else:
                    await runtime.publish_message(Msg(i), TopicId("t", "k"))

        async with trio.open_nursery() as nursery:
            for base in (0, 100, 200):
                nursery.start_soon(sender, base)
        await runtime.wait_idle()
        agent = await runtime.try_get_underlying_agent_instance(target, Slow)
        assert agent.max_active == 1
        for base in (0, 100, 200):
            seen = [n for _, n in agent.log if base <= n < base + 20]
            assert seen == list(range(base, base + 20))


class Gate(RoutedAgent):
    def __init__(self) -> None:
        super().__init__("gate")
        self.open = trio.Event()
        self.handled: list[int] = []

    @message_handler
    async def on_msg(self, message: Msg, ctx: MessageContext) -> None:
        await self.open.wait()
        self.handled.append(message.n)


async def test_full_mailbox_makes_sender_wait() -> None:
    async with open_runtime(mailbox_size=2) as runtime:
        await Gate.register(runtime, "gate", Gate)
        await runtime.add_subscription(TypeSubscription("t", "gate"))
        published: list[int] = []

        async def publisher() -> None:
            for i in range(5):
                await runtime.publish_message(Msg(i), TopicId("t", "k"))
                published.append(i)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(publisher)
            await trio.testing.wait_all_tasks_blocked()
            # message 0 is being handled (blocked), 1 and 2 fill the mailbox
            assert published == [0, 1, 2]
            stats = runtime.statistics()
            assert (stats.queued, stats.in_flight, stats.busy_agents) == (2, 1, 1)
            gate = await runtime.try_get_underlying_agent_instance(AgentId("gate", "k"), Gate)
            gate.open.set()
        await runtime.wait_idle()
        assert gate.handled == [0, 1, 2, 3, 4]
        assert published == [0, 1, 2, 3, 4]


class Sleeper(RoutedAgent):
    def __init__(self) -> None:
        super().__init__("sleeps")
        self.started: list[int] = []
        self.cancelled: list[int] = []
        self.finished: list[int] = []

    @message_handler
    async def on_msg(self, message: Msg, ctx: MessageContext) -> Result:
        self.started.append(message.n)
        try:
            await trio.sleep(100)
        except trio.Cancelled:
            self.cancelled.append(message.n)
            raise
        self.finished.append(message.n)
        return Result(message.n)


async def test_cancelling_an_rpc_cancels_the_handler(autojump_clock: trio.abc.Clock) -> None:
    async with open_runtime() as runtime:
        await Sleeper.register(runtime, "sleeper", Sleeper)
        target = AgentId("sleeper", "k")
        # inline path (idle agent): the handler runs in the caller's task
        with trio.move_on_after(1):
            await runtime.send_message(Msg(1), target)
        agent = await runtime.try_get_underlying_agent_instance(target, Sleeper)
        assert agent.cancelled == [1]

        # queued path: 2 occupies the agent, 3 queues; both callers give up
        async def caller(n: int, seconds: float) -> None:
            with trio.move_on_after(seconds):
                await runtime.send_message(Msg(n), target)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(caller, 2, 5)
            await trio.testing.wait_all_tasks_blocked()
            nursery.start_soon(caller, 3, 1)
            await trio.testing.wait_all_tasks_blocked()
            assert runtime.statistics().pending_rpcs == 1
        await runtime.wait_idle()
        assert agent.started == [1, 2]  # 3 was abandoned before it started
        assert agent.cancelled == [1, 2]
        stats = runtime.statistics()
        assert (stats.pending_rpcs, stats.queued, stats.in_flight, stats.busy_agents) == (
            0,
            0,
            0,
            0,
        )


class Shielded(RoutedAgent):
    """Waits for its message's gate, shielded from cancellation."""

    def __init__(self) -> None:
        super().__init__("shielded")
        self.gates = {n: trio.Event() for n in range(3)}
        self.done: list[int] = []

    @message_handler
    async def on_msg(self, message: Msg, ctx: MessageContext) -> Result:
        with trio.CancelScope(shield=True):
            await self.gates[message.n].wait()
        self.done.append(message.n)
        return Result(message.n)


async def test_response_after_caller_left_is_dropped_and_counted() -> None:
    async with open_runtime() as runtime:
        await Shielded.register(runtime, "shielded", Shielded)
        target = AgentId("shielded", "k")
        agent = await runtime.try_get_underlying_agent_instance(target, Shielded)
        caller_scope = trio.CancelScope()

        async def leaving_caller() -> None:
            with caller_scope:
                await runtime.send_message(Msg(2), target)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(runtime.send_message, Msg(1), target)  # occupies the agent
            await trio.testing.wait_all_tasks_blocked()
            nursery.start_soon(leaving_caller)  # queued behind 1
            await trio.testing.wait_all_tasks_blocked()
            assert runtime.statistics().pending_rpcs == 1
            agent.gates[1].set()  # 1 finishes; 2 starts and blocks, shielded
            await trio.testing.wait_all_tasks_blocked()
            assert agent.done == [1]
            caller_scope.cancel()  # the caller leaves: its entry goes at once
            await trio.testing.wait_all_tasks_blocked()
            assert runtime.statistics().pending_rpcs == 0
            agent.gates[2].set()  # the handler still finishes; its response is late
        await runtime.wait_idle()
        assert agent.done == [1, 2]
        assert runtime.statistics().late_responses == 1


class Selfish(RoutedAgent):
    def __init__(self) -> None:
        super().__init__("calls itself")

    @rpc
    async def on_msg(self, message: Msg, ctx: MessageContext) -> Result:
        if message.n == 0:
            return Result(0)
        inner = await self.send_message(Msg(message.n - 1), self.id)
        assert isinstance(inner, Result)
        return Result(inner.n + 1)


class PingPong(RoutedAgent):
    def __init__(self) -> None:
        super().__init__("bounces")

    @rpc
    async def on_msg(self, message: Msg, ctx: MessageContext) -> Result:
        if message.n == 0:
            return Result(0)
        peer = AgentId("pong" if self.id.type == "ping" else "ping", "k")
        inner = await self.send_message(Msg(message.n - 1), peer)
        assert isinstance(inner, Result)
        return Result(inner.n + 1)


async def test_rpc_cycles_run_reentrantly_instead_of_deadlocking() -> None:
    async with open_runtime() as runtime:
        await Selfish.register(runtime, "selfish", Selfish)
        await PingPong.register(runtime, "ping", PingPong)
        await PingPong.register(runtime, "pong", PingPong)
        assert await runtime.send_message(Msg(5), AgentId("selfish", "k")) == Result(5)
        assert await runtime.send_message(Msg(6), AgentId("ping", "k")) == Result(6)
        # and while busy (queued path) too
        async with trio.open_nursery() as nursery:
            for _ in range(3):
                nursery.start_soon(runtime.send_message, Msg(4), AgentId("ping", "k"))
        assert runtime.statistics().pending_rpcs == 0


class SelfCancelling(RoutedAgent):
    def __init__(self) -> None:
        super().__init__("gives up")

        self.gate = trio.Event()
        self.interrupted: list[int] = []

    @message_handler
    async def on_msg(self, message: Msg, ctx: MessageContext) -> Result:
        if message.n == 0:  # occupies the agent
            await self.gate.wait()
            return Result(0)
        ctx.cancellation.cancel()
        if message.n == 2:
            return Result(2)  # inline: the mark alone makes the caller's error
        try:
            await trio.sleep_forever()  # interrupted only when queued (own scope)
        except trio.Cancelled:
            self.interrupted.append(message.n)
            raise
        return Result(message.n)  # pragma: no cover


async def test_handler_cancelling_itself_gives_request_cancelled(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with open_runtime() as runtime:
        await SelfCancelling.register(runtime, "sc", SelfCancelling)
        target = AgentId("sc", "k")
        agent = await runtime.try_get_underlying_agent_instance(target, SelfCancelling)
        errors: list[BaseException] = []

        async def caller() -> None:
            try:
                await runtime.send_message(Msg(1), target)
            except RequestCancelledError as exc:
                errors.append(exc)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(runtime.send_message, Msg(0), target)
            await trio.testing.wait_all_tasks_blocked()
            nursery.start_soon(caller)  # queued: runs in its own cancel scope
            await trio.testing.wait_all_tasks_blocked()
            agent.gate.set()
        assert agent.interrupted == [1]
        assert len(errors) == 1
        # inline (idle agent): the mark is honoured when the handler returns
        with pytest.raises(RequestCancelledError):
            await runtime.send_message(Msg(2), target)
        assert agent.interrupted == [1]


# -- lifecycle ------------------------------------------------------------------------------------


class Closable(Gate):
    closed: list[AgentId] = []

    async def close(self) -> None:
        Closable.closed.append(self.id)


async def test_close_fails_pending_calls_and_closes_agents() -> None:
    Closable.closed = []
    errors: list[BaseException] = []

    async def caller(runtime: Runtime, n: int) -> None:
        try:
            await runtime.send_message(Msg(n), AgentId("gate", "k"))
        except RuntimeClosedError as exc:
            errors.append(exc)

    async with trio.open_nursery() as outer, open_runtime() as runtime:
        await Closable.register(runtime, "gate", Closable)
        await runtime.add_subscription(TypeSubscription("t", "gate"))
        await runtime.publish_message(Msg(0), TopicId("t", "k"))  # occupies the agent
        await trio.testing.wait_all_tasks_blocked()
        outer.start_soon(caller, runtime, 1)
        outer.start_soon(caller, runtime, 2)
        await trio.testing.wait_all_tasks_blocked()
        assert runtime.statistics().pending_rpcs == 2
    assert len(errors) == 2
    assert Closable.closed == [AgentId("gate", "k")]
    assert runtime.closed
    with pytest.raises(RuntimeClosedError):
        await runtime.send_message(Msg(3), AgentId("gate", "k"))


async def test_stop_when_idle_then_sends_are_refused() -> None:
    async with open_runtime() as runtime:
        await Echo.register(runtime, "echo", Echo)
        await runtime.stop_when_idle()
        with pytest.raises(RuntimeClosedError):
            await runtime.send_message(Msg(1), AgentId("echo", "k"))
        with pytest.raises(RuntimeClosedError):
            await runtime.publish_message(Msg(1), TopicId("t", "k"))


async def test_body_exception_propagates_unwrapped() -> None:
    with pytest.raises(ZeroDivisionError):
        async with open_runtime():
            1 / 0  # noqa: B018


async def test_statistics_at_rest_are_zero() -> None:
    async with open_runtime() as runtime:
        await Echo.register(runtime, "echo", Echo)
        await runtime.add_subscription(TypeSubscription("t", "echo"))
        for i in range(10):
            await runtime.publish_message(Msg(i), TopicId("t", str(i % 3)))
            await runtime.send_message(Msg(i), AgentId("echo", str(i % 2)))
        await runtime.wait_idle()
        stats = runtime.statistics()
        assert (stats.queued, stats.in_flight, stats.pending_rpcs, stats.busy_agents) == (
            0,
            0,
            0,
            0,
        )
        assert stats.agents == 3
        assert stats.agent_types == 1


class Plain(BaseAgent):
    async def on_message_impl(self, message: Any, ctx: MessageContext) -> Any:
        return ("plain", message, ctx.is_rpc, ctx.sender)


async def test_base_agent_subclass_and_sender() -> None:
    async with open_runtime() as runtime:
        await Plain.register(runtime, "plain", Plain)
        result = await runtime.send_message(5, AgentId("plain", "k"), sender=AgentId("x", "y"))
        assert result == ("plain", 5, True, AgentId("x", "y"))


async def test_logging_uses_the_agentwire_namespace(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    async with open_runtime() as runtime:
        await runtime.add_subscription(TypeSubscription("t", "ghost"))
        await runtime.publish_message(Msg(1), TopicId("t", "k"))
        await runtime.wait_idle()
    assert {r.name for r in caplog.records if "ghost" in r.getMessage()} == {"agentwire.runtime"}


async def test_concurrent_first_messages_create_the_agent_once() -> None:
    created: list[AgentId] = []
    release = trio.Event()

    async def slow_factory() -> Echo:
        await release.wait()
        agent = Echo()
        created.append(agent.id)
        return agent

    async with open_runtime() as runtime:
        await runtime.register_factory("echo", slow_factory)
        results: list[Any] = []

        async def call(n: int) -> None:
            results.append(await runtime.send_message(Msg(n), AgentId("echo", "k")))

        async with trio.open_nursery() as nursery:
            for n in range(3):
                nursery.start_soon(call, n)
            await trio.testing.wait_all_tasks_blocked()
            assert created == []
            release.set()
        assert created == [AgentId("echo", "k")]
        assert sorted(r.n for r in results) == [0, 1, 2]


async def test_register_instance_subscribes_to_its_key() -> None:
    async with open_runtime() as runtime:
        agent = Echo.__new__(Echo)
        Echo.__init__(agent)
        await agent.register_instance(runtime, AgentId("echo", "alpha"))
        await runtime.publish_message(Msg(1), TopicId("alpha", "alpha"))  # source -> key
        await runtime.publish_message(Msg(2), TopicId("echo:x", "alpha"))
        await runtime.wait_idle()
        assert [n for n, _ in agent.received] == [1, 2]


async def test_a_types_instances_share_one_direct_message_subscription() -> None:
    async with open_runtime() as runtime:
        await Echo().register_instance(runtime, AgentId("echo", "alpha"))
        await Echo().register_instance(runtime, AgentId("echo", "beta"))
        prefixes = [s for s in runtime.get_subscriptions() if isinstance(s, TypePrefixSubscription)]
        assert [(s.topic_type_prefix, s.agent_type) for s in prefixes] == [("echo:", "echo")]


def _refuse_prefixes(subscription: Subscription) -> Exception | None:
    if isinstance(subscription, TypePrefixSubscription):
        return GatewayRejectedError("a subscription", "INVALID_ARGUMENT", "not today")
    return None


async def test_register_instance_reports_a_refused_direct_message_subscription() -> None:
    async with open_refusing_runtime() as (runtime, router):
        router.refuse_add = _refuse_prefixes
        with pytest.raises(GatewayRejectedError, match="not today"):
            await Echo().register_instance(runtime, AgentId("echo", "alpha"))


async def test_a_refused_removal_keeps_the_subscription_working() -> None:
    async with open_refusing_runtime() as (runtime, router):
        await Echo.register(runtime, "echo", Echo)
        subscription = TypeSubscription("t", "echo")
        await runtime.add_subscription(subscription)
        router.refuse_remove = lambda _id: GatewayRejectedError("removal", "UNAVAILABLE", "down")
        with pytest.raises(GatewayRejectedError, match="down"):
            await runtime.remove_subscription(subscription.id)
        assert subscription in runtime.get_subscriptions()
        await runtime.publish_message(Msg(7), TopicId("t", "k"))
        await runtime.wait_idle()
        agent = await runtime.try_get_underlying_agent_instance(AgentId("echo", "k"), Echo)
        assert [n for n, _ in agent.received] == [7]


class DeadlineReporter(RoutedAgent):
    def __init__(self) -> None:
        super().__init__("reports deadlines")
        self.gate = trio.Event()
        self.deadlines: list[float] = []

    @message_handler
    async def on_msg(self, message: Msg, ctx: MessageContext) -> None:
        if message.n == 0:
            await self.gate.wait()
        self.deadlines.append(trio.current_effective_deadline())


async def test_queued_request_inherits_the_callers_deadline(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with open_runtime() as runtime:
        await DeadlineReporter.register(runtime, "dl", DeadlineReporter)
        target = AgentId("dl", "k")
        agent = await runtime.try_get_underlying_agent_instance(target, DeadlineReporter)
        deadline = trio.current_time() + 30

        async def caller() -> None:
            with trio.CancelScope(deadline=deadline):
                await runtime.send_message(Msg(1), target)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(runtime.send_message, Msg(0), target)
            await trio.testing.wait_all_tasks_blocked()
            nursery.start_soon(caller)
            await trio.testing.wait_all_tasks_blocked()
            agent.gate.set()
        assert agent.deadlines[1] == deadline


def test_stopping_the_runtime_never_cancels_the_code_in_its_block() -> None:
    # Under trio.run itself: a Cancelled leaking out of the block would escape it.
    async def main() -> list[str]:
        steps = []
        async with open_runtime() as runtime:
            await Echo.register(runtime, "echo", Echo)
            await runtime.stop_when_idle()
            await trio.lowlevel.checkpoint()
            steps.append("after the stop")
            with pytest.raises(RuntimeClosedError):
                await runtime.send_message(Msg(1), AgentId("echo", "k"))
            steps.append("after a refused send")
        return steps

    assert trio.run(main) == ["after the stop", "after a refused send"]


async def test_a_worker_stopping_never_cancels_the_code_in_its_block() -> None:
    @asynccontextmanager
    async def connect() -> AsyncIterator[FakeChannel]:
        yield FakeChannel()

    steps = []
    async with open_worker("fake:1", connect=connect) as worker:
        await worker.stop_when_idle()
        await trio.lowlevel.checkpoint()
        steps.append("after the stop")
    assert steps == ["after the stop"]


async def test_router_entry_points_refuse_after_close() -> None:
    async with open_runtime() as runtime:
        await Echo.register(runtime, "echo", Echo)
        await runtime.add_subscription(TypeSubscription("t", "echo"))
        await runtime.stop_when_idle()
        with pytest.raises(RuntimeClosedError):
            await runtime.deliver_event(Msg(1), TopicId("t", "k"), sender=None, message_id="m")
        with pytest.raises(RuntimeClosedError):
            await runtime.deliver_request(Msg(1), AgentId("echo", "k"), sender=None, message_id="m")


class _UpperSerializer:
    data_content_type = "text/plain"
    type_name = "Upper"

    def serialize(self, message: str) -> bytes:
        return message.upper().encode()

    def deserialize(self, payload: bytes) -> str:
        return payload.decode()


async def test_add_message_serializer_reaches_the_registry() -> None:
    async with open_runtime() as runtime:
        runtime.add_message_serializer(_UpperSerializer())
        assert runtime.serialization.is_registered("Upper", "text/plain")


class Overlap(RoutedAgent):
    def __init__(self) -> None:
        super().__init__("detects overlapping handlers")
        self.gate = trio.Event()
        self.active = 0
        self.max_active = 0

    @message_handler
    async def on_msg(self, message: Msg, ctx: MessageContext) -> None:
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        await self.gate.wait()
        self.active -= 1


async def test_fairness_yield_never_splits_the_idle_check_from_taking_the_agent() -> None:
    async with open_runtime() as runtime:
        await Overlap.register(runtime, "overlap", Overlap)
        target = AgentId("overlap", "k")
        agent = await runtime.try_get_underlying_agent_instance(target, Overlap)
        async with trio.open_nursery() as nursery:
            runtime._delivery.spend = CheckpointBudget(1).spend  # every call yields first
            nursery.start_soon(runtime.send_message, Msg(1), target)
            nursery.start_soon(runtime.send_message, Msg(2), target)
            await trio.testing.wait_all_tasks_blocked()
            assert agent.active == 1
            agent.gate.set()
        assert agent.max_active == 1
        runtime._check_invariants()


class Impatient(RoutedAgent):
    def __init__(self) -> None:
        super().__init__("waits for idle inside a handler")

    @message_handler
    async def on_msg(self, message: Msg, ctx: MessageContext) -> None:
        await self.runtime.wait_idle()  # type: ignore[attr-defined]


async def test_wait_idle_from_a_handler_is_refused() -> None:
    async with open_runtime() as runtime:
        await Impatient.register(runtime, "impatient", Impatient)
        with pytest.raises(RuntimeError, match="wait for itself"):
            await runtime.send_message(Msg(1), AgentId("impatient", "k"))


# -- the overflow bound: handlers never wait for room, but what they queue is bounded --


@dataclasses.dataclass
class Flood:
    count: int
    rpc: bool = False


class GatedSink(RoutedAgent):
    def __init__(self) -> None:
        super().__init__("handles slowly")
        self.gate = trio.Event()
        self.handled: list[int] = []

    @message_handler
    async def on_msg(self, message: Msg, ctx: MessageContext) -> None:
        await self.gate.wait()
        self.handled.append(message.n)


class Flooder(RoutedAgent):
    def __init__(self) -> None:
        super().__init__("publishes faster than anyone handles")

    @rpc
    async def flood(self, message: Flood, ctx: MessageContext) -> Result:
        refused = 0
        for n in range(message.count):
            try:
                if message.rpc:
                    await self.send_message(Msg(n), AgentId("sink", "k"))
                else:
                    await self.publish_message(Msg(n), TopicId("t", "k"))
            except OverloadedError:
                refused += 1
        return Result(refused)


async def test_a_publish_cascade_is_bounded_by_max_overflow_and_the_publisher_is_told() -> None:
    async with open_runtime(mailbox_size=2, max_overflow=5) as runtime:
        await GatedSink.register(runtime, "sink", GatedSink)
        await Flooder.register(runtime, "flooder", Flooder)
        await runtime.add_subscription(TypeSubscription("t", "sink"))
        sink = await runtime.try_get_underlying_agent_instance(AgentId("sink", "k"), GatedSink)
        await runtime.publish_message(Msg(-1), TopicId("t", "k"))  # the sink blocks on it
        await trio.testing.wait_all_tasks_blocked()

        refused = await runtime.send_message(Flood(100), AgentId("flooder", "k"))

        stats = runtime.statistics()
        assert (stats.queued, stats.overflow, stats.dropped) == (2 + 5, 5, 93)
        assert refused == Result(93)
        runtime._check_invariants()
        sink.gate.set()
        await runtime.wait_idle()
        assert sink.handled == [-1, *range(7)]
        assert runtime.statistics().overflow == 0
        runtime._check_invariants()


async def test_an_rpc_past_a_full_mailbox_and_overflow_is_refused_at_once() -> None:
    async with open_runtime(mailbox_size=1, max_overflow=0) as runtime:
        await GatedSink.register(runtime, "sink", GatedSink)
        await Flooder.register(runtime, "flooder", Flooder)
        await runtime.add_subscription(TypeSubscription("t", "sink"))
        await runtime.publish_message(Msg(-1), TopicId("t", "k"))  # handled, blocked
        await runtime.publish_message(Msg(-2), TopicId("t", "k"))  # fills the mailbox
        await trio.testing.wait_all_tasks_blocked()
        assert await runtime.send_message(Flood(3, rpc=True), AgentId("flooder", "k")) == Result(3)
        stats = runtime.statistics()
        assert (stats.queued, stats.dropped, stats.pending_rpcs) == (1, 3, 0)


async def test_a_publish_that_missed_subscribers_still_reached_the_others() -> None:
    async with open_runtime(mailbox_size=1, max_overflow=0) as runtime:
        await GatedSink.register(runtime, "sink", GatedSink)
        await Echo.register(runtime, "echo", Echo)
        await Flooder.register(runtime, "flooder", Flooder)
        await runtime.add_subscription(TypeSubscription("t", "sink"))
        await runtime.add_subscription(TypeSubscription("t", "echo"))
        await runtime.publish_message(Msg(-1), TopicId("t", "k"))
        await runtime.publish_message(Msg(-2), TopicId("t", "k"))
        await runtime.wait_until(lambda s: s.busy_agents == 1)  # the sink, holding one more
        assert await runtime.send_message(Flood(1), AgentId("flooder", "k")) == Result(1)
        await runtime.wait_until(lambda s: s.busy_agents == 1)
        echo = await runtime.try_get_underlying_agent_instance(AgentId("echo", "k"), Echo)
        assert [n for n, _ in echo.received] == [-1, -2, 0]
        assert runtime.statistics().dropped == 1


def test_the_errors_for_system_failures_say_what_happened() -> None:
    import agentwire

    too_large = agentwire.MessageTooLargeError(
        "response too large", size=5_000_000, limit=4_194_304
    )
    assert (too_large.size, too_large.limit) == (5_000_000, 4_194_304)
    assert isinstance(too_large, ValueError)
    for error in (agentwire.RpcTimeoutError, agentwire.OverloadedError, type(too_large)):
        assert issubclass(error, agentwire.AgentwireError)
        assert error.__name__ in agentwire.__all__
    assert not issubclass(agentwire.RpcTimeoutError, OSError)  # not a connection failure


async def test_wait_until_wakes_when_the_runtimes_counters_reach_the_condition() -> None:
    async with open_runtime(mailbox_size=8) as runtime:
        await GatedSink.register(runtime, "sink", GatedSink)
        await runtime.add_subscription(TypeSubscription("t", "sink"))
        sink = await runtime.try_get_underlying_agent_instance(AgentId("sink", "k"), GatedSink)
        seen: list[int] = []

        async def watch() -> None:
            await runtime.wait_until(lambda s: s.queued >= 3)
            seen.append(runtime.statistics().queued)
            await runtime.wait_until(lambda s: s.closed)
            seen.append(-1)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(watch)
            await runtime.publish_message(Msg(0), TopicId("t", "k"))
            await trio.testing.wait_all_tasks_blocked()  # the sink holds it, blocked
            assert seen == []
            for n in range(1, 4):  # three wait in the mailbox
                await runtime.publish_message(Msg(n), TopicId("t", "k"))
            await trio.testing.wait_all_tasks_blocked()
            assert seen == [3]
            sink.gate.set()
            await runtime.stop_when_idle()
        assert seen == [3, -1]
