"""Payload bytes: agentwire's serializers against autogen-core 0.7.5's own."""

from __future__ import annotations

import dataclasses
import json

import pydantic
from autogen_core import _serialization as ag
from hypothesis import given
from hypothesis import strategies as st

from agentwire import (
    JsonSerializer,
    ProtobufSerializer,
    PydanticJsonSerializer,
    SerializationRegistry,
    serializers_for_type,
)
from agentwire._proto import agent_worker_pb2 as pb
from agentwire._serialization import type_name
from tests.test_serialization import BetterProtoMessage, Flat, GoogleProtoMessage


class Note(pydantic.BaseModel):
    message: str
    count: int = 0
    tags: list[str] = []


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


@given(FLATS)
def test_dataclass_bytes_equal_autogen(flat: Flat) -> None:
    ours = JsonSerializer(Flat)
    theirs = ag.DataclassJsonMessageSerializer(Flat)
    assert ours.serialize(flat) == theirs.serialize(flat)
    assert theirs.deserialize(ours.serialize(flat)) == flat
    assert ours.deserialize(theirs.serialize(flat)) == flat
    assert (ours.type_name, ours.data_content_type) == (theirs.type_name, theirs.data_content_type)


@given(st.text(), st.integers(), st.lists(st.text()))
def test_pydantic_bytes_equal_autogen(message: str, count: int, tags: list[str]) -> None:
    note = Note(message=message, count=count, tags=tags)
    [ours] = serializers_for_type(Note)
    assert isinstance(ours, PydanticJsonSerializer)
    theirs = ag.PydanticJsonMessageSerializer(Note)
    assert ours.serialize(note) == theirs.serialize(note)
    assert ours.deserialize(theirs.serialize(note)) == note
    assert ours.type_name == theirs.type_name == "Note"


@given(st.text(), st.text())
def test_protobuf_any_bytes_equal_autogen(type_: str, key: str) -> None:
    message = pb.AgentId(type=type_, key=key)
    ours = ProtobufSerializer(pb.AgentId)
    theirs = ag.ProtobufMessageSerializer(pb.AgentId)
    assert ours.serialize(message) == theirs.serialize(message)
    assert theirs.deserialize(ours.serialize(message)) == message
    assert ours.type_name == theirs.type_name == "agents.AgentId"


@given(st.text())
def test_betterproto2_is_understood_by_autogen(text: str) -> None:
    theirs = ag.ProtobufMessageSerializer(GoogleProtoMessage)
    ours = ProtobufSerializer(BetterProtoMessage)
    data = ours.serialize(BetterProtoMessage(message=text))
    assert theirs.deserialize(data).message == text
    assert ours.deserialize(theirs.serialize(GoogleProtoMessage(message=text))).message == text


def test_type_names_agree() -> None:
    for cls in (Flat, Note, pb.AgentId, GoogleProtoMessage):
        assert type_name(cls) == ag._type_name(cls)


def test_registry_contract_matches_autogen() -> None:
    ours, theirs = SerializationRegistry(), ag.SerializationRegistry()
    ours.add_type(Note)
    theirs.add_serializer(ag.try_get_known_serializers_for_type(Note))
    name, data = ours.serialize(Note(message="hi"), content_type=ag.JSON_DATA_CONTENT_TYPE)
    assert data == theirs.serialize(
        Note(message="hi"), type_name=name, data_content_type=ag.JSON_DATA_CONTENT_TYPE
    )
    unknown_ours = ours.deserialize(b"x", type_name="Nope", content_type="a/b")
    unknown_theirs = theirs.deserialize(b"x", type_name="Nope", data_content_type="a/b")
    assert dataclasses.astuple(unknown_theirs) == (
        unknown_ours.type_name,
        unknown_ours.data_content_type,
        unknown_ours.payload,
    )
    assert json.loads(data) == {"message": "hi", "count": 0, "tags": []}
