"""Trace context across agentwire workers and the gateway: what handlers see, what spans say."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import trio
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from agentwire import (
    AgentId,
    MessageContext,
    RoutedAgent,
    TopicId,
    TypeSubscription,
    WorkerRuntime,
    event,
    open_gateway,
    open_worker,
    rpc,
    serializers_for_type,
)
from agentwire._observability._trace_context import TraceContext, current_trace
from tests.worker.messages import Ping, Pong

from .spans import in_memory_tracing

GUARD = 20.0  # seconds: a hang guard, never a synchronisation
TRACED = TraceContext("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7", 3, "rojo=1")


class Recorder(RoutedAgent):
    """Records the trace context each handler ran in; ``hold`` makes an RPC wait."""

    seen: list[tuple[str, TraceContext | None]] = []
    arrived = 0
    release = trio.Event()

    def __init__(self) -> None:
        super().__init__("records trace context")

    @rpc
    async def on_ping(self, message: Ping, ctx: MessageContext) -> Pong:
        Recorder.seen.append((message.text, current_trace.get()))
        if message.text == "hold":
            Recorder.arrived += 1
            await Recorder.release.wait()
        return Pong(message.text)

    @event
    async def on_event(self, message: Ping, ctx: MessageContext) -> None:
        Recorder.seen.append(("event:" + message.text, current_trace.get()))


@asynccontextmanager
async def two_workers(**options: Any) -> AsyncIterator[tuple[WorkerRuntime, WorkerRuntime]]:
    Recorder.seen = []
    Recorder.arrived = 0
    Recorder.release = trio.Event()
    async with (
        open_gateway("127.0.0.1:0") as gateway,
        open_worker(gateway.address, **options) as a,
        open_worker(gateway.address, **options) as b,
    ):
        await Recorder.register(b, "rec", Recorder)
        await b.add_subscription(TypeSubscription("news", "rec"))
        a.add_message_serializer(serializers_for_type(Pong))
        yield a, b


@asynccontextmanager
async def tracing_as(context: TraceContext | None) -> AsyncIterator[None]:
    token = current_trace.set(context)
    try:
        yield
    finally:
        current_trace.reset(token)


async def wait_seen(count: int) -> None:
    while len(Recorder.seen) < count:  # noqa: ASYNC110 (a handler appends; no event exists)
        await trio.sleep(0.001)


async def test_a_remote_handler_runs_in_the_callers_trace_context() -> None:
    with trio.fail_after(GUARD):
        async with two_workers() as (a, _):
            async with tracing_as(TRACED):
                assert await a.send_message(Ping("traced"), AgentId("rec", "k")) == Pong("traced")
            assert await a.send_message(Ping("plain"), AgentId("rec", "k")) == Pong("plain")
    assert Recorder.seen == [("traced", TRACED), ("plain", None)]


async def test_an_event_handler_runs_in_the_publishers_trace_context() -> None:
    with trio.fail_after(GUARD):
        async with two_workers() as (a, _):
            async with tracing_as(TRACED):
                await a.publish_message(Ping("traced"), TopicId("news", "s"))
            await a.publish_message(Ping("plain"), TopicId("news", "s"))
            await wait_seen(2)
    assert Recorder.seen == [("event:traced", TRACED), ("event:plain", None)]


async def test_a_queued_request_keeps_its_own_trace_context() -> None:
    other = TraceContext("0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331", 1)
    with trio.fail_after(GUARD):
        async with two_workers() as (a, _), trio.open_nursery() as nursery:

            async def call(text: str, context: TraceContext | None) -> None:
                async with tracing_as(context):
                    await a.send_message(Ping(text), AgentId("rec", "k"))

            nursery.start_soon(call, "hold", TRACED)
            while Recorder.arrived < 1:  # noqa: ASYNC110 (the handler counts; no event exists)
                await trio.sleep(0.001)
            nursery.start_soon(call, "queued", other)
            nursery.start_soon(call, "queued-plain", None)
            await trio.testing.wait_all_tasks_blocked()
            Recorder.release.set()
    assert sorted(Recorder.seen, key=lambda item: item[0]) == [
        ("hold", TRACED),
        ("queued", other),
        ("queued-plain", None),
    ]


def finished(exporter: InMemorySpanExporter, name: str) -> ReadableSpan:
    [span] = [s for s in exporter.get_finished_spans() if s.name == name]
    return span


async def test_spans_make_one_trace_from_the_sender_to_the_handler() -> None:
    provider, exporter = in_memory_tracing()
    with trio.fail_after(GUARD):
        async with two_workers(tracer_provider=provider) as (a, _):
            with provider.get_tracer("app").start_as_current_span("request"):
                await a.send_message(Ping("hi"), AgentId("rec", "k"))
                await a.publish_message(Ping("news"), TopicId("news", "s"))
            await wait_seen(2)
    app = finished(exporter, "request")
    send = finished(exporter, "autogen send rec.(k)-A")
    process = finished(exporter, "autogen process rec.(k)-A")
    publish = finished(exporter, "autogen publish news.(s)-T")
    process_event = finished(exporter, "autogen process news.(s)-T")
    assert app.context is not None
    assert send.context is not None
    assert publish.context is not None
    trace_id = app.context.trace_id
    assert {s.context.trace_id for s in (send, process, publish, process_event) if s.context} == {
        trace_id
    }
    assert send.parent is not None
    assert send.parent.span_id == app.context.span_id
    assert process.parent is not None
    assert process.parent.span_id == send.context.span_id
    assert process_event.parent is not None
    assert process_event.parent.span_id == publish.context.span_id
    assert (send.kind, process.kind) == (trace.SpanKind.PRODUCER, trace.SpanKind.CONSUMER)
    assert dict(process.attributes or {})["messaging.message.type"] == "Ping"
    [(_, handled), _] = Recorder.seen
    assert handled is not None
    assert process.context is not None
    assert handled.span_id == format(process.context.span_id, "016x")
