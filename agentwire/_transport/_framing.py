"""gRPC message framing: the 5-byte length prefix and the compressed flag.

Every gRPC message on an HTTP/2 stream is ``flag (1 byte) | length (4 bytes,
big endian) | payload``. ``flag`` is 0 (plain) or 1 (compressed with the
stream's ``grpc-encoding``).

Invariants kept by :class:`MessageDecoder`:

- ``feed`` returns messages in order, whatever the split of the input into
  chunks (a chunk may end anywhere, even inside the prefix).
- An oversized message is rejected as soon as its prefix is complete, before
  any of its payload is buffered: the decoder never holds more than
  ``max_message_size + 4`` bytes.
- After an error the decoder is unusable (the stream is failed by the caller).
"""

from __future__ import annotations

import struct
import zlib

from grpclib.const import Status
from grpclib.exceptions import GRPCError

_PREFIX_SIZE = 5
#: the prefix: the compressed flag and the length (one struct call, not a slice and an int)
_PREFIX = struct.Struct(">BI")
_pack_prefix = _PREFIX.pack
_unpack_prefix = _PREFIX.unpack_from


class FramingError(Exception):
    """The byte stream is not a valid sequence of gRPC messages."""


class MessageTooLargeError(FramingError):
    """A message is larger than the receiver's limit."""

    def __init__(self, size: int, limit: int) -> None:
        self.size = size
        self.limit = limit
        super().__init__(f"Received message larger than max ({size} vs. {limit})")


def encode_message(payload: bytes, *, compressed: bool = False) -> bytes:
    """Return ``payload`` with its 5-byte gRPC prefix."""
    return _pack_prefix(1 if compressed else 0, len(payload)) + payload


class MessageDecoder:
    """Incremental decoder of length-prefixed gRPC messages (sans-IO)."""

    __slots__ = ("_buffer", "_max_message_size")

    def __init__(self, max_message_size: int) -> None:
        self._buffer = bytearray()
        self._max_message_size = max_message_size

    @property
    def buffered(self) -> int:
        """Bytes held for a message not yet complete."""
        return len(self._buffer)

    def feed(self, data: bytes) -> list[tuple[bool, bytes]]:
        """Consume ``data``; return the ``(compressed, payload)`` messages it completes.

        Raises :class:`MessageTooLargeError` or :class:`FramingError`.
        """
        buffer = self._buffer
        if buffer:
            buffer += data
            return self._parse(buffer)
        # Fast path: nothing buffered, parse straight from the chunk.
        limit = self._max_message_size
        size = len(data)
        pos = 0
        messages: list[tuple[bool, bytes]] = []
        while size - pos >= _PREFIX_SIZE:
            flag, length = _unpack_prefix(data, pos)
            if flag > 1:
                raise FramingError(f"invalid compressed flag {flag}")
            if length > limit:
                raise MessageTooLargeError(length, limit)
            end = pos + _PREFIX_SIZE + length
            if end > size:
                break
            messages.append((flag == 1, data[pos + _PREFIX_SIZE : end]))
            pos = end
        if pos < size:
            buffer += memoryview(data)[pos:]
        return messages

    def _parse(self, buffer: bytearray) -> list[tuple[bool, bytes]]:
        limit = self._max_message_size
        size = len(buffer)
        pos = 0
        messages: list[tuple[bool, bytes]] = []
        while size - pos >= _PREFIX_SIZE:
            flag, length = _unpack_prefix(buffer, pos)
            if flag > 1:
                raise FramingError(f"invalid compressed flag {flag}")
            if length > limit:
                del buffer[:]
                raise MessageTooLargeError(length, limit)
            end = pos + _PREFIX_SIZE + length
            if end > size:
                break
            messages.append((flag == 1, bytes(buffer[pos + _PREFIX_SIZE : end])))
            pos = end
        if pos:
            del buffer[:pos]
        return messages


def gzip_compress(payload: bytes) -> bytes:
    """Compress one message body with the gRPC ``gzip`` coding."""
    compressor = zlib.compressobj(6, zlib.DEFLATED, 31)
    return compressor.compress(payload) + compressor.flush()


def gzip_decompress(payload: bytes, max_size: int) -> bytes:
    """Decompress one message body; never inflate beyond ``max_size`` bytes.

    Raises :class:`MessageTooLargeError` (too big once inflated) or
    :class:`FramingError` (not valid gzip).
    """
    decompressor = zlib.decompressobj(31)
    try:
        out = decompressor.decompress(payload, max_size + 1)
    except zlib.error as exc:
        raise FramingError(f"invalid gzip message: {exc}") from None
    if len(out) > max_size:
        raise MessageTooLargeError(len(out), max_size)
    if not decompressor.eof or decompressor.unused_data:
        raise FramingError("invalid gzip message: truncated or trailing data")
    return out


def frame_message(payload: bytes, compression: str | None) -> bytes:
    """One message ready for the wire: gzip-compressed if ``compression``, then framed."""
    if compression is None:  # encode_message(payload), one call less on the hot path
        return _pack_prefix(0, len(payload)) + payload
    return encode_message(gzip_compress(payload), compressed=True)


def decompress_message(payload: bytes, encoding: str | None, max_size: int) -> bytes:
    """The body of a message received with the compressed flag, under ``grpc-encoding``.

    Raises ``GRPCError``: INTERNAL for an encoding other than gzip or invalid
    gzip, RESOURCE_EXHAUSTED when it inflates beyond ``max_size`` bytes.
    """
    if encoding != "gzip":
        raise GRPCError(Status.INTERNAL, f"compressed message with grpc-encoding {encoding!r}")
    try:
        return gzip_decompress(payload, max_size)
    except MessageTooLargeError as exc:
        raise GRPCError(Status.RESOURCE_EXHAUSTED, str(exc)) from None
    except FramingError as exc:
        raise GRPCError(Status.INTERNAL, str(exc)) from None
