"""One trace across AutoGen 0.7.5 and agentwire, through the agentwire gateway.

AutoGen's worker (``autogen_peers/tracing_peer.py``) keeps its OpenTelemetry
spans in memory and prints them on request; the agentwire worker in the test
exports to an in-memory exporter too. AutoGen makes the remote context a
*link* of its spans; agentwire makes it the *parent*. Either way the trace id
is the one the first sender started.
"""

from __future__ import annotations

import json
import pathlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from agentwire import (
    AgentId,
    MessageContext,
    RoutedAgent,
    TopicId,
    WorkerRuntime,
    open_gateway,
    open_worker,
    rpc,
    serializers_for_type,
)
from agentwire._observability._trace_context import TraceContext, current_trace

from ..observability.spans import in_memory_tracing
from ..worker.messages import Ping, Pong
from .test_worker_autogen import Peer, open_peer

pytestmark = pytest.mark.interop

PEER = pathlib.Path(__file__).parent / "autogen_peers" / "tracing_peer.py"
WAIT = 60.0  # bound for any one expected line (cold AutoGen imports are slow)


class Traced(RoutedAgent):
    """Answers ``Ping``; ``relay:<text>`` first asks AutoGen's ag_echo and publishes to it."""

    seen: list[TraceContext | None] = []

    def __init__(self) -> None:
        super().__init__("agentwire agent that records the trace context it runs in")

    @rpc
    async def on_ping(self, message: Ping, ctx: MessageContext) -> Pong:
        Traced.seen.append(current_trace.get())
        if message.text.startswith("relay:"):
            text = message.text.removeprefix("relay:")
            reply = await self.send_message(Ping(text), AgentId("ag_echo", "k"))
            await self.publish_message(Ping(text), TopicId("traced", "aw"))
            return Pong("aw:" + reply.text)
        return Pong("aw:" + message.text)


def spans_named(spans: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    found = [span for span in spans if span["name"] == name]
    assert found, f"no span {name!r} in {[s['name'] for s in spans]}"
    return found


def ours_named(exporter: InMemorySpanExporter, name: str) -> ReadableSpan:
    [span] = [s for s in exporter.get_finished_spans() if s.name == name]
    return span


def hex_ids(span: ReadableSpan) -> tuple[str, str]:
    assert span.context is not None
    return format(span.context.trace_id, "032x"), format(span.context.span_id, "016x")


@asynccontextmanager
async def open_autogen(address: str) -> AsyncIterator[Peer]:
    async with open_peer(address, script=PEER) as peer:
        await peer.expect("READY")
        yield peer


@asynccontextmanager
async def topology(
    tracer_provider: TracerProvider | None,
) -> AsyncIterator[tuple[WorkerRuntime, Peer]]:
    Traced.seen = []
    async with (
        open_gateway("127.0.0.1:0", grace_period=0.1) as gateway,
        open_worker(gateway.address, tracer_provider=tracer_provider) as ours,
        open_autogen(gateway.address) as theirs,
    ):
        await Traced.register(ours, "aw_traced", Traced)
        ours.add_message_serializer(serializers_for_type(Pong))
        yield ours, theirs


async def autogen_spans(peer: Peer) -> list[dict[str, Any]]:
    line = await peer.command("spans", "SPANS ")
    spans: list[dict[str, Any]] = json.loads(line.removeprefix("SPANS "))
    return spans


async def test_an_autogen_rpc_and_its_answer_stay_in_one_trace_through_agentwire_spans() -> None:
    provider, exporter = in_memory_tracing()
    with trio.fail_after(WAIT * 2):
        async with topology(provider) as (_, theirs):
            assert await theirs.command("send aw_traced/k hi", "REPLY") == "REPLY aw:hi"
            spans = await autogen_spans(theirs)
    [create] = spans_named(spans, "autogen create aw_traced.(k)-A")
    process = ours_named(exporter, "autogen process aw_traced.(k)-A")
    trace_id, process_span_id = hex_ids(process)
    assert trace_id == create["trace_id"]
    assert process.parent is not None
    assert format(process.parent.span_id, "016x") == create["span_id"]
    assert process.parent.is_remote
    [handled] = Traced.seen
    assert handled is not None
    assert (handled.trace_id, handled.span_id) == (trace_id, process_span_id)
    # The answer carries the handler's context back; AutoGen links its ack span to it.
    [ack] = spans_named(spans, "autogen ack")
    assert ack["links"] == [[trace_id, process_span_id]]


async def test_an_agentwire_publish_reaches_an_autogen_subscriber_in_the_publishers_trace() -> None:
    provider, exporter = in_memory_tracing()
    with trio.fail_after(WAIT * 2):
        async with topology(provider) as (ours, theirs):
            with provider.get_tracer("app").start_as_current_span("app"):
                await ours.publish_message(Ping("news"), TopicId("traced", "s"))
            assert await theirs.expect("EVENT") == "EVENT Ping news unknown/unknown"
            spans = await autogen_spans(theirs)
    publish = ours_named(exporter, "autogen publish traced.(s)-T")
    app = ours_named(exporter, "app")
    assert hex_ids(publish)[0] == hex_ids(app)[0]
    [process] = spans_named(spans, "autogen process ag_listener.(s)-A")
    assert process["links"] == [list(hex_ids(publish))]


async def test_without_spans_agentwire_carries_the_autogen_trace_on_to_what_its_handler_sends() -> (
    None
):
    with trio.fail_after(WAIT * 2):
        async with topology(None) as (_, theirs):
            reply = await theirs.command("send aw_traced/k relay:hop", "REPLY")
            assert reply == "REPLY aw:ag:hop"
            assert await theirs.expect("EVENT") == "EVENT Ping hop aw_traced/k"
            spans = await autogen_spans(theirs)
    [create] = spans_named(spans, "autogen create aw_traced.(k)-A")
    [handled] = Traced.seen
    assert handled is not None
    assert (handled.trace_id, handled.span_id) == (create["trace_id"], create["span_id"])
    # The relayed RPC and the publish carry the same context on: AutoGen links to it.
    [echo] = spans_named(spans, "autogen process ag_echo.(k)-A")
    assert echo["links"] == [[create["trace_id"], create["span_id"]]]
    [listen] = spans_named(spans, "autogen process ag_listener.(aw)-A")
    assert listen["links"] == [[create["trace_id"], create["span_id"]]]
