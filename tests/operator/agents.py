"""Agents for the operator tests; ``setup`` is what ``agentwire worker`` runs."""

from __future__ import annotations

import dataclasses

import trio

from agentwire import MessageContext, RoutedAgent, TypeSubscription, event, rpc


@dataclasses.dataclass
class Greet:
    name: str
    times: int = 1


@dataclasses.dataclass
class Greeting:
    text: str


class Received:
    """Events the greeter received, with a wake-up per arrival."""

    def __init__(self) -> None:
        self.items: list[tuple[str, str, str]] = []  # (topic type, source, name)
        self._changed = trio.Event()

    def add(self, item: tuple[str, str, str]) -> None:
        self.items.append(item)
        self._changed.set()
        self._changed = trio.Event()

    async def wait_for(self, count: int) -> None:
        while len(self.items) < count:
            await self._changed.wait()


RECEIVED = Received()


class Greeter(RoutedAgent):
    """RPC Greet -> Greeting; a Greet named "fail" raises; Greet events are recorded."""

    def __init__(self) -> None:
        super().__init__("greeter")

    @rpc
    async def on_greet(self, message: Greet, ctx: MessageContext) -> Greeting:
        if message.name == "fail":
            raise ValueError("no greeting for fail")
        return Greeting(f"hello {message.name} x{message.times} from {self.id.key}")

    @event
    async def on_greet_event(self, message: Greet, ctx: MessageContext) -> None:
        assert ctx.topic_id is not None
        RECEIVED.add((ctx.topic_id.type, ctx.topic_id.source, message.name))


async def setup(runtime: object) -> None:
    """Register the greeter and subscribe it to the ``greetings`` topic."""
    await Greeter.register(runtime, "greeter", Greeter)  # type: ignore[arg-type]
    await runtime.add_subscription(TypeSubscription("greetings", "greeter"))  # type: ignore[attr-defined]


not_async = print
