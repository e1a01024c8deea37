"""JSON text to and from bytes, as ``json.dumps``/``json.loads`` give it, with less set-up per call.

``json.dumps(value)`` builds a new C encoder for every call, and ``json.loads(data)``
sniffs the bytes' encoding in Python before decoding; together that is about half
of what a small message's JSON costs. :func:`dumps` keeps one C encoder, made
with the arguments ``json.dumps`` uses by default (so the text is the same), and
:func:`loads` decodes UTF-8 bytes directly, leaving anything else (a BOM, UTF-16
or UTF-32, a ``str``) to ``json.loads`` itself. Errors are json's own.

:func:`flat_object_writer` goes further for the commonest payload, a flat record of strings
and numbers: even a kept C encoder costs about as much per call as writing such an object
field by field in Python, which it does, falling back to :func:`dumps` for anything else.
"""

from __future__ import annotations

import json
import json.encoder
import math
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

__all__ = ["dumps", "flat_object_writer", "loads"]

_DECODER = json.JSONDecoder()
# The decoder's scanner (C in CPython): one value from an index, StopIteration
# if none starts there. JSONDecoder.decode wraps it in two whitespace regex
# matches and two Python calls; text that starts with its value and ends with
# it needs none of that.
_scan: Callable[[str, int], tuple[Any, int]] = _DECODER.scan_once  # type: ignore[attr-defined]


def _default(value: object) -> NoReturn:
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


# The circular-reference check's markers: emptied by the encoder as it leaves
# each container, and by dumps() when an encoding fails half-way.
_markers: dict[int, Any] = {}
_c_encoder: Any = getattr(json.encoder, "c_make_encoder", None)
_encoder = (
    None
    if _c_encoder is None
    else _c_encoder(
        _markers,
        _default,
        json.encoder.encode_basestring_ascii,
        None,  # indent
        ": ",
        ", ",
        False,  # sort_keys
        False,  # skipkeys
        True,  # allow_nan
    )
)


def dumps(value: Any) -> bytes:
    """``json.dumps(value).encode()``: the same text, UTF-8 (ASCII, as ``ensure_ascii``)."""
    encoder = _encoder
    if encoder is None:  # pragma: no cover - CPython always has the C encoder
        return json.dumps(value).encode()
    try:
        return "".join(encoder(value, 0)).encode()
    except BaseException:
        _markers.clear()
        raise


_escape: Callable[[str], str] = json.encoder.encode_basestring_ascii
# How json.dumps writes a value of each of these exact types (its C encoder calls the
# types' own __repr__, not the value's: a subclass is left to dumps() here).
_WRITERS: dict[type, Callable[[Any], str]] = {
    str: _escape,
    int: int.__repr__,
    bool: lambda value: "true" if value else "false",
    type(None): lambda value: "null",
}
_float_repr = float.__repr__


def flat_object_writer(fields: Sequence[tuple[str, str]]) -> Callable[[object], bytes | None]:
    """A writer of ``dumps({key: getattr(obj, name) for key, name in fields})``.

    It returns those exact bytes when every value is a ``str``, ``int``, ``bool``,
    ``None`` or finite ``float`` (exactly those types), and None otherwise: the
    caller then builds the object and calls :func:`dumps`.
    """
    if not fields:
        empty = b"{}"
        return lambda obj: empty
    # what precedes each value: '{"key": ' for the first, ', "key": ' for the rest
    heads = [
        ("{" if index == 0 else ", ") + _escape(key) + ": " for index, (key, _) in enumerate(fields)
    ]
    pairs = [(head, name) for head, (_, name) in zip(heads, fields, strict=True)]
    writers = _WRITERS

    def write(obj: object) -> bytes | None:
        text = ""
        for head, name in pairs:
            value = getattr(obj, name)
            writer = writers.get(value.__class__)
            if writer is not None:
                text += head + writer(value)
            elif value.__class__ is float and -math.inf < value < math.inf:
                text += head + _float_repr(value)
            else:  # NaN and infinities too: json.dumps's spelling of them is left to it
                return None
        return (text + "}").encode()

    return write


def loads(data: bytes) -> Any:
    """``json.loads(data)``."""
    # UTF-8 when json.detect_encoding would say so: no BOM (every BOM starts
    # with 0x00 or a byte above 0x7F) and no NUL in the first two bytes (UTF-16
    # or UTF-32 text without a BOM). (Byte by byte: a slice and a search of it
    # cost several times as much.) Shorter input goes to json.loads.
    if data.__class__ is bytes and len(data) > 1 and 0 < data[0] < 0x80 and data[1]:
        try:
            text = data.decode()
        except UnicodeDecodeError:
            return json.loads(data)  # UTF-16 or UTF-32, or json's own error
        try:
            value, end = _scan(text, 0)
        except StopIteration:  # leading whitespace, or not JSON
            return _DECODER.decode(text)
        if end == len(text):
            return value
        return _DECODER.decode(text)  # trailing whitespace, or extra data
    return json.loads(data)
