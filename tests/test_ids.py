"""Agent types, agent ids and topic ids: AutoGen's validation and string forms."""

from __future__ import annotations

import pickle
import re

import attrs
import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st

import agentwire
from agentwire import AgentId, AgentType, DefaultTopicId, InvalidIdentifierError, TopicId
from agentwire._ids import current_agent_id, is_valid_agent_type, is_valid_topic_type
from agentwire._proto import agent_worker_pb2 as pb
from agentwire.testing import (
    agent_ids,
    agent_keys,
    agent_types,
    invalid_agent_types,
    invalid_topic_types,
    topic_ids,
    topic_types,
)

AUTOGEN_AGENT_TYPE = re.compile(r"^[\w\-\.]+\Z")
AUTOGEN_TOPIC_TYPE = re.compile(r"^[\w\-\.\:\=]+\Z")


def test_agent_id_basics() -> None:
    a = AgentId("echo", "k1")
    assert (a.type, a.key) == ("echo", "k1")
    assert str(a) == "echo/k1"
    assert a == AgentId(AgentType("echo"), "k1")
    assert hash(a) == hash(AgentId("echo", "k1"))
    assert a != AgentId("echo", "k2")
    pair: object = ("echo", "k1")
    assert a != pair
    assert repr(a) == "AgentId(type='echo', key='k1')"


def test_ids_are_immutable_and_picklable() -> None:
    a = AgentId("t", "k")
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        a.type = "u"  # type: ignore[misc]
    assert pickle.loads(pickle.dumps(a)) == a
    assert attrs.evolve(a, key="z") == AgentId("t", "z")
    t = TopicId("t", "s")
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        t.source = "x"  # type: ignore[misc]
    assert pickle.loads(pickle.dumps(t)) == t


@pytest.mark.parametrize("bad", ["", "a b", "a/b", "a:b", "a=b", "a\n", "\n", "é!", "a\x00"])
def test_invalid_agent_type_names_field_value_and_rule(bad: str) -> None:
    with pytest.raises(InvalidIdentifierError) as info:
        AgentId(bad, "k")
    err = info.value
    assert isinstance(err, ValueError)
    assert err.field == "agent type"
    assert err.value == bad
    assert r"^[\w\-\.]+\Z" in err.rule
    assert repr(bad) in str(err)
    with pytest.raises(InvalidIdentifierError):
        AgentType(bad)


def test_unicode_word_characters_are_valid_types() -> None:
    assert AgentId("агент_1.x-y", "k").type == "агент_1.x-y"
    assert TopicId("主题:a=b", "s").type == "主题:a=b"


def test_non_strings_are_rejected_precisely() -> None:
    with pytest.raises(InvalidIdentifierError, match="must be a str or an AgentType"):
        AgentId(3, "k")  # type: ignore[arg-type]
    with pytest.raises(InvalidIdentifierError) as info:
        AgentId("t", None)  # type: ignore[arg-type]
    assert info.value.field == "agent key"
    with pytest.raises(InvalidIdentifierError) as info:
        TopicId(None, "s")  # type: ignore[arg-type]
    assert info.value.field == "topic type"
    with pytest.raises(InvalidIdentifierError) as info:
        TopicId("t", b"s")  # type: ignore[arg-type]
    assert info.value.field == "topic source"


def test_keys_and_sources_are_not_validated() -> None:
    for key in ["", "/", "a/b/c", " spaces ", "\n"]:
        assert AgentId("t", key).key == key
        assert TopicId("t", key).source == key


def test_from_str_splits_on_first_slash() -> None:
    assert AgentId.from_str("t/a/b") == AgentId("t", "a/b")
    assert AgentId.from_str("t/") == AgentId("t", "")
    assert TopicId.from_str("HelloAgents/python/x") == TopicId("HelloAgents", "python/x")
    with pytest.raises(InvalidIdentifierError, match="must be 'type/key'"):
        AgentId.from_str("noslash")
    with pytest.raises(InvalidIdentifierError, match="must be 'type/source'"):
        TopicId.from_str("noslash")
    with pytest.raises(InvalidIdentifierError) as info:
        AgentId.from_str("/k")
    assert info.value.field == "agent type"


def test_topic_type_allows_colon_and_equals() -> None:
    assert TopicId("a:b=c", "s").type == "a:b=c"
    with pytest.raises(InvalidIdentifierError) as info:
        TopicId("a b", "s")
    assert info.value.field == "topic type"
    assert r"^[\w\-\.\:\=]+\Z" in info.value.rule


def test_agent_id_proto() -> None:
    a = AgentId("echo", "k/1")
    message = a.to_proto()
    assert isinstance(message, pb.AgentId)
    assert (message.type, message.key) == ("echo", "k/1")
    assert AgentId.from_proto(message) == a
    with pytest.raises(InvalidIdentifierError):
        AgentId.from_proto(pb.AgentId(type="", key="k"))


def test_default_topic_id_uses_current_agent() -> None:
    assert DefaultTopicId() == TopicId("default", "default")
    assert DefaultTopicId("news") == TopicId("news", "default")
    token = current_agent_id.set(AgentId("a", "conv-7"))
    try:
        assert DefaultTopicId() == TopicId("default", "conv-7")
        assert DefaultTopicId(source="x") == TopicId("default", "x")
    finally:
        current_agent_id.reset(token)
    assert DefaultTopicId() == TopicId("default", "default")


async def test_current_agent_id_is_per_task() -> None:
    seen: dict[str, TopicId] = {}

    async def handler(key: str) -> None:
        current_agent_id.set(AgentId("a", key))
        await trio.lowlevel.checkpoint()
        seen[key] = DefaultTopicId()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(handler, "one")
        nursery.start_soon(handler, "two")
    assert seen == {"one": TopicId("default", "one"), "two": TopicId("default", "two")}
    assert current_agent_id.get() is None


def test_public_names() -> None:
    assert agentwire.AgentId is AgentId
    assert agentwire.DefaultTopicId is DefaultTopicId


@given(st.text(max_size=12))
def test_validation_agrees_with_autogen_regex(value: str) -> None:
    assert is_valid_agent_type(value) == bool(AUTOGEN_AGENT_TYPE.match(value))
    assert is_valid_topic_type(value) == bool(AUTOGEN_TOPIC_TYPE.match(value))
    # Twice: the second answer comes from the cache of validated types.
    assert is_valid_agent_type(value) == bool(AUTOGEN_AGENT_TYPE.match(value))
    assert is_valid_topic_type(value) == bool(AUTOGEN_TOPIC_TYPE.match(value))


@given(invalid_agent_types())
def test_invalid_agent_types_strategy_is_rejected(value: str) -> None:
    assert not AUTOGEN_AGENT_TYPE.match(value)
    with pytest.raises(InvalidIdentifierError):
        AgentId(value, "k")


@given(invalid_topic_types())
def test_invalid_topic_types_strategy_is_rejected(value: str) -> None:
    assert not AUTOGEN_TOPIC_TYPE.match(value)
    with pytest.raises(InvalidIdentifierError):
        TopicId(value, "s")


@given(agent_types(), agent_keys())
def test_agent_id_round_trips(type_: str, key: str) -> None:
    a = AgentId(type_, key)
    assert AgentId.from_str(str(a)) == a
    assert AgentId.from_proto(pb.AgentId.FromString(a.to_proto().SerializeToString())) == a
    assert AgentId._trusted(type_, key) == a


@given(agent_ids())
def test_agent_ids_strategy(a: AgentId) -> None:
    assert AUTOGEN_AGENT_TYPE.match(a.type)
    assert AgentId.from_str(str(a)) == a


@given(topic_ids())
def test_topic_id_round_trips(t: TopicId) -> None:
    assert AUTOGEN_TOPIC_TYPE.match(t.type)
    assert TopicId.from_str(str(t)) == t


@given(agent_types())
def test_every_agent_type_is_a_topic_type(value: str) -> None:
    # The direct-message convention publishes to topic type "<agent type>:..."
    assert TopicId(value, "s").type == value
    assert TopicId(value + ":x=1", "s").type == value + ":x=1"


@given(topic_types(alphabet="ab:="))
def test_topic_types_with_colon_or_equals_are_not_agent_types(value: str) -> None:
    assert is_valid_agent_type(value) == (":" not in value and "=" not in value)
