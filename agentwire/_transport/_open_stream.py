"""The transport's state of one open HTTP/2 stream, and the wake-up its tasks wait on."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any

import trio
from grpclib.exceptions import GRPCError

from ._framing import MessageDecoder
from ._protocol import Headers

#: takes one received uncompressed message in the reader task: (payload, alone), where
#: ``alone`` says it is the only message of its socket read; False: queue it instead
MessageHandler = Callable[[bytes, bool], bool]


class WakeUp:
    """Wakes the one task waiting on it (a tiny, cheaper ``trio.Event`` that re-arms itself)."""

    __slots__ = ("task",)

    def __init__(self) -> None:
        #: the task waiting, until someone wakes it (read it, never set it)
        self.task: trio.lowlevel.Task | None = None

    async def wait(self) -> None:
        if self.task is not None:
            raise trio.BusyResourceError("another task is already waiting here")
        self.task = trio.lowlevel.current_task()

        def abort(_: Any) -> trio.lowlevel.Abort:
            self.task = None
            return trio.lowlevel.Abort.SUCCEEDED

        await trio.lowlevel.wait_task_rescheduled(abort)

    def set(self) -> None:
        task = self.task
        if task is not None:
            self.task = None
            trio.lowlevel.reschedule(task)


class OpenStream:
    """Transport state of one HTTP/2 stream (client or server side), until its owner releases it."""

    __slots__ = (
        "bulk_tag",
        "decoder",
        "error",
        "handler",
        "headers",
        "headers_sent",
        "id",
        "local_closed",
        "messages",
        "owed",
        "partial",
        "queued",
        "recv_wakeup",
        "remote_closed",
        "reset",
        "send_wakeup",
        "trailers",
        "urgent",
        "urgent_hook",
    )

    def __init__(self, stream_id: int, max_message_size: int) -> None:
        self.id = stream_id
        # complete messages not taken yet: (payload, compressed flag); with a
        # ``bulk_tag``, ``urgent`` holds the queued messages that are not bulk
        # (taken first) and ``messages`` the bulk ones
        self.messages: deque[tuple[bytes, bool]] = deque()
        self.urgent: deque[tuple[bytes, bool]] = deque()
        self.queued = 0  # framed bytes in ``messages`` and ``urgent``
        self.owed = 0  # received bytes not acknowledged because the queue was full
        self.decoder: MessageDecoder | None = MessageDecoder(max_message_size)
        self.remote_closed = False
        self.local_closed = False
        self.reset = False
        self.headers_sent = False
        self.partial = False  # some but not all frames of a message handed to h2
        self.error: GRPCError | None = None
        self.handler: MessageHandler | None = None
        #: called (in the reader task) when a read queued urgent messages
        self.urgent_hook: Callable[[], object] | None = None
        #: the first payload byte of this stream's *bulk* messages, or -1 for none:
        #: see ``Http2Connection.set_bulk_tag``
        self.bulk_tag = -1
        self.headers: Headers | None = None
        self.trailers: Headers | None = None
        self.recv_wakeup = WakeUp()
        self.send_wakeup = WakeUp()

    @property
    def closed(self) -> bool:
        return self.reset or (self.local_closed and self.remote_closed)

    @property
    def buffered(self) -> int:
        """Complete messages received and not taken yet."""
        return len(self.messages) + len(self.urgent)

    def is_bulk(self, payload: bytes | bytearray | memoryview, compressed: bool) -> bool:
        """Whether a message of this stream is bulk (see ``bulk_tag``)."""
        return not compressed and len(payload) > 0 and payload[0] == self.bulk_tag

    def wake(self) -> None:
        self.recv_wakeup.set()
        self.send_wakeup.set()
