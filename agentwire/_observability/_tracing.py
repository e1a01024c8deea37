"""Trace context around message handling, with OpenTelemetry spans when asked for.

A :class:`Tracing` belongs to one runtime. Without a tracer provider (the
default) it only *propagates*: the context that arrived with a message is the
current one (:data:`~._trace_context.current_trace`) while its handler runs,
and what the handler sends or publishes carries it on. That costs a dict
lookup per message and nothing when no context arrived; OpenTelemetry is not
imported.

With a tracer provider (``opentelemetry-api``, the ``tracing`` extra) it also
makes spans named and attributed as AutoGen 0.7.5's runtimes name them
(``autogen {operation} {destination}``, destination ``type.(key)-A`` for an
agent and ``type.(source)-T`` for a topic; send and publish are PRODUCER,
process is CONSUMER; ``messaging.operation``, ``messaging.destination``,
``messaging.message.type``). Unlike
AutoGen, which starts a new trace and only *links* the remote context, the
remote context is the span's **parent**, so one trace runs through every
worker a message crosses. The span is OpenTelemetry's current span inside the
block (so the handler's own spans nest under it) and its context is the one
propagated.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any, Literal

from ._trace_context import TraceContext, current_trace

if TYPE_CHECKING:
    from opentelemetry.trace import Tracer, TracerProvider

__all__ = ["Operation", "Tracing", "agent_destination", "topic_destination"]

Operation = Literal["send", "publish", "process"]
_KIND = {"send": "PRODUCER", "publish": "PRODUCER", "process": "CONSUMER"}
# AutoGen reports send as messaging.operation "publish".
_MESSAGING_OPERATION = {"send": "publish", "publish": "publish", "process": "process"}
TRACER_NAME = "agentwire"


def agent_destination(agent_type: str, key: str) -> str:
    """How AutoGen names an agent as a span destination."""
    return f"{agent_type}.({key})-A"


def topic_destination(topic_type: str, source: str) -> str:
    """How AutoGen names a topic as a span destination."""
    return f"{topic_type}.({source})-T"


class _Current:
    """Makes *context* the current trace context for a block (no span)."""

    __slots__ = ("_context", "_token")

    def __init__(self, context: TraceContext) -> None:
        self._context = context

    def __enter__(self) -> TraceContext:
        self._token = current_trace.set(self._context)
        return self._context

    def __exit__(self, *exc_info: object) -> None:
        current_trace.reset(self._token)


_NOTHING: AbstractContextManager[TraceContext | None] = contextlib.nullcontext()


class Tracing:
    """Trace context of one runtime: propagation, plus spans with a *tracer_provider*.

    *tracer_provider* is an ``opentelemetry.trace.TracerProvider`` (e.g.
    ``opentelemetry.trace.get_tracer_provider()``); ``None`` makes no spans.
    """

    __slots__ = ("_otel", "_tracer")

    def __init__(self, tracer_provider: TracerProvider | None = None) -> None:
        self._tracer: Tracer | None = None
        if tracer_provider is not None:
            from opentelemetry import trace as otel  # the tracing extra; imported only here

            self._otel: Any = otel
            self._tracer = tracer_provider.get_tracer(TRACER_NAME)

    @property
    def spans(self) -> bool:
        """Whether this runtime makes OpenTelemetry spans."""
        return self._tracer is not None

    def handling(
        self,
        parent: TraceContext | None,
        name: str,
        detail: str,
        *,
        topic: bool = False,
        message_type: str = "",
    ) -> AbstractContextManager[TraceContext | None]:
        """``with tracing.handling(...) as context:`` around handling a received message.

        *parent* is the context that came with it (``None``: none did); it is for
        the agent ``name/detail`` (an RPC) or, with *topic*, the topic
        ``name/detail`` (an event). *context* is the current one inside the
        block: what the handlers' own sends carry on, and what the answer to an
        RPC carries back."""
        if self._tracer is None:
            return _NOTHING if parent is None else _Current(parent)
        where = topic_destination if topic else agent_destination
        return self._span("process", where(name, detail), parent, message_type)

    def sending(
        self, operation: Operation, name: str, detail: str, *, message_type: str = ""
    ) -> AbstractContextManager[TraceContext | None]:
        """``with tracing.sending(...) as context:`` around an RPC (``"send"``, to the agent
        ``name/detail``) or a publish (``"publish"``, to the topic ``name/detail``):
        *context* (the current one, or the new span's) is what to put on the wire."""
        if self._tracer is None:
            context = current_trace.get()
            return _NOTHING if context is None else contextlib.nullcontext(context)
        where = topic_destination if operation == "publish" else agent_destination
        return self._span(operation, where(name, detail), None, message_type)

    @contextlib.contextmanager
    def _span(
        self,
        operation: Operation,
        destination: str,
        parent: TraceContext | None,
        message_type: str,
    ) -> Iterator[TraceContext | None]:
        otel = self._otel
        assert self._tracer is not None
        attributes: dict[str, str] = {
            "messaging.operation": _MESSAGING_OPERATION[operation],
            "messaging.destination": destination,
        }
        if message_type:
            attributes["messaging.message.type"] = message_type
        parent_context = None if parent is None else self._remote(parent)
        with self._tracer.start_as_current_span(
            f"autogen {operation} {destination}",
            context=parent_context,
            kind=getattr(otel.SpanKind, _KIND[operation]),
            attributes=attributes,
        ) as span:
            span_context = span.get_span_context()
            if not span_context.is_valid:  # a no-op provider: keep what we had
                context = parent if parent is not None else current_trace.get()
            else:
                context = TraceContext(
                    format(span_context.trace_id, "032x"),
                    format(span_context.span_id, "016x"),
                    int(span_context.trace_flags),
                    span_context.trace_state.to_header(),
                )
            if context is None:
                yield None
                return
            token = current_trace.set(context)
            try:
                yield context
            finally:
                current_trace.reset(token)

    def _remote(self, parent: TraceContext) -> Any:
        otel = self._otel
        state = (
            otel.TraceState.from_header([parent.tracestate])
            if parent.tracestate
            else otel.TraceState()
        )
        span_context = otel.SpanContext(
            trace_id=int(parent.trace_id, 16),
            span_id=int(parent.span_id, 16),
            is_remote=True,
            trace_flags=otel.TraceFlags(parent.flags),
            trace_state=state,
        )
        return otel.set_span_in_context(otel.NonRecordingSpan(span_context))
