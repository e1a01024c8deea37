"""Subscriptions (AutoGen semantics) and the indexed SubscriptionTable."""

from __future__ import annotations

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, invariant, rule

import agentwire
from agentwire import (
    AgentId,
    AgentType,
    CantHandleError,
    DefaultSubscription,
    DuplicateSubscriptionError,
    InvalidIdentifierError,
    InvalidSubscriptionError,
    Subscription,
    SubscriptionTable,
    TopicId,
    TypePrefixSubscription,
    TypeSubscription,
    UnknownSubscriptionError,
)
from agentwire._proto import agent_worker_pb2 as pb
from agentwire._subscriptions import (
    subscription_agent_type,
    subscription_from_proto,
    subscription_instantiation_context,
    subscription_to_proto,
)
from agentwire.testing import subscriptions, topic_ids, topic_types, type_subscriptions

# Small alphabets so that topic types, prefixes and agent types collide often.
TOPIC_TYPES = topic_types(alphabet="ab:", max_size=4)
AGENT_TYPES = st.sampled_from(["x", "y", "z"])
TOPICS = topic_ids(TOPIC_TYPES, st.sampled_from(["s1", "s2", ""]))


@attrs.frozen(eq=False)
class EndsWith:
    """A custom rule: topic types ending with a suffix go to agent_type/source."""

    suffix: str
    agent_type: str
    id: str

    def is_match(self, topic_id: TopicId) -> bool:
        return topic_id.type.endswith(self.suffix)

    def map_to_agent(self, topic_id: TopicId) -> AgentId:
        if not self.is_match(topic_id):
            raise CantHandleError(f"{topic_id} does not end with {self.suffix!r}")
        return AgentId(self.agent_type, topic_id.source)


_custom_ids = iter(range(10**9))
CUSTOM = st.builds(
    lambda suffix, agent_type: EndsWith(suffix, agent_type, f"custom-{next(_custom_ids)}"),
    st.sampled_from(["a", "b", ":", "ab"]),
    AGENT_TYPES,
)
ANY_SUB = st.one_of(subscriptions(topic_type=TOPIC_TYPES, agent_type=AGENT_TYPES), CUSTOM)


def naive(subs: list[Subscription], topic: TopicId) -> list[AgentId]:
    """AutoGen's SubscriptionManager answer: a scan, in order, duplicates kept."""
    return [s.map_to_agent(topic) for s in subs if s.is_match(topic)]


def same(left: list[Subscription], right: list[Subscription]) -> bool:
    """The very same objects, in the same order (AutoGen ``==`` is too loose)."""
    return len(left) == len(right) and all(a is b for a, b in zip(left, right, strict=True))


def build(subs: list[Subscription]) -> tuple[SubscriptionTable, list[Subscription]]:
    """Add subs AutoGen-style, skipping the ones the table refuses as duplicates."""
    table = SubscriptionTable()
    kept: list[Subscription] = []
    for s in subs:
        if any(k == s or k.id == s.id for k in kept):
            with pytest.raises(DuplicateSubscriptionError):
                table.add(s)
        else:
            table.add(s)
            kept.append(s)
    return table, kept


# -- single subscriptions --------------------------------------------------------


def test_type_subscription_semantics() -> None:
    sub = TypeSubscription("t1", "a1")
    assert sub.is_match(TopicId("t1", "s1"))
    assert not sub.is_match(TopicId("t10", "s1"))
    assert sub.map_to_agent(TopicId("t1", "s/2")) == AgentId("a1", "s/2")
    with pytest.raises(CantHandleError, match="t2/s"):
        sub.map_to_agent(TopicId("t2", "s"))
    assert isinstance(sub, Subscription)


def test_type_prefix_subscription_semantics() -> None:
    sub = TypePrefixSubscription("a1:", "a1")
    assert sub.is_match(TopicId("a1:", "k"))
    assert sub.is_match(TopicId("a1:conv=9", "k"))
    assert not sub.is_match(TopicId("a1", "k"))
    assert sub.map_to_agent(TopicId("a1:x", "k")) == AgentId("a1", "k")
    with pytest.raises(CantHandleError):
        sub.map_to_agent(TopicId("b:x", "k"))
    everything = TypePrefixSubscription("", "z")
    assert everything.is_match(TopicId("anything", "k"))


def test_agent_type_may_be_an_agent_type_object() -> None:
    assert TypeSubscription("t", AgentType("a")).agent_type == "a"
    assert TypePrefixSubscription("t", AgentType("a")).agent_type == "a"


def test_ids_default_to_distinct_uuids() -> None:
    first, second = TypeSubscription("t", "a"), TypeSubscription("t", "a")
    assert first.id != second.id
    assert len(first.id) == 36
    assert TypeSubscription("t", "a", id="mine").id == "mine"


def test_invalid_subscriptions_are_refused_precisely() -> None:
    with pytest.raises(InvalidIdentifierError) as info:
        TypeSubscription("t", "bad type")
    assert info.value.field == "subscription agent type"
    with pytest.raises(InvalidIdentifierError) as info:
        TypeSubscription("bad topic", "a")
    assert info.value.field == "subscription topic type"
    with pytest.raises(InvalidIdentifierError) as info:
        TypePrefixSubscription("a/", "a")
    assert info.value.field == "subscription topic type prefix"
    with pytest.raises(InvalidIdentifierError, match="must not be empty"):
        TypeSubscription("t", "a", id="")


def test_autogen_equality() -> None:
    a = TypeSubscription("t", "a", id="1")
    assert a == TypeSubscription("t", "a", id="2")  # same content
    assert a == TypeSubscription("u", "b", id="1")  # same id
    assert a != TypeSubscription("t", "b", id="3")
    assert a != TypePrefixSubscription("t", "a", id="1")  # other kind
    p = TypePrefixSubscription("t", "a", id="1")
    assert p == TypePrefixSubscription("t", "a")
    assert p == TypePrefixSubscription("x", "y", id="1")
    assert p != TypePrefixSubscription("tt", "a")
    with pytest.raises(TypeError):
        hash(a)


def test_default_subscription_needs_a_registration_context() -> None:
    with pytest.raises(CantHandleError, match="agent_type"):
        DefaultSubscription()
    with subscription_instantiation_context("worker"):
        assert subscription_agent_type.get() == "worker"
        sub = DefaultSubscription()
        typed = DefaultSubscription(topic_type="news")
    assert subscription_agent_type.get() is None
    assert (sub.topic_type, sub.agent_type) == ("default", "worker")
    assert (typed.topic_type, typed.agent_type) == ("news", "worker")
    assert DefaultSubscription(agent_type=AgentType("x")).agent_type == "x"
    # It is a TypeSubscription, equal to one with the same content (as in AutoGen).
    assert isinstance(sub, TypeSubscription)
    assert sub == TypeSubscription("default", "worker")
    assert TypeSubscription("default", "worker") == sub
    assert repr(sub).startswith("DefaultSubscription(topic_type='default'")


def test_proto_forms() -> None:
    sub = TypeSubscription("t", "a", id="i1")
    message = subscription_to_proto(sub)
    assert message == pb.Subscription(
        id="i1", typeSubscription=pb.TypeSubscription(topic_type="t", agent_type="a")
    )
    prefix = TypePrefixSubscription("a:", "a", id="i2")
    assert subscription_to_proto(prefix) == pb.Subscription(
        id="i2",
        typePrefixSubscription=pb.TypePrefixSubscription(topic_type_prefix="a:", agent_type="a"),
    )
    back = subscription_from_proto(subscription_to_proto(prefix))
    assert isinstance(back, TypePrefixSubscription)
    assert (back.id, back.topic_type_prefix, back.agent_type) == ("i2", "a:", "a")


def test_proto_errors() -> None:
    with pytest.raises(InvalidSubscriptionError, match="neither"):
        subscription_from_proto(pb.Subscription(id="x"))
    with pytest.raises(InvalidSubscriptionError, match="EndsWith"):
        subscription_to_proto(EndsWith("a", "x", "c1"))
    with pytest.raises(InvalidIdentifierError):
        subscription_from_proto(
            pb.Subscription(typeSubscription=pb.TypeSubscription(topic_type="t", agent_type=""))
        )
    # An empty id from a peer gets a fresh one.
    assert subscription_from_proto(
        pb.Subscription(typeSubscription=pb.TypeSubscription(topic_type="t", agent_type="a"))
    ).id


# -- the table -------------------------------------------------------------------


def test_table_keeps_duplicates_and_order() -> None:
    table = SubscriptionTable()
    table.add(TypeSubscription("default", "a", id="1"))
    table.add(TypePrefixSubscription("def", "a", id="2"))
    table.add(TypeSubscription("default", "b", id="3"))
    table.add(EndsWith("ult", "c", "4"))
    table.add(TypePrefixSubscription("", "a", id="5"))
    topic = TopicId("default", "s")
    assert table.recipients(topic) == [
        AgentId("a", "s"),
        AgentId("a", "s"),
        AgentId("b", "s"),
        AgentId("c", "s"),
        AgentId("a", "s"),
    ]
    assert table.agent_types(topic) == ["a", "b", "c"]
    assert table.recipients(TopicId("other", "s")) == [AgentId("a", "s")]
    assert [s.id for s in table] == ["1", "2", "3", "4", "5"]
    assert [s.id for s in table.subscriptions()] == ["1", "2", "3", "4", "5"]
    assert len(table) == 5
    assert "3" in table
    assert "9" not in table
    assert isinstance(table.get("4"), EndsWith)
    assert table.get("9") is None


def test_table_duplicate_and_unknown_errors() -> None:
    table = SubscriptionTable([TypeSubscription("t", "a", id="1")])
    with pytest.raises(DuplicateSubscriptionError, match=r"^Subscription already exists$") as info:
        table.add(TypeSubscription("t", "a", id="2"))
    assert isinstance(info.value, ValueError)
    assert info.value.existing == TypeSubscription("t", "a", id="1")
    with pytest.raises(DuplicateSubscriptionError):
        table.add(TypePrefixSubscription("p", "b", id="1"))  # ids are unique in the table
    with pytest.raises(UnknownSubscriptionError, match=r"^Subscription does not exist$") as err:
        table.remove("nope")
    assert isinstance(err.value, ValueError)
    assert isinstance(err.value, LookupError)
    assert err.value.subscription_id == "nope"
    with pytest.raises(TypeError, match="expected a Subscription"):
        table.add("t")  # type: ignore[arg-type]
    assert len(table) == 1


def test_cache_is_invalidated_on_change() -> None:
    table = SubscriptionTable()
    topic = TopicId("a:1", "s")
    assert table.recipients(topic) == []
    table.add(TypePrefixSubscription("a:", "a", id="p"))
    assert table.recipients(topic) == [AgentId("a", "s")]
    table.add(TypeSubscription("a:1", "b", id="t"))
    assert table.recipients(topic) == [AgentId("a", "s"), AgentId("b", "s")]
    assert table.remove("p") == TypePrefixSubscription("a:", "a", id="p")
    assert table.recipients(topic) == [AgentId("b", "s")]
    table.clear()
    assert table.recipients(topic) == []
    assert len(table) == 0


def test_recipients_returns_a_fresh_list() -> None:
    table = SubscriptionTable([TypeSubscription("t", "a")])
    first = table.recipients(TopicId("t", "s"))
    first.append(AgentId("evil", "x"))
    assert table.recipients(TopicId("t", "s")) == [AgentId("a", "s")]


def test_plan_cache_is_bounded() -> None:
    from agentwire import _subscriptions

    table = SubscriptionTable([TypePrefixSubscription("a:", "a")])
    for i in range(_subscriptions._PLAN_CACHE_CAP + 10):
        assert table.recipients(TopicId(f"a:{i}", "s")) == [AgentId("a", "s")]
    assert len(table._plans) == _subscriptions._PLAN_CACHE_CAP
    assert 0 < len(table._recipients) <= _subscriptions._PLAN_CACHE_CAP


def test_a_custom_subscription_is_asked_on_every_publish() -> None:
    asked: list[TopicId] = []

    @attrs.frozen(eq=False)
    class Counting(EndsWith):
        def is_match(self, topic_id: TopicId) -> bool:
            asked.append(topic_id)
            return super().is_match(topic_id)

    table = SubscriptionTable([TypeSubscription("ab", "x"), Counting("b", "y", "c1")])
    topic = TopicId("ab", "s")
    for _ in range(2):
        assert table.recipients(topic) == [AgentId("x", "s"), AgentId("y", "s")]
    assert len(asked) == 4  # is_match, and again in map_to_agent, per publish


def test_public_names() -> None:
    assert agentwire.SubscriptionTable is SubscriptionTable
    assert agentwire.DuplicateSubscriptionError is DuplicateSubscriptionError


# -- properties ------------------------------------------------------------------


@given(st.lists(ANY_SUB, max_size=12), st.lists(TOPICS, min_size=1, max_size=6))
def test_index_agrees_with_naive_scan(subs: list[Subscription], topics: list[TopicId]) -> None:
    table, kept = build(subs)
    for topic in topics:
        assert table.recipients(topic) == naive(kept, topic)
        assert table.recipients(topic) == naive(kept, topic)  # cached answer
        assert table.agent_types(topic) == list(dict.fromkeys(a.type for a in naive(kept, topic)))
    assert same(table.subscriptions(), kept)


@given(
    st.lists(ANY_SUB, max_size=10),
    ANY_SUB,
    st.lists(TOPICS, min_size=1, max_size=5),
)
def test_add_then_remove_restores_answers(
    subs: list[Subscription], extra: Subscription, topics: list[TopicId]
) -> None:
    table, kept = build(subs)
    before = [table.recipients(t) for t in topics]
    try:
        table.add(extra)
    except DuplicateSubscriptionError:
        assert any(k == extra or k.id == extra.id for k in kept)
        return
    assert [table.recipients(t) for t in topics] == [naive([*kept, extra], t) for t in topics]
    assert table.remove(extra.id) is extra
    assert [table.recipients(t) for t in topics] == before
    assert same(table.subscriptions(), kept)


@given(TOPIC_TYPES, AGENT_TYPES, TOPICS)
def test_exact_and_prefix_semantics(topic_type: str, agent_type: str, topic: TopicId) -> None:
    exact = TypeSubscription(topic_type, agent_type)
    prefix = TypePrefixSubscription(topic_type, agent_type)
    assert exact.is_match(topic) == (topic.type == topic_type)
    assert prefix.is_match(topic) == topic.type.startswith(topic_type)
    for sub in (exact, prefix):
        if sub.is_match(topic):
            assert sub.map_to_agent(topic) == AgentId(agent_type, topic.source)
        else:
            with pytest.raises(CantHandleError):
                sub.map_to_agent(topic)


@given(subscriptions(topic_type=TOPIC_TYPES, agent_type=AGENT_TYPES), st.data())
def test_dedup_by_id_or_by_content(sub: Subscription, data: st.DataObject) -> None:
    table = SubscriptionTable([sub])
    assert isinstance(sub, TypeSubscription | TypePrefixSubscription)
    same_content: Subscription
    other: Subscription
    if isinstance(sub, TypeSubscription):
        same_content = TypeSubscription(sub.topic_type, sub.agent_type)
        other = TypeSubscription(data.draw(TOPIC_TYPES), data.draw(AGENT_TYPES), id=sub.id)
    else:
        same_content = TypePrefixSubscription(sub.topic_type_prefix, sub.agent_type)
        other = TypePrefixSubscription(data.draw(TOPIC_TYPES), data.draw(AGENT_TYPES), id=sub.id)
    for dup in (same_content, other):
        with pytest.raises(DuplicateSubscriptionError):
            table.add(dup)
    assert same(table.subscriptions(), [sub])


@given(subscriptions())
def test_subscription_proto_round_trip(sub: TypeSubscription | TypePrefixSubscription) -> None:
    wire = subscription_to_proto(sub).SerializeToString()
    back = subscription_from_proto(pb.Subscription.FromString(wire))
    assert type(back) is type(sub)
    assert back.id == sub.id
    assert back == sub
    assert attrs.asdict(back) == attrs.asdict(sub)


@given(type_subscriptions(agent_type=AGENT_TYPES), TOPICS)
def test_default_subscription_is_a_type_subscription(sub: TypeSubscription, topic: TopicId) -> None:
    default = DefaultSubscription(sub.topic_type, sub.agent_type, id=sub.id)
    assert default.is_match(topic) == sub.is_match(topic)
    assert SubscriptionTable([default]).recipients(topic) == naive([sub], topic)


class TableMachine(RuleBasedStateMachine):
    """The table against a list, AutoGen's SubscriptionManager model."""

    added = Bundle("added")

    def __init__(self) -> None:
        super().__init__()
        self.table = SubscriptionTable()
        self.model: list[Subscription] = []

    @rule(target=added, sub=ANY_SUB)
    def add(self, sub: Subscription) -> str:
        if any(k == sub or k.id == sub.id for k in self.model):
            with pytest.raises(DuplicateSubscriptionError):
                self.table.add(sub)
        else:
            self.table.add(sub)
            self.model.append(sub)
        return sub.id

    @rule(sub_id=added)
    def remove(self, sub_id: str) -> None:
        known = [s for s in self.model if s.id == sub_id]
        if known:
            assert self.table.remove(sub_id) is known[0]
            self.model.remove(known[0])
        else:
            with pytest.raises(UnknownSubscriptionError):
                self.table.remove(sub_id)

    @rule(topic=TOPICS)
    def query(self, topic: TopicId) -> None:
        assert self.table.recipients(topic) == naive(self.model, topic)

    @invariant()
    def same_subscriptions(self) -> None:
        assert same(self.table.subscriptions(), self.model)
        assert len(self.table) == len(self.model)


TestTableMachine = TableMachine.TestCase
TestTableMachine.settings = settings(max_examples=60, stateful_step_count=30, deadline=None)


@given(st.lists(ANY_SUB, max_size=12), TOPICS)
def test_agent_types_are_the_distinct_recipient_types(
    subs: list[Subscription], topic: TopicId
) -> None:
    table, kept = build(subs)
    expected = list(dict.fromkeys(agent.type for agent in naive(kept, topic)))
    assert table.agent_types(topic) == expected
