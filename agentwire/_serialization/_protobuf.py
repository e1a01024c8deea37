"""Protobuf payloads: a serialized ``google.protobuf.Any`` wrapping the message.

For google ``protobuf`` and betterproto2 messages. protobuf itself is imported when the first
protobuf serializer is made (the message class's module imported it already).
"""

from __future__ import annotations

from typing import Any, Final, Generic, TypeVar

from .._errors import SerializationError
from ._base import (
    PROTOBUF_DATA_CONTENT_TYPE,
    TYPE_URL_PREFIX,
    betterproto_full_name,
    describe,
    is_betterproto,
    is_google_protobuf,
)

__all__ = ["ProtobufSerializer"]

T = TypeVar("T")


class ProtobufSerializer(Generic[T]):
    """Protobuf for google ``protobuf`` messages and betterproto2 messages.

    The bytes are a serialized ``google.protobuf.Any`` wrapping the message
    (type_url ``type.googleapis.com/<full name>``), as AutoGen and .NET send.
    For betterproto2 the full name is found in the ``MessagePool`` its
    generated code registered the class in; pass *full_name* otherwise.
    """

    __slots__ = ("_any", "_betterproto", "_type_url", "message_type", "type_name")

    data_content_type: Final = PROTOBUF_DATA_CONTENT_TYPE

    def __init__(self, cls: type[T], *, full_name: str | None = None) -> None:
        if isinstance(cls, type) and is_google_protobuf(cls):
            self._betterproto = False
            name = full_name or str(getattr(cls, "DESCRIPTOR").full_name)  # noqa: B009
        elif isinstance(cls, type) and is_betterproto(cls):
            self._betterproto = True
            found = full_name or betterproto_full_name(cls)
            if not found:
                raise SerializationError(
                    f"cannot find the protobuf full name of betterproto2 class "
                    f"{cls.__module__}.{cls.__qualname__}: it is not registered in a "
                    "betterproto2 MessagePool (generated code does this); pass "
                    "ProtobufSerializer(cls, full_name='package.Message')"
                )
            name = found
        else:
            raise SerializationError(
                f"ProtobufSerializer needs a google protobuf or betterproto2 message class, "
                f"got {cls!r}"
            )
        self.message_type = cls
        self.type_name = name
        self._type_url = TYPE_URL_PREFIX + name
        from google.protobuf import any_pb2  # loaded already by the message's module

        self._any: Any = any_pb2.Any

    def serialize(self, message: T) -> bytes:
        if not isinstance(message, self.message_type):
            raise SerializationError(
                f"cannot serialize {describe(message)} with the serializer for {self.type_name}"
            )
        try:
            raw: Any = message
            value = bytes(raw) if self._betterproto else raw.SerializeToString()
        except Exception as exc:
            raise SerializationError(f"cannot serialize {self.type_name}: {exc}") from exc
        data: bytes = self._any(type_url=self._type_url, value=value).SerializeToString()
        return data

    def deserialize(self, payload: bytes) -> T:
        wrapper = self._any()
        try:
            wrapper.ParseFromString(payload)
        except Exception as exc:
            raise SerializationError(
                f"cannot deserialize {self.type_name}: the payload is not a serialized "
                f"google.protobuf.Any ({exc})"
            ) from exc
        if wrapper.type_url.rpartition("/")[2] != self.type_name:
            raise SerializationError(
                f"cannot deserialize {self.type_name}: the Any holds {wrapper.type_url!r}"
            )
        try:
            if self._betterproto:
                message: T = self.message_type.parse(wrapper.value)  # type: ignore[attr-defined]
            else:
                message = self.message_type()
                message.ParseFromString(wrapper.value)  # type: ignore[attr-defined]
        except Exception as exc:
            raise SerializationError(
                f"cannot deserialize {self.type_name}: malformed message bytes ({exc})"
            ) from exc
        return message

    def __repr__(self) -> str:
        return f"ProtobufSerializer({self.type_name})"
