"""JSON text for payloads: exactly json.dumps's bytes and json.loads's values, errors included."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agentwire._serialization._jsontext import dumps, flat_object_writer, loads

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda inner: st.lists(inner) | st.dictionaries(st.text(), inner),
    max_leaves=20,
)


@given(json_values)
def test_the_bytes_are_json_dumps_and_read_back_as_json_loads(value: Any) -> None:
    data = dumps(value)
    assert data == json.dumps(value).encode()
    assert repr(loads(data)) == repr(json.loads(data))


def test_special_floats_and_non_ascii_text_as_json_writes_them() -> None:
    value = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf, "text": "é€😀"}
    assert dumps(value) == json.dumps(value).encode()


def test_a_failed_encoding_leaves_nothing_behind_for_the_next() -> None:
    value: dict[str, Any] = {"ok": [1, 2], "bad": object()}
    with pytest.raises(TypeError, match="not JSON serializable"):
        dumps(value)
    del value["bad"]
    # the same dict again: no false "circular reference"
    assert dumps(value) == b'{"ok": [1, 2]}'


def test_a_circular_structure_is_refused_as_json_refuses_it() -> None:
    loop: list[Any] = []
    loop.append(loop)
    with pytest.raises(ValueError, match="Circular reference"):
        dumps(loop)
    assert dumps([1]) == b"[1]"


@pytest.mark.parametrize(
    "data",
    [
        b'\xef\xbb\xbf{"a": 1}',
        '{"a": 1}'.encode("utf-16"),
        '{"a": 1}'.encode("utf-32-le"),
        '{"a": 1}',
    ],
)
def test_other_encodings_read_as_json_loads_reads_them(data: bytes) -> None:
    assert loads(data) == json.loads(data) == {"a": 1}


@pytest.mark.parametrize(
    "data", [b"{", b'{"a": 1} x', b"\xff\xfe\xfa", b"", b"  ", b"[1] [2]", b" }", b"1 2"]
)
def test_bad_json_fails_as_json_loads_fails(data: bytes) -> None:
    with pytest.raises(ValueError) as expected:
        json.loads(data)
    with pytest.raises(type(expected.value)) as actual:
        loads(data)
    assert str(actual.value) == str(expected.value)


def _outcome(read: Any, data: bytes) -> str:
    try:
        return repr(read(data))
    except (ValueError, TypeError) as exc:
        return f"{type(exc).__name__}: {exc}"


encoded_texts = st.builds(
    lambda value, encoding, bom: (bom + json.dumps(value, ensure_ascii=False)).encode(encoding),
    json_values,
    st.sampled_from(["utf-8", "utf-16-le", "utf-16-be", "utf-32-le", "utf-32-be"]),
    st.sampled_from(["", "\ufeff"]),
)


@given(st.binary(max_size=6) | encoded_texts)
def test_any_bytes_read_as_json_loads_reads_them_or_fail_as_it_fails(data: bytes) -> None:
    assert _outcome(loads, data) == _outcome(json.loads, data)


@pytest.mark.parametrize("data", [b' {"a": 1}', b'{"a": 1}\n', b'\t{"a": 1}  ', b"7 ", b'"x"'])
def test_whitespace_around_the_value_reads_as_json_loads_reads_it(data: bytes) -> None:
    assert loads(data) == json.loads(data)


@pytest.mark.parametrize("encoding", ["utf-16-le", "utf-16-be", "utf-32-le", "utf-32-be"])
def test_utf16_and_utf32_without_a_bom_read_as_json_loads_reads_them(encoding: str) -> None:
    data = '["é"]'.encode(encoding)
    assert loads(data) == json.loads(data) == ["é"]


# -- flat objects, written field by field ------------------------------------------------

primitives = st.none() | st.booleans() | st.integers() | st.floats() | st.text()


class _Fields:
    """An object whose attributes are the values of a dict."""

    def __init__(self, values: dict[str, Any]) -> None:
        for name, value in values.items():
            setattr(self, name, value)


class _Str(str):
    pass


class _Int(int):
    def __repr__(self) -> str:  # json.dumps ignores it: int.__repr__ is what it writes
        return "not a number"


@given(st.dictionaries(st.text(), primitives, max_size=6))
def test_a_flat_object_is_written_as_json_dumps_writes_it(values: dict[str, Any]) -> None:
    fields = [(key, f"a{index}") for index, key in enumerate(values)]
    obj = _Fields({name: values[key] for key, name in fields})
    data = flat_object_writer(fields)(obj)
    special = any(isinstance(v, float) and not math.isfinite(v) for v in values.values())
    if special:  # NaN and infinities: left to dumps()
        assert data is None
    else:
        assert data == json.dumps(values).encode()


@pytest.mark.parametrize("odd", [_Str("x"), _Int(3), [1], {"a": 1}, (1, 2), math.nan, -math.inf])
def test_values_other_than_plain_strings_and_numbers_are_left_to_dumps(odd: Any) -> None:
    write = flat_object_writer([("a", "a"), ("b", "b")])
    assert write(_Fields({"a": 1, "b": odd})) is None
    assert write(_Fields({"a": 1, "b": "ok"})) == b'{"a": 1, "b": "ok"}'


def test_a_flat_object_without_fields_is_an_empty_json_object() -> None:
    assert flat_object_writer([])(object()) == json.dumps({}).encode()


def test_a_missing_attribute_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError):
        flat_object_writer([("a", "missing")])(object())
