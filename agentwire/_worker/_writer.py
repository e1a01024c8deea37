"""The writing side of a worker session: its two-lane outbox and the task that writes it.

A :class:`Writer` is the I/O shell around the sans-IO
:class:`~._outbox.Outbox`: producers (RPCs, responses, publishes) queue
envelopes in their lane, waiting for room; :meth:`Writer.run` writes them to
the stream in the outbox's order (RPC first, events never starved).

Invariants:

* Each lane holds at most its capacity; a producer facing a full lane waits
  (behind those already waiting), and a cancelled wait queues nothing.
* Within a lane, envelopes are written in the order they were queued. When
  nothing of its lane is queued or being written (``_unsent[lane] == 0``) an
  envelope may be handed to the stream directly by the task producing it (the
  transport's non-blocking ``try_send``), saving the hop through the writer;
  if that cannot be done without waiting, it is queued as usual. So within a
  lane the order is the order of the calls either way.
* RPC traffic overtakes events past the outbox too: :meth:`Writer.run` marks
  events as the stream's bulk messages (the transport's ``set_bulk_tag``), so
  a stream full of events still takes an RPC message at once, and the
  gateway reads it before the events it has queued.
* If a write fails, or the writer ends, the envelope being written and every
  one still queued (both lanes) fail their waiters with the session's
  :class:`~agentwire.ConnectionLostError`; nothing is written after a failed
  write, nothing is dropped silently.
"""

from __future__ import annotations

from collections.abc import Callable

import attrs
import trio

from .._budget import CheckpointBudget
from .._errors import ConnectionLostError
from .._wire import CLOUD_EVENT_TAG
from ._outbox import Lane, Outbox
from ._protocol import ClientStreamLike, DirectSend, Slot

__all__ = ["Outgoing", "Writer"]


@attrs.define(slots=True)
class Outgoing:
    """One envelope to write; ``ack`` (if any) is settled when it is written or fails."""

    data: bytes
    ack: Slot | None


class Writer:
    """The outbox of one session and its writing task (see the module's invariants)."""

    def __init__(
        self,
        capacity: int,
        *,
        lost_error: Callable[[], ConnectionLostError],
        mark_lost: Callable[[str], None],
    ) -> None:
        self.outbox: Outbox[Outgoing] = Outbox(capacity)
        #: the session was lost (see :meth:`session_lost`): nothing more is queued or sent
        self.lost = False
        self._lost_error = lost_error
        self._mark_lost = mark_lost
        # producers waiting for room, per lane; the writer waiting for work
        self._space = (trio.lowlevel.ParkingLot(), trio.lowlevel.ParkingLot())
        self._work = trio.lowlevel.ParkingLot()
        self._unsent = [0, 0]  # per lane: envelopes queued for (or held by) the writer
        self._budget = CheckpointBudget()
        self.direct: DirectSend | None = None
        """The stream's non-blocking send, if the transport has one."""
        self.messages_sent = 0
        self.batches_written = 0

    def session_lost(self) -> None:
        """The session was lost: producers fail from now on, those waiting for room too.

        (A flag of its own rather than the session's ``trio.Event``: it is read
        several times per message, and ``Event.is_set`` is a call.)
        """
        self.lost = True
        for space in self._space:
            space.unpark_all()

    async def enqueue(self, lane: Lane, item: Outgoing) -> None:
        """Queue one message in *lane*, waiting for room (behind earlier waiters).

        A cancellation before the message is queued queues nothing.
        """
        space = self._space[lane]
        waited = False
        if not space:
            await self._budget.checkpoint()
        while True:
            if self.lost:
                raise self._lost_error()
            if (waited or not space) and self.outbox.push(lane, item):
                break
            await space.park()
            waited = True
        self._unsent[lane] += 1
        self._work.unpark()

    async def try_direct(self, lane: Lane, data: bytes, *, flush: bool = True) -> bool:
        """Write one envelope from the calling task if nothing of its lane is queued.

        True: it is buffered on the stream, after everything of its lane sent
        before it. False: nothing was sent; queue it. A cancellation point
        before anything is sent (when the direct path is available at all).
        ``flush``: the caller is about to wait (an RPC): write the socket now
        if nothing else could join the write; otherwise the connection's
        writer batches it.
        """
        direct = self.direct
        if direct is None or self._unsent[lane] or self.lost:
            return False
        # The budget's checkpoint, inlined: one coroutine less per message.
        if self._budget.spend():
            await trio.lowlevel.checkpoint()
        else:
            await trio.lowlevel.checkpoint_if_cancelled()
        if self._unsent[lane] or self.lost or not direct(data, flush=flush):
            return False
        self.messages_sent += 1
        self.batches_written += 1
        return True

    async def send(self, lane: Lane, data: bytes, *, flush: bool = True) -> None:
        """Send one envelope: directly when its lane is idle, else through :meth:`run`."""
        if not await self.try_direct(lane, data, flush=flush):
            await self.enqueue(lane, Outgoing(data, None))

    async def run(self, stream: ClientStreamLike) -> None:
        """Write queued messages, one at a time in the outbox's order.

        A *batch* is what is written between two waits for work (the
        transport coalesces it into few socket writes). However it ends (write
        failure, cancellation), the message being written and every message
        still queued fail their waiters; none is dropped.
        """
        set_bulk_tag = getattr(stream, "set_bulk_tag", None)
        if set_bulk_tag is not None:
            # Events are the stream's bulk: RPC traffic overtakes them on the
            # wire and at the gateway, as it does in the outbox.
            set_bulk_tag(CLOUD_EVENT_TAG)
        outbox = self.outbox
        held: tuple[Lane, Outgoing] | None = None
        fresh = True
        try:
            while True:
                held = outbox.pop()
                if held is None:
                    fresh = True
                    await self._work.park()
                    continue
                lane, item = held
                self._space[lane].unpark()
                if fresh:
                    fresh = False
                    self.batches_written += 1
                try:
                    await stream.send(item.data)
                except Exception as exc:
                    self._mark_lost(f"write failed: {exc!r}")
                    return
                held = None
                self._unsent[lane] -= 1
                self.messages_sent += 1
                if item.ack is not None:
                    item.ack.set(None)
        finally:
            self._mark_lost("closed")
            outbox.close()
            error = self._lost_error()
            unwritten = [] if held is None else [held]
            unwritten.extend(outbox.drain())
            for lane, item in unwritten:
                self._unsent[lane] -= 1
                if item.ack is not None:
                    item.ack.fail(error)
