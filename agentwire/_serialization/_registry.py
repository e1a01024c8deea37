"""The serialization registry, and the built-in serializers for a message class."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from .._errors import SerializationError
from ._base import MessageSerializer, UnknownPayload, describe, is_protobuf, pydantic_base_model
from ._base import type_name as type_name_of
from ._json import JsonSerializer, is_record
from ._protobuf import ProtobufSerializer
from ._pydantic import PydanticJsonSerializer

__all__ = ["SerializationRegistry", "serializers_for_type", "try_get_known_serializers_for_type"]

logger = logging.getLogger("agentwire.serialization")


def serializers_for_type(cls: type[Any]) -> list[MessageSerializer[Any]]:
    """The built-in serializers for *cls*; SerializationError if there are none.

    google protobuf and betterproto2 messages get a protobuf serializer;
    pydantic models, attrs classes and dataclasses a JSON serializer.
    """
    if not isinstance(cls, type):
        raise SerializationError(f"expected a message class, got {describe(cls)}")
    if is_protobuf(cls):
        return [ProtobufSerializer(cls)]
    base = pydantic_base_model()
    if base is not None and issubclass(cls, base):
        return [PydanticJsonSerializer(cls)]
    if is_record(cls):
        return [JsonSerializer(cls)]
    raise SerializationError(
        f"no built-in serializer for {cls.__module__}.{cls.__qualname__}: use a dataclass, an "
        "attrs class, a protobuf message (google or betterproto2) or a pydantic model, or "
        "register a custom MessageSerializer"
    )


def try_get_known_serializers_for_type(cls: type[Any]) -> list[MessageSerializer[Any]]:
    """AutoGen's name: like :func:`serializers_for_type` but ``[]`` for unknown kinds.

    A supported kind with unsupported fields still raises SerializationError.
    """
    if not isinstance(cls, type):
        return []
    if not (
        is_protobuf(cls)
        or is_record(cls)
        or ((base := pydantic_base_model()) is not None and issubclass(cls, base))
    ):
        return []
    return serializers_for_type(cls)


class SerializationRegistry:
    """Serializers keyed by ``(type_name, data_content_type)``."""

    def __init__(self) -> None:
        self._by_key: dict[tuple[str, str], MessageSerializer[Any]] = {}
        self._by_class: dict[tuple[type, str], MessageSerializer[Any]] = {}
        self._content_types: dict[str, set[str]] = {}

    def add_serializer(
        self, serializer: MessageSerializer[Any] | Sequence[MessageSerializer[Any]]
    ) -> None:
        """Add one serializer or several; a later one replaces an earlier one."""
        if isinstance(serializer, Sequence):
            for one in serializer:
                self.add_serializer(one)
            return
        if not isinstance(serializer, MessageSerializer):
            raise SerializationError(
                f"expected a MessageSerializer (data_content_type, type_name, serialize, "
                f"deserialize), got {describe(serializer)}"
            )
        name, content_type = serializer.type_name, serializer.data_content_type
        key = (name, content_type)
        new_cls = getattr(serializer, "message_type", None)
        old = self._by_key.get(key)
        old_cls = getattr(old, "message_type", None)
        if old is not None and new_cls is not None and old_cls not in (None, new_cls):
            logger.warning(
                "type name %r (%s) now means %s.%s instead of %s.%s: type names are bare "
                "class names, so two message classes with the same name collide",
                name,
                content_type,
                new_cls.__module__,
                new_cls.__qualname__,
                old_cls.__module__,
                old_cls.__qualname__,
            )
            self._by_class.pop((old_cls, content_type), None)
        self._by_key[key] = serializer
        if isinstance(new_cls, type):
            self._by_class[(new_cls, content_type)] = serializer
        self._content_types.setdefault(name, set()).add(content_type)

    def add_type(self, cls: type[Any]) -> list[MessageSerializer[Any]]:
        """Add the built-in serializers for *cls* and return them."""
        serializers = serializers_for_type(cls)
        self.add_serializer(serializers)
        return serializers

    def is_registered(self, type_name: str, content_type: str) -> bool:
        return (type_name, content_type) in self._by_key

    def get(self, type_name: str, content_type: str) -> MessageSerializer[Any] | None:
        return self._by_key.get((type_name, content_type))

    def content_types_for(self, type_name: str) -> set[str]:
        """The content types some serializer handles for *type_name*."""
        return set(self._content_types.get(type_name, ()))

    def type_names(self) -> list[str]:
        return list(self._content_types)

    def serialize(self, message: object, *, content_type: str) -> tuple[str, bytes]:
        """``(type_name, bytes)`` for *message*; SerializationError if unregistered."""
        serializer = self._by_class.get((type(message), content_type))
        if serializer is None:
            name = type_name_of(message)
            serializer = self._by_key.get((name, content_type))
            if serializer is None:
                known = sorted(self._content_types.get(name, ()))
                hint = (
                    f" (registered content types for it: {', '.join(known)})"
                    if known
                    else "; register it (runtime.add_message_serializer or an agent handler)"
                )
                raise SerializationError(
                    f"Unknown type {name} with content type {content_type}{hint}"
                )
            wanted = getattr(serializer, "message_type", None)
            if isinstance(wanted, type) and not isinstance(message, wanted):
                raise SerializationError(
                    f"type name {name!r} is registered for {wanted.__module__}."
                    f"{wanted.__qualname__}, not {type(message).__module__}."
                    f"{type(message).__qualname__}"
                )
        try:
            data = serializer.serialize(message)
        except SerializationError:
            raise
        except Exception as exc:
            raise SerializationError(
                f"cannot serialize {serializer.type_name} as {content_type}: {exc}"
            ) from exc
        return serializer.type_name, data

    def deserialize(self, data: bytes, *, type_name: str, content_type: str) -> Any:
        """The message, or :class:`UnknownPayload` if no serializer handles the pair.

        Bad bytes for a known pair raise SerializationError naming the type.
        """
        serializer = self._by_key.get((type_name, content_type))
        if serializer is None:
            return UnknownPayload(type_name, content_type, data)
        try:
            return serializer.deserialize(data)
        except SerializationError:
            raise
        except Exception as exc:
            raise SerializationError(
                f"cannot deserialize {type_name} from {content_type}: {exc}"
            ) from exc

    def __len__(self) -> int:
        return len(self._by_key)

    def __repr__(self) -> str:
        return f"<SerializationRegistry with {len(self._by_key)} serializers>"
