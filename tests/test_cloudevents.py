"""The publish <-> CloudEvent mapping against AutoGen's captured event."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import pytest
from google.protobuf import any_pb2
from google.protobuf.message import DecodeError
from hypothesis import given
from hypothesis import strategies as st

from agentwire import (
    JSON_DATA_CONTENT_TYPE,
    PROTOBUF_DATA_CONTENT_TYPE,
    AgentId,
    InvalidCloudEventError,
    SerializationError,
    TopicId,
)
from agentwire._cloudevents import (
    EventReader,
    ReceivedEvent,
    from_cloud_event,
    length_prefix,
    serialized_cloud_event,
    to_cloud_event,
    topic_of,
)
from agentwire._observability._trace_context import TraceContext
from agentwire._proto import agent_worker_pb2 as pb
from agentwire._proto import cloudevent_pb2 as ce
from agentwire.testing import agent_ids, topic_ids
from tests.test_proto import CLOUD_EVENT_PROTOBUF

GOLDEN = pb.Message.FromString(bytes.fromhex(CLOUD_EVENT_PROTOBUF)).cloudEvent
GOLDEN_ANY = GOLDEN.proto_data.SerializeToString()


def attributes(event: ce.CloudEvent) -> dict[str, str]:
    assert all(v.WhichOneof("attr") == "ce_string" for v in event.attributes.values())
    return {k: v.ce_string for k, v in event.attributes.items()}


def json_event(**changes: object) -> ce.CloudEvent:
    event = to_cloud_event(
        topic=TopicId("news", "s1"),
        sender=AgentId("pub", "p1"),
        type_name="Ping",
        content_type=JSON_DATA_CONTENT_TYPE,
        data=b'{"text": "hi"}',
        event_id="e1",
    )
    for name, value in changes.items():
        setattr(event, name, value)
    return event


def test_from_cloud_event_reads_the_golden_event() -> None:
    received = from_cloud_event(GOLDEN)
    assert received == ReceivedEvent(
        event_id="8882a8ec-8a30-40dd-a9e0-50d930378be3",
        topic=TopicId("default", "default"),
        sender=AgentId("pub", "p1"),
        type_name="agents.ProtoMessage",
        content_type=PROTOBUF_DATA_CONTENT_TYPE,
        data=GOLDEN_ANY,
        is_rpc=False,
    )
    wrapper = any_pb2.Any.FromString(received.data)
    assert wrapper.type_url == "type.googleapis.com/agents.ProtoMessage"
    assert wrapper.value == b"\x0a\x06Hello!"


def test_to_cloud_event_reproduces_the_golden_event() -> None:
    event = to_cloud_event(
        topic=TopicId("default", "default"),
        sender=AgentId("pub", "p1"),
        type_name="agents.ProtoMessage",
        content_type=PROTOBUF_DATA_CONTENT_TYPE,
        data=GOLDEN_ANY,
        event_id="8882a8ec-8a30-40dd-a9e0-50d930378be3",
    )
    # Map order on the wire is not fixed: compare by parsing.
    wire = pb.Message(cloudEvent=event).SerializeToString()
    assert pb.Message.FromString(wire).cloudEvent == GOLDEN
    assert event.WhichOneof("data") == "proto_data"


def test_json_mode_uses_binary_data_and_five_string_attributes() -> None:
    event = json_event()
    assert (event.id, event.source, event.type, event.spec_version) == ("e1", "s1", "news", "1.0")
    assert event.WhichOneof("data") == "binary_data"
    assert event.binary_data == b'{"text": "hi"}'
    assert attributes(event) == {
        "datacontenttype": "application/json",
        "dataschema": "Ping",
        "agagentsendertype": "pub",
        "agagentsenderkey": "p1",
        "agmsgkind": "publish",
    }


def test_no_sender_is_published_as_unknown() -> None:
    event = to_cloud_event(
        topic=TopicId("t", "s"),
        sender=None,
        type_name="Ping",
        content_type=JSON_DATA_CONTENT_TYPE,
        data=b"{}",
        event_id="e",
    )
    assert attributes(event)["agagentsendertype"] == "unknown"
    assert attributes(event)["agagentsenderkey"] == "unknown"
    # What AutoGen receivers see too.
    assert from_cloud_event(event).sender == AgentId("unknown", "unknown")


def test_sender_needs_both_attributes() -> None:
    event = json_event()
    del event.attributes["agagentsenderkey"]
    assert from_cloud_event(event).sender is None
    # Reading does not add the missing attribute back (protobuf maps insert on index).
    assert "agagentsenderkey" not in event.attributes
    event = json_event()
    del event.attributes["agagentsendertype"]
    assert from_cloud_event(event).sender is None


@pytest.mark.parametrize("make", [to_cloud_event, serialized_cloud_event])
def test_protobuf_payload_must_be_an_any(make: Callable[..., object]) -> None:
    with pytest.raises(SerializationError, match=r"must be a serialized google\.protobuf\.Any"):
        make(
            topic=TopicId("t", "s"),
            sender=None,
            type_name="agents.X",
            content_type=PROTOBUF_DATA_CONTENT_TYPE,
            data=b"\xff\xff",
            event_id="e",
        )


def test_other_content_types_travel_in_binary_data() -> None:
    event = to_cloud_event(
        topic=TopicId("t", "s"),
        sender=None,
        type_name="Shout",
        content_type="text/plain",
        data=b"HEY",
        event_id="e",
    )
    assert event.binary_data == b"HEY"
    received = from_cloud_event(event)
    assert (received.content_type, received.data) == ("text/plain", b"HEY")


def test_text_data_is_accepted_for_json() -> None:
    event = json_event()
    event.text_data = '{"text": "é"}'
    assert from_cloud_event(event).data == '{"text": "é"}'.encode()


@pytest.mark.parametrize(
    ("topic_type", "kind", "is_rpc"),
    [
        ("agent:rpc_request", "rpc_request", True),
        ("agent:rpc_request", "publish", True),
        ("rpc_request", "rpc_request", False),
        ("agent:rpc_requests", "rpc_request", False),
        ("a:b:rpc_request", "rpc_request", False),
        ("news", "publish", False),
    ],
)
def test_legacy_rpc_rule(topic_type: str, kind: str, is_rpc: bool) -> None:
    event = json_event(type=topic_type)
    event.attributes["agmsgkind"].ce_string = kind
    assert from_cloud_event(event).is_rpc is is_rpc


def test_legacy_rpc_without_the_kind_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    event = json_event(type="agent:rpc_request")
    with caplog.at_level(logging.WARNING, logger="agentwire.cloudevents"):
        assert from_cloud_event(event).is_rpc
    assert "legacy RPC request" in caplog.text


def _without(name: str) -> ce.CloudEvent:
    event = json_event()
    del event.attributes[name]
    return event


def _with_uri(name: str) -> ce.CloudEvent:
    event = json_event()
    event.attributes[name].ce_integer = 3
    return event


def _proto_mode_without_proto_data() -> ce.CloudEvent:
    event = json_event()
    event.attributes["datacontenttype"].ce_string = PROTOBUF_DATA_CONTENT_TYPE
    return event


def _json_mode_with_proto_data() -> ce.CloudEvent:
    event = json_event()
    event.proto_data.CopyFrom(GOLDEN.proto_data)
    return event


def _empty(name: str) -> ce.CloudEvent:
    event = json_event()
    event.attributes[name].ce_string = ""
    return event


@pytest.mark.parametrize(
    ("event", "attribute", "problem"),
    [
        (_without("datacontenttype"), "datacontenttype", "is missing"),
        (_without("dataschema"), "dataschema", "is missing"),
        (_empty("dataschema"), "dataschema", "is empty"),
        (_empty("datacontenttype"), "datacontenttype", "is empty"),
        (_with_uri("dataschema"), "dataschema", "must be a string attribute, got ce_integer"),
        (json_event(type="bad type"), "type", "is not a valid topic type"),
        (json_event(type=""), "type", "is not a valid topic type"),
        (_empty("agagentsendertype"), "agagentsendertype", "is not a valid agent type"),
        (_proto_mode_without_proto_data(), "proto_data", "has binary_data"),
        (_json_mode_with_proto_data(), "binary_data", "has proto_data"),
    ],
)
def test_bad_events_name_the_attribute(event: ce.CloudEvent, attribute: str, problem: str) -> None:
    with pytest.raises(InvalidCloudEventError) as info:
        from_cloud_event(event)
    error = info.value
    assert isinstance(error, ValueError)
    assert error.attribute == attribute
    assert problem in error.problem
    assert attribute in str(error)


def test_topic_of() -> None:
    assert topic_of(GOLDEN) == TopicId("default", "default")
    with pytest.raises(InvalidCloudEventError, match="type"):
        topic_of(json_event(type="a/b"))


PAYLOADS = st.one_of(
    st.tuples(st.just(JSON_DATA_CONTENT_TYPE), st.binary()),
    st.tuples(
        st.just(PROTOBUF_DATA_CONTENT_TYPE),
        st.builds(
            lambda name, value: any_pb2.Any(
                type_url=f"type.googleapis.com/{name}", value=value
            ).SerializeToString(),
            st.from_regex(r"[a-z]+\.[A-Z][a-z]*", fullmatch=True),
            st.binary(),
        ),
    ),
)


def event_fields(
    payloads: st.SearchStrategy[tuple[str, bytes]] = PAYLOADS,
    event_ids: st.SearchStrategy[str] = st.text(),  # noqa: B008 - a strategy, not state
) -> st.SearchStrategy[dict[str, Any]]:
    """The keyword arguments of ``to_cloud_event``."""
    return st.builds(
        lambda topic, sender, type_name, payload, event_id: {
            "topic": topic,
            "sender": sender,
            "type_name": type_name,
            "content_type": payload[0],
            "data": payload[1],
            "event_id": event_id,
        },
        topic_ids(),
        st.none() | agent_ids(),
        st.text(min_size=1),
        payloads,
        event_ids,
    )


@given(event_fields())
def test_round_trip_through_the_wire(fields: dict[str, Any]) -> None:
    event = to_cloud_event(**fields)
    wire = pb.Message(cloudEvent=event).SerializeToString()
    received = from_cloud_event(pb.Message.FromString(wire).cloudEvent)
    topic = fields["topic"]
    assert received.topic == topic
    assert received.sender == (fields["sender"] or AgentId("unknown", "unknown"))
    assert (received.type_name, received.content_type) == (
        fields["type_name"],
        fields["content_type"],
    )
    assert received.data == fields["data"]
    assert received.event_id == fields["event_id"]
    assert received.is_rpc == (":" in topic.type and topic.type.split(":", 1)[1] == "rpc_request")


@given(event_fields(PAYLOADS | st.tuples(st.sampled_from(["text/plain", ""]), st.binary())))
def test_serialized_events_read_back_as_the_message_to_cloud_event_builds(
    fields: dict[str, Any],
) -> None:
    for _ in range(2):  # made, then taken from the kept fields
        wire = serialized_cloud_event(**fields)
        assert ce.CloudEvent.FromString(wire) == to_cloud_event(**fields)


@pytest.mark.parametrize("size", [0, 1, 127, 128, 300, 16_383, 16_384, 2_097_152])
def test_a_length_prefix_is_the_varint_protobuf_writes(size: int) -> None:
    wire = ce.CloudEvent(binary_data=b"x" * size).SerializeToString()
    assert wire == b"\x32" + length_prefix(size) + b"x" * size


def test_uri_attributes_read_as_strings() -> None:
    event = json_event()
    event.attributes["dataschema"].ce_uri = "urn:Ping"
    event.attributes["agagentsenderkey"].ce_uri_ref = "p/1"
    received = from_cloud_event(event)
    assert received.type_name == "urn:Ping"
    assert received.sender == AgentId("pub", "p/1")


def test_an_empty_sender_key_is_a_key() -> None:
    event = json_event()
    event.attributes["agagentsenderkey"].ce_string = ""
    assert from_cloud_event(event).sender == AgentId("pub", "")


def test_a_sender_attribute_that_is_not_a_string_is_refused() -> None:
    event = json_event()
    event.attributes["agagentsenderkey"].ce_boolean = True
    with pytest.raises(InvalidCloudEventError) as info:
        from_cloud_event(event)
    assert info.value.attribute == "agagentsenderkey"
    assert "must be a string attribute, got ce_boolean" in info.value.problem


# -- reading events from their bytes ------------------------------------------------

READER = EventReader()  # shared by the examples: heads seen before are taken as kept


def read_as_a_message(body: bytes) -> ReceivedEvent | None:
    """What the message path makes of *body* (None: it refuses it)."""
    try:
        return from_cloud_event(ce.CloudEvent.FromString(body))
    except (DecodeError, InvalidCloudEventError):
        return None


@given(
    event_fields(
        st.tuples(st.sampled_from([JSON_DATA_CONTENT_TYPE, "text/plain"]), st.binary(max_size=300)),
        st.text(min_size=1, max_size=60),
    ),
    st.booleans(),
)
def test_an_event_read_from_its_bytes_is_the_event_read_from_its_message(
    fields: dict[str, Any], ours: bool
) -> None:
    if ours:
        body = serialized_cloud_event(**fields)
    else:  # protobuf's own layout (an AutoGen worker's)
        body = to_cloud_event(**fields).SerializeToString()
    expected = from_cloud_event(ce.CloudEvent.FromString(body))
    if expected.is_rpc or fields["topic"].type.endswith(":rpc_request"):
        assert READER.read(body) is None  # legacy RPCs go the message path
        return
    if len(fields["event_id"].encode()) >= 0x80:  # ids this long are left to the message path
        assert READER.read(body) is None
        return
    assert READER.read(body) == expected
    assert READER.read(body) == expected  # its head taken as kept


def test_events_this_reader_leaves_to_the_message_path() -> None:
    reader = EventReader()
    plain = json_event()
    assert reader.read(plain.SerializeToString()) == from_cloud_event(plain)
    traced = json_event()
    TraceContext("1" * 32, "2" * 16, 1, "k=v").inject_event(traced.attributes)
    text = json_event(text_data="{}")
    proto = to_cloud_event(
        topic=TopicId("news", "s1"),
        sender=None,
        type_name="agents.ProtoMessage",
        content_type=PROTOBUF_DATA_CONTENT_TYPE,
        data=GOLDEN_ANY,
        event_id="e1",
    )
    legacy = json_event(type="echo:rpc_request")
    bad_topic = json_event(type="no spaces")
    no_schema = json_event()
    del no_schema.attributes["dataschema"]
    no_id = json_event(id="")
    extra = json_event()
    extra.attributes["other"].ce_integer = 3  # not a string: kept as a head all the same
    for event in (traced, text, proto, legacy, bad_topic, no_schema, no_id):
        for _ in range(2):
            assert reader.read(event.SerializeToString()) is None, event
    assert reader.read(extra.SerializeToString()) == from_cloud_event(extra)
    assert reader.read(plain.SerializeToString()) == from_cloud_event(plain)


def test_bytes_protobuf_reads_otherwise_are_left_to_the_message_path() -> None:
    reader = EventReader()
    fields = {
        "topic": TopicId("news", "s1"),
        "sender": None,
        "type_name": "Ping",
        "content_type": JSON_DATA_CONTENT_TYPE,
        "data": b"{}",
        "event_id": "e1",
    }
    body = serialized_cloud_event(**fields)  # type: ignore[arg-type]
    head_end = body.index(b"\x32\x02{}")
    head = body[4:head_end]
    data = body[head_end:]
    assert reader.read(body) == read_as_a_message(body)
    cases = {
        "an id that is not UTF-8": b"\x0a\x02\xff\xfe" + head + data,
        "a second id after the head": body[:head_end] + b"\x0a\x02e2" + data,
        "an unknown field in the head": body[:head_end] + b"\x4a\x01x" + data,
        "data then more fields": body + b"\x0a\x02e2",
        "data twice": body[:head_end] + data + data,
        "text data instead": body[:head_end] + b"\x3a\x02{}",
        "the data cut short": body[:-1],
    }
    for case, damaged in cases.items():
        assert reader.read(damaged) is None, case


@given(st.data())
def test_a_damaged_event_is_read_as_its_message_would_be_or_left_to_it(
    data: st.DataObject,
) -> None:
    body = bytearray(serialized_cloud_event(**data.draw(st.sampled_from(DAMAGED_FROM))))
    for _ in range(data.draw(st.integers(1, 3))):
        index = data.draw(st.integers(0, len(body) - 1))
        body[index] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(body)))
    damaged = bytes(body[:cut])
    read = READER.read(damaged)
    assert read is None or read == read_as_a_message(damaged)


DAMAGED_FROM = [
    {
        "topic": TopicId("news", "s1"),
        "sender": sender,
        "type_name": "Ping",
        "content_type": JSON_DATA_CONTENT_TYPE,
        "data": data,
        "event_id": "e-1",
    }
    for sender in (None, AgentId("pub", "p1"))
    for data in (b"", b'{"text": "hi"}', b"x" * 200)
]
