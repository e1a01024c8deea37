"""An OpenTelemetry SDK tracer provider that keeps finished spans in memory, for the tests."""

from __future__ import annotations

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter


def in_memory_tracing() -> tuple[TracerProvider, InMemorySpanExporter]:
    """A provider exporting each span, as it ends, to the returned exporter."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter
