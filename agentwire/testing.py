"""Tools for testing code built on agentwire.

* Hypothesis strategies for identifiers and subscriptions (valid and invalid
  values), for your own property tests.
* :func:`check_subscription_laws`: property-test your own ``Subscription``
  class against the rules the runtime relies on.

* pytest fixtures ``runtime`` and ``strict_runtime``: an in-process runtime open for
  the test. They are trio fixtures: only trio tests can use them, so turn on
  pytest-trio's trio mode (``trio_mode = true`` under ``[tool.pytest.ini_options]``)
  or mark each test ``@pytest.mark.trio``; anything else fails with pytest's
  "requested an async fixture" error. Import them into a ``conftest.py``:
  ``from agentwire.testing import runtime``.

Hypothesis is an optional dependency: it is imported only when a strategy or
the law checker is used (agentwire itself never imports it). Install it, with
pytest and pytest-trio, by ``pip install 'trio-agentwire[testing]'`` (the
distribution's name; the import name is ``agentwire``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ._errors import CantHandleError, InvalidSubscriptionError
from ._ids import AgentId, TopicId
from ._subscriptions import (
    Subscription,
    SubscriptionTable,
    TypePrefixSubscription,
    TypeSubscription,
    subscription_from_proto,
    subscription_to_proto,
)

if TYPE_CHECKING:
    from hypothesis.strategies import SearchStrategy

__all__ = [
    "agent_ids",
    "agent_keys",
    "agent_types",
    "check_subscription_laws",
    "invalid_agent_types",
    "invalid_topic_types",
    "subscriptions",
    "topic_ids",
    "topic_sources",
    "topic_types",
    "type_prefix_subscriptions",
    "type_subscriptions",
]


def _st() -> Any:
    try:
        from hypothesis import strategies
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "agentwire.testing strategies need Hypothesis: pip install 'trio-agentwire[testing]'"
        ) from exc
    return strategies


# Characters every agent type may use, and the extra ones topic types allow.
_ASCII_TYPE_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-."
_TOPIC_EXTRA = ":="
# Characters no type may contain (a trailing "\n" is the classic `$`-vs-`\Z` trap).
_NEVER_IN_TYPES = " /\n\t\r@#?!*,;+()[]{}'\"\\\x00"


# -- identifiers ----------------------------------------------------------------


def agent_types(*, alphabet: str | None = None, max_size: int = 20) -> SearchStrategy[str]:
    """Valid agent types (``^[\\w\\-\\.]+\\Z``), Unicode ``\\w`` included.

    With *alphabet* (a subset of the allowed characters) the values are drawn
    from it only, which makes collisions likely, useful for table tests.
    """
    st = _st()
    if alphabet is not None:
        return st.text(alphabet=alphabet, min_size=1, max_size=max_size)  # type: ignore[no-any-return]
    return st.one_of(  # type: ignore[no-any-return]
        st.text(alphabet=_ASCII_TYPE_CHARS, min_size=1, max_size=max_size),
        st.from_regex(rf"[\w\-\.]{{1,{max_size}}}", fullmatch=True),
    )


def topic_types(*, alphabet: str | None = None, max_size: int = 20) -> SearchStrategy[str]:
    """Valid topic types (``^[\\w\\-\\.\\:\\=]+\\Z``); see :func:`agent_types`."""
    st = _st()
    if alphabet is not None:
        return st.text(alphabet=alphabet, min_size=1, max_size=max_size)  # type: ignore[no-any-return]
    return st.one_of(  # type: ignore[no-any-return]
        st.text(alphabet=_ASCII_TYPE_CHARS + _TOPIC_EXTRA, min_size=1, max_size=max_size),
        st.from_regex(rf"[\w\-\.\:\=]{{1,{max_size}}}", fullmatch=True),
    )


def agent_keys(*, max_size: int = 20) -> SearchStrategy[str]:
    """Agent keys: any string, including ``""`` and ``/``."""
    st = _st()
    return st.one_of(  # type: ignore[no-any-return]
        st.sampled_from(["default", "", "a/b", "/"]), st.text(max_size=max_size)
    )


topic_sources = agent_keys
"""Topic sources: any string (same strategy as :func:`agent_keys`)."""


def _invalid(valid_chars: str, forbidden: str) -> SearchStrategy[str]:
    st = _st()
    part = st.text(alphabet=valid_chars, max_size=8)
    bad = st.text(alphabet=forbidden, min_size=1, max_size=3)
    return st.one_of(  # type: ignore[no-any-return]
        st.just(""),
        st.tuples(part, bad, part).map(lambda t: t[0] + t[1] + t[2]),
        part.filter(bool).map(lambda s: s + "\n"),
    )


def invalid_agent_types() -> SearchStrategy[str]:
    """Strings that are *not* valid agent types (empty, or with a forbidden char)."""
    return _invalid(_ASCII_TYPE_CHARS, _NEVER_IN_TYPES + _TOPIC_EXTRA)


def invalid_topic_types() -> SearchStrategy[str]:
    """Strings that are *not* valid topic types (empty, or with a forbidden char)."""
    return _invalid(_ASCII_TYPE_CHARS + _TOPIC_EXTRA, _NEVER_IN_TYPES)


def agent_ids(
    types: SearchStrategy[str] | None = None, keys: SearchStrategy[str] | None = None
) -> SearchStrategy[AgentId]:
    """Valid :class:`AgentId` values."""
    st = _st()
    return st.builds(  # type: ignore[no-any-return]
        AgentId,
        types if types is not None else agent_types(),
        keys if keys is not None else agent_keys(),
    )


def topic_ids(
    types: SearchStrategy[str] | None = None, sources: SearchStrategy[str] | None = None
) -> SearchStrategy[TopicId]:
    """Valid :class:`TopicId` values."""
    st = _st()
    return st.builds(  # type: ignore[no-any-return]
        TopicId,
        types if types is not None else topic_types(),
        sources if sources is not None else topic_sources(),
    )


# -- subscriptions --------------------------------------------------------------


def _ids_or_none() -> SearchStrategy[str | None]:
    st = _st()
    return st.one_of(st.none(), st.uuids().map(str), st.text(min_size=1, max_size=8))  # type: ignore[no-any-return]


def type_subscriptions(
    *,
    topic_type: SearchStrategy[str] | None = None,
    agent_type: SearchStrategy[str] | None = None,
    id: SearchStrategy[str | None] | None = None,
) -> SearchStrategy[TypeSubscription]:
    """:class:`TypeSubscription` values (id: None -> uuid4, or given)."""
    st = _st()
    return st.builds(  # type: ignore[no-any-return]
        TypeSubscription,
        topic_type if topic_type is not None else topic_types(),
        agent_type if agent_type is not None else agent_types(),
        id if id is not None else _ids_or_none(),
    )


def type_prefix_subscriptions(
    *,
    prefix: SearchStrategy[str] | None = None,
    agent_type: SearchStrategy[str] | None = None,
    id: SearchStrategy[str | None] | None = None,
) -> SearchStrategy[TypePrefixSubscription]:
    """:class:`TypePrefixSubscription` values; prefixes may be empty."""
    st = _st()
    if prefix is None:
        prefix = st.one_of(st.just(""), topic_types(max_size=8))
    return st.builds(  # type: ignore[no-any-return]
        TypePrefixSubscription,
        prefix,
        agent_type if agent_type is not None else agent_types(),
        id if id is not None else _ids_or_none(),
    )


def subscriptions(
    *,
    topic_type: SearchStrategy[str] | None = None,
    agent_type: SearchStrategy[str] | None = None,
    id: SearchStrategy[str | None] | None = None,
) -> SearchStrategy[TypeSubscription | TypePrefixSubscription]:
    """Type and type-prefix subscriptions; prefixes are drawn like topic types
    (from *topic_type*, plus the empty prefix)."""
    st = _st()
    prefix = st.one_of(st.just(""), topic_type) if topic_type is not None else None
    return st.one_of(  # type: ignore[no-any-return]
        type_subscriptions(topic_type=topic_type, agent_type=agent_type, id=id),
        type_prefix_subscriptions(prefix=prefix, agent_type=agent_type, id=id),
    )


# -- subscription laws ------------------------------------------------------------


def check_subscription_laws(
    subscription: Subscription | Callable[[], Subscription] | SearchStrategy[Subscription],
    topics: SearchStrategy[TopicId] | None = None,
    *,
    keeps_source: bool = True,
    max_examples: int = 200,
) -> None:
    """Property-test a subscription class against the rules agentwire relies on.

    *subscription* is an instance, a zero-argument factory, or a Hypothesis
    strategy of instances. *topics* should include topics your rule matches
    and topics it does not (the default draws from a small alphabet so that
    both happen for simple rules). Checked, for every drawn pair:

    * it satisfies the :class:`~agentwire.Subscription` protocol, ``id`` is a
      non-empty ``str`` that never changes, and it equals itself;
    * ``is_match`` returns a ``bool``, the same one every time;
    * on a match, ``map_to_agent`` returns an :class:`AgentId`, the same every
      time, whose key is the topic's source (unless ``keeps_source=False``);
    * on no match, ``map_to_agent`` raises :class:`~agentwire.CantHandleError`;
    * a :class:`SubscriptionTable` holding it answers exactly like it;
    * if it has a protobuf form, the round trip gives an equal subscription
      that behaves the same.

    Raises ``AssertionError`` naming the broken law (with Hypothesis's falsifying
    example) on a violation, also when ``is_match`` or ``map_to_agent`` raise, when the
    rule is not deterministic (Hypothesis could not reproduce a failure), and when
    several laws are broken at once (each is listed).

    A custom subscription class works in-process only: a worker sends its subscriptions
    to the host as protobuf ``agents.Subscription``, which holds only type and
    type-prefix subscriptions, so ``add_subscription`` on a worker refuses any other
    class with :class:`~agentwire.InvalidSubscriptionError`.
    """
    from hypothesis import HealthCheck, given, settings
    from hypothesis.errors import Flaky
    from hypothesis.strategies import SearchStrategy as _Strategy

    st = _st()
    if isinstance(subscription, _Strategy):
        subs: SearchStrategy[Subscription] = subscription
    elif isinstance(subscription, type) or (
        callable(subscription) and not isinstance(subscription, Subscription)
    ):
        factory = subscription
        subs = st.builds(factory)
    else:
        subs = st.just(subscription)
    if topics is None:
        topics = st.one_of(
            topic_ids(topic_types(alphabet="ab:=.", max_size=4), st.sampled_from(["s", "", "x/y"])),
            topic_ids(),
        )

    @settings(
        max_examples=max_examples,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        database=None,
    )
    @given(subs, topics)
    def laws(sub: Subscription, topic: TopicId) -> None:
        _check_one(sub, topic, keeps_source=keeps_source)

    try:
        laws()
    except Flaky as exc:
        raise AssertionError(
            "the subscription is not deterministic: an example failed, then passed when "
            "Hypothesis ran it again; is_match and map_to_agent must give the same answer for "
            f"the same topic every time. The failure was: {_failures(exc)}"
        ) from exc
    except ExceptionGroup as group:  # Hypothesis found several distinct failures
        raise AssertionError(f"several subscription laws are broken: {_failures(group)}") from group


def _failures(exc: BaseException) -> str:
    if isinstance(exc, BaseExceptionGroup):
        return "; ".join(_failures(inner) for inner in exc.exceptions)
    return f"{type(exc).__name__}: {exc}" if not isinstance(exc, AssertionError) else str(exc)


def _require(condition: bool, message: str) -> None:
    # Not `assert`: the checks must hold under `python -O` too.
    if not condition:
        raise AssertionError(message)


def _is_match(sub: Subscription, topic: TopicId) -> bool:
    try:
        return sub.is_match(topic)
    except Exception as exc:
        raise AssertionError(
            f"{type(sub).__qualname__}.is_match({topic}) raised {type(exc).__name__}: {exc}; "
            "it must return a bool"
        ) from exc


def _check_one(sub: Subscription, topic: TopicId, *, keeps_source: bool) -> None:
    name = type(sub).__qualname__
    _require(isinstance(sub, Subscription), f"{name} lacks id / is_match / map_to_agent")
    sub_id = sub.id
    _require(isinstance(sub_id, str), f"{name}.id must be a str, got {sub_id!r}")
    _require(bool(sub_id), f"{name}.id must not be empty")
    _require(sub == sub, f"{name} must equal itself")
    matched = _is_match(sub, topic)
    _require(isinstance(matched, bool), f"{name}.is_match must return a bool, got {matched!r}")
    _require(_is_match(sub, topic) is matched, f"{name}.is_match({topic}) is not deterministic")
    expected: list[AgentId] = []
    if matched:
        try:
            agent = sub.map_to_agent(topic)
        except Exception as exc:
            raise AssertionError(
                f"{name}.map_to_agent({topic}) raised {type(exc).__name__} although is_match "
                "is True; on a match it must return an AgentId"
            ) from exc
        _require(
            isinstance(agent, AgentId),
            f"{name}.map_to_agent({topic}) must return an AgentId, got {agent!r}",
        )
        _require(
            sub.map_to_agent(topic) == agent, f"{name}.map_to_agent({topic}) is not deterministic"
        )
        if keeps_source:
            _require(
                agent.key == topic.source,
                f"{name}.map_to_agent({topic}) gave key {agent.key!r}; the topic source "
                f"{topic.source!r} must become the agent key (pass keeps_source=False "
                "if your rule differs on purpose)",
            )
        expected.append(agent)
    else:
        try:
            got = sub.map_to_agent(topic)
        except CantHandleError:
            pass
        except Exception as exc:
            raise AssertionError(
                f"{name}.map_to_agent({topic}) raised {type(exc).__name__} although is_match "
                "is False; it must raise agentwire.CantHandleError"
            ) from exc
        else:
            raise AssertionError(
                f"{name}.map_to_agent({topic}) returned {got!r} although is_match is "
                "False; it must raise agentwire.CantHandleError"
            )
    _require(sub.id == sub_id, f"{name}.id changed from {sub_id!r} to {sub.id!r}")
    answer = SubscriptionTable([sub]).recipients(topic)
    if answer != expected:
        _require(
            all(_is_match(sub, topic) is matched for _ in range(3)),
            f"{name}.is_match({topic}) is not deterministic",
        )
        raise AssertionError(
            f"SubscriptionTable disagrees with {name} on {topic}: {answer!r} != {expected!r}"
        )
    try:
        message = subscription_to_proto(sub)
    except InvalidSubscriptionError:
        return
    back = subscription_from_proto(message)
    _require(back == sub, f"proto round trip changed {sub!r} to {back!r}")
    _require(back.id == sub.id, f"proto round trip changed the id of {sub!r}")
    _require(back.is_match(topic) is matched, f"proto round trip changed is_match of {sub!r}")
    if matched:
        _require(
            back.map_to_agent(topic) == expected[0],
            f"proto round trip changed map_to_agent of {sub!r}",
        )


# -- pytest fixtures ---------------------------------------------------------------
# Runtime fixtures (e.g. an in-process runtime, a gateway on loopback) go here.
# They must not import Hypothesis at module level either.

try:  # the runtime fixtures need pytest; everything above works without it
    from ._testing_fixtures import runtime, strict_runtime
except ImportError:  # pragma: no cover - depends on the environment
    pass
else:
    __all__ += ["runtime", "strict_runtime"]
