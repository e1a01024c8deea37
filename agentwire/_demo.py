"""``agentwire demo``: a gateway and two workers in one trio program, on loopback.

Worker ``alpha`` (JSON payloads) hosts a ``counter`` agent, worker ``beta``
(protobuf-mode publishing) hosts a ``greeter``; both host a ``listener``
subscribed to the ``news`` topic. The demo makes RPCs across the workers in
both directions, shows a remote handler error, publishes one JSON event from
alpha and one protobuf event (a betterproto2 message, packed in ``Any``) from
beta to all listeners, then times a batch of RPCs between the workers. Lines
go to the ``out`` callable (the CLI passes ``print``).

It needs betterproto2 (``pip install 'trio-agentwire[demo]'``).
"""

from __future__ import annotations

from collections.abc import Callable

import attrs
import trio

from ._agents import MessageContext, RoutedAgent, event, rpc
from ._errors import RemoteError

# Generated code that imports betterproto2 (the demo extra): `agentwire demo` says how to
# install it if missing.
from ._examples.agentwire.demo import Headline
from ._gateway import open_gateway
from ._ids import AgentId, TopicId
from ._serialization import serializers_for_type
from ._subscriptions import TypeSubscription
from ._worker import WorkerRuntime, open_worker

__all__ = ["run_demo"]


@attrs.define
class Add:
    amount: int


@attrs.define
class Total:
    value: int


@attrs.define
class Greet:
    name: str


@attrs.define
class Greeting:
    text: str


@attrs.define
class News:
    headline: str


class Counter(RoutedAgent):
    def __init__(self) -> None:
        super().__init__("adds numbers")
        self.total = 0

    @rpc
    async def add(self, message: Add, ctx: MessageContext) -> Total:
        if message.amount < 0:
            raise ValueError(f"cannot add a negative amount ({message.amount})")
        self.total += message.amount
        return Total(self.total)


class Greeter(RoutedAgent):
    def __init__(self) -> None:
        super().__init__("greets")

    @rpc
    async def greet(self, message: Greet, ctx: MessageContext) -> Greeting:
        return Greeting(f"hello {message.name}, from {self.id}")


class Listener(RoutedAgent):
    heard: list[str]
    all_heard: trio.Event
    expected = 0

    def __init__(self) -> None:
        super().__init__("listens to the news")

    @event
    async def on_news(self, message: News, ctx: MessageContext) -> None:
        self._heard(f"{self.id} heard {message.headline!r} (JSON, from {ctx.sender})")

    @event
    async def on_headline(self, message: Headline, ctx: MessageContext) -> None:
        self._heard(f"{self.id} heard {message.text!r} (protobuf, from {ctx.sender})")

    def _heard(self, line: str) -> None:
        Listener.heard.append(line)
        if len(Listener.heard) >= Listener.expected:
            Listener.all_heard.set()


async def run_demo(out: Callable[[str], object], *, rpcs: int = 2000) -> None:
    """Run the demo, reporting through *out*."""
    Listener.heard = []
    Listener.all_heard = trio.Event()
    Listener.expected = 4
    with trio.fail_after(60):
        async with open_gateway("127.0.0.1:0") as gateway:
            out(f"gateway listening on {gateway.address}")
            async with (
                open_worker(gateway.address, payload_format="json") as alpha,
                open_worker(gateway.address, payload_format="protobuf") as beta,
            ):
                await Counter.register(alpha, "counter", Counter)
                await Greeter.register(beta, "greeter", Greeter)
                await Listener.register(alpha, "listener_a", Listener)
                await Listener.register(beta, "listener_b", Listener)
                await alpha.add_subscription(TypeSubscription("news", "listener_a"))
                await beta.add_subscription(TypeSubscription("news", "listener_b"))
                for worker in (alpha, beta):  # callers must know the reply types
                    worker.add_message_serializer(
                        [*serializers_for_type(Total), *serializers_for_type(Greeting)]
                    )
                out("workers alpha (json) and beta (protobuf) connected")

                greeting = await alpha.send_message(Greet("ada"), AgentId("greeter", "1"))
                out(f"rpc alpha -> beta  greeter/1: {greeting.text!r}")
                total = await beta.send_message(Add(40), AgentId("counter", "1"))
                total = await beta.send_message(Add(2), AgentId("counter", "1"))
                out(f"rpc beta -> alpha  counter/1: total is {total.value}")
                try:
                    await beta.send_message(Add(-1), AgentId("counter", "1"))
                except RemoteError as exc:
                    out(f"rpc beta -> alpha  counter/1 failed remotely: {exc}")

                await alpha.publish_message(
                    News("agentwire speaks AutoGen"),
                    TopicId("news", "wire"),
                    sender=AgentId("counter", "1"),
                )
                await beta.publish_message(
                    Headline("trio all the way down"),
                    TopicId("news", "wire"),
                    sender=AgentId("greeter", "1"),
                )
                await Listener.all_heard.wait()
                for line in sorted(Listener.heard):
                    out(f"publish news -> {line}")

                start = trio.current_time()
                async with trio.open_nursery() as nursery:
                    for worker_index in range(8):
                        nursery.start_soon(_burst, alpha, rpcs // 8, worker_index)
                elapsed = trio.current_time() - start
                out(
                    f"throughput: {rpcs} RPCs alpha -> beta (8 callers) in {elapsed:.2f} s "
                    f"({rpcs / elapsed:,.0f} RPC/s)"
                )
                stats = alpha.worker_statistics().link.session
                if stats is not None:
                    out(
                        f"alpha wrote {stats.messages_sent} messages in "
                        f"{stats.batches_written} batches"
                    )
    out("done")


async def _burst(worker: WorkerRuntime, count: int, index: int) -> None:
    target = AgentId("greeter", f"bench{index}")
    for _ in range(count):
        await worker.send_message(Greet("x"), target)
