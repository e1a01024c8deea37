"""The publish <-> CloudEvent mapping, exactly as AutoGen 0.7.5 puts it on the wire.

Invariants kept by this module:

* ``to_cloud_event`` sets ``id``, ``source`` (topic source), ``type`` (topic
  type), ``spec_version="1.0"`` and exactly five attributes, all ``ce_string``:
  ``datacontenttype``, ``dataschema`` (the type name), ``agagentsendertype``
  and ``agagentsenderkey`` (``"unknown"`` without a sender) and
  ``agmsgkind="publish"``. No trace context.
* Protobuf payloads (already a serialized ``google.protobuf.Any``) go in
  ``proto_data``; every other payload goes in ``binary_data`` (never
  ``text_data``).
* ``from_cloud_event(to_cloud_event(...))`` gives back the same topic, type
  name, content type and bytes; the sender comes back when one was given and
  as ``AgentId("unknown", "unknown")`` otherwise (that is what AutoGen
  receivers see too).
* A received event is rejected with :class:`InvalidCloudEventError`, naming
  the attribute, when the topic type is invalid, ``datacontenttype`` or
  ``dataschema`` is missing, a sender attribute is invalid, or the data is not
  where its content type says.

The ``cloudevents`` SDK is not used: it has no protobuf format, and the five
attributes above are all this mapping needs.

:func:`serialized_cloud_event` is ``to_cloud_event(...).SerializeToString()``
for the common case (data in ``binary_data``) without building the message:
everything but the id and the data is the same for every event of one topic,
type and sender, so it is serialized once (by protobuf) and kept; the id and
the data are written around it as the two length-delimited fields they are.
The bytes read back as the same message (protobuf leaves field order open).

:class:`EventReader` is the other way: ``from_cloud_event`` of a received
event's bytes without parsing them into a message, for events laid out the
way protobuf writes one with its data in ``binary_data``: the id, then the
fields 2-5 (source, spec version, type, attributes), then ``binary_data``.
The fields in between (the *head*) are the same for every event of one
topic, type and sender, so what they say is worked out once (by protobuf and
``from_cloud_event``) and kept by their bytes. Anything else (other fields or
layouts, trace context, legacy RPC topics, protobuf data, bad attributes) is
left to the message path, which gives the same answer or error as before.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Callable
from typing import Any, Final, NamedTuple

from google.protobuf.message import DecodeError

from ._errors import InvalidCloudEventError, InvalidIdentifierError, SerializationError
from ._ids import AgentId, TopicId
from ._proto import cloudevent_pb2
from ._serialization import PROTOBUF_DATA_CONTENT_TYPE

__all__ = [
    "AGENT_SENDER_KEY_ATTR",
    "AGENT_SENDER_TYPE_ATTR",
    "DATA_CONTENT_TYPE_ATTR",
    "DATA_SCHEMA_ATTR",
    "MESSAGE_KIND_ATTR",
    "EventReader",
    "ReceivedEvent",
    "from_cloud_event",
    "length_prefix",
    "serialized_cloud_event",
    "to_cloud_event",
    "topic_of",
    "varint_at",
]

logger = logging.getLogger("agentwire.cloudevents")

DATA_CONTENT_TYPE_ATTR: Final = "datacontenttype"
DATA_SCHEMA_ATTR: Final = "dataschema"
AGENT_SENDER_TYPE_ATTR: Final = "agagentsendertype"
AGENT_SENDER_KEY_ATTR: Final = "agagentsenderkey"
MESSAGE_KIND_ATTR: Final = "agmsgkind"
MESSAGE_KIND_PUBLISH: Final = "publish"
MESSAGE_KIND_RPC_REQUEST: Final = "rpc_request"
SPEC_VERSION: Final = "1.0"
UNKNOWN_SENDER: Final = "unknown"

_CloudEvent = cloudevent_pb2.CloudEvent
_STRING_ARMS: Final = frozenset({"ce_string", "ce_uri", "ce_uri_ref"})
_RPC_SUFFIX: Final = ":" + MESSAGE_KIND_RPC_REQUEST


def _field_key(name: str) -> bytes:
    """The wire key of CloudEvent's length-delimited field *name* (one byte: fields 1-15)."""
    key = (_CloudEvent.DESCRIPTOR.fields_by_name[name].number << 3) | 2
    assert key < 0x80
    return bytes((key,))


_ID_KEY: Final = _field_key("id")
# The keys of the head's fields (see EventReader): source, spec_version, type, attributes.
_HEAD_KEYS: Final = frozenset(
    _field_key(name)[0] for name in ("source", "spec_version", "type", "attributes")
)
_TRACE_ATTRS: Final = ("traceparent", "tracestate")
_BINARY_DATA_KEY: Final = _field_key("binary_data")
_SMALL_PREFIXES: Final = tuple(bytes((size,)) for size in range(0x80))
_pack_two_bytes = struct.Struct("BB").pack

# serialized_cloud_event's serialized fields other than id and data, per
# (topic type, topic source, type name, content type, sender type, sender key).
# Bounded: cleared when it grows past the cap (sources may be high-cardinality).
_HEAD_CAP: Final = 1024
_heads: dict[tuple[str, str, str, str, str, str], bytes] = {}


def to_cloud_event(
    *,
    topic: TopicId,
    sender: AgentId | None,
    type_name: str,
    content_type: str,
    data: bytes,
    event_id: str,
) -> cloudevent_pb2.CloudEvent:
    """The CloudEvent an AutoGen 0.7.5 worker publishes for this message.

    *data* is the serializer's output; for ``application/x-protobuf`` it must
    be a serialized ``google.protobuf.Any`` (SerializationError otherwise).
    """
    event = _CloudEvent(
        id=event_id, source=topic.source, spec_version=SPEC_VERSION, type=topic.type
    )
    if content_type == PROTOBUF_DATA_CONTENT_TYPE:
        try:
            event.proto_data.ParseFromString(data)
        except DecodeError as exc:
            raise SerializationError(
                f"cannot publish {type_name}: protobuf payloads must be a serialized "
                f"google.protobuf.Any ({exc})"
            ) from exc
    else:
        event.binary_data = data
    attributes = event.attributes
    attributes[DATA_CONTENT_TYPE_ATTR].ce_string = content_type
    attributes[DATA_SCHEMA_ATTR].ce_string = type_name
    if sender is None:
        attributes[AGENT_SENDER_TYPE_ATTR].ce_string = UNKNOWN_SENDER
        attributes[AGENT_SENDER_KEY_ATTR].ce_string = UNKNOWN_SENDER
    else:
        attributes[AGENT_SENDER_TYPE_ATTR].ce_string = sender.type
        attributes[AGENT_SENDER_KEY_ATTR].ce_string = sender.key
    attributes[MESSAGE_KIND_ATTR].ce_string = MESSAGE_KIND_PUBLISH
    return event


def length_prefix(size: int) -> bytes:
    """The varint a length-delimited protobuf field of *size* bytes starts with."""
    if size < 0x80:
        return _SMALL_PREFIXES[size]
    if size < 0x4000:  # two bytes, packed (an RPC's usual size)
        return _pack_two_bytes(size & 0x7F | 0x80, size >> 7)
    prefix = bytearray()
    while size >= 0x80:
        prefix.append((size & 0x7F) | 0x80)
        size >>= 7
    prefix.append(size)
    return bytes(prefix)


def serialized_cloud_event(
    *,
    topic: TopicId,
    sender: AgentId | None,
    type_name: str,
    content_type: str,
    data: bytes,
    event_id: str,
    inject: Callable[[Any], object] | None = None,
) -> bytes:
    """``to_cloud_event(...).SerializeToString()``, as bytes that read back as the
    same message (see the module docstring); the same errors. *inject*, if
    given, writes into the event's attributes first (trace context)."""
    # Data in binary_data and nothing to inject: around kept bytes.
    kept = inject is None and content_type != PROTOBUF_DATA_CONTENT_TYPE
    if kept:
        if sender is None:
            key = (
                topic.type,
                topic.source,
                type_name,
                content_type,
                UNKNOWN_SENDER,
                UNKNOWN_SENDER,
            )
        else:
            key = (topic.type, topic.source, type_name, content_type, sender.type, sender.key)
        head = _heads.get(key)
        if head is not None:
            return _around(head, event_id, data)
    event = to_cloud_event(
        topic=topic,
        sender=sender,
        type_name=type_name,
        content_type=content_type,
        data=b"" if kept else data,
        event_id="" if kept else event_id,
    )
    if not kept:
        if inject is not None:
            inject(event.attributes)
        return event.SerializeToString()
    event.ClearField("binary_data")
    head = event.SerializeToString()
    if len(_heads) >= _HEAD_CAP:
        _heads.clear()
    _heads[key] = head
    return _around(head, event_id, data)


def _around(head: bytes, event_id: str, data: bytes) -> bytes:
    """An event's bytes: its id, the kept *head*, its data in binary_data."""
    ident = event_id.encode()
    return b"".join(
        (
            _ID_KEY,
            length_prefix(len(ident)),
            ident,
            head,
            _BINARY_DATA_KEY,
            length_prefix(len(data)),
            data,
        )
    )


class ReceivedEvent(NamedTuple):
    """What a worker needs from a received CloudEvent (a tuple: cheap to build per event)."""

    event_id: str
    topic: TopicId
    sender: AgentId | None
    type_name: str
    content_type: str
    data: bytes
    is_rpc: bool


def topic_of(event: cloudevent_pb2.CloudEvent) -> TopicId:
    """``TopicId(event.type, event.source)``; InvalidCloudEventError if the type is bad."""
    try:
        return TopicId(event.type, event.source)
    except InvalidIdentifierError as exc:
        raise InvalidCloudEventError("type", f"is not a valid topic type: {exc}") from exc


def _optional_string(
    value: cloudevent_pb2.CloudEvent.CloudEventAttributeValue | None, name: str
) -> str | None:
    """The text of string attribute *name*, None if it is absent.

    InvalidCloudEventError if it is not a string (``ce_string``, ``ce_uri``,
    ``ce_uri_ref``). The callers read a non-empty ``ce_string`` themselves,
    without this call: one that is not empty is the attribute's arm.
    """
    if value is None:
        return None
    arm = value.WhichOneof("attr")
    if arm not in _STRING_ARMS:
        raise InvalidCloudEventError(name, f"must be a string attribute, got {arm or 'no value'}")
    text: str = getattr(value, arm)
    return text


def _required_string(
    value: cloudevent_pb2.CloudEvent.CloudEventAttributeValue | None, name: str
) -> str:
    """:func:`_optional_string`, and InvalidCloudEventError if it is absent or empty."""
    text = _optional_string(value, name)
    if text is None:
        raise InvalidCloudEventError(name, "is missing")
    if not text:
        raise InvalidCloudEventError(name, "is empty")
    return text


def from_cloud_event(event: cloudevent_pb2.CloudEvent) -> ReceivedEvent:
    """Read a received CloudEvent the way an AutoGen 0.7.5 worker does.

    * sender: ``AgentId(agagentsendertype, agagentsenderkey)`` only if both
      attributes are present;
    * ``datacontenttype`` and ``dataschema`` are required;
    * ``application/x-protobuf``: the data is ``proto_data`` (re-serialized Any);
      any other content type: ``binary_data`` (``text_data`` is accepted too,
      UTF-8 encoded, though AutoGen itself ignores it);
    * ``is_rpc``: the legacy rule, topic type ``"<x>:rpc_request"``.

    Raises InvalidCloudEventError naming the missing or bad attribute.
    """
    topic = topic_of(event)
    # get() and not indexing: indexing a protobuf message map inserts the key.
    get = event.attributes.get
    # Each attribute: its ce_string if not empty, else the full check.
    value = get(DATA_CONTENT_TYPE_ATTR)
    content_type = value.ce_string if value is not None else ""
    if not content_type:
        content_type = _required_string(value, DATA_CONTENT_TYPE_ATTR)
    value = get(DATA_SCHEMA_ATTR)
    type_name = value.ce_string if value is not None else ""
    if not type_name:
        type_name = _required_string(value, DATA_SCHEMA_ATTR)

    sender: AgentId | None = None
    value = get(AGENT_SENDER_TYPE_ATTR)
    sender_type = value.ce_string if value is not None else None
    if not sender_type:
        sender_type = _optional_string(value, AGENT_SENDER_TYPE_ATTR)
    value = get(AGENT_SENDER_KEY_ATTR)
    sender_key = value.ce_string if value is not None else None
    if not sender_key:
        sender_key = _optional_string(value, AGENT_SENDER_KEY_ATTR)
    if sender_type is not None and sender_key is not None:
        try:
            sender = AgentId(sender_type, sender_key)
        except InvalidIdentifierError as exc:
            raise InvalidCloudEventError(
                AGENT_SENDER_TYPE_ATTR, f"is not a valid agent type: {exc}"
            ) from exc

    arm = event.WhichOneof("data")
    if content_type == PROTOBUF_DATA_CONTENT_TYPE:
        if arm != "proto_data":
            raise InvalidCloudEventError(
                "proto_data",
                f"is missing: {PROTOBUF_DATA_CONTENT_TYPE} data travels in "
                f"proto_data (the event has {arm or 'no data'})",
            )
        data = event.proto_data.SerializeToString()
    elif arm == "binary_data":
        data = event.binary_data
    elif arm == "text_data":
        data = event.text_data.encode("utf-8")
    else:
        raise InvalidCloudEventError(
            "binary_data",
            f"is missing: {content_type} data travels in binary_data (the "
            f"event has {arm or 'no data'})",
        )

    is_rpc = False
    topic_type = topic.type
    # endswith first: a cheap "no" for nearly every topic.
    if topic_type.endswith(_RPC_SUFFIX) and topic_type.partition(":")[2] == _RPC_SUFFIX[1:]:
        is_rpc = True
        kind = _optional_string(get(MESSAGE_KIND_ATTR), MESSAGE_KIND_ATTR)
        if kind != MESSAGE_KIND_RPC_REQUEST:
            logger.warning(
                "CloudEvent %r has topic type %r (a legacy RPC request) but %s is %r",
                event.id,
                topic_type,
                MESSAGE_KIND_ATTR,
                kind,
            )
    return ReceivedEvent(event.id, topic, sender, type_name, content_type, data, is_rpc)


# What a head says: (topic, sender, type name, content type), or None: leave
# events with this head to the message path.
_HeadFacts = tuple[TopicId, AgentId | None, str, str] | None
_ID_KEY_BYTE: Final = _ID_KEY[0]
_BINARY_DATA_KEY_BYTE: Final = _BINARY_DATA_KEY[0]


class EventReader:
    """Reads received events from their bytes where it can (see the module docstring).

    Kept per worker: the heads it has worked out (at most :attr:`MAX_HEADS`,
    forgotten all at once past that) and the last one seen, which the next
    event most likely repeats.
    """

    MAX_HEADS = 256

    __slots__ = ("_facts", "_heads", "_last")

    def __init__(self) -> None:
        self._heads: dict[bytes, _HeadFacts] = {}
        self._last = b"\x00"  # never a head: no field key is 0
        self._facts: _HeadFacts = None

    def read(self, body: bytes) -> ReceivedEvent | None:
        """``from_cloud_event(CloudEvent.FromString(body))``, or None: parse it
        as a message (its layout, or what its head says, is not one read here)."""
        if len(body) < 2 or body[0] != _ID_KEY_BYTE or body[1] >= 0x80:
            return None
        start = 2 + body[1]
        try:
            event_id = body[2:start].decode()
        except UnicodeDecodeError:
            return None
        last = self._last
        pos = start + len(last)
        if body.startswith(last, start) and body[pos : pos + 1] == _BINARY_DATA_KEY:
            facts = self._facts
        else:
            pos = self._head(body, start)
            if pos < 0 or body[pos] != _BINARY_DATA_KEY_BYTE:
                return None
            facts = self._facts
        if facts is None:
            return None
        size, pos = varint_at(body, pos + 1)
        if pos + size != len(body):
            return None
        topic, sender, type_name, content_type = facts
        return ReceivedEvent(event_id, topic, sender, type_name, content_type, body[pos:], False)

    def _head(self, body: bytes, start: int) -> int:
        """Find the head starting at *start* and make it the last one seen; the
        position after it (-1: the event ends in it, or its facts are not kept)."""
        pos = start
        end = len(body)
        while pos < end and body[pos] in _HEAD_KEYS:
            size, pos = varint_at(body, pos + 1)
            pos += size
        if pos >= end:
            return -1
        head = body[start:pos]
        facts = self._heads.get(head, _NOT_KEPT)
        if facts is _NOT_KEPT:
            keep, facts = _head_facts(head)
            if not keep:
                return -1
            if len(self._heads) >= self.MAX_HEADS:
                self._heads.clear()
            self._heads[head] = facts
        self._last = head
        self._facts = facts
        return pos


_NOT_KEPT: Final[_HeadFacts] = (TopicId("not-kept", ""), None, "", "")


def _head_facts(head: bytes) -> tuple[bool, _HeadFacts]:
    """What the *head* of an event says (see :class:`EventReader`), and whether
    to keep it (not with trace context, which differs from event to event)."""
    try:
        probe = _CloudEvent.FromString(head + _BINARY_DATA_KEY + b"\x00")
    except DecodeError:
        return True, None
    if any(name in probe.attributes for name in _TRACE_ATTRS):
        return False, None
    if probe.type.endswith(_RPC_SUFFIX):  # a legacy RPC: its check is logged per event
        return True, None
    try:
        received = from_cloud_event(probe)
    except InvalidCloudEventError:
        return True, None
    return True, (received.topic, received.sender, received.type_name, received.content_type)


def varint_at(data: bytes, pos: int) -> tuple[int, int]:
    """The varint at *pos* in *data* and the position after it (past the end: a
    size no field fits)."""
    value = 0
    shift = 0
    end = len(data)
    while pos < end:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7
    return end + 1, end
