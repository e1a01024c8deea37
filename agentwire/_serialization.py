"""Message serialization: AutoGen-compatible JSON and protobuf payloads.

Invariants kept by this module:

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

Serializers are compiled once per class (field codecs are closures), so the
per-message cost is a dict build and ``json.dumps``.
"""

from __future__ import annotations

import collections.abc as cabc
import dataclasses
import enum
import json
import logging
import sys
import types
import typing
from collections.abc import Callable, Sequence
from typing import Any, Final, Generic, Protocol, TypeVar, runtime_checkable

import attrs
from google.protobuf import any_pb2
from google.protobuf.message import Message as _ProtoMessage

from ._errors import SerializationError

__all__ = [
    "JSON_DATA_CONTENT_TYPE",
    "PROTOBUF_DATA_CONTENT_TYPE",
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

logger = logging.getLogger("agentwire.serialization")

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


# -- type names -------------------------------------------------------------------

_type_names: dict[type, str] = {}


def _betterproto_message_class() -> type | None:
    # betterproto2 classes exist only if betterproto2 was imported: no import here.
    module = sys.modules.get("betterproto2")
    return getattr(module, "Message", None) if module is not None else None


def _is_betterproto(cls: type) -> bool:
    base = _betterproto_message_class()
    return base is not None and issubclass(cls, base)


def _pydantic_base_model() -> type | None:
    module = sys.modules.get("pydantic")
    return getattr(module, "BaseModel", None) if module is not None else None


def _betterproto_full_name(cls: type) -> str | None:
    """The proto full name betterproto2's generated code registered *cls* under.

    Generated modules call ``default_message_pool.register_message(package,
    name, cls)`` on a ``MessagePool`` imported into the module; we look for a
    pool knowing *cls* there, then in any loaded ``*message_pool`` module.
    """
    bp = sys.modules.get("betterproto2")
    pool_type = getattr(bp, "MessagePool", None)
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


def type_name(message_or_class: object) -> str:
    """AutoGen's name for a message type (or for the type of a message).

    Protobuf messages (google or betterproto2): the full proto name, e.g.
    ``agents.ProtoMessage``. Everything else: the bare class ``__name__``.
    """
    cls = message_or_class if isinstance(message_or_class, type) else type(message_or_class)
    name = _type_names.get(cls)
    if name is None:
        if issubclass(cls, _ProtoMessage):
            name = str(cls.DESCRIPTOR.full_name)
        elif _is_betterproto(cls):
            name = _betterproto_full_name(cls) or cls.__name__
        else:
            name = cls.__name__
        _type_names[cls] = name
    return name


# -- JSON for dataclasses and attrs classes ------------------------------------------

_Encode = Callable[[Any], Any]
_Decode = Callable[[Any, str], Any]

_PRIMITIVES: Final = (str, int, float, bool, type(None))
_SUPPORTED: Final = (
    "str, int, float, bool, None, Any, Literal[...], Enum, list[T], tuple[T, ...], "
    "tuple[A, B], set[T], frozenset[T], dict[str, T], T | None, unions of primitives, "
    "and nested dataclasses or attrs classes"
)


class _Unsupported(Exception):
    def __init__(self, where: str, annotation: object, why: str = "") -> None:
        self.where = where
        self.annotation = annotation
        self.why = why


def _describe(value: object) -> str:
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{type(value).__name__} {text}"


def _expect(cls: type, name: str) -> _Decode:
    def decode(value: Any, path: str) -> Any:
        if type(value) is cls:
            return value
        raise SerializationError(f"{path}: expected {name}, got {_describe(value)}")

    return decode


def _decode_int(value: Any, path: str) -> Any:
    if type(value) is int:
        return value
    raise SerializationError(f"{path}: expected int, got {_describe(value)}")


def _decode_float(value: Any, path: str) -> Any:
    kind = type(value)
    if kind is float:
        return value
    if kind is int:
        return float(value)
    raise SerializationError(f"{path}: expected float, got {_describe(value)}")


def _decode_any(value: Any, path: str) -> Any:
    return value


def _is_record(tp: object) -> bool:
    return isinstance(tp, type) and (
        (dataclasses.is_dataclass(tp) and not _is_betterproto(tp)) or attrs.has(tp)
    )


class _JsonCompiler:
    """Builds (encode, decode) closures from type annotations, once per class."""

    def __init__(self) -> None:
        # Records being compiled or done: late-bound so recursive types work.
        self._records: dict[type, tuple[list[_Encode], list[_Decode]]] = {}

    def record(self, cls: type) -> tuple[_Encode, _Decode]:
        cell = self._records.get(cls)
        if cell is None:
            cell = ([], [])
            self._records[cls] = cell
            encode, decode = self._compile_record(cls)
            cell[0].append(encode)
            cell[1].append(decode)
        enc_cell, dec_cell = cell

        def encode_late(value: Any) -> Any:
            return enc_cell[0](value)

        def decode_late(value: Any, path: str) -> Any:
            return dec_cell[0](value, path)

        if enc_cell:
            return enc_cell[0], dec_cell[0]
        return encode_late, decode_late

    def _compile_record(self, cls: type) -> tuple[_Encode, _Decode]:
        try:
            hints = typing.get_type_hints(cls)
        except Exception as exc:
            raise _Unsupported(
                cls.__qualname__,
                None,
                f"cannot resolve its annotations ({exc}); define the types it uses at module level",
            ) from exc
        # (json key, attribute name, init?, required?, field codecs)
        fields: list[tuple[str, str, bool, bool, _Encode | None, _Decode]] = []
        if attrs.has(cls):
            for a in attrs.fields(cls):
                tp = hints.get(a.name, a.type)
                enc, dec = self.field(tp, f"{cls.__qualname__}.{a.name}")
                fields.append((a.alias, a.name, a.init, a.default is attrs.NOTHING, enc, dec))
        else:
            for f in dataclasses.fields(cls):
                tp = hints.get(f.name, f.type)
                enc, dec = self.field(tp, f"{cls.__qualname__}.{f.name}")
                required = (
                    f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
                )
                fields.append((f.name, f.name, f.init, required, enc, dec))

        plain = [(key, name) for key, name, _, _, enc, _ in fields if enc is None]
        coded = [(key, name, enc) for key, name, _, _, enc, _ in fields if enc is not None]
        order = [key for key, *_ in fields]
        init_fields = {
            key: (name, required, dec) for key, name, init, required, _, dec in fields if init
        }
        computed = {key for key, _, init, *_ in fields if not init}
        cls_name = cls.__qualname__

        if not coded:

            def encode(obj: Any) -> Any:
                return {key: getattr(obj, name) for key, name in plain}

        else:

            def encode(obj: Any) -> Any:
                out = {key: getattr(obj, name) for key, name in plain}
                for key, name, enc in coded:
                    out[key] = enc(getattr(obj, name))
                # Keep the declaration order (asdict's), whatever needed a codec.
                return {key: out[key] for key in order}

        def decode(value: Any, path: str) -> Any:
            if type(value) is not dict:
                raise SerializationError(
                    f"{path}: expected a JSON object for {cls_name}, got {_describe(value)}"
                )
            kwargs: dict[str, Any] = {}
            for key, item in value.items():
                spec = init_fields.get(key)
                if spec is None:
                    if key in computed:  # written by encode (as asdict does), not an argument
                        continue
                    raise SerializationError(f"{path}: unexpected field {key!r} for {cls_name}")
                kwargs[key] = spec[2](item, f"{path}.{key}")
            if len(kwargs) != len(init_fields):
                missing = [k for k, spec in init_fields.items() if spec[1] and k not in kwargs]
                if missing:
                    raise SerializationError(
                        f"{path}: missing field(s) {', '.join(map(repr, missing))} for {cls_name}"
                    )
            try:
                return cls(**kwargs)
            except Exception as exc:
                raise SerializationError(
                    f"{path}: {cls_name}(...) refused the values: {exc}"
                ) from exc

        return encode, decode

    def field(self, tp: Any, where: str) -> tuple[_Encode | None, _Decode]:
        """Codecs for one annotation: encode is None when the value is JSON as is."""
        if tp is str:
            return None, _expect(str, "str")
        if tp is bool:
            return None, _expect(bool, "bool")
        if tp is int:
            return None, _decode_int
        if tp is float:
            return None, _decode_float
        if tp is None or tp is type(None):
            return None, _expect(type(None), "null")
        if tp is Any or tp is object:
            return None, _decode_any
        origin = typing.get_origin(tp)
        args = typing.get_args(tp)
        if origin is typing.Literal:
            allowed = args
            if not all(isinstance(a, _PRIMITIVES) for a in allowed):
                raise _Unsupported(where, tp, "Literal values must be str, int, bool or None")

            def decode_literal(value: Any, path: str) -> Any:
                for a in allowed:
                    if value == a and type(value) is type(a):
                        return a
                raise SerializationError(
                    f"{path}: expected one of {allowed!r}, got {_describe(value)}"
                )

            return None, decode_literal
        if origin is typing.Union or origin is types.UnionType:
            return self._union(tp, args, where)
        if origin in (list, cabc.Sequence, cabc.MutableSequence) or tp is list:
            return self._sequence(args[0] if args else Any, list, where)
        if origin in (set, frozenset, cabc.Set, cabc.MutableSet) or tp in (set, frozenset):
            kind = frozenset if origin is frozenset or tp is frozenset else set
            return self._set(args[0] if args else Any, kind, where)
        if origin is tuple or tp is tuple:
            return self._tuple(args, where)
        if origin in (dict, cabc.Mapping, cabc.MutableMapping) or tp is dict:
            key, val = args if args else (str, Any)
            if key is not str:
                raise _Unsupported(where, tp, "JSON object keys are strings: use dict[str, ...]")
            return self._dict(val, where)
        if isinstance(tp, type):
            if issubclass(tp, enum.Enum):
                return self._enum(tp, where)
            if _is_record(tp):
                return self.record(tp)
            base = _pydantic_base_model()
            if base is not None and issubclass(tp, base):
                raise _Unsupported(
                    where,
                    tp,
                    "a pydantic model nested in a dataclass/attrs class (make the "
                    "outer type a pydantic model too)",
                )
        raise _Unsupported(where, tp)

    def _union(self, tp: Any, args: tuple[Any, ...], where: str) -> tuple[_Encode | None, _Decode]:
        others = [a for a in args if a is not type(None)]
        if len(others) == 1 and len(args) == 2:
            enc, dec = self.field(others[0], where)

            def decode_optional(value: Any, path: str) -> Any:
                return None if value is None else dec(value, path)

            if enc is None:
                return None, decode_optional
            inner = enc

            def encode_optional(value: Any) -> Any:
                return None if value is None else inner(value)

            return encode_optional, decode_optional
        if all(a in _PRIMITIVES for a in args):
            decoders = [self.field(a, where)[1] for a in args]
            names = " | ".join("None" if a is type(None) else a.__name__ for a in args)

            def decode_union(value: Any, path: str) -> Any:
                for d in decoders:
                    try:
                        return d(value, path)
                    except SerializationError:
                        continue
                raise SerializationError(f"{path}: expected {names}, got {_describe(value)}")

            return None, decode_union
        raise _Unsupported(
            where, tp, "unions other than `T | None` must hold only str, int, float, bool, None"
        )

    def _sequence(self, item: Any, kind: type, where: str) -> tuple[_Encode | None, _Decode]:
        enc, dec = self.field(item, f"{where}[]")

        def decode_seq(value: Any, path: str) -> Any:
            if type(value) is not list:
                raise SerializationError(f"{path}: expected a JSON array, got {_describe(value)}")
            return kind(dec(v, f"{path}[{i}]") for i, v in enumerate(value))

        if enc is None:
            return None, decode_seq
        inner = enc

        def encode_seq(value: Any) -> Any:
            return [inner(v) for v in value]

        return encode_seq, decode_seq

    def _set(self, item: Any, kind: type, where: str) -> tuple[_Encode | None, _Decode]:
        enc, dec = self._sequence(item, kind, where)
        inner = enc

        def encode_set(value: Any) -> Any:
            return inner(value) if inner is not None else list(value)

        return encode_set, dec

    def _tuple(self, args: tuple[Any, ...], where: str) -> tuple[_Encode | None, _Decode]:
        if not args or (len(args) == 2 and args[1] is Ellipsis):
            return self._sequence(args[0] if args else Any, tuple, where)
        codecs = [self.field(a, f"{where}[{i}]") for i, a in enumerate(args)]
        size = len(codecs)

        def decode_fixed(value: Any, path: str) -> Any:
            if type(value) is not list or len(value) != size:
                raise SerializationError(
                    f"{path}: expected a JSON array of {size} items, got {_describe(value)}"
                )
            pairs = enumerate(zip(codecs, value, strict=True))
            return tuple(c[1](v, f"{path}[{i}]") for i, (c, v) in pairs)

        if all(enc is None for enc, _ in codecs):
            return None, decode_fixed

        def encode_fixed(value: Any) -> Any:
            return [v if c[0] is None else c[0](v) for c, v in zip(codecs, value, strict=True)]

        return encode_fixed, decode_fixed

    def _dict(self, val: Any, where: str) -> tuple[_Encode | None, _Decode]:
        enc, dec = self.field(val, f"{where}{{}}")

        def decode_dict(value: Any, path: str) -> Any:
            if type(value) is not dict:
                raise SerializationError(f"{path}: expected a JSON object, got {_describe(value)}")
            return {k: dec(v, f"{path}[{k!r}]") for k, v in value.items()}

        if enc is None:
            return None, decode_dict
        inner = enc

        def encode_dict(value: Any) -> Any:
            return {k: inner(v) for k, v in value.items()}

        return encode_dict, decode_dict

    def _enum(self, tp: type[enum.Enum], where: str) -> tuple[_Encode, _Decode]:
        values = [m.value for m in tp]
        if not all(isinstance(v, _PRIMITIVES) for v in values):
            raise _Unsupported(where, tp, "enum values must be str, int, float, bool or None")

        def encode_enum(value: Any) -> Any:
            return value.value

        def decode_enum(value: Any, path: str) -> Any:
            try:
                return tp(value)
            except ValueError:
                raise SerializationError(
                    f"{path}: {value!r} is not a value of {tp.__qualname__}"
                ) from None

        return encode_enum, decode_enum


class JsonSerializer(Generic[T]):
    """JSON for a dataclass or an attrs class, wire-compatible with AutoGen.

    Bytes are ``json.dumps(fields)`` (default separators), keys in field order
    (constructor argument names). Nested dataclasses/attrs classes, lists,
    dicts, optionals and enums are supported (AutoGen itself refuses nested
    dataclasses and unions). Decoding checks types and names the bad field.
    """

    __slots__ = ("_decode", "_encode", "message_type", "type_name")

    data_content_type: Final = JSON_DATA_CONTENT_TYPE

    def __init__(self, cls: type[T]) -> None:
        if not _is_record(cls):
            raise SerializationError(
                f"JsonSerializer needs a dataclass or an attrs class, got {cls!r}"
            )
        try:
            self._encode, self._decode = _JsonCompiler().record(cls)
        except _Unsupported as exc:
            why = exc.why or f"supported field types are {_SUPPORTED}"
            shown = "" if exc.annotation is None else f" (annotation {exc.annotation!r})"
            raise SerializationError(
                f"cannot serialize {cls.__qualname__} as JSON: field {exc.where}{shown} is not "
                f"supported: {why}"
            ) from None
        self.message_type = cls
        self.type_name = type_name(cls)

    def serialize(self, message: T) -> bytes:
        try:
            return json.dumps(self._encode(message)).encode("utf-8")
        except (TypeError, ValueError, AttributeError) as exc:
            raise SerializationError(f"cannot serialize {self.type_name} as JSON: {exc}") from exc

    def deserialize(self, payload: bytes) -> T:
        try:
            data = json.loads(payload)
        except (ValueError, TypeError) as exc:  # JSONDecodeError and UnicodeDecodeError
            raise SerializationError(
                f"cannot deserialize {self.type_name}: bad JSON: {exc}"
            ) from exc
        try:
            result: T = self._decode(data, self.type_name)
        except SerializationError as exc:
            raise SerializationError(f"cannot deserialize {self.type_name}: {exc}") from None
        return result

    def __repr__(self) -> str:
        return f"JsonSerializer({self.message_type.__qualname__})"


class PydanticJsonSerializer(Generic[T]):
    """JSON for a pydantic ``BaseModel`` (as AutoGen: compact ``model_dump_json``).

    pydantic is not a dependency of agentwire; this works when it is installed.
    """

    __slots__ = ("message_type", "type_name")

    data_content_type: Final = JSON_DATA_CONTENT_TYPE

    def __init__(self, cls: type[T]) -> None:
        base = _pydantic_base_model()
        if base is None or not (isinstance(cls, type) and issubclass(cls, base)):
            raise SerializationError(
                f"PydanticJsonSerializer needs a pydantic BaseModel, got {cls!r}"
            )
        self.message_type = cls
        self.type_name = type_name(cls)

    def serialize(self, message: T) -> bytes:
        try:
            return message.model_dump_json().encode("utf-8")  # type: ignore[attr-defined,no-any-return]
        except Exception as exc:
            raise SerializationError(f"cannot serialize {self.type_name} as JSON: {exc}") from exc

    def deserialize(self, payload: bytes) -> T:
        try:
            return self.message_type.model_validate_json(payload)  # type: ignore[attr-defined,no-any-return]
        except Exception as exc:
            raise SerializationError(f"cannot deserialize {self.type_name}: {exc}") from exc

    def __repr__(self) -> str:
        return f"PydanticJsonSerializer({self.message_type.__qualname__})"


class ProtobufSerializer(Generic[T]):
    """Protobuf for google ``protobuf`` messages and betterproto2 messages.

    The bytes are a serialized ``google.protobuf.Any`` wrapping the message
    (type_url ``type.googleapis.com/<full name>``), as AutoGen and .NET send.
    For betterproto2 the full name is found in the ``MessagePool`` its
    generated code registered the class in; pass *full_name* otherwise.
    """

    __slots__ = ("_betterproto", "_type_url", "message_type", "type_name")

    data_content_type: Final = PROTOBUF_DATA_CONTENT_TYPE

    def __init__(self, cls: type[T], *, full_name: str | None = None) -> None:
        if isinstance(cls, type) and issubclass(cls, _ProtoMessage):
            self._betterproto = False
            name = full_name or str(cls.DESCRIPTOR.full_name)
        elif isinstance(cls, type) and _is_betterproto(cls):
            self._betterproto = True
            found = full_name or _betterproto_full_name(cls)
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

    def serialize(self, message: T) -> bytes:
        if not isinstance(message, self.message_type):
            raise SerializationError(
                f"cannot serialize {_describe(message)} with the serializer for {self.type_name}"
            )
        try:
            raw: Any = message
            value = bytes(raw) if self._betterproto else raw.SerializeToString()
        except Exception as exc:
            raise SerializationError(f"cannot serialize {self.type_name}: {exc}") from exc
        return any_pb2.Any(type_url=self._type_url, value=value).SerializeToString()

    def deserialize(self, payload: bytes) -> T:
        wrapper = any_pb2.Any()
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


def serializers_for_type(cls: type[Any]) -> list[MessageSerializer[Any]]:
    """The built-in serializers for *cls*; SerializationError if there are none.

    google protobuf and betterproto2 messages get a protobuf serializer;
    pydantic models, attrs classes and dataclasses a JSON serializer.
    """
    if not isinstance(cls, type):
        raise SerializationError(f"expected a message class, got {_describe(cls)}")
    if issubclass(cls, _ProtoMessage) or _is_betterproto(cls):
        return [ProtobufSerializer(cls)]
    base = _pydantic_base_model()
    if base is not None and issubclass(cls, base):
        return [PydanticJsonSerializer(cls)]
    if _is_record(cls):
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
        issubclass(cls, _ProtoMessage)
        or _is_betterproto(cls)
        or _is_record(cls)
        or ((base := _pydantic_base_model()) is not None and issubclass(cls, base))
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
                f"deserialize), got {_describe(serializer)}"
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
            name = type_name(message)
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
