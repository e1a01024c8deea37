"""A CloudEvent over HTTP (binary or structured JSON mode) as the event a worker publishes.

Sans-IO: :func:`event_from_http` takes a request's headers and body and
returns the protobuf CloudEvent that ``runtime.publish_message`` of a worker
would send for the same message, or raises :class:`HttpRefusal` with the
HTTP status and one line of reason. Parsing is the CloudEvents SDK's
(``cloudevents.core.bindings.http``); the rules on top:

1. Binary mode (any ``ce-*`` header) or structured mode (``Content-Type:
   application/cloudevents+json``); batches are refused (415).
2. The topic is ``TopicId(type, source)``; a ``type`` that is not a valid
   topic type is 400.
3. The data is JSON (``datacontenttype`` absent, ``application/json`` or
   ``*/*+json``; anything else is 415), re-encoded as ``json.dumps`` does --
   the bytes a dataclass's JSON serializer writes -- under the type name
   ``dataschema``, or the event's ``type`` when it has none. An event
   without data is 400.
"""

from __future__ import annotations

import json
import re
from typing import Any

from cloudevents.core.bindings.http import HTTPMessage, from_http_event
from cloudevents.core.exceptions import BaseCloudEventException

from .._cloudevents import to_cloud_event
from .._errors import InvalidIdentifierError
from .._ids import TopicId
from .._proto import cloudevent_pb2
from .._serialization import JSON_DATA_CONTENT_TYPE

__all__ = ["STRUCTURED_CONTENT_TYPE", "HttpRefusal", "event_from_http"]

STRUCTURED_CONTENT_TYPE = "application/cloudevents+json"
_BATCH_CONTENT_TYPE = "application/cloudevents-batch+json"
_JSON = re.compile(r"^(application/json|[a-z]+/[^;\s]+\+json)\s*(;.*)?$", re.IGNORECASE)


class HttpRefusal(Exception):
    """Why an HTTP request is not an acceptable CloudEvent: *status* and one line."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def _media_type(value: str) -> str:
    return value.partition(";")[0].strip().lower()


def event_from_http(headers: list[tuple[bytes, bytes]], body: bytes) -> cloudevent_pb2.CloudEvent:
    """The CloudEvent a worker would publish for the event in this request (see above)."""
    fields = {name.decode("latin-1").lower(): value.decode("latin-1") for name, value in headers}
    binary = any(name.startswith("ce-") for name in fields)
    content_type = _media_type(fields.get("content-type", ""))
    if not binary:
        if content_type == _BATCH_CONTENT_TYPE:
            raise HttpRefusal(415, "batched CloudEvents are not accepted: send one per request")
        if content_type != STRUCTURED_CONTENT_TYPE:
            raise HttpRefusal(
                400,
                "not a CloudEvent: binary mode needs ce-specversion, ce-id, ce-type and "
                f"ce-source headers; structured mode needs Content-Type: {STRUCTURED_CONTENT_TYPE}",
            )
    elif "ce-specversion" not in fields:
        raise HttpRefusal(400, "malformed CloudEvent: binary mode needs a ce-specversion header")
    try:
        event = from_http_event(HTTPMessage(headers=fields, body=body))
    except (BaseCloudEventException, ValueError, TypeError, KeyError) as exc:
        raise HttpRefusal(400, f"malformed CloudEvent: {exc}") from None
    try:
        topic = TopicId(event.get_type(), event.get_source())
    except (InvalidIdentifierError, TypeError) as exc:
        raise HttpRefusal(400, f"the event's type is not a valid topic type: {exc}") from None
    data_type = event.get_datacontenttype()
    if data_type is not None and not _JSON.match(data_type):
        raise HttpRefusal(
            415, f"datacontenttype {data_type!r} is not JSON; only JSON data is taken"
        )
    data = _json_bytes(body if binary else event.get_data())
    type_name = event.get_dataschema() or topic.type
    return to_cloud_event(
        topic=topic,
        sender=None,
        type_name=type_name,
        content_type=JSON_DATA_CONTENT_TYPE,
        data=data,
        event_id=event.get_id(),
    )


def _json_bytes(data: Any) -> bytes:
    """*data* (the raw body, base64 data, or the decoded ``data`` member) as
    ``json.dumps`` writes it."""
    if data is None or data == b"":
        raise HttpRefusal(400, "the event has no data")
    if isinstance(data, bytes | bytearray):
        try:
            data = json.loads(data)
        except (ValueError, UnicodeDecodeError) as exc:
            raise HttpRefusal(400, f"the event's data is not valid JSON: {exc}") from None
    return json.dumps(data).encode()
