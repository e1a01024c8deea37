"""W3C trace context as AutoGen 0.7.5 carries it, and the context variable that holds it.

AutoGen's workers put ``traceparent`` / ``tracestate`` (W3C Trace Context) in
``RpcRequest.metadata`` and ``RpcResponse.metadata``, and read them from a
received CloudEvent's attributes (``ce_string``) when present. agentwire
carries them the same way in both directions and keeps the context of the
message being handled in :data:`current_trace`, a context variable: handler
code sees it, and tasks it starts in a nursery inherit it (trio copies the
context into every new task).

Parsing is strict and never raises: a malformed ``traceparent`` (wrong length
or version, upper-case or non-hex digits, an all-zero trace or span id,
version ``ff``) is ignored as if absent, and so is a ``tracestate`` that is not
a valid W3C list (it only ever travels with a valid ``traceparent``). Any
trace-flags byte is accepted and kept as is (OpenTelemetry 1.45 sends ``03``:
sampled plus random trace id). A ``traceparent`` of a later version is read
for its first four fields, as the specification asks, and written back as
version ``00``.

Everything here is pure; the OpenTelemetry side lives in ``_tracing.py``.
"""

from __future__ import annotations

import contextvars
import re
from collections.abc import Mapping, MutableMapping
from typing import Any

import attrs

__all__ = [
    "TRACEPARENT",
    "TRACESTATE",
    "TraceContext",
    "current_trace",
    "current_trace_context",
    "format_traceparent",
    "parse_event_trace_context",
    "parse_trace_context",
    "parse_traceparent",
    "parse_tracestate",
]

TRACEPARENT = "traceparent"
"""The metadata key (and CloudEvent attribute) of the W3C ``traceparent``."""
TRACESTATE = "tracestate"
"""The metadata key (and CloudEvent attribute) of the W3C ``tracestate``."""

# version-trace_id-parent_id-flags, and whatever a later version appends after a dash.
_TRACEPARENT = re.compile(
    r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})((?:-[\x20-\x7e]*)?)\Z"
)
_ZERO_TRACE = "0" * 32
_ZERO_SPAN = "0" * 16
# A list-member of tracestate: key "=" value (W3C Trace Context, level 1).
_KEY = r"(?:[a-z][a-z0-9_\-*/]{0,255}|[a-z0-9][a-z0-9_\-*/]{0,240}@[a-z][a-z0-9_\-*/]{0,13})"
_VALUE = r"[\x20-\x2b\x2d-\x3c\x3e-\x7e]{0,255}[\x21-\x2b\x2d-\x3c\x3e-\x7e]"
_MEMBER = re.compile(rf"{_KEY}={_VALUE}")
_MAX_MEMBERS = 32
_MAX_TRACESTATE = 512  # what every vendor must be able to carry


@attrs.frozen(slots=True)
class TraceContext:
    """One W3C trace context: which trace, which span is the parent, its flags and state.

    ``trace_id`` (32) and ``span_id`` (16) are lower-case hex, never all zero;
    ``flags`` is the trace-flags byte (bit 0: sampled); ``tracestate`` is the
    vendor list, verbatim, or ``""``.
    """

    trace_id: str
    span_id: str
    flags: int = 1
    tracestate: str = ""

    @property
    def sampled(self) -> bool:
        return bool(self.flags & 1)

    @property
    def traceparent(self) -> str:
        """The ``traceparent`` header value (version ``00``)."""
        return format_traceparent(self)

    def inject(self, carrier: MutableMapping[str, str]) -> None:
        """Write ``traceparent`` (and ``tracestate`` when there is one) into *carrier*,
        e.g. ``RpcRequest.metadata``."""
        carrier[TRACEPARENT] = format_traceparent(self)
        if self.tracestate:
            carrier[TRACESTATE] = self.tracestate

    def inject_event(self, attributes: Any) -> None:
        """Write ``traceparent`` / ``tracestate`` into a CloudEvent's ``attributes`` as
        ``ce_string`` values, where AutoGen's workers read them."""
        attributes[TRACEPARENT].ce_string = format_traceparent(self)
        if self.tracestate:
            attributes[TRACESTATE].ce_string = self.tracestate


current_trace: contextvars.ContextVar[TraceContext | None] = contextvars.ContextVar(
    "agentwire_current_trace", default=None
)
"""The trace context of the message being handled (``None``: none arrived with it).

Set by a worker around each handler it runs; read when the handler sends or
publishes. Tasks started inside the handler inherit it."""


def current_trace_context() -> TraceContext | None:
    """The trace context of the message being handled: the one that arrived with it, or
    the span agentwire made for it; ``None`` if none arrived and no span was made.

    What the current task (or a task started from it) sends or publishes carries it on.
    """
    return current_trace.get()


def parse_traceparent(value: str, tracestate: str = "") -> TraceContext | None:
    """The context in a ``traceparent`` value, or ``None`` if it is malformed.

    *tracestate* is kept if it is a valid W3C list, else dropped."""
    match = _TRACEPARENT.match(value)
    if match is None:
        return None
    version, trace_id, span_id, flags, rest = match.groups()
    if version == "ff" or (version == "00" and rest):
        return None
    if trace_id == _ZERO_TRACE or span_id == _ZERO_SPAN:
        return None
    return TraceContext(trace_id, span_id, int(flags, 16), parse_tracestate(tracestate))


def parse_tracestate(value: str) -> str:
    """*value* if it is a valid W3C ``tracestate`` list (empty members allowed), else ``""``."""
    if not value or len(value) > _MAX_TRACESTATE:
        return ""
    members = [m.strip(" \t") for m in value.split(",")]
    members = [m for m in members if m]
    if len(members) > _MAX_MEMBERS:
        return ""
    keys = set()
    for member in members:
        if _MEMBER.fullmatch(member) is None:
            return ""
        key = member.partition("=")[0]
        if key in keys:
            return ""
        keys.add(key)
    return ",".join(members)


def format_traceparent(context: TraceContext) -> str:
    return f"00-{context.trace_id}-{context.span_id}-{context.flags:02x}"


def parse_trace_context(carrier: Mapping[str, str]) -> TraceContext | None:
    """The context in *carrier* (``RpcRequest.metadata``, ``RpcResponse.metadata``), or
    ``None`` if it has no valid ``traceparent``."""
    traceparent = carrier.get(TRACEPARENT)
    if traceparent is None:
        return None
    return parse_traceparent(traceparent, carrier.get(TRACESTATE, ""))


def _event_string(attributes: Any, name: str) -> str:
    value = attributes.get(name)  # (indexing a protobuf map would insert the key)
    if value is None:
        return ""
    return str(value.ce_string) if value.WhichOneof("attr") == "ce_string" else ""


def parse_event_trace_context(attributes: Any) -> TraceContext | None:
    """The context in a CloudEvent's ``attributes`` (``ce_string`` values), or ``None``."""
    traceparent = _event_string(attributes, TRACEPARENT)
    if not traceparent:
        return None
    return parse_traceparent(traceparent, _event_string(attributes, TRACESTATE))
