"""Agents: routing rules of RoutedAgent, decorators, registration, ClosureAgent."""

from __future__ import annotations

import dataclasses
import gc
import logging
import weakref
from typing import Any

import pytest
import trio
import trio.testing

from agentwire import (
    JSON_DATA_CONTENT_TYPE,
    AgentId,
    AgentInstantiationContext,
    BaseAgent,
    Cancellation,
    CantHandleError,
    ClosureAgent,
    ClosureContext,
    DefaultSubscription,
    DefaultTopicId,
    MessageContext,
    RequestCancelledError,
    RoutedAgent,
    TopicId,
    TypePrefixSubscription,
    TypeSubscription,
    default_subscription,
    event,
    message_handler,
    open_runtime,
    rpc,
    type_subscription,
)
from agentwire._ids import current_agent_id


@dataclasses.dataclass
class Text:
    content: str


@dataclasses.dataclass
class Number:
    value: int


@dataclasses.dataclass
class Reply:
    content: str


class SpecialText(Text):
    pass


class Router(RoutedAgent):
    def __init__(self) -> None:
        super().__init__("routes by type")
        self.calls: list[str] = []

    # Both take Text; "a_..." sorts first, so it wins when its match is true.
    @message_handler(match=lambda message, ctx: message.content.startswith("!"))
    async def a_bang(self, message: Text, ctx: MessageContext) -> Reply:
        self.calls.append("a_bang")
        return Reply("bang")

    @message_handler
    async def b_plain(self, message: Text, ctx: MessageContext) -> Reply:
        self.calls.append("b_plain")
        return Reply("plain")

    @event
    async def on_number_event(self, message: Number, ctx: MessageContext) -> None:
        self.calls.append(f"event {message.value}")

    @rpc
    async def on_number_rpc(self, message: Number, ctx: MessageContext) -> Reply:
        self.calls.append(f"rpc {message.value}")
        return Reply(str(message.value))


async def test_dispatch_alphabetical_match_and_exact_type() -> None:
    async with open_runtime() as runtime:
        await Router.register(runtime, "router", Router)
        target = AgentId("router", "default")
        assert await runtime.send_message(Text("!x"), target) == Reply("bang")
        assert await runtime.send_message(Text("x"), target) == Reply("plain")
        # exact type dispatch: a subclass has no handler -> unhandled
        with pytest.raises(CantHandleError, match="SpecialText"):
            await runtime.send_message(SpecialText("!x"), target)
        agent = await runtime.try_get_underlying_agent_instance(target, Router)
        assert agent.calls == ["a_bang", "b_plain"]


async def test_event_only_for_publish_rpc_only_for_send() -> None:
    async with open_runtime() as runtime:
        await Router.register(runtime, "router", Router)
        await runtime.add_subscription(TypeSubscription("numbers", "router"))
        assert await runtime.send_message(Number(1), AgentId("router", "k")) == Reply("1")
        await runtime.publish_message(Number(2), TopicId("numbers", "k"))
        await runtime.wait_idle()
        agent = await runtime.try_get_underlying_agent_instance(AgentId("router", "k"), Router)
        assert agent.calls == ["rpc 1", "event 2"]


async def test_an_rpc_nobody_handles_fails_naming_agent_type_and_what_it_takes() -> None:
    async with open_runtime() as runtime:
        await Router.register(runtime, "router", Router)
        with pytest.raises(CantHandleError) as info:
            await runtime.send_message(42, AgentId("router", "default"))
    assert str(info.value) == (
        "agent router/default (Router) cannot handle an RPC of type int (it has no handler "
        "for that type); as RPCs it takes: Number, Text"
    )


async def test_an_rpc_of_a_type_handled_only_as_an_event_says_so() -> None:
    async with open_runtime() as runtime:
        await EventsOnly.register(runtime, "events", EventsOnly)
        with pytest.raises(CantHandleError) as info:
            await runtime.send_message(Number(1), AgentId("events", "k"))
    assert "only as a published event); as RPCs it takes: nothing" in str(info.value)


async def test_a_published_message_nobody_handles_is_ignored(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="agentwire.agents")
    async with open_runtime(ignore_unhandled_exceptions=False) as runtime:
        await Router.register(runtime, "router", Router)
        await runtime.add_subscription(TypeSubscription("t", "router"))
        await runtime.publish_message(Reply("nobody takes this"), TopicId("t", "k"))
        await runtime.wait_idle()  # raises if the handler failed
    assert "router/k ignores a published Reply: no handler" in caplog.text


class EventsOnly(RoutedAgent):
    def __init__(self) -> None:
        super().__init__("takes events only")

    @event
    async def on_number(self, message: Number, ctx: MessageContext) -> None:
        pass


class Strict(RoutedAgent):
    def __init__(self) -> None:
        super().__init__("")

    @rpc
    async def wrong(self, message: Text, ctx: MessageContext) -> Reply:
        return "not a Reply"  # type: ignore[return-value]

    @rpc(strict=False)
    async def lenient(self, message: Number, ctx: MessageContext) -> Reply:
        return "not a Reply either"  # type: ignore[return-value]


async def test_strict_return_type_checks() -> None:
    async with open_runtime() as runtime:
        await Strict.register(runtime, "strict", Strict)
        with pytest.raises(ValueError, match="returned a str"):
            await runtime.send_message(Text("x"), AgentId("strict", "default"))
        result = await runtime.send_message(Number(1), AgentId("strict", "default"))
        assert result == "not a Reply either"


async def test_strict_handler_called_directly_with_wrong_type() -> None:
    async with open_runtime() as runtime:
        await Router.register(runtime, "router", Router)
        agent = await runtime.try_get_underlying_agent_instance(
            AgentId("router", "default"), Router
        )
        ctx = MessageContext(None, None, True, "m1")
        with pytest.raises(CantHandleError):
            await agent.b_plain(Number(3), ctx)  # type: ignore[arg-type]


class UnionAgent(RoutedAgent):
    def __init__(self) -> None:
        super().__init__("")
        self.seen: list[Any] = []

    @message_handler
    async def any_of(self, note: Text | Number, ctx: MessageContext) -> None:
        self.seen.append(note)


async def test_union_message_types_and_any_parameter_name() -> None:
    async with open_runtime() as runtime:
        await UnionAgent.register(runtime, "u", UnionAgent)
        await runtime.send_message(Text("a"), AgentId("u", "k"))
        await runtime.send_message(Number(1), AgentId("u", "k"))
        agent = await runtime.try_get_underlying_agent_instance(AgentId("u", "k"), UnionAgent)
        assert agent.seen == [Text("a"), Number(1)]


def test_handler_must_be_async_with_three_parameters() -> None:
    with pytest.raises(TypeError, match="async def"):

        @message_handler  # type: ignore[arg-type]
        def sync_handler(self: Any, message: Text, ctx: MessageContext) -> None:
            pass

    with pytest.raises(TypeError, match="self, message, ctx"):

        @message_handler  # type: ignore[arg-type]
        async def two_args(self: Any, message: Text) -> None:
            pass


@default_subscription
@type_subscription("news")
class Subscriber(RoutedAgent):
    def __init__(self) -> None:
        super().__init__("subscriber")
        self.texts: list[tuple[str, str | None]] = []

    @event
    async def on_text(self, message: Text, ctx: MessageContext) -> None:
        self.texts.append((message.content, ctx.topic_id.type if ctx.topic_id else None))


async def test_register_adds_class_and_direct_subscriptions() -> None:
    async with open_runtime() as runtime:
        await Subscriber.register(runtime, "sub", Subscriber)
        subs = runtime.get_subscriptions()
        kinds = sorted(
            (type(s).__name__, getattr(s, "topic_type", getattr(s, "topic_type_prefix", "")))
            for s in subs
        )
        assert kinds == [
            ("TypePrefixSubscription", "sub:"),
            ("TypeSubscription", "default"),
            ("TypeSubscription", "news"),
        ]
        assert all(
            s.map_to_agent(TopicId("x", "k")).type == "sub"
            for s in subs
            if s.is_match(TopicId("x", "k"))
        )
        # the topic source selects the key
        await runtime.publish_message(Text("a"), TopicId("default", "alice"))
        await runtime.publish_message(Text("b"), TopicId("news", "bob"))
        await runtime.publish_message(Text("c"), TopicId("sub:direct", "carol"))
        await runtime.wait_idle()
        for key, expected in [("alice", "default"), ("bob", "news"), ("carol", "sub:direct")]:
            agent = await runtime.try_get_underlying_agent_instance(AgentId("sub", key), Subscriber)
            assert [topic for _, topic in agent.texts] == [expected]
        assert runtime.statistics().agents == 3


async def test_register_skip_flags() -> None:
    async with open_runtime() as runtime:
        await Subscriber.register(
            runtime,
            "sub",
            Subscriber,
            skip_class_subscriptions=True,
            skip_direct_message_subscription=True,
        )
        assert runtime.get_subscriptions() == []


async def test_register_adds_serializers_for_handled_types() -> None:
    async with open_runtime() as runtime:
        await Router.register(runtime, "router", Router)
        assert runtime.serialization.is_registered("Text", JSON_DATA_CONTENT_TYPE)
        assert runtime.serialization.is_registered("Number", JSON_DATA_CONTENT_TYPE)


async def test_registering_an_agent_class_teaches_the_types_its_handlers_return() -> None:
    # Before any message: a worker hosting Router must decode a Reply from any peer.
    async with open_runtime() as runtime:
        await Router.register(runtime, "router", Router)
        assert runtime.serialization.is_registered("Reply", JSON_DATA_CONTENT_TYPE)


async def test_register_factory_with_an_expected_class_teaches_its_message_types() -> None:
    async with open_runtime() as runtime:
        await runtime.register_factory("router", Router, expected_class=Router)
        for name in ("Text", "Number", "Reply"):
            assert runtime.serialization.is_registered(name, JSON_DATA_CONTENT_TYPE), name


async def test_registering_an_instance_teaches_its_message_types() -> None:
    async with open_runtime() as runtime:
        await runtime.register_agent_instance(Router(), AgentId("router", "only"))
        assert runtime.serialization.is_registered("Reply", JSON_DATA_CONTENT_TYPE)


async def test_a_closure_agent_teaches_the_type_it_returns() -> None:
    async def answer(agent: ClosureContext, message: Text, ctx: MessageContext) -> Reply:
        return Reply(message.content)

    async with open_runtime() as runtime:
        await ClosureAgent.register_closure(runtime, "closure", answer)
        assert runtime.serialization.is_registered("Reply", JSON_DATA_CONTENT_TYPE)


class Introspective(RoutedAgent):
    def __init__(self) -> None:
        super().__init__("knows itself")
        self.constructed_as = AgentInstantiationContext.current_agent_id()
        self.handler_ids: list[AgentId | None] = []
        self.default_topics: list[TopicId] = []

    @message_handler
    async def on_text(self, message: Text, ctx: MessageContext) -> None:
        self.handler_ids.append(current_agent_id.get())
        self.default_topics.append(DefaultTopicId())


async def test_instantiation_context_and_current_agent_id() -> None:
    async with open_runtime() as runtime:
        await Introspective.register(runtime, "intro", Introspective)
        target = AgentId("intro", "k1")
        await runtime.send_message(Text("x"), target)
        agent = await runtime.try_get_underlying_agent_instance(target, Introspective)
        assert agent.constructed_as == target
        assert agent.id == target
        assert agent.handler_ids == [target]
        assert agent.default_topics == [TopicId("default", "k1")]
        assert current_agent_id.get() is None
        metadata = await runtime.agent_metadata(target)
        assert (metadata.type, metadata.key, metadata.description) == (
            "intro",
            "k1",
            "knows itself",
        )


def test_agent_outside_a_factory_is_unbound() -> None:
    agent = Introspective.__new__(Introspective)
    BaseAgent.__init__(agent, "x")
    with pytest.raises(RuntimeError, match="not bound"):
        _ = agent.id
    with pytest.raises(RuntimeError, match="only available inside an agent factory"):
        AgentInstantiationContext.current_runtime()


async def test_closure_agent_with_subscriptions() -> None:
    received: list[tuple[AgentId, str]] = []

    async def collect(agent: ClosureContext, message: Text, ctx: MessageContext) -> None:
        received.append((agent.id, message.content))

    async with open_runtime() as runtime:
        await ClosureAgent.register_closure(
            runtime, "collector", collect, subscriptions=lambda: [DefaultSubscription()]
        )
        await runtime.publish_message(Text("hi"), TopicId("default", "s1"))
        await runtime.publish_message(Number(5), TopicId("default", "s1"))  # warned, ignored
        await runtime.wait_idle()
        assert received == [(AgentId("collector", "s1"), "hi")]
        prefixes = [s for s in runtime.get_subscriptions() if isinstance(s, TypePrefixSubscription)]
        assert [p.topic_type_prefix for p in prefixes] == ["collector:"]


async def test_closure_agent_error_policy_and_rpc_result() -> None:
    async def double(agent: ClosureContext, message: Number, ctx: MessageContext) -> Number:
        return Number(message.value * 2)

    async with open_runtime() as runtime:
        await ClosureAgent.register_closure(runtime, "double", double, unknown_type_policy="error")
        assert await runtime.send_message(Number(4), AgentId("double", "k")) == Number(8)
        with pytest.raises(CantHandleError):
            await runtime.send_message(Text("x"), AgentId("double", "k"))


def test_closure_agent_cannot_be_built_directly() -> None:
    async def noop(agent: ClosureContext, message: Text, ctx: MessageContext) -> None:
        pass

    with pytest.raises(RuntimeError, match="register_closure"):
        ClosureAgent("x", noop)


async def test_cancellation_marks_and_cancels_its_scope() -> None:
    ctx = MessageContext(None, None, False, "id")
    assert ctx == MessageContext(None, None, False, "id")  # cancellation is not compared
    assert not ctx.cancellation.cancel_called
    ctx.cancellation.cancel()
    assert ctx.cancellation.is_cancelled()
    with trio.CancelScope() as scope:
        cancellation = Cancellation(scope)
        cancellation.cancel()
        cancellation.cancel()  # idempotent
        await trio.sleep_forever()
    assert scope.cancelled_caught
    assert cancellation.cancel_called


# -- code written for AutoGen ------------------------------------------------------------


@default_subscription()
class CalledWithParentheses(RoutedAgent):
    def __init__(self) -> None:
        super().__init__("subscribed the AutoGen way")
        self.seen: list[str] = []

    @event
    async def on_text(self, message: Text, ctx: MessageContext) -> None:
        self.seen.append(message.content)


async def test_default_subscription_with_parentheses_subscribes_like_the_bare_one() -> None:
    async with open_runtime() as runtime:
        await CalledWithParentheses.register(runtime, "paren", CalledWithParentheses)
        await runtime.publish_message(Text("hi"), DefaultTopicId())
        await runtime.wait_idle()
        agent = await runtime.try_get_underlying_agent_instance(
            AgentId("paren", "default"), CalledWithParentheses
        )
        assert agent.seen == ["hi"]


def test_cancellation_token_is_autogens_name_for_the_cancellation() -> None:
    ctx = MessageContext(None, None, True, "id")
    assert ctx.cancellation_token is ctx.cancellation


class Stuck(RoutedAgent):
    def __init__(self) -> None:
        super().__init__("never answers by itself")
        self.started = trio.Event()
        self.cancelled = False

    @rpc
    async def on_text(self, message: Text, ctx: MessageContext) -> Reply:
        self.started.set()
        try:
            await trio.sleep_forever()
        except trio.Cancelled:
            self.cancelled = True
            raise
        raise AssertionError("unreachable")  # pragma: no cover


async def test_cancelling_the_token_passed_to_send_message_cancels_the_call(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(60):  # virtual seconds: a call the token failed to cancel
        await _cancel_a_call_through_its_token()


async def _cancel_a_call_through_its_token() -> None:
    async with open_runtime() as runtime:
        await Stuck.register(runtime, "stuck", Stuck)
        target = AgentId("stuck", "k")
        agent = await runtime.try_get_underlying_agent_instance(target, Stuck)
        token = Cancellation()
        outcome: list[BaseException] = []

        async def call() -> None:
            try:
                await runtime.send_message(Text("x"), target, cancellation_token=token)
            except RequestCancelledError as exc:
                outcome.append(exc)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(call)
            await agent.started.wait()
            token.cancel()
        assert len(outcome) == 1
        assert "cancelled by its token" in str(outcome[0])
        assert agent.cancelled
        with pytest.raises(RequestCancelledError):  # a cancelled token refuses at once
            await runtime.send_message(Text("y"), target, cancellation_token=token)


class Forwarder(RoutedAgent):
    def __init__(self) -> None:
        super().__init__("forwards its context's token, as AutoGen code does")

    @rpc
    async def on_text(self, message: Text, ctx: MessageContext) -> Reply:
        reply = await self.send_message(
            message, AgentId("echo", "k"), cancellation_token=ctx.cancellation_token
        )
        await self.publish_message(
            message, TopicId("t", "k"), cancellation_token=ctx.cancellation_token
        )
        assert isinstance(reply, Reply)
        return Reply("via " + reply.content)


class TextEcho(RoutedAgent):
    def __init__(self) -> None:
        super().__init__("echoes text")

    @rpc
    async def on_text(self, message: Text, ctx: MessageContext) -> Reply:
        return Reply(message.content)


async def test_a_handler_may_forward_its_token_to_the_calls_it_makes() -> None:
    async with open_runtime() as runtime:
        await Forwarder.register(runtime, "forwarder", Forwarder)
        await TextEcho.register(runtime, "echo", TextEcho)
        assert await runtime.send_message(Text("x"), AgentId("forwarder", "k")) == Reply("via x")


class _Bulky:
    """Something large a test function happens to hold while it defines an agent."""


def _define_an_agent_in_a_function() -> tuple[type[RoutedAgent], weakref.ref[_Bulky]]:
    bulky = _Bulky()

    @dataclasses.dataclass
    class LocalQuestion:
        text: str

    class LocalAgent(RoutedAgent):
        def __init__(self) -> None:
            super().__init__("defined in a function")

        @rpc
        async def on_question(self, message: LocalQuestion, ctx: MessageContext) -> Reply:
            return Reply(message.text)

    LocalAgent.question_type = LocalQuestion  # type: ignore[attr-defined]
    return LocalAgent, weakref.ref(bulky)


async def test_handlers_resolve_local_names_without_keeping_the_functions_locals_alive() -> None:
    agent_class, bulky = _define_an_agent_in_a_function()
    gc.collect()
    assert bulky() is None
    async with open_runtime() as runtime:
        await agent_class.register(runtime, "local", agent_class)
        question = agent_class.question_type("why")  # type: ignore[attr-defined]
        assert await runtime.send_message(question, AgentId("local", "k")) == Reply("why")
