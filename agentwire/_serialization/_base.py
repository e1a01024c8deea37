"""What every serializer shares: the content types, the serializer protocol, unknown payloads,
and AutoGen's type names (with the checks that tell the kinds of message class apart).

Protobuf (google or betterproto2) and pydantic are looked up in ``sys.modules``, never
imported: a class of one of those kinds can only exist once its library was imported, so a
program that uses none of them never loads them.
"""

from __future__ import annotations

import sys
from typing import Any, Final, Protocol, TypeVar, runtime_checkable

import attrs

__all__ = [
    "JSON_DATA_CONTENT_TYPE",
    "PROTOBUF_DATA_CONTENT_TYPE",
    "TYPE_URL_PREFIX",
    "MessageSerializer",
    "UnknownPayload",
    "betterproto_full_name",
    "describe",
    "is_betterproto",
    "is_google_protobuf",
    "is_protobuf",
    "pydantic_base_model",
    "type_name",
]

JSON_DATA_CONTENT_TYPE: Final = "application/json"
PROTOBUF_DATA_CONTENT_TYPE: Final = "application/x-protobuf"
TYPE_URL_PREFIX: Final = "type.googleapis.com/"

T = TypeVar("T")


@runtime_checkable
class MessageSerializer(Protocol[T]):
    """Turns one message type into bytes of one content type and back."""

    @property
    def data_content_type(self) -> str: ...

    @property
    def type_name(self) -> str: ...

    def serialize(self, message: T) -> bytes: ...

    def deserialize(self, payload: bytes) -> T: ...


@attrs.frozen
class UnknownPayload:
    """A payload whose ``(type_name, data_content_type)`` no serializer handles."""

    type_name: str
    data_content_type: str
    payload: bytes


def describe(value: object) -> str:
    """The type and a short repr of *value*, for error messages."""
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{type(value).__name__} {text}"


# -- kinds of message class ----------------------------------------------------------


def _loaded_class(module_name: str, class_name: str) -> Any:
    module = sys.modules.get(module_name)
    return getattr(module, class_name, None) if module is not None else None


def is_google_protobuf(cls: type) -> bool:
    """Whether *cls* is a google ``protobuf`` message class."""
    base = _loaded_class("google.protobuf.message", "Message")
    return base is not None and issubclass(cls, base)


def is_betterproto(cls: type) -> bool:
    """Whether *cls* is a betterproto2 message class."""
    base = _loaded_class("betterproto2", "Message")
    return base is not None and issubclass(cls, base)


def is_protobuf(cls: type) -> bool:
    """Whether *cls* is a protobuf message class, google or betterproto2."""
    return is_google_protobuf(cls) or is_betterproto(cls)


def pydantic_base_model() -> type | None:
    """pydantic's ``BaseModel`` if pydantic is loaded."""
    base: type | None = _loaded_class("pydantic", "BaseModel")
    return base


def betterproto_full_name(cls: type) -> str | None:
    """The proto full name betterproto2's generated code registered *cls* under.

    Generated modules call ``default_message_pool.register_message(package,
    name, cls)`` on a ``MessagePool`` imported into the module; we look for a
    pool knowing *cls* there, then in any loaded ``*message_pool`` module.
    """
    pool_type = _loaded_class("betterproto2", "MessagePool")
    if pool_type is None:
        return None
    candidates: list[object] = []
    module = sys.modules.get(cls.__module__)
    if module is not None:
        candidates.extend(vars(module).values())
    candidates.extend(
        getattr(m, "default_message_pool", None)
        for name, m in list(sys.modules.items())
        if name.endswith("message_pool")
    )
    for pool in candidates:
        if isinstance(pool, pool_type):
            url = pool.type_to_url.get(cls)
            if url is not None:
                return str(url).rpartition("/")[2]
    return None


_type_names: dict[type, str] = {}


def type_name(message_or_class: object) -> str:
    """AutoGen's name for a message type (or for the type of a message).

    Protobuf messages (google or betterproto2): the full proto name, e.g.
    ``agents.ProtoMessage``. Everything else: the bare class ``__name__``.
    """
    cls = message_or_class if isinstance(message_or_class, type) else type(message_or_class)
    name = _type_names.get(cls)
    if name is None:
        if is_google_protobuf(cls):
            name = str(getattr(cls, "DESCRIPTOR").full_name)  # noqa: B009
        elif is_betterproto(cls):
            name = betterproto_full_name(cls) or cls.__name__
        else:
            name = cls.__name__
        _type_names[cls] = name
    return name
