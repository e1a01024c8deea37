"""JSON for dataclasses and attrs classes, byte-compatible with AutoGen's dataclass serializer.

Serializers are compiled once per class (field codecs are closures), so the per-message cost
is a dict build and ``json.dumps``. Bytes for a dataclass are exactly AutoGen's
``json.dumps(dataclasses.asdict(obj)).encode()`` (default separators).

A record whose fields need no codec is written field by field while its values are plain
strings and numbers (``_jsontext.flat_object_writer``: the same bytes without the dict and
the C encoder's set-up); one whose fields all take a single JSON type as is is built straight
from an object that has exactly its keys, each of its type. Anything else takes the general
path, which also makes every error message.
"""

from __future__ import annotations

import collections.abc as cabc
import dataclasses
import enum
import types
import typing
from collections.abc import Callable
from typing import Any, Final, Generic, TypeVar

import attrs

from .._errors import SerializationError
from ._base import JSON_DATA_CONTENT_TYPE, describe, is_betterproto, pydantic_base_model, type_name
from ._jsontext import dumps, flat_object_writer, loads

__all__ = ["JsonSerializer", "is_record"]

T = TypeVar("T")

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


def _expect(cls: type, name: str) -> _Decode:
    def decode(value: Any, path: str) -> Any:
        if type(value) is cls:
            return value
        raise SerializationError(f"{path}: expected {name}, got {describe(value)}")

    return decode


def _decode_int(value: Any, path: str) -> Any:
    if type(value) is int:
        return value
    raise SerializationError(f"{path}: expected int, got {describe(value)}")


def _decode_float(value: Any, path: str) -> Any:
    kind = type(value)
    if kind is float:
        return value
    if kind is int:
        return float(value)
    raise SerializationError(f"{path}: expected float, got {describe(value)}")


def _decode_any(value: Any, path: str) -> Any:
    return value


def _exact_type(tp: object) -> type | None:
    """The JSON type whose values a field of annotation *tp* takes unchanged (what its
    decoder would return as is), or None when the decoder must see every value."""
    if tp in (str, int, float, bool):
        return tp
    return None


def is_record(tp: object) -> bool:
    return isinstance(tp, type) and (
        (dataclasses.is_dataclass(tp) and not is_betterproto(tp)) or attrs.has(tp)
    )


class _JsonCompiler:
    """Builds (encode, decode) closures from type annotations, once per class."""

    def __init__(self) -> None:
        # Records being compiled or done: late-bound so recursive types work.
        self._records: dict[type, tuple[list[_Encode], list[_Decode]]] = {}
        # Records whose fields all need no codec: their (json key, attribute name)s
        self.flat: dict[type, list[tuple[str, str]]] = {}

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
        # (attribute name, required?, decode, the type a value is taken as is)
        init_fields = {
            key: (name, required, dec, _exact_type(hints.get(name)))
            for key, name, init, required, _, dec in fields
            if init
        }
        computed = {key for key, _, init, *_ in fields if not init}
        cls_name = cls.__qualname__
        # When every field is taken as is from one JSON type, an object with exactly
        # the constructor's keys, each of its field's type, is the keyword arguments
        # (as many keys as fields, each of them a field's: no other key).
        exact = [(key, spec[3]) for key, spec in init_fields.items()]
        if computed or any(kind is None for _, kind in exact):
            exact = []

        if not coded:
            self.flat[cls] = plain

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
                    f"{path}: expected a JSON object for {cls_name}, got {describe(value)}"
                )
            if exact and len(value) == len(exact):
                for key, kind in exact:  # (a missing key: None, of no field's type)
                    if value.get(key).__class__ is not kind:
                        break
                else:
                    try:
                        return cls(**value)
                    except Exception as exc:
                        raise refused(exc, path) from exc
            kwargs: dict[str, Any] = {}
            for key, item in value.items():
                spec = init_fields.get(key)
                if spec is None:
                    if key in computed:  # written by encode (as asdict does), not an argument
                        continue
                    raise SerializationError(f"{path}: unexpected field {key!r} for {cls_name}")
                if type(item) is spec[3]:  # a str or int field: no decoder, no path
                    kwargs[key] = item
                else:
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
                raise refused(exc, path) from exc

        def refused(exc: Exception, path: str) -> SerializationError:
            return SerializationError(f"{path}: {cls_name}(...) refused the values: {exc}")

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
                    f"{path}: expected one of {allowed!r}, got {describe(value)}"
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
            if is_record(tp):
                return self.record(tp)
            base = pydantic_base_model()
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
                raise SerializationError(f"{path}: expected {names}, got {describe(value)}")

            return None, decode_union
        raise _Unsupported(
            where, tp, "unions other than `T | None` must hold only str, int, float, bool, None"
        )

    def _sequence(self, item: Any, kind: type, where: str) -> tuple[_Encode | None, _Decode]:
        enc, dec = self.field(item, f"{where}[]")

        def decode_seq(value: Any, path: str) -> Any:
            if type(value) is not list:
                raise SerializationError(f"{path}: expected a JSON array, got {describe(value)}")
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
                    f"{path}: expected a JSON array of {size} items, got {describe(value)}"
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
                raise SerializationError(f"{path}: expected a JSON object, got {describe(value)}")
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

    __slots__ = ("_decode", "_encode", "_write", "message_type", "type_name")

    data_content_type: Final = JSON_DATA_CONTENT_TYPE

    def __init__(self, cls: type[T]) -> None:
        if not is_record(cls):
            raise SerializationError(
                f"JsonSerializer needs a dataclass or an attrs class, got {cls!r}"
            )
        compiler = _JsonCompiler()
        try:
            self._encode, self._decode = compiler.record(cls)
        except _Unsupported as exc:
            why = exc.why or f"supported field types are {_SUPPORTED}"
            shown = "" if exc.annotation is None else f" (annotation {exc.annotation!r})"
            raise SerializationError(
                f"cannot serialize {cls.__qualname__} as JSON: field {exc.where}{shown} is not "
                f"supported: {why}"
            ) from None
        flat = compiler.flat.get(cls)
        # the same bytes, written field by field when the values are strings and numbers
        self._write = None if flat is None else flat_object_writer(flat)
        self.message_type = cls
        self.type_name = type_name(cls)

    def serialize(self, message: T) -> bytes:
        try:
            if self._write is not None:
                data = self._write(message)
                if data is not None:
                    return data
            return dumps(self._encode(message))
        except (TypeError, ValueError, AttributeError) as exc:
            raise SerializationError(f"cannot serialize {self.type_name} as JSON: {exc}") from exc

    def deserialize(self, payload: bytes) -> T:
        try:
            data = loads(payload)
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
