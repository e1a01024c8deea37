"""W3C trace context: what is accepted, what is refused, and that nothing malformed raises."""

from __future__ import annotations

import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st

from agentwire._observability._trace_context import (
    TraceContext,
    current_trace,
    format_traceparent,
    parse_event_trace_context,
    parse_trace_context,
    parse_traceparent,
    parse_tracestate,
)
from agentwire._proto import agent_worker_pb2 as pb
from agentwire._proto import cloudevent_pb2 as ce

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
SPAN = "00f067aa0ba902b7"

trace_ids = st.text("0123456789abcdef", min_size=32, max_size=32).filter(lambda t: set(t) != {"0"})
span_ids = st.text("0123456789abcdef", min_size=16, max_size=16).filter(lambda t: set(t) != {"0"})
contexts = st.builds(TraceContext, trace_ids, span_ids, st.integers(0, 255))


@pytest.mark.parametrize("flags", ["00", "01", "03", "ff"])
def test_any_trace_flags_are_accepted_and_kept(flags: str) -> None:
    context = parse_traceparent(f"00-{TRACE}-{SPAN}-{flags}")
    assert context == TraceContext(TRACE, SPAN, int(flags, 16))
    assert context.traceparent == f"00-{TRACE}-{SPAN}-{flags}"
    assert context.sampled is bool(int(flags, 16) & 1)


@pytest.mark.parametrize(
    "value",
    [
        "",
        f"00-{TRACE}-{SPAN}",  # no flags
        f"00-{TRACE}-{SPAN}-01-",  # version 00 has exactly four fields
        f"00-{TRACE.upper()}-{SPAN}-01",  # upper case
        f"00-{TRACE}-{SPAN.upper()}-01",
        f"00-{'0' * 32}-{SPAN}-01",  # all-zero trace id
        f"00-{TRACE}-{'0' * 16}-01",  # all-zero span id
        f"ff-{TRACE}-{SPAN}-01",  # forbidden version
        f"0g-{TRACE}-{SPAN}-01",
        f"00-{TRACE}-{SPAN}-0x",
        f"00_{TRACE}_{SPAN}_01",
        f"00-{TRACE[:-1]}z-{SPAN}-01",
        f"01-{TRACE}-{SPAN}-01x",  # a later version appends fields after a dash
        f" 00-{TRACE}-{SPAN}-01",
    ],
)
def test_a_malformed_traceparent_is_ignored(value: str) -> None:
    assert parse_traceparent(value) is None
    assert parse_trace_context({"traceparent": value, "tracestate": "a=b"}) is None


def test_a_later_version_is_read_for_its_four_fields_and_written_as_version_00() -> None:
    context = parse_traceparent(f"cc-{TRACE}-{SPAN}-01-what-comes-next")
    assert context == TraceContext(TRACE, SPAN, 1)
    assert context.traceparent == f"00-{TRACE}-{SPAN}-01"


@given(st.text(max_size=80))
def test_no_string_makes_parsing_raise(value: str) -> None:
    context = parse_traceparent(value, value)
    if context is not None:
        assert parse_traceparent(format_traceparent(context)) == TraceContext(
            context.trace_id, context.span_id, context.flags
        )


@given(contexts)
def test_formatting_then_parsing_gives_the_context_back(context: TraceContext) -> None:
    assert parse_traceparent(format_traceparent(context)) == context


@pytest.mark.parametrize(
    ("value", "kept"),
    [
        ("congo=t61rcWkgMzE", "congo=t61rcWkgMzE"),
        ("rojo=00f067aa0ba902b7,congo=t61rcWkgMzE", "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE"),
        ("rojo=1 , ,congo=2", "rojo=1,congo=2"),  # empty members and spaces around them
        ("tenant@vendor=x", "tenant@vendor=x"),
        ("Upper=1", ""),  # keys are lower case
        ("a=1,a=2", ""),  # a key at most once
        ("novalue", ""),
        ("a=b=c", ""),
        (",".join(f"k{i}=v" for i in range(33)), ""),  # at most 32 members
        ("k=" + "v" * 600, ""),
    ],
)
def test_tracestate_is_kept_only_when_valid(value: str, kept: str) -> None:
    assert parse_tracestate(value) == kept
    context = parse_traceparent(f"00-{TRACE}-{SPAN}-01", value)
    assert context is not None
    assert context.tracestate == kept


def test_the_context_goes_into_rpc_metadata_and_comes_back_out() -> None:
    request = pb.RpcRequest(request_id="1")
    request.metadata["agentwire-timeout"] = "3.0"
    TraceContext(TRACE, SPAN, 3, "congo=t61rcWkgMzE").inject(request.metadata)
    wire = pb.RpcRequest.FromString(request.SerializeToString())
    assert dict(wire.metadata) == {
        "agentwire-timeout": "3.0",
        "traceparent": f"00-{TRACE}-{SPAN}-03",
        "tracestate": "congo=t61rcWkgMzE",
    }
    assert parse_trace_context(wire.metadata) == TraceContext(TRACE, SPAN, 3, "congo=t61rcWkgMzE")


def test_the_context_goes_into_cloudevent_attributes_as_autogen_reads_them() -> None:
    event = ce.CloudEvent(id="1", source="s", spec_version="1.0", type="t")
    TraceContext(TRACE, SPAN, 1, "rojo=1").inject_event(event.attributes)
    wire = ce.CloudEvent.FromString(event.SerializeToString())
    assert wire.attributes["traceparent"].ce_string == f"00-{TRACE}-{SPAN}-01"
    assert wire.attributes["tracestate"].ce_string == "rojo=1"
    assert parse_event_trace_context(wire.attributes) == TraceContext(TRACE, SPAN, 1, "rojo=1")


def test_an_event_without_a_string_traceparent_has_no_context() -> None:
    event = ce.CloudEvent(id="1", source="s", spec_version="1.0", type="t")
    assert parse_event_trace_context(event.attributes) is None
    assert "traceparent" not in event.attributes  # reading did not add it
    event.attributes["traceparent"].ce_integer = 7
    assert parse_event_trace_context(event.attributes) is None


def test_an_empty_tracestate_is_not_written() -> None:
    carrier: dict[str, str] = {}
    TraceContext(TRACE, SPAN).inject(carrier)
    assert carrier == {"traceparent": f"00-{TRACE}-{SPAN}-01"}


async def test_tasks_started_in_a_nursery_inherit_the_current_trace() -> None:
    seen: list[TraceContext | None] = []

    async def child() -> None:
        seen.append(current_trace.get())

    token = current_trace.set(TraceContext(TRACE, SPAN))
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(child)
    finally:
        current_trace.reset(token)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(child)
    assert seen == [TraceContext(TRACE, SPAN), None]
