"""The pytest fixtures agentwire.testing offers to users."""

from __future__ import annotations

import dataclasses

import pytest
import trio
import trio.lowlevel

from agentwire import (
    AgentId,
    MessageContext,
    RoutedAgent,
    Runtime,
    TopicId,
    TypeSubscription,
    event,
    rpc,
)
from agentwire.testing import runtime, strict_runtime  # noqa: F401  (fixtures)


@dataclasses.dataclass
class Question:
    text: str


@dataclasses.dataclass
class Answer:
    text: str


class Oracle(RoutedAgent):
    def __init__(self) -> None:
        super().__init__("answers")

    @rpc
    async def ask(self, message: Question, ctx: MessageContext) -> Answer:
        return Answer(message.text.upper())

    @event
    async def on_question(self, message: Question, ctx: MessageContext) -> None:
        raise RuntimeError(f"cannot take {message.text} as an event")


async def test_runtime_fixture_is_open(runtime: Runtime) -> None:  # noqa: F811
    await Oracle.register(runtime, "oracle", Oracle)
    assert await runtime.send_message(Question("hi"), AgentId("oracle", "k")) == Answer("HI")
    assert not runtime.closed


async def test_a_test_may_stop_the_fixtures_runtime_and_go_on(runtime: Runtime) -> None:  # noqa: F811
    await Oracle.register(runtime, "oracle", Oracle)
    await runtime.stop_when_idle()
    await trio.lowlevel.checkpoint()
    assert runtime.closed


async def test_strict_runtime_fixture_surfaces_publish_errors(
    strict_runtime: Runtime,  # noqa: F811
) -> None:
    await Oracle.register(strict_runtime, "oracle", Oracle)
    await strict_runtime.add_subscription(TypeSubscription("q", "oracle"))
    await strict_runtime.publish_message(Question("x"), TopicId("q", "k"))
    with pytest.raises(RuntimeError, match="cannot take x"):
        await strict_runtime.wait_idle()
