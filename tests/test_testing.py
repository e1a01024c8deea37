"""agentwire.testing: the strategies and the subscription-law checker."""

from __future__ import annotations

import random
import re
import subprocess
import sys
import uuid

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from agentwire import (
    AgentId,
    CantHandleError,
    Subscription,
    TopicId,
    TypePrefixSubscription,
    TypeSubscription,
)
from agentwire.testing import (
    agent_ids,
    check_subscription_laws,
    invalid_agent_types,
    invalid_topic_types,
    subscriptions,
    topic_ids,
    topic_types,
    type_prefix_subscriptions,
    type_subscriptions,
)

TOPICS = topic_ids(topic_types(alphabet="ab:", max_size=4), st.sampled_from(["s", "", "x/y"]))


@attrs.frozen(eq=False)
class Contains:
    """A user's rule: topic types containing a word go to agent_type/source."""

    word: str
    agent_type: str
    id: str = attrs.field(factory=lambda: str(uuid.uuid4()))

    def is_match(self, topic_id: TopicId) -> bool:
        return self.word in topic_id.type

    def map_to_agent(self, topic_id: TopicId) -> AgentId:
        if not self.is_match(topic_id):
            raise CantHandleError(f"{topic_id} lacks {self.word!r}")
        return AgentId(self.agent_type, topic_id.source)


@attrs.frozen(eq=False)
class NeverRaises(Contains):
    def map_to_agent(self, topic_id: TopicId) -> AgentId:
        return AgentId(self.agent_type, topic_id.source)


@attrs.frozen(eq=False)
class RaisesValueError(Contains):
    def map_to_agent(self, topic_id: TopicId) -> AgentId:
        if not self.is_match(topic_id):
            raise ValueError("no")
        return AgentId(self.agent_type, topic_id.source)


@attrs.frozen(eq=False)
class FixedKey(Contains):
    def map_to_agent(self, topic_id: TopicId) -> AgentId:
        if not self.is_match(topic_id):
            raise CantHandleError("no")
        return AgentId(self.agent_type, "singleton")


class FreshId:
    """Breaks the rules: a new id on every access."""

    def __init__(self, word: str, agent_type: str) -> None:
        self._rule = Contains(word, agent_type)

    @property
    def id(self) -> str:
        return str(uuid.uuid4())

    def is_match(self, topic_id: TopicId) -> bool:
        return self._rule.is_match(topic_id)

    def map_to_agent(self, topic_id: TopicId) -> AgentId:
        return self._rule.map_to_agent(topic_id)


@attrs.frozen(eq=False)
class TruthyMatch(Contains):
    def is_match(self, topic_id: TopicId) -> bool:
        return topic_id.type if self.word in topic_id.type else ""  # type: ignore[return-value]


def contains_rules() -> st.SearchStrategy[Contains]:
    return st.builds(Contains, st.sampled_from(["a", "b", ":", "ab"]), st.just("agent"))


def test_builtin_subscriptions_obey_the_laws() -> None:
    check_subscription_laws(subscriptions(topic_type=topic_types(alphabet="ab:")), TOPICS)
    check_subscription_laws(TypeSubscription("a", "x"), TOPICS)
    check_subscription_laws(lambda: TypePrefixSubscription("a:", "x"), TOPICS)


def test_a_correct_custom_rule_obeys_the_laws() -> None:
    check_subscription_laws(contains_rules(), TOPICS)
    check_subscription_laws(Contains("b", "agent"))  # default topics


@pytest.mark.parametrize(
    ("broken", "message"),
    [
        (NeverRaises("a", "agent"), "must raise agentwire.CantHandleError"),
        (RaisesValueError("a", "agent"), "raised ValueError although is_match is False"),
        (FixedKey("a", "agent"), "must become the agent key"),
        (FreshId("a", "agent"), "id changed"),
        (TruthyMatch("a", "agent"), "must return a bool"),
    ],
)
def test_broken_rules_are_caught(broken: Subscription, message: str) -> None:
    with pytest.raises(AssertionError, match=re.escape(message)):
        check_subscription_laws(broken, TOPICS, max_examples=100)


@attrs.frozen(eq=False)
class DefaultWord(Contains):
    word: str = "a"
    agent_type: str = "agent"


def test_a_class_is_used_as_a_factory() -> None:
    check_subscription_laws(DefaultWord, TOPICS)
    with pytest.raises(AssertionError, match="must raise"):
        check_subscription_laws(lambda: NeverRaises("a", "agent"), TOPICS)


def test_keeps_source_can_be_waived() -> None:
    check_subscription_laws(FixedKey("a", "agent"), TOPICS, keeps_source=False)


@given(type_subscriptions(), type_prefix_subscriptions(), topic_ids(), agent_ids())
def test_strategies_give_valid_values(
    sub: TypeSubscription, prefix: TypePrefixSubscription, topic: TopicId, agent: AgentId
) -> None:
    assert re.fullmatch(r"[\w\-\.\:\=]+", sub.topic_type)
    assert re.fullmatch(r"[\w\-\.]+", sub.agent_type)
    assert re.fullmatch(r"[\w\-\.\:\=]*", prefix.topic_type_prefix)
    assert re.fullmatch(r"[\w\-\.\:\=]+", topic.type)
    assert re.fullmatch(r"[\w\-\.]+", agent.type)


@given(invalid_agent_types(), invalid_topic_types())
def test_invalid_strategies_give_invalid_values(agent_type: str, topic_type: str) -> None:
    assert not re.match(r"^[\w\-\.]+\Z", agent_type)
    assert not re.match(r"^[\w\-\.\:\=]+\Z", topic_type)


def test_core_does_not_import_hypothesis() -> None:
    code = (
        "import sys, agentwire, agentwire._cloudevents, agentwire._serialization; "
        "print('hypothesis' in sys.modules)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "False"


@attrs.frozen(eq=False)
class CantHandleOnMatch(Contains):
    def map_to_agent(self, topic_id: TopicId) -> AgentId:
        raise CantHandleError("this rule never maps")


@attrs.define(eq=False)
class CoinFlip:
    """Breaks the rules: is_match is a coin flip."""

    id: str = "coin"
    rng: random.Random = attrs.field(factory=lambda: random.Random(7))

    def is_match(self, topic_id: TopicId) -> bool:
        return self.rng.random() < 0.5

    def map_to_agent(self, topic_id: TopicId) -> AgentId:
        return AgentId("agent", topic_id.source)


@attrs.frozen(eq=False)
class TwoBugs(Contains):
    """Topics with 'a' get a truthy non-bool; topics with 'b' match but cannot be handled."""

    def is_match(self, topic_id: TopicId) -> bool:
        if "a" in topic_id.type:
            return "yes"  # type: ignore[return-value]
        return "b" in topic_id.type

    def map_to_agent(self, topic_id: TopicId) -> AgentId:
        raise CantHandleError("no")


def test_a_rule_that_cannot_handle_a_topic_it_matches_breaks_a_law() -> None:
    with pytest.raises(AssertionError, match="raised CantHandleError although is_match is True"):
        check_subscription_laws(CantHandleOnMatch("a", "agent"), TOPICS, max_examples=50)


def test_a_non_deterministic_rule_breaks_the_determinism_law() -> None:
    with pytest.raises(AssertionError, match="not deterministic") as raised:
        check_subscription_laws(CoinFlip(), TOPICS, max_examples=100)
    assert type(raised.value) is AssertionError


def test_a_rule_with_two_bugs_fails_with_one_assertion_error_naming_a_broken_law() -> None:
    # Hypothesis reports both bugs when it meets both before it stops searching,
    # which it usually but not always does: either way one AssertionError comes out.
    with pytest.raises(AssertionError) as raised:
        check_subscription_laws(TwoBugs("", "agent"), TOPICS, max_examples=200)
    assert type(raised.value) is AssertionError
    message = str(raised.value)
    assert (
        "must return a bool" in message
        or "raised CantHandleError although is_match is True" in message
    )


def test_several_failures_are_listed_each_in_one_message() -> None:
    from agentwire.testing import _failures

    group = ExceptionGroup(
        "distinct failures",
        [AssertionError("is_match must return a bool"), CantHandleError("no agent")],
    )
    assert _failures(group) == "is_match must return a bool; CantHandleError: no agent"
