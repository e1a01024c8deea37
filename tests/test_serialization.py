"""The serialization registry: AutoGen's JSON and protobuf-Any payloads."""

from __future__ import annotations

import dataclasses
import datetime
import enum
import json
import logging
import re
from typing import Any, Literal

import attrs
import betterproto2
import pytest
from google.protobuf import any_pb2
from hypothesis import given
from hypothesis import strategies as st

import agentwire
from agentwire import (
    JSON_DATA_CONTENT_TYPE,
    PROTOBUF_DATA_CONTENT_TYPE,
    JsonSerializer,
    MessageSerializer,
    ProtobufSerializer,
    SerializationError,
    SerializationRegistry,
    UnknownPayload,
    serializers_for_type,
    try_get_known_serializers_for_type,
)
from agentwire._proto import agent_worker_pb2 as pb
from agentwire._proto import cloudevent_pb2
from agentwire._serialization import type_name
from tests.proto_messages import BetterProtoMessage, GoogleProtoMessage
from tests.test_proto import CLOUD_EVENT_PROTOBUF, RPC_REQUEST_WITH_SENDER, RPC_RESPONSE_OK

# -- message types used below -------------------------------------------------------


@dataclasses.dataclass
class Ping:
    text: str


@attrs.frozen
class Pong:
    text: str


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


@dataclasses.dataclass
class Point:
    x: int
    y: float = 0.0


@attrs.frozen
class Shape:
    name: str
    points: list[Point]
    color: Color
    anchor: Point | None = None
    tags: dict[str, int] = attrs.Factory(dict)
    pair: tuple[int, str] = (0, "")
    kind: Literal["open", "closed"] = "open"
    labels: frozenset[str] = frozenset()
    extra: Any = None
    number: int | str = 0
    _secret: str = ""


@dataclasses.dataclass
class Tree:
    value: int
    children: list[Tree] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class Flat:
    """Only what AutoGen's own dataclass serializer accepts."""

    s: str
    i: int
    f: float
    b: bool
    xs: list[int]
    d: dict[str, str]
    anything: Any = None


@dataclasses.dataclass(eq=False, repr=False)
class Unregistered(betterproto2.Message):
    value: int = betterproto2.field(1, betterproto2.TYPE_INT32)


def golden_any() -> bytes:
    """The serialized Any in AutoGen's captured protobuf-mode CloudEvent."""
    event = pb.Message.FromString(bytes.fromhex(CLOUD_EVENT_PROTOBUF)).cloudEvent
    return event.proto_data.SerializeToString()


# -- type names ---------------------------------------------------------------------


def test_type_names_are_autogen_s() -> None:
    assert type_name(Ping) == "Ping"
    assert type_name(Ping("x")) == "Ping"
    assert type_name(Shape) == "Shape"
    assert type_name(pb.AgentId) == "agents.AgentId"
    assert type_name(pb.AgentId()) == "agents.AgentId"
    assert type_name(GoogleProtoMessage) == "agents.ProtoMessage"
    assert type_name(BetterProtoMessage) == "agents.ProtoMessage"
    assert type_name(BetterProtoMessage(message="x")) == "agents.ProtoMessage"
    assert type_name(Unregistered) == "Unregistered"


# -- JSON -----------------------------------------------------------------------------


def test_json_bytes_match_the_golden_rpc_payloads() -> None:
    request = pb.Message.FromString(bytes.fromhex(RPC_REQUEST_WITH_SENDER)).request
    response = pb.Message.FromString(bytes.fromhex(RPC_RESPONSE_OK)).response
    ping = JsonSerializer(Ping)
    assert ping.serialize(Ping("rpc")) == request.payload.data
    assert ping.deserialize(request.payload.data) == Ping("rpc")
    assert ping.type_name == request.payload.data_type
    assert ping.data_content_type == request.payload.data_content_type
    pong = JsonSerializer(Pong)
    assert pong.serialize(Pong("pong:rpc")) == response.payload.data
    assert pong.deserialize(response.payload.data) == Pong("pong:rpc")


def test_nested_attrs_and_dataclasses_round_trip() -> None:
    shape = Shape(
        name="tri",
        points=[Point(0), Point(1, 2.5)],
        color=Color.BLUE,
        anchor=Point(3, 4.0),
        tags={"a": 1},
        pair=(7, "seven"),
        kind="closed",
        labels=frozenset({"z"}),
        extra={"free": [1, "form"]},
        number="n",
        secret="s",
    )
    serializer = JsonSerializer(Shape)
    data = serializer.serialize(shape)
    decoded = json.loads(data)
    assert list(decoded) == [
        "name", "points", "color", "anchor", "tags", "pair", "kind", "labels", "extra",
        "number", "secret",
    ]  # fmt: skip
    assert decoded["color"] == "blue"
    assert decoded["points"] == [{"x": 0, "y": 0.0}, {"x": 1, "y": 2.5}]
    assert serializer.deserialize(data) == shape


def test_recursive_dataclass_matches_asdict_bytes() -> None:
    tree = Tree(1, [Tree(2), Tree(3, [Tree(4)])])
    serializer = JsonSerializer(Tree)
    assert serializer.serialize(tree) == json.dumps(dataclasses.asdict(tree)).encode()
    assert serializer.deserialize(serializer.serialize(tree)) == tree


def test_defaults_fill_missing_optional_fields() -> None:
    assert JsonSerializer(Point).deserialize(b'{"x": 1}') == Point(1, 0.0)
    # An int where a float is declared becomes a float.
    assert JsonSerializer(Point).deserialize(b'{"x": 1, "y": 2}').y == 2.0
    assert type(JsonSerializer(Point).deserialize(b'{"x": 1, "y": 2}').y) is float


def test_a_bool_is_not_taken_for_an_int_nor_an_int_for_a_str() -> None:
    with pytest.raises(SerializationError, match=r"Point\.x: expected int, got bool"):
        JsonSerializer(Point).deserialize(b'{"x": true}')
    with pytest.raises(SerializationError, match=r"Ping\.text: expected str"):
        JsonSerializer(Ping).deserialize(b'{"text": 1}')


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b"nope", "bad JSON"),
        (b"\xff", "bad JSON"),
        (b"[1]", "expected a JSON object for Ping, got list"),
        (b"{}", "missing field(s) 'text'"),
        (b'{"text": 3}', "Ping.text: expected str, got int 3"),
        (b'{"text": "a", "other": 1}', "unexpected field 'other'"),
    ],
)
def test_bad_json_is_a_precise_error(payload: bytes, message: str) -> None:
    with pytest.raises(SerializationError, match="cannot deserialize Ping") as info:
        JsonSerializer(Ping).deserialize(payload)
    assert message in str(info.value)


def test_nested_decode_errors_name_the_path() -> None:
    serializer = JsonSerializer(Shape)
    with pytest.raises(SerializationError, match=r"Shape\.points\[1\]\.x: expected int"):
        serializer.deserialize(b'{"name": "n", "points": [{"x": 1}, {"x": "2"}], "color": "red"}')
    with pytest.raises(SerializationError, match="'green' is not a value of Color"):
        serializer.deserialize(b'{"name": "n", "points": [], "color": "green"}')
    with pytest.raises(SerializationError, match="expected one of"):
        serializer.deserialize(b'{"name": "n", "points": [], "color": "red", "kind": "x"}')
    with pytest.raises(SerializationError, match="array of 2 items"):
        serializer.deserialize(b'{"name": "n", "points": [], "color": "red", "pair": [1]}')
    with pytest.raises(SerializationError, match=re.escape("expected int | str")):
        serializer.deserialize(b'{"name": "n", "points": [], "color": "red", "number": 1.5}')


def test_constructor_validators_surface_as_serialization_errors() -> None:
    @attrs.frozen
    class Positive:
        n: int = attrs.field(validator=attrs.validators.gt(0))

    with pytest.raises(SerializationError, match="refused the values"):
        JsonSerializer(Positive).deserialize(b'{"n": -1}')

    @attrs.frozen
    class PositiveFloat:
        x: float = attrs.field(validator=attrs.validators.gt(0))

    with pytest.raises(SerializationError, match="refused the values"):
        JsonSerializer(PositiveFloat).deserialize(b'{"x": -1}')  # an int, made a float first


def test_serialize_errors_are_serialization_errors() -> None:
    with pytest.raises(SerializationError, match="cannot serialize Ping as JSON"):
        JsonSerializer(Ping).serialize(Ping(datetime.date(2020, 1, 1)))  # type: ignore[arg-type]


def test_unsupported_fields_are_refused_at_registration() -> None:
    @dataclasses.dataclass
    class When:
        at: datetime.datetime

    @dataclasses.dataclass
    class Either:
        value: Point | Tree

    @dataclasses.dataclass
    class IntKeys:
        table: dict[int, str]

    with pytest.raises(SerializationError, match=r"When\.at .*datetime.*supported field types"):
        JsonSerializer(When)
    with pytest.raises(SerializationError, match=r"Either\.value .*unions other than"):
        JsonSerializer(Either)
    with pytest.raises(SerializationError, match=r"IntKeys\.table .*dict\[str"):
        JsonSerializer(IntKeys)
    with pytest.raises(SerializationError, match="dataclass or an attrs class"):
        JsonSerializer(int)


# -- protobuf -------------------------------------------------------------------------


def test_google_protobuf_matches_the_golden_any() -> None:
    serializer = ProtobufSerializer(GoogleProtoMessage)
    assert serializer.type_name == "agents.ProtoMessage"
    assert serializer.data_content_type == PROTOBUF_DATA_CONTENT_TYPE
    assert serializer.serialize(GoogleProtoMessage(message="Hello!")) == golden_any()
    assert serializer.deserialize(golden_any()).message == "Hello!"


def test_betterproto2_matches_the_golden_any() -> None:
    serializer = ProtobufSerializer(BetterProtoMessage)
    assert serializer.type_name == "agents.ProtoMessage"
    assert serializer.serialize(BetterProtoMessage(message="Hello!")) == golden_any()
    decoded = serializer.deserialize(golden_any())
    assert isinstance(decoded, BetterProtoMessage)
    assert decoded.message == "Hello!"


def test_betterproto2_without_a_pool_needs_a_full_name() -> None:
    with pytest.raises(SerializationError, match="full_name="):
        ProtobufSerializer(Unregistered)
    serializer = ProtobufSerializer(Unregistered, full_name="tests.Unregistered")
    data = serializer.serialize(Unregistered(value=5))
    wrapper = any_pb2.Any.FromString(data)
    assert wrapper.type_url == "type.googleapis.com/tests.Unregistered"
    assert serializer.deserialize(data).value == 5


def test_malformed_protobuf_is_a_precise_error() -> None:
    serializer = ProtobufSerializer(pb.AgentId)
    with pytest.raises(SerializationError, match=r"agents\.AgentId: the payload is not"):
        serializer.deserialize(b"\xff\xff\xff")
    other = any_pb2.Any(type_url="type.googleapis.com/agents.Other", value=b"").SerializeToString()
    with pytest.raises(SerializationError, match=r"agents\.AgentId: the Any holds"):
        serializer.deserialize(other)
    bad_inner = any_pb2.Any(
        type_url="type.googleapis.com/agents.AgentId", value=b"\x0a\x10ab"
    ).SerializeToString()
    with pytest.raises(SerializationError, match="malformed message bytes"):
        serializer.deserialize(bad_inner)
    with pytest.raises(SerializationError, match=r"with the serializer for agents\.AgentId"):
        serializer.serialize(Ping("x"))  # type: ignore[arg-type]
    with pytest.raises(SerializationError, match="google protobuf or betterproto2"):
        ProtobufSerializer(Ping)


@given(st.text(), st.text())
def test_protobuf_round_trip(type_: str, key: str) -> None:
    serializer = ProtobufSerializer(pb.AgentId)
    message = pb.AgentId(type=type_, key=key)
    data = serializer.serialize(message)
    assert any_pb2.Any.FromString(data).value == message.SerializeToString()
    assert serializer.deserialize(data) == message


@given(st.text())
def test_betterproto2_and_google_agree(text: str) -> None:
    google = ProtobufSerializer(GoogleProtoMessage)
    better = ProtobufSerializer(BetterProtoMessage)
    data = google.serialize(GoogleProtoMessage(message=text))
    assert better.serialize(BetterProtoMessage(message=text)) == data
    assert better.deserialize(data).message == text


# -- JSON properties ------------------------------------------------------------------

FLATS = st.builds(
    Flat,
    s=st.text(),
    i=st.integers(),
    f=st.floats(allow_nan=False),
    b=st.booleans(),
    xs=st.lists(st.integers()),
    d=st.dictionaries(st.text(), st.text()),
    anything=st.one_of(st.none(), st.text(), st.lists(st.integers())),
)


@attrs.frozen
class Scalars:
    """Strings and numbers only: written field by field, read without per-field work."""

    s: str
    i: int
    f: float
    b: bool
    _private: str = ""


SCALARS = st.builds(
    Scalars, st.text(), st.integers(), st.floats(), st.booleans(), private=st.text()
)


@given(SCALARS)
def test_records_of_strings_and_numbers_are_json_dumps_bytes_and_read_back(value: Scalars) -> None:
    serializer = JsonSerializer(Scalars)
    data = serializer.serialize(value)
    as_dict = {"s": value.s, "i": value.i, "f": value.f, "b": value.b, "private": value._private}
    assert data == json.dumps(as_dict).encode()
    assert repr(serializer.deserialize(data)) == repr(value)  # (repr: NaN != NaN)


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b'{"s": "a", "i": 1, "f": 1.0, "b": true, "other": ""}', "unexpected field 'other'"),
        (b'{"s": "a", "i": true, "f": 1.0, "b": true, "private": ""}', "expected int, got bool"),
        (b'{"s": "a", "i": 1, "f": 1.0, "b": true, "_private": ""}', "unexpected field '_private'"),
    ],
)
def test_a_record_of_strings_and_numbers_reads_only_its_own_keys_and_types(
    payload: bytes, message: str
) -> None:
    with pytest.raises(SerializationError, match="cannot deserialize Scalars") as info:
        JsonSerializer(Scalars).deserialize(payload)
    assert message in str(info.value)
    # an int where a float is declared is still a float, as the general path makes it
    read = JsonSerializer(Scalars).deserialize(b'{"s": "", "i": 1, "f": 2, "b": false}')
    assert type(read.f) is float


@given(FLATS)
def test_flat_dataclasses_match_autogen_bytes(flat: Flat) -> None:
    serializer = JsonSerializer(Flat)
    data = serializer.serialize(flat)
    # AutoGen's DataclassJsonMessageSerializer: json.dumps(asdict(obj)).encode("utf-8")
    assert data == json.dumps(dataclasses.asdict(flat)).encode("utf-8")
    # ... and its decoder: cls(**json.loads(...)).
    assert Flat(**json.loads(data)) == flat
    assert serializer.deserialize(data) == flat


POINTS = st.builds(Point, x=st.integers(), y=st.floats(allow_nan=False, allow_infinity=False))
SHAPES = st.builds(
    Shape,
    name=st.text(),
    points=st.lists(POINTS, max_size=3),
    color=st.sampled_from(Color),
    anchor=st.none() | POINTS,
    tags=st.dictionaries(st.text(), st.integers(), max_size=3),
    pair=st.tuples(st.integers(), st.text()),
    kind=st.sampled_from(["open", "closed"]),
    labels=st.frozensets(st.text(), max_size=3),
    extra=st.none() | st.integers() | st.text(),
    number=st.integers() | st.text(),
    secret=st.text(),
)


@given(SHAPES)
def test_nested_round_trip(shape: Shape) -> None:
    serializer = JsonSerializer(Shape)
    assert serializer.deserialize(serializer.serialize(shape)) == shape


@given(st.binary())
def test_garbage_never_escapes_as_another_error(data: bytes) -> None:
    serializers: list[JsonSerializer[Any] | ProtobufSerializer[Any]] = [
        JsonSerializer(Shape),
        ProtobufSerializer(pb.AgentId),
    ]
    for serializer in serializers:
        error = ""
        try:
            result = serializer.deserialize(data)
        except SerializationError as exc:
            error = str(exc)
        if error:
            assert serializer.type_name in error
        else:
            assert isinstance(result, serializer.message_type)


# -- the registry ---------------------------------------------------------------------


def test_serializers_for_type() -> None:
    [json_one] = serializers_for_type(Ping)
    assert isinstance(json_one, JsonSerializer)
    [proto_one] = serializers_for_type(pb.AgentId)
    assert isinstance(proto_one, ProtobufSerializer)
    [better_one] = serializers_for_type(BetterProtoMessage)
    assert better_one.type_name == "agents.ProtoMessage"
    with pytest.raises(SerializationError, match="no built-in serializer"):
        serializers_for_type(int)
    assert try_get_known_serializers_for_type(int) == []
    assert len(try_get_known_serializers_for_type(Ping)) == 1
    assert isinstance(json_one, MessageSerializer)


def test_registry_round_trips_and_unknown_payloads() -> None:
    registry = SerializationRegistry()
    registry.add_type(Ping)
    registry.add_serializer(serializers_for_type(GoogleProtoMessage))
    assert registry.is_registered("Ping", JSON_DATA_CONTENT_TYPE)
    assert not registry.is_registered("Ping", PROTOBUF_DATA_CONTENT_TYPE)
    assert registry.content_types_for("Ping") == {JSON_DATA_CONTENT_TYPE}
    assert registry.content_types_for("Nope") == set()
    assert registry.serialize(Ping("hi"), content_type=JSON_DATA_CONTENT_TYPE) == (
        "Ping",
        b'{"text": "hi"}',
    )
    name, data = registry.serialize(
        GoogleProtoMessage(message="Hello!"), content_type=PROTOBUF_DATA_CONTENT_TYPE
    )
    assert (name, data) == ("agents.ProtoMessage", golden_any())
    assert registry.deserialize(
        b'{"text": "hi"}', type_name="Ping", content_type=JSON_DATA_CONTENT_TYPE
    ) == Ping("hi")
    unknown = registry.deserialize(b"xyz", type_name="Nope", content_type="text/plain")
    assert unknown == UnknownPayload("Nope", "text/plain", b"xyz")
    with pytest.raises(
        SerializationError, match="Unknown type Ping with content type application/x-protobuf"
    ):
        registry.serialize(Ping("hi"), content_type=PROTOBUF_DATA_CONTENT_TYPE)
    with pytest.raises(SerializationError, match="Unknown type Pong"):
        registry.serialize(Pong("hi"), content_type=JSON_DATA_CONTENT_TYPE)
    with pytest.raises(SerializationError, match="cannot deserialize Ping"):
        registry.deserialize(b"{", type_name="Ping", content_type=JSON_DATA_CONTENT_TYPE)
    with pytest.raises(SerializationError, match="expected a MessageSerializer"):
        registry.add_serializer(object())  # type: ignore[arg-type]
    assert len(registry) == 2


@attrs.frozen
class Upper:
    """A custom serializer: plain text, upper-cased on the wire."""

    type_name: str = "Shout"
    data_content_type: str = "text/plain"

    def serialize(self, message: str) -> bytes:
        return message.upper().encode()

    def deserialize(self, payload: bytes) -> str:
        if not payload.isupper():
            raise ValueError("not shouting")
        return payload.decode().lower()


def test_custom_serializers_plug_in() -> None:
    registry = SerializationRegistry()
    registry.add_serializer(Upper())
    assert registry.deserialize(b"HEY", type_name="Shout", content_type="text/plain") == "hey"
    with pytest.raises(SerializationError, match="cannot deserialize Shout from text/plain"):
        registry.deserialize(b"hey", type_name="Shout", content_type="text/plain")
    # Without message_type the registry goes by type name: str is "str", not "Shout".
    with pytest.raises(SerializationError, match="Unknown type str"):
        registry.serialize("hey", content_type="text/plain")


def test_same_bare_name_collision_is_logged_and_checked(caplog: pytest.LogCaptureFixture) -> None:
    def make() -> type:
        @dataclasses.dataclass
        class Ping:
            other: int

        return Ping

    OtherPing = make()
    registry = SerializationRegistry()
    registry.add_type(Ping)
    with caplog.at_level(logging.WARNING, logger="agentwire.serialization"):
        registry.add_type(OtherPing)
    assert "now means" in caplog.text
    # The later registration wins; the first class can no longer be sent under that name.
    with pytest.raises(SerializationError, match="is registered for"):
        registry.serialize(Ping("x"), content_type=JSON_DATA_CONTENT_TYPE)
    assert registry.serialize(OtherPing(1), content_type=JSON_DATA_CONTENT_TYPE) == (
        "Ping",
        b'{"other": 1}',
    )


def test_public_names() -> None:
    assert agentwire.try_get_known_serializers_for_type is try_get_known_serializers_for_type
    assert agentwire.UnknownPayload is UnknownPayload
    assert cloudevent_pb2.CloudEvent.DESCRIPTOR.full_name == "io.cloudevents.v1.CloudEvent"


@dataclasses.dataclass
class WithComputed:
    width: int
    height: int
    area: int = dataclasses.field(init=False)

    def __post_init__(self) -> None:
        self.area = self.width * self.height


def test_fields_outside_the_constructor_are_written_and_skipped_on_read() -> None:
    serializer = JsonSerializer(WithComputed)
    value = WithComputed(2, 3)
    data = serializer.serialize(value)
    assert data == json.dumps(dataclasses.asdict(value)).encode()
    assert json.loads(data)["area"] == 6
    assert serializer.deserialize(data) == value
