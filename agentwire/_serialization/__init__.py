"""Message serialization: AutoGen-compatible JSON and protobuf payloads.

Invariants kept by this package:

* A registry maps the exact pair ``(type_name, data_content_type)`` to one
  serializer (the last one added wins, as in AutoGen).
* ``deserialize`` of an unknown pair returns :class:`UnknownPayload` and never
  raises; a known pair whose bytes are bad raises :class:`SerializationError`
  naming the type.
* ``serialize`` of a message nobody registered raises SerializationError.
* Type names are AutoGen's: the protobuf full name for protobuf messages, the
  bare class ``__name__`` for everything else.
* JSON bytes for a dataclass are exactly AutoGen's
  ``json.dumps(dataclasses.asdict(obj)).encode()`` (default separators).
* Protobuf bytes are always a serialized ``google.protobuf.Any`` with type_url
  ``type.googleapis.com/<full name>``, never the bare message.
* Nothing here imports protobuf, betterproto2 or pydantic until a message class
  of that kind is registered.

Modules: ``_base`` (content types, the serializer protocol, type names, kinds of message
class), ``_json`` (dataclasses and attrs classes), ``_protobuf``, ``_pydantic``, and
``_registry`` (the registry and the built-in serializers for a class).
"""

from ._base import (
    JSON_DATA_CONTENT_TYPE,
    PROTOBUF_DATA_CONTENT_TYPE,
    TYPE_URL_PREFIX,
    MessageSerializer,
    UnknownPayload,
    type_name,
)
from ._json import JsonSerializer
from ._protobuf import ProtobufSerializer
from ._pydantic import PydanticJsonSerializer
from ._registry import (
    SerializationRegistry,
    serializers_for_type,
    try_get_known_serializers_for_type,
)

__all__ = [
    "JSON_DATA_CONTENT_TYPE",
    "PROTOBUF_DATA_CONTENT_TYPE",
    "TYPE_URL_PREFIX",
    "JsonSerializer",
    "MessageSerializer",
    "ProtobufSerializer",
    "PydanticJsonSerializer",
    "SerializationRegistry",
    "UnknownPayload",
    "serializers_for_type",
    "try_get_known_serializers_for_type",
    "type_name",
]
