"""``parse_address``: one parser for every ``host:port`` agentwire listens on or dials."""

from __future__ import annotations

import pytest

from agentwire._address import InvalidAddressError, parse_address
from agentwire._errors import AgentwireError


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:0", ("127.0.0.1", 0)),
        ("localhost:65535", ("localhost", 65535)),
        ("[::1]:50051", ("::1", 50051)),
        ("example.org:443", ("example.org", 443)),
    ],
)
def test_valid_addresses_split_into_host_and_port(text: str, expected: tuple[str, int]) -> None:
    assert parse_address(text) == expected


@pytest.mark.parametrize(
    "text", ["nonsense", ":0", "127.0.0.1:-5", "127.0.0.1:70000", "h:", "::1:80", "h:٣"]
)
def test_invalid_addresses_raise_a_precise_value_error(text: str) -> None:
    with pytest.raises(InvalidAddressError, match="address") as info:
        parse_address(text)
    assert isinstance(info.value, ValueError)
    assert isinstance(info.value, AgentwireError)
    assert repr(text) in str(info.value)
