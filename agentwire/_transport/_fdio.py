"""Fast paths around trio's socket streams: the socket's fd, and trio's run queue.

A plain TCP ``trio.SocketStream`` is read and written with ``os.read`` /
``os.write`` on its fd (waiting with trio's public ``wait_readable`` /
``wait_writable``), which saves a scheduler trip per completed operation. A
``trio.SSLStream`` over one, once its handshake is done, is read and written
the same way, its ``ssl.SSLObject`` driven through its memory BIOs here
(:class:`TLSSocketIO`) instead of by ``SSLStream``, whose every operation
takes several scheduler trips;
:func:`runnable` reads the length of trio's run queue directly
(``trio.lowlevel.current_statistics()`` answers it too, at several times the
cost). Checked against trio :data:`CHECKED_VERSION`; :func:`supported` is
false for any other minor series and the connection uses the stream's own
``send_all`` / ``receive_some`` (see ``_fastpath``).
"""

from __future__ import annotations

import os
import ssl
import sys
from typing import Any

import trio

CHECKED_VERSION = "0.35.0"
"""The trio release these fast paths were written and tested against (its 0.35 series is used)."""


def supported() -> bool:
    """This trio keeps its run queue where :func:`runnable` looks."""
    try:
        trio._core._run.GLOBAL_RUN_CONTEXT.runner.runq  # noqa: B018 - probing
    except AttributeError:
        return False
    return True


def runnable() -> int:
    """How many trio tasks are ready to run in this scheduler pass."""
    try:
        return len(trio._core._run.GLOBAL_RUN_CONTEXT.runner.runq)
    except AttributeError:  # pragma: no cover - checked by supported()
        return 1 << 30


def socket_fd(stream: trio.abc.Stream) -> int | None:
    """The fd of a plain TCP stream (not TLS, not in memory), else None."""
    if type(stream) is trio.SocketStream and sys.platform != "win32":
        return stream.socket.fileno()
    return None


def open_io(stream: trio.abc.Stream, receive_size: int) -> SocketIO | TLSSocketIO | None:
    """Direct I/O for ``stream`` if it is plain TCP, or TLS over it with its handshake done."""
    fd = socket_fd(stream)
    if fd is not None:
        return SocketIO(fd, receive_size)
    if type(stream) is trio.SSLStream and sys.platform != "win32":
        inner = stream.transport_stream
        tls: Any = stream
        try:
            ready = (
                type(inner) is trio.SocketStream
                and tls._handshook.done
                and tls._state.name == "OK"
                and isinstance(tls._ssl_object, ssl.SSLObject)
                and isinstance(tls._incoming, ssl.MemoryBIO)
                and isinstance(tls._outgoing, ssl.MemoryBIO)
            )
        except AttributeError:  # another trio's SSLStream
            return None
        if ready:
            return TLSSocketIO(inner.socket.fileno(), tls, receive_size)
    return None


async def _ready_to_read(fd: int, likely: object) -> None:
    """Wait until ``fd`` is readable, or only checkpoint if input is ``likely`` waiting."""
    if likely:
        await trio.lowlevel.checkpoint()
    else:
        await trio.lowlevel.wait_readable(fd)


def _check_open(closed: bool) -> None:
    if closed:
        raise trio.ClosedResourceError("the connection is closed")


class SocketIO:
    """Direct reads and writes of one socket's fd."""

    __slots__ = ("_fd", "_read_hint", "closed", "receive_size")

    #: output taken but not yet written (see :class:`TLSSocketIO`): never any here
    backlog = 0

    def __init__(self, fd: int, receive_size: int) -> None:
        self._fd = fd
        self._read_hint = False
        self.receive_size = receive_size
        self.closed = False  # the stream was closed: the fd number may be reused

    async def read(self) -> bytes:
        """The next bytes from the socket (``b""`` at its end).

        Waits for readability first unless the last read filled the buffer
        (then more is likely waiting).
        """
        fd = self._fd
        await _ready_to_read(fd, self._read_hint)
        self._read_hint = False
        while True:
            _check_open(self.closed)
            try:
                data = os.read(fd, self.receive_size)
            except BlockingIOError:
                await trio.lowlevel.wait_readable(fd)
                continue
            self._read_hint = len(data) == self.receive_size
            return data

    async def write(self, data: bytes) -> None:
        """Write all of ``data``; a write that completes needs no trip through the scheduler."""
        fd = self._fd
        view = memoryview(data)
        while True:
            try:
                sent = os.write(fd, view)
            except BlockingIOError:
                await trio.lowlevel.wait_writable(fd)
                continue
            if sent == len(view):
                return
            view = view[sent:]
            await trio.lowlevel.wait_writable(fd)

    def try_write(self, data: bytes) -> int:
        """Write what the socket takes now, without waiting; how much it took.

        An error writes nothing: the writer meets it again and reports it.
        """
        try:
            return os.write(self._fd, data)
        except OSError:  # BlockingIOError included
            return 0


class TLSSocketIO:
    """Direct reads and writes of one socket's fd, through a TLS session.

    Takes over the ``ssl.SSLObject`` and memory BIOs of a ``trio.SSLStream``
    whose handshake is done (the stream is not used for I/O afterwards):
    ciphertext read from the fd goes into the incoming BIO and plaintext comes
    out of ``SSLObject.read``; plaintext written goes through
    ``SSLObject.write`` and the outgoing BIO into :attr:`_pending`, which is
    written to the fd in order. Whatever the socket does not take at once
    stays there (:attr:`backlog`) for the next :meth:`write`. A TLS error
    raises ``ssl.SSLError`` (an ``OSError``); the peer's close_notify or the
    socket's end reads as ``b""``.
    """

    __slots__ = ("_fd", "_in", "_obj", "_out", "_pending", "_read_hint", "closed", "receive_size")

    def __init__(self, fd: int, stream: Any, receive_size: int) -> None:
        self._fd = fd
        self._obj: ssl.SSLObject = stream._ssl_object
        self._in: ssl.MemoryBIO = stream._incoming
        self._out: ssl.MemoryBIO = stream._outgoing
        # ciphertext for the fd, oldest first: a TLS 1.3 server's session tickets,
        # which trio holds back until the first write, come first
        self._pending = bytearray(stream._delayed_outgoing or b"")
        stream._delayed_outgoing = None
        self._pending += self._out.read()
        self._read_hint = False
        self.receive_size = receive_size
        self.closed = False

    @property
    def backlog(self) -> int:
        """Bytes of ciphertext waiting for the fd (the writer sends them)."""
        return len(self._pending)

    def _decrypt(self) -> bytes | None:
        """The plaintext the session can give now (``b""``: none; None: it ended)."""
        obj = self._obj
        chunks = []
        ended = False
        while True:
            try:
                chunk = obj.read(self.receive_size)
            except ssl.SSLWantReadError:
                break
            except ssl.SSLZeroReturnError:  # close_notify
                ended = True
                break
            if not chunk:
                ended = True
                break
            chunks.append(chunk)
        if self._out.pending:  # a reply the session made while reading (a key update)
            self._pending += self._out.read()
        if chunks:
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)
        return None if ended else b""

    async def read(self) -> bytes:
        """The next plaintext from the session (``b""`` at its end)."""
        fd = self._fd
        await _ready_to_read(fd, self._read_hint or self._in.pending or self._obj.pending())
        self._read_hint = False
        while True:
            _check_open(self.closed)
            plain = self._decrypt()
            if plain is None:
                return b""
            if plain:
                return plain
            try:
                data = os.read(fd, self.receive_size)
            except BlockingIOError:
                await trio.lowlevel.wait_readable(fd)
                continue
            if not data:
                self._in.write_eof()
                return self._decrypt() or b""  # a ragged end raises SSLEOFError
            self._read_hint = len(data) == self.receive_size
            self._in.write(data)

    def _encrypt(self, data: bytes) -> None:
        if data:
            self._obj.write(data)
        if self._out.pending:
            self._pending += self._out.read()

    async def write(self, data: bytes) -> None:
        """Write all of ``data`` (and any ciphertext still pending) to the fd."""
        self._encrypt(data)
        fd = self._fd
        pending = self._pending
        while pending:
            try:
                sent = os.write(fd, pending)
            except BlockingIOError:
                await trio.lowlevel.wait_writable(fd)
                continue
            del pending[:sent]
            if pending:
                await trio.lowlevel.wait_writable(fd)

    def try_write(self, data: bytes) -> int:
        """Take all of ``data``; write what the socket takes now (the rest is :attr:`backlog`).

        A TLS error takes nothing: the writer meets it again and reports it.
        """
        try:
            self._encrypt(data)
        except ssl.SSLError:
            return 0
        pending = self._pending
        if pending:
            try:
                sent = os.write(self._fd, pending)
            except OSError:  # BlockingIOError included
                sent = 0
            del pending[:sent]
        return len(data)
