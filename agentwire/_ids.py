"""Identities: agent types, agent ids and topic ids.

Invariants kept by this module:

* Every ``AgentId`` and ``AgentType`` that exists has a ``type`` matching
  ``^[\\w\\-\\.]+\\Z`` (Python ``re``, Unicode ``\\w``), as AutoGen 0.7.5 demands.
* Every ``TopicId`` that exists has a ``type`` matching ``^[\\w\\-\\.\\:\\=]+\\Z``.
* Keys and sources are any ``str`` (AutoGen does not validate them; ``/`` and
  the empty string are allowed).
* ``str()`` is ``"type/key"``; ``from_str`` splits on the first ``/``, so
  ``from_str(str(x)) == x`` for every valid value.
* The values are immutable and hash/compare by their fields.

``AgentId`` is built on the hot path (every delivery), so construction is a
hand-written ``__init__``: one set lookup for type strings already seen, one
compiled-regex ``fullmatch`` otherwise.
"""

from __future__ import annotations

import contextvars
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Final, TypeGuard

import attrs

from ._errors import InvalidIdentifierError
from ._lazy import lazy_module

if TYPE_CHECKING:
    from ._proto import agent_worker_pb2
else:  # loads protobuf on first use: in-process programs never do
    agent_worker_pb2 = lazy_module("agentwire._proto.agent_worker_pb2")

__all__ = [
    "AGENT_TYPE_PATTERN",
    "TOPIC_TYPE_PATTERN",
    "AgentId",
    "AgentType",
    "DefaultTopicId",
    "TopicId",
    "current_agent_id",
    "is_valid_agent_type",
    "is_valid_topic_type",
]

AGENT_TYPE_PATTERN: Final = r"^[\w\-\.]+\Z"
TOPIC_TYPE_PATTERN: Final = r"^[\w\-\.\:\=]+\Z"

_AGENT_TYPE_RULE: Final = (
    f"must match {AGENT_TYPE_PATTERN} (letters, digits, '_', '-', '.'; non-empty)"
)
_TOPIC_TYPE_RULE: Final = (
    f"must match {TOPIC_TYPE_PATTERN} (letters, digits, '_', '-', '.', ':', '='; non-empty)"
)

_agent_type_fullmatch = re.compile(r"[\w\-\.]+").fullmatch
_topic_type_fullmatch = re.compile(r"[\w\-\.\:\=]+").fullmatch

# Type strings already validated. Bounded: cleared when it grows past the cap
# (topic types may be high-cardinality, e.g. "<agenttype>:<conversation>").
_CACHE_CAP: Final = 4096
_valid_agent_types: set[str] = set()
_valid_topic_types: set[str] = set()

_setattr = object.__setattr__


def _is_valid(value: object, valid: set[str], fullmatch: Callable[[str], object]) -> bool:
    """Whether *value* is a string that *fullmatch* accepts, remembered in *valid*."""
    if value.__class__ is not str and not isinstance(value, str):
        return False
    if value in valid:
        return True
    if fullmatch(value) is None:
        return False
    if len(valid) >= _CACHE_CAP:
        valid.clear()
    valid.add(value)
    return True


def is_valid_agent_type(value: object) -> TypeGuard[str]:
    """Whether *value* is a string AutoGen accepts as an agent type."""
    if value.__class__ is str and value in _valid_agent_types:
        return True  # the usual case, without the call below (the gateway asks per request)
    return _is_valid(value, _valid_agent_types, _agent_type_fullmatch)


def is_valid_topic_type(value: object) -> TypeGuard[str]:
    """Whether *value* is a string AutoGen accepts as a topic type."""
    return _is_valid(value, _valid_topic_types, _topic_type_fullmatch)


def _check_agent_type(value: object, field: str = "agent type") -> str:
    if value.__class__ is str and value in _valid_agent_types:
        return value
    if is_valid_agent_type(value):
        return value
    if not isinstance(value, str):
        raise InvalidIdentifierError(field, value, "must be a str or an AgentType")
    raise InvalidIdentifierError(field, value, _AGENT_TYPE_RULE)


def _check_str(value: object, field: str) -> str:
    if value.__class__ is not str and not isinstance(value, str):
        raise InvalidIdentifierError(field, value, "must be a str")
    return value


@attrs.frozen(init=False)
class AgentType:
    """The type of an agent: the name its factory is registered under."""

    type: str

    def __init__(self, type: str) -> None:
        _setattr(self, "type", _check_agent_type(type))

    def __str__(self) -> str:
        return self.type


@attrs.frozen(init=False)
class AgentId:
    """The address of one agent instance: ``AgentId("type", "key")``.

    ``type`` may be given as a ``str`` or an :class:`AgentType`; ``key`` is any
    string. Invalid values raise :class:`~agentwire.InvalidIdentifierError`.
    """

    type: str
    key: str

    def __init__(self, type: str | AgentType, key: str) -> None:
        if type.__class__ is str and type in _valid_agent_types:
            _setattr(self, "type", type)
        elif isinstance(type, AgentType):
            _setattr(self, "type", type.type)
        else:
            _setattr(self, "type", _check_agent_type(type))
        if key.__class__ is not str:
            _check_str(key, "agent key")
        _setattr(self, "key", key)

    @classmethod
    def _trusted(cls, type: str, key: str) -> AgentId:
        """Build without validation: *type* must already be a valid agent type."""
        self = object.__new__(cls)
        _setattr(self, "type", type)
        _setattr(self, "key", key)
        return self

    def __str__(self) -> str:
        return f"{self.type}/{self.key}"

    @classmethod
    def from_str(cls, agent_id: str) -> AgentId:
        """Parse ``"type/key"``, splitting on the first ``/``."""
        parts = _check_str(agent_id, "agent id").split("/", 1)
        if len(parts) != 2:
            raise InvalidIdentifierError("agent id", agent_id, "must be 'type/key'")
        return cls(parts[0], parts[1])

    def to_proto(self) -> agent_worker_pb2.AgentId:
        return agent_worker_pb2.AgentId(type=self.type, key=self.key)

    @classmethod
    def from_proto(cls, message: agent_worker_pb2.AgentId) -> AgentId:
        """Build from a protobuf ``agents.AgentId``, validating the type."""
        return cls(message.type, message.key)


@attrs.frozen(init=False)
class TopicId:
    """The scope of a published message: ``TopicId("type", "source")``."""

    type: str
    source: str

    def __init__(self, type: str, source: str) -> None:
        if not (type.__class__ is str and type in _valid_topic_types) and not is_valid_topic_type(
            type
        ):
            if not isinstance(type, str):
                raise InvalidIdentifierError("topic type", type, "must be a str")
            raise InvalidIdentifierError("topic type", type, _TOPIC_TYPE_RULE)
        if source.__class__ is not str:
            _check_str(source, "topic source")
        _setattr(self, "type", type)
        _setattr(self, "source", source)

    def __str__(self) -> str:
        return f"{self.type}/{self.source}"

    @classmethod
    def from_str(cls, topic_id: str) -> TopicId:
        """Parse ``"type/source"``, splitting on the first ``/``."""
        parts = _check_str(topic_id, "topic id").split("/", 1)
        if len(parts) != 2:
            raise InvalidIdentifierError("topic id", topic_id, "must be 'type/source'")
        return cls(parts[0], parts[1])


current_agent_id: contextvars.ContextVar[AgentId | None] = contextvars.ContextVar(
    "agentwire.current_agent_id", default=None
)
"""The agent whose handler is running; set by the runtime around handlers."""


def DefaultTopicId(type: str = "default", source: str | None = None) -> TopicId:
    """A topic id with AutoGen's defaults.

    If *source* is ``None`` it is the key of the agent whose handler is running
    (see :data:`current_agent_id`), or ``"default"`` outside a handler.
    """
    if source is None:
        agent = current_agent_id.get()
        source = "default" if agent is None else agent.key
    return TopicId(type, source)
