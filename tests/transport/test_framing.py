"""Properties of the gRPC message framing (length prefix, compressed flag)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agentwire._transport._framing import (
    FramingError,
    MessageDecoder,
    MessageTooLargeError,
    encode_message,
    gzip_compress,
    gzip_decompress,
)

messages = st.lists(st.tuples(st.booleans(), st.binary(max_size=300)), max_size=12)


def _split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    chunks, last = [], 0
    for point in [*points, len(data)]:
        chunks.append(data[last:point])
        last = point
    return chunks


@given(messages, st.lists(st.integers(min_value=0), max_size=20))
def test_any_split_decodes_the_same_messages(
    items: list[tuple[bool, bytes]], cuts: list[int]
) -> None:
    wire = b"".join(encode_message(payload, compressed=flag) for flag, payload in items)
    decoder = MessageDecoder(max_message_size=300)
    out: list[tuple[bool, bytes]] = []
    for chunk in _split(wire, cuts):
        out.extend(decoder.feed(chunk))
    assert out == items
    assert decoder.buffered == 0


@given(
    messages,
    st.integers(min_value=301, max_value=2**32 - 1),
    st.lists(st.integers(min_value=0), max_size=20),
)
def test_oversized_message_is_refused_once_its_prefix_is_complete(
    items: list[tuple[bool, bytes]], size: int, cuts: list[int]
) -> None:
    good = b"".join(encode_message(payload, compressed=flag) for flag, payload in items)
    prefix = b"\x00" + size.to_bytes(4, "big")
    wire = good + prefix + b"\x00" * 50
    decoder = MessageDecoder(max_message_size=300)
    out: list[tuple[bool, bytes]] = []
    fed = 0
    chunk = b""

    def feed_all() -> None:
        nonlocal fed, chunk
        for chunk in _split(wire, cuts):
            fed += len(chunk)
            out.extend(decoder.feed(chunk))

    with pytest.raises(MessageTooLargeError) as info:
        feed_all()
    assert info.value.size == size
    assert info.value.limit == 300
    # refused by the very chunk that completes the prefix
    assert fed - len(chunk) < len(good) + len(prefix) <= fed
    assert out == items[: len(out)]


@given(st.integers(min_value=2, max_value=255), st.binary(max_size=20))
def test_invalid_compressed_flag(flag: int, payload: bytes) -> None:
    wire = bytes([flag]) + len(payload).to_bytes(4, "big") + payload
    with pytest.raises(FramingError):
        MessageDecoder(100).feed(wire)


def test_prefix_layout() -> None:
    assert encode_message(b"abc") == b"\x00\x00\x00\x00\x03abc"
    assert encode_message(b"", compressed=True) == b"\x01\x00\x00\x00\x00"


@given(st.binary(max_size=5000))
def test_gzip_round_trip(payload: bytes) -> None:
    assert gzip_decompress(gzip_compress(payload), max_size=5000) == payload


def test_gzip_bomb_is_refused() -> None:
    bomb = gzip_compress(b"\x00" * 1_000_000)
    assert len(bomb) < 2000
    with pytest.raises(MessageTooLargeError):
        gzip_decompress(bomb, max_size=1000)


def test_gzip_garbage_is_refused() -> None:
    with pytest.raises(FramingError):
        gzip_decompress(b"not gzip at all", max_size=1000)
    with pytest.raises(FramingError):
        gzip_decompress(gzip_compress(b"hello")[:-3], max_size=1000)
