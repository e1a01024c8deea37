"""Subscriptions and the table that answers "who receives a publish to this topic?".

Invariants kept by :class:`SubscriptionTable` (checked by the property tests):

* ``recipients(topic)`` equals the naive AutoGen answer
  ``[s.map_to_agent(topic) for s in subscriptions() if s.is_match(topic)]``:
  subscription-insertion order, duplicates kept (two subscriptions mapping to
  the same agent give two entries).
* ``subscriptions()`` is in insertion order; ids are unique in the table.
* A subscription is refused (``DuplicateSubscriptionError``) iff its id is
  already present or an existing subscription ``==`` it (AutoGen equality:
  same kind and (same id or same agent type and topic type/prefix)).
* ``_exact`` holds exactly the plain ``TypeSubscription``/``DefaultSubscription``
  entries keyed by topic type, ``_prefixes`` exactly the plain
  ``TypePrefixSubscription`` entries keyed by prefix, ``_custom`` every other
  subscription (evaluated by calling it), each list in insertion order.
* ``_plans`` (cache by topic type) is emptied on every add/remove, and holds
  at most ``_PLAN_CACHE_CAP`` entries (oldest evicted first).
* ``_recipients`` (cache by topic type and source) holds ``recipients(topic)``
  for topics whose plan has no custom subscription (the answer is then a
  function of the table alone); emptied with ``_plans``, and when it
  reaches ``_PLAN_CACHE_CAP`` entries.
"""

from __future__ import annotations

import contextlib
import contextvars
import itertools
import re
import uuid
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Final, Protocol, runtime_checkable

import attrs

from ._errors import (
    CantHandleError,
    DuplicateSubscriptionError,
    InvalidIdentifierError,
    InvalidSubscriptionError,
    UnknownSubscriptionError,
)
from ._ids import (
    AgentId,
    AgentType,
    TopicId,
    _check_agent_type,
    _check_str,
    is_valid_topic_type,
)
from ._lazy import lazy_module

if TYPE_CHECKING:
    from ._proto import agent_worker_pb2
else:  # loads protobuf on first use: in-process programs never do
    agent_worker_pb2 = lazy_module("agentwire._proto.agent_worker_pb2")

__all__ = [
    "DefaultSubscription",
    "Subscription",
    "SubscriptionTable",
    "TypePrefixSubscription",
    "TypeSubscription",
    "subscription_agent_type",
    "subscription_from_proto",
    "subscription_instantiation_context",
    "subscription_to_proto",
]

_topic_prefix_fullmatch = re.compile(r"[\w\-\.\:\=]*").fullmatch
_setattr = object.__setattr__


@runtime_checkable
class Subscription(Protocol):
    """What a subscription must provide (AutoGen's ``Subscription`` protocol).

    ``map_to_agent`` must raise :class:`~agentwire.CantHandleError` when
    ``is_match`` is false. ``agentwire.testing.check_subscription_laws`` checks
    a custom class against these rules.
    """

    @property
    def id(self) -> str: ...

    def is_match(self, topic_id: TopicId) -> bool: ...

    def map_to_agent(self, topic_id: TopicId) -> AgentId: ...


subscription_agent_type: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "agentwire.subscription_agent_type", default=None
)
"""The agent type being registered; ``DefaultSubscription()`` reads it.

Set by ``Agent.register`` while it instantiates the class's subscriptions
(use :func:`subscription_instantiation_context`).
"""


@contextlib.contextmanager
def subscription_instantiation_context(agent_type: str | AgentType) -> Iterator[None]:
    """Within this block ``DefaultSubscription()`` subscribes *agent_type*."""
    value = agent_type.type if isinstance(agent_type, AgentType) else _check_agent_type(agent_type)
    token = subscription_agent_type.set(value)
    try:
        yield
    finally:
        subscription_agent_type.reset(token)


def _agent_type_value(agent_type: object) -> str:
    if isinstance(agent_type, AgentType):
        return agent_type.type
    return _check_agent_type(agent_type, "subscription agent type")


def _subscription_id(id: object) -> str:
    if id is None:
        return str(uuid.uuid4())
    value = _check_str(id, "subscription id")
    if not value:
        raise InvalidIdentifierError("subscription id", id, "must not be empty")
    return value


@attrs.frozen(init=False, eq=False)
class TypeSubscription:
    """Topics of type *topic_type* go to ``AgentId(agent_type, topic.source)``."""

    topic_type: str
    agent_type: str
    id: str

    def __init__(self, topic_type: str, agent_type: str | AgentType, id: str | None = None) -> None:
        if not is_valid_topic_type(topic_type):
            raise InvalidIdentifierError(
                "subscription topic type",
                topic_type,
                r"must match ^[\w\-\.\:\=]+\Z (a valid topic type)",
            )
        _setattr(self, "topic_type", topic_type)
        _setattr(self, "agent_type", _agent_type_value(agent_type))
        _setattr(self, "id", _subscription_id(id))

    def is_match(self, topic_id: TopicId) -> bool:
        return topic_id.type == self.topic_type

    def map_to_agent(self, topic_id: TopicId) -> AgentId:
        if topic_id.type != self.topic_type:
            raise CantHandleError(
                f"TopicId {topic_id} does not match the subscription (topic type "
                f"{self.topic_type!r})"
            )
        return AgentId._trusted(self.agent_type, topic_id.source)

    def __eq__(self, other: object) -> bool:
        # AutoGen: same kind, and same id or same content. Not transitive, so
        # subscriptions are unhashable (as in AutoGen).
        if not isinstance(other, TypeSubscription):
            return False
        return self.id == other.id or (
            self.agent_type == other.agent_type and self.topic_type == other.topic_type
        )

    def __ne__(self, other: object) -> bool:
        return not self == other

    __hash__ = None  # type: ignore[assignment]


class DefaultSubscription(TypeSubscription):
    """A :class:`TypeSubscription` with AutoGen's defaults.

    Without *agent_type* it subscribes the agent type being registered (see
    :func:`subscription_instantiation_context`) and raises
    :class:`~agentwire.CantHandleError` outside registration.
    """

    __slots__ = ()

    def __init__(
        self,
        topic_type: str = "default",
        agent_type: str | AgentType | None = None,
        id: str | None = None,
    ) -> None:
        if agent_type is None:
            agent_type = subscription_agent_type.get()
            if agent_type is None:
                raise CantHandleError(
                    "DefaultSubscription() without agent_type must be created while an agent "
                    "type is being registered (in a subscription factory passed to "
                    "Agent.register); pass agent_type= otherwise"
                )
        super().__init__(topic_type, agent_type, id)


@attrs.frozen(init=False, eq=False)
class TypePrefixSubscription:
    """Topics whose type starts with *topic_type_prefix* go to
    ``AgentId(agent_type, topic.source)``."""

    topic_type_prefix: str
    agent_type: str
    id: str

    def __init__(
        self, topic_type_prefix: str, agent_type: str | AgentType, id: str | None = None
    ) -> None:
        if (
            not isinstance(topic_type_prefix, str)
            or _topic_prefix_fullmatch(topic_type_prefix) is None
        ):
            raise InvalidIdentifierError(
                "subscription topic type prefix",
                topic_type_prefix,
                r"must match ^[\w\-\.\:\=]*\Z (a prefix of a valid topic type)",
            )
        _setattr(self, "topic_type_prefix", topic_type_prefix)
        _setattr(self, "agent_type", _agent_type_value(agent_type))
        _setattr(self, "id", _subscription_id(id))

    def is_match(self, topic_id: TopicId) -> bool:
        return topic_id.type.startswith(self.topic_type_prefix)

    def map_to_agent(self, topic_id: TopicId) -> AgentId:
        if not topic_id.type.startswith(self.topic_type_prefix):
            raise CantHandleError(
                f"TopicId {topic_id} does not match the subscription (topic type prefix "
                f"{self.topic_type_prefix!r})"
            )
        return AgentId._trusted(self.agent_type, topic_id.source)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, TypePrefixSubscription):
            return False
        return self.id == other.id or (
            self.agent_type == other.agent_type
            and self.topic_type_prefix == other.topic_type_prefix
        )

    def __ne__(self, other: object) -> bool:
        return not self == other

    __hash__ = None  # type: ignore[assignment]


def subscription_to_proto(subscription: Subscription) -> agent_worker_pb2.Subscription:
    """The protobuf ``agents.Subscription`` for a type or type-prefix subscription.

    Other subscription classes have no wire form: InvalidSubscriptionError.
    """
    if isinstance(subscription, TypeSubscription):
        return agent_worker_pb2.Subscription(
            id=subscription.id,
            typeSubscription=agent_worker_pb2.TypeSubscription(
                topic_type=subscription.topic_type, agent_type=subscription.agent_type
            ),
        )
    if isinstance(subscription, TypePrefixSubscription):
        return agent_worker_pb2.Subscription(
            id=subscription.id,
            typePrefixSubscription=agent_worker_pb2.TypePrefixSubscription(
                topic_type_prefix=subscription.topic_type_prefix,
                agent_type=subscription.agent_type,
            ),
        )
    raise InvalidSubscriptionError(
        f"{type(subscription).__qualname__} has no protobuf form: only TypeSubscription "
        "and TypePrefixSubscription travel over the wire"
    )


def subscription_from_proto(
    message: agent_worker_pb2.Subscription,
) -> TypeSubscription | TypePrefixSubscription:
    """Build a subscription from ``agents.Subscription``.

    Raises InvalidSubscriptionError if neither arm of the oneof is set, and
    InvalidIdentifierError for an invalid agent type or topic type.
    """
    kind = message.WhichOneof("subscription")
    # An empty id on the wire would be replaced by a fresh uuid, as AutoGen does.
    sub_id = message.id or None
    if kind == "typeSubscription":
        t = message.typeSubscription
        return TypeSubscription(t.topic_type, t.agent_type, sub_id)
    if kind == "typePrefixSubscription":
        p = message.typePrefixSubscription
        return TypePrefixSubscription(p.topic_type_prefix, p.agent_type, sub_id)
    raise InvalidSubscriptionError(
        f"agents.Subscription (id {message.id!r}) sets neither typeSubscription nor "
        "typePrefixSubscription"
    )


_PLAN_CACHE_CAP: Final = 4096

# A plan item is an agent type (an indexed subscription known to match the
# topic type) or a custom subscription to call for each topic.
_PlanItem = str | Subscription
_Entry = tuple[int, Subscription]


def _content_key(sub: Subscription) -> tuple[type, str, str] | None:
    cls = type(sub)
    if cls is TypeSubscription or cls is DefaultSubscription:
        assert isinstance(sub, TypeSubscription)
        return (TypeSubscription, sub.agent_type, sub.topic_type)
    if cls is TypePrefixSubscription:
        assert isinstance(sub, TypePrefixSubscription)
        return (TypePrefixSubscription, sub.agent_type, sub.topic_type_prefix)
    return None


class SubscriptionTable:
    """Subscriptions, indexed to answer ``recipients(topic)`` without a full scan.

    Plain type subscriptions are found by one dict lookup on the topic type,
    prefix subscriptions by looking up the topic type's prefixes (only the
    lengths some prefix has), other subscription classes by calling them.
    The merged, ordered answer is cached per topic type.
    """

    def __init__(self, subscriptions: Iterable[Subscription] = ()) -> None:
        self._by_id: dict[str, _Entry] = {}
        self._content: dict[tuple[type, str, str], str] = {}
        self._exact: dict[str, list[_Entry]] = {}
        self._prefixes: dict[str, list[_Entry]] = {}
        self._prefix_lengths: list[int] = []  # sorted, distinct lengths in _prefixes
        self._custom: list[_Entry] = []
        self._plans: dict[str, tuple[_PlanItem, ...]] = {}
        self._recipients: dict[tuple[str, str], tuple[AgentId, ...]] = {}
        self._seq = itertools.count()
        for sub in subscriptions:
            self.add(sub)

    # -- mutation -------------------------------------------------------------

    def add(self, subscription: Subscription) -> None:
        """Add *subscription*; DuplicateSubscriptionError if an equal one exists."""
        if not isinstance(subscription, Subscription):
            raise TypeError(
                f"expected a Subscription (id, is_match, map_to_agent), got {subscription!r}"
            )
        existing = self._find_equal(subscription)
        if existing is not None:
            raise DuplicateSubscriptionError(subscription, existing)
        entry = (next(self._seq), subscription)
        self._by_id[subscription.id] = entry
        key = _content_key(subscription)
        if key is None:
            self._custom.append(entry)
        elif key[0] is TypeSubscription:
            self._content[key] = subscription.id
            self._exact.setdefault(key[2], []).append(entry)
        else:
            self._content[key] = subscription.id
            bucket = self._prefixes.get(key[2])
            if bucket is None:
                self._prefixes[key[2]] = [entry]
                self._update_prefix_lengths()
            else:
                bucket.append(entry)
        self._forget_answers()

    def remove(self, id: str) -> Subscription:
        """Remove and return the subscription with this id.

        UnknownSubscriptionError ("Subscription does not exist") if none has it.
        """
        entry = self._by_id.pop(id, None)
        if entry is None:
            raise UnknownSubscriptionError(id)
        sub = entry[1]
        key = _content_key(sub)
        if key is None:
            self._custom.remove(entry)
        else:
            del self._content[key]
            index = self._exact if key[0] is TypeSubscription else self._prefixes
            bucket = index[key[2]]
            bucket.remove(entry)
            if not bucket:
                del index[key[2]]
                if index is self._prefixes:
                    self._update_prefix_lengths()
        self._forget_answers()
        return sub

    def clear(self) -> None:
        """Remove every subscription."""
        self._by_id.clear()
        self._content.clear()
        self._exact.clear()
        self._prefixes.clear()
        self._prefix_lengths.clear()
        self._custom.clear()
        self._forget_answers()

    def _forget_answers(self) -> None:
        """The table changed: drop the plans and recipients computed from it."""
        self._plans.clear()
        self._recipients.clear()

    def _update_prefix_lengths(self) -> None:
        self._prefix_lengths = sorted({len(p) for p in self._prefixes})

    def _find_equal(self, new: Subscription) -> Subscription | None:
        same_id = self._by_id.get(new.id)
        if same_id is not None:
            # Ids are unique in the table (AutoGen would also refuse this when
            # the kinds match; we refuse it always so remove(id) is unambiguous).
            return same_id[1]
        key = _content_key(new)
        if key is not None:
            found = self._content.get(key)
            if found is not None:
                return self._by_id[found][1]
            candidates: Iterable[_Entry] = self._custom
        else:
            candidates = self._by_id.values()
        for _, sub in candidates:
            if sub == new:
                return sub
        return None

    # -- queries --------------------------------------------------------------

    def _plan(self, topic_type: str) -> tuple[_PlanItem, ...]:
        plan = self._plans.get(topic_type)
        if plan is not None:
            return plan
        entries: list[_Entry] = []
        exact = self._exact.get(topic_type)
        if exact:
            entries.extend(exact)
        if self._prefix_lengths:
            size = len(topic_type)
            for length in self._prefix_lengths:
                if length > size:
                    break
                bucket = self._prefixes.get(topic_type[:length])
                if bucket:
                    entries.extend(bucket)
        entries.extend(self._custom)
        entries.sort(key=_first)
        items: list[_PlanItem] = []
        for _, sub in entries:
            if _content_key(sub) is None:
                items.append(sub)
            else:
                items.append(sub.agent_type)  # type: ignore[attr-defined]
        plan = tuple(items)
        if len(self._plans) >= _PLAN_CACHE_CAP:
            del self._plans[next(iter(self._plans))]
        self._plans[topic_type] = plan
        return plan

    def recipients(self, topic: TopicId) -> list[AgentId]:
        """Agents that receive a publish to *topic*: AutoGen's list, in order."""
        source = topic.source
        key = (topic.type, source)
        known = self._recipients.get(key)
        if known is not None:
            return list(known)
        result: list[AgentId] = []
        plain = True
        for item in self._plan(topic.type):
            if isinstance(item, str):
                result.append(AgentId._trusted(item, source))
            else:
                plain = False
                if item.is_match(topic):
                    result.append(item.map_to_agent(topic))
        if plain:
            if len(self._recipients) >= _PLAN_CACHE_CAP:
                self._recipients.clear()
            self._recipients[key] = tuple(result)
        return result

    def agent_types(self, topic: TopicId) -> list[str]:
        """Distinct agent types with a subscription matching *topic*, in order."""
        types: list[str] = []
        for item in self._plan(topic.type):
            if isinstance(item, str):
                types.append(item)
            elif item.is_match(topic):
                types.append(item.map_to_agent(topic).type)
        return list(dict.fromkeys(types))

    def subscriptions(self) -> list[Subscription]:
        """Every subscription, in insertion order."""
        return [sub for _, sub in self._by_id.values()]

    def get(self, id: str) -> Subscription | None:
        entry = self._by_id.get(id)
        return None if entry is None else entry[1]

    def __iter__(self) -> Iterator[Subscription]:
        return iter(self.subscriptions())

    def __len__(self) -> int:
        return len(self._by_id)

    def __contains__(self, id: object) -> bool:
        return id in self._by_id

    def __repr__(self) -> str:
        return f"<SubscriptionTable with {len(self._by_id)} subscriptions>"


def _first(entry: _Entry) -> int:
    return entry[0]
