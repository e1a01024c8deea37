"""An AutoGen 0.7.5 worker that keeps its OpenTelemetry spans, for the trace-context tests.

``python autogen_peers/tracing_peer.py <address>``
    Runs a ``GrpcWorkerAgentRuntime`` (JSON payloads) whose tracer provider
    keeps finished spans in memory. Agent types ``ag_echo`` and ``ag_listener``
    are ``worker_peer.py``'s echo agent (RPC ``Ping`` -> ``Pong("ag:" + text)``,
    events printed as ``EVENT Ping <text> <sender>``); ``ag_listener`` is
    subscribed to topic type ``traced``. Prints
    ``READY`` once registered, then obeys one command per stdin line:
    ``send <type>/<key> <text>`` -> ``REPLY <text>`` or ``ERROR <message>``;
    ``spans`` -> ``SPANS <json>``, every finished span as
    ``{name, kind, trace_id, span_id, parent_span_id, links: [[trace_id, span_id]]}``
    (ids in lower-case hex); ``quit``.

Everything is printed with flush so the test can use lines as sync points.
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

from autogen_core import AgentId, TypeSubscription, try_get_known_serializers_for_type
from autogen_ext.runtimes.grpc import GrpcWorkerAgentRuntime
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from worker_peer import Echo, Ping, Pong, say  # this folder is the script's sys.path[0]


def describe(span: ReadableSpan) -> dict[str, Any]:
    context = span.get_span_context()
    assert context is not None
    return {
        "name": span.name,
        "kind": span.kind.name,
        "trace_id": format(context.trace_id, "032x"),
        "span_id": format(context.span_id, "016x"),
        "parent_span_id": format(span.parent.span_id, "016x") if span.parent else None,
        "links": [
            [format(link.context.trace_id, "032x"), format(link.context.span_id, "016x")]
            for link in span.links
        ],
    }


async def run_worker(address: str) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    runtime = GrpcWorkerAgentRuntime(address, tracer_provider=provider)
    await runtime.start()
    runtime.add_message_serializer(try_get_known_serializers_for_type(Ping))
    runtime.add_message_serializer(try_get_known_serializers_for_type(Pong))
    await Echo.register(runtime, "ag_echo", Echo)
    await Echo.register(runtime, "ag_listener", Echo)
    await runtime.add_subscription(TypeSubscription("traced", "ag_listener"))
    say("READY")
    loop = asyncio.get_running_loop()
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if not line or line.strip() == "quit":
            break
        command, *args = line.strip().split(maxsplit=2)
        if command == "send":
            target, text = args
            agent_type, key = target.split("/", 1)
            try:
                reply = await asyncio.wait_for(
                    runtime.send_message(Ping(text), AgentId(agent_type, key)), 20
                )
                say("REPLY", reply.text)
            except Exception as exc:  # report, keep serving
                say("ERROR", str(exc) or type(exc).__name__)
        elif command == "spans":
            say("SPANS", json.dumps([describe(span) for span in exporter.get_finished_spans()]))
    await runtime.stop()


if __name__ == "__main__":
    asyncio.run(run_worker(sys.argv[1]))
