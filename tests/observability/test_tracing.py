"""Tracing around handlers: propagation alone, and OpenTelemetry spans named as AutoGen's."""

from __future__ import annotations

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from agentwire._observability._trace_context import TraceContext, current_trace
from agentwire._observability._tracing import Tracing

from .spans import in_memory_tracing

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
SPAN = "00f067aa0ba902b7"
REMOTE = TraceContext(TRACE, SPAN, 3, "rojo=1")


@pytest.fixture
def tracing() -> tuple[TracerProvider, InMemorySpanExporter]:
    return in_memory_tracing()


@pytest.fixture
def provider(tracing: tuple[TracerProvider, InMemorySpanExporter]) -> TracerProvider:
    return tracing[0]


@pytest.fixture
def exporter(tracing: tuple[TracerProvider, InMemorySpanExporter]) -> InMemorySpanExporter:
    return tracing[1]


def only(exporter: InMemorySpanExporter, name: str) -> ReadableSpan:
    [span] = [s for s in exporter.get_finished_spans() if s.name == name]
    return span


def test_without_a_provider_the_arriving_context_is_current_while_handling() -> None:
    tracing = Tracing()
    assert not tracing.spans
    with tracing.handling(REMOTE, "echo", "1") as context:
        assert context is REMOTE
        assert current_trace.get() is REMOTE
        with tracing.sending("send", "other", "2") as outgoing:
            assert outgoing is REMOTE
    assert current_trace.get() is None


def test_without_a_provider_nothing_arrived_means_nothing_to_send() -> None:
    tracing = Tracing()
    with tracing.handling(None, "echo", "1") as context:
        assert context is None
        with tracing.sending("publish", "news", "web") as outgoing:
            assert outgoing is None


def test_a_process_span_has_the_remote_context_as_its_parent(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    tracing = Tracing(provider)
    with tracing.handling(REMOTE, "echo", "1", message_type="Ping") as context:
        assert context is not None
        assert context.trace_id == TRACE
        assert context.span_id != SPAN
        assert current_trace.get() == context
        assert trace.get_current_span().get_span_context().span_id == int(context.span_id, 16)
    span = only(exporter, "autogen process echo.(1)-A")
    assert span.kind is trace.SpanKind.CONSUMER
    assert span.parent is not None
    assert (span.parent.trace_id, span.parent.span_id) == (int(TRACE, 16), int(SPAN, 16))
    assert span.parent.is_remote
    assert dict(span.attributes or {}) == {
        "messaging.operation": "process",
        "messaging.destination": "echo.(1)-A",
        "messaging.message.type": "Ping",
    }
    assert span.context is not None
    assert span.context.trace_state.to_header() == "rojo=1"
    assert span.context.trace_flags.sampled  # flags 03 read as sampled


def test_what_a_handler_sends_is_a_child_span_and_carries_its_context(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    tracing = Tracing(provider)
    with tracing.handling(REMOTE, "echo", "1") as handled:
        assert handled is not None
        with tracing.sending("publish", "news", "web", message_type="N") as sent:
            assert sent is not None
            assert sent.trace_id == TRACE
    publish = only(exporter, "autogen publish news.(web)-T")
    process = only(exporter, "autogen process echo.(1)-A")
    assert publish.kind is trace.SpanKind.PRODUCER
    assert publish.parent is not None
    assert process.context is not None
    assert publish.parent.span_id == process.context.span_id
    assert publish.context is not None
    assert format(publish.context.span_id, "016x") == sent.span_id
    assert dict(publish.attributes or {})["messaging.operation"] == "publish"


def test_a_send_outside_any_handler_starts_a_trace_under_the_callers_own_span(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    tracing = Tracing(provider)
    with (
        provider.get_tracer("app").start_as_current_span("request") as outer,
        tracing.sending("send", "echo", "1") as sent,
    ):
        assert sent is not None
    assert sent.trace_id == format(outer.get_span_context().trace_id, "032x")
    send = only(exporter, "autogen send echo.(1)-A")
    assert dict(send.attributes or {})["messaging.operation"] == "publish"  # as AutoGen says it


def test_a_failing_handler_ends_its_span_with_the_error(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    tracing = Tracing(provider)
    with pytest.raises(ValueError, match="kaboom"), tracing.handling(REMOTE, "echo", "1"):
        raise ValueError("kaboom")
    span = only(exporter, "autogen process echo.(1)-A")
    assert span.status.status_code is trace.StatusCode.ERROR
    assert current_trace.get() is None


def test_a_no_op_provider_still_propagates_the_arriving_context() -> None:
    tracing = Tracing(trace.NoOpTracerProvider())
    with tracing.handling(REMOTE, "echo", "1") as context:
        assert context == REMOTE
        with tracing.sending("send", "other", "2") as sent:
            assert sent == REMOTE
