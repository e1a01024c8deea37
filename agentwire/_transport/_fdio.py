"""Fast paths around trio's socket streams: the socket's fd, and trio's run queue.

A plain TCP ``trio.SocketStream`` is read and written with ``os.read`` /
``os.write`` on its fd (waiting with trio's public ``wait_readable`` /
``wait_writable``), which saves a scheduler trip per completed operation;
:func:`runnable` reads the length of trio's run queue directly
(``trio.lowlevel.current_statistics()`` answers it too, at several times the
cost). Checked against trio :data:`CHECKED_VERSION`; :func:`supported` is
false for any other minor series and the connection uses the stream's own
``send_all`` / ``receive_some`` (see ``_fastpath``).
"""

from __future__ import annotations

import os
import sys

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


class SocketIO:
    """Direct reads and writes of one socket's fd."""

    __slots__ = ("_fd", "_read_hint", "closed", "receive_size")

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
        if self._read_hint:
            self._read_hint = False
            await trio.lowlevel.checkpoint()
        else:
            await trio.lowlevel.wait_readable(fd)
        while True:
            if self.closed:
                raise trio.ClosedResourceError("the connection is closed")
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
