"""One attached stream as the hub sees it: the :class:`Connection` handed to
whoever pumps the stream, the hub's private ``_Link`` behind it, and the
outbound channel a pump reads. The rules they keep (H1-H5, direct writes) are
written at the top of ``_hub.py``, whose :class:`~._hub.GatewayHub` drives them."""

from __future__ import annotations

import collections
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Protocol

import attrs
import trio
from grpclib.const import Status

from .._budget import CheckpointBudget
from ._config import QueueStatistics
from ._queue import ClientQueue, Lane, Waiter
from ._routing import Conn, ConnKind

if TYPE_CHECKING:
    from ._hub import GatewayHub

__all__ = ["Connection", "DirectSend", "UrgentSource"]


class DirectSend(Protocol):
    """A stream's non-blocking send: True if it took the message (in order)."""

    def __call__(self, message: bytes, *, flush: bool = True) -> bool: ...


class UrgentSource(Protocol):
    """A stream's RPC traffic, taken past the events queued before it."""

    def receive_urgent_nowait(self) -> bytes | None: ...

    def on_urgent(self, hook: Callable[[], object] | None) -> None: ...


class _Outbound(trio.abc.ReceiveChannel[bytes]):
    """The gateway-to-client side of a connection: takes from the link's queue,
    RPC lane first (Q5), and wakes the sender whose item took the freed slot."""

    def __init__(self, hub: GatewayHub, link: _Link) -> None:
        self._hub = hub
        self._link = link
        # A full scheduler pass per message taken would make a busy connection's
        # pump move one message per pass (and its writer one socket write per
        # message): yield every few takes, as the transport's sends do.
        self._budget = CheckpointBudget()

    async def receive(self) -> bytes:
        link = self._link
        await trio.lowlevel.checkpoint_if_cancelled()
        while True:
            if link.discard:
                raise trio.EndOfChannel
            item = link.queue.take()
            if item is not None:
                break
            if link.closed:
                raise trio.EndOfChannel
            link.readable = trio.Event()
            await link.readable.wait()
        data, lane, answer, placed = item
        link.took(lane, placed)
        if self._budget.spend():
            await trio.lowlevel.cancel_shielded_checkpoint()
        if answer:
            self._hub._table.answer_consumed(link.conn)
        return data

    def receive_nowait(self) -> bytes:
        """The next queued message without waiting; ``trio.WouldBlock`` if none
        (``EndOfChannel`` once the connection ended and nothing is left)."""
        link = self._link
        if link.discard:
            raise trio.EndOfChannel
        item = link.queue.take()
        if item is None:
            if link.closed:
                raise trio.EndOfChannel
            raise trio.WouldBlock
        data, lane, answer, placed = item
        link.took(lane, placed)
        if answer:
            self._hub._table.answer_consumed(link.conn)
        return data

    def statistics(self) -> QueueStatistics:
        queue = self._link.queue
        return QueueStatistics(
            current_buffer_used=len(queue),
            senders_waiting=sum(queue.waiting(lane) for lane in Lane),
        )

    async def aclose(self) -> None:
        self._link.discard = True
        await trio.lowlevel.checkpoint()


@attrs.define(eq=False)
class _Link:
    conn: Conn
    in_send: trio.MemorySendChannel[bytes]
    in_recv: trio.MemoryReceiveChannel[bytes]
    queue: ClientQueue
    scope: trio.CancelScope = attrs.Factory(trio.CancelScope)
    ended: trio.Event = attrs.Factory(trio.Event)
    readable: trio.Event | None = None  # the pump waits for an item (set: wake it)
    closed: bool = False
    discard: bool = False  # drop what is still queued (slow or superseded client)
    close_reason: tuple[Status, str] | None = None
    direct: DirectSend | None = None  # see "Direct writes" above
    urgent: UrgentSource | None = None  # see H6
    # per lane, queued and not yet reported sent by the pump (H5)
    unsent: list[int] = attrs.Factory(lambda: [0, 0])
    # With direct writes, the lanes of what the pump took and has not yet reported
    # sent, in the order taken (a pump may take a batch before it sends any of it).
    taken: collections.deque[Lane] = attrs.Factory(collections.deque)

    def took(self, lane: Lane, placed: Sequence[Waiter]) -> None:
        """The pump took an item of *lane* from the queue, and that take moved
        the *placed* waiters' items in: count them and wake their senders, in
        the same step as the take (H3)."""
        if self.direct is not None:
            self.taken.append(lane)
        if placed:
            self.unsent[lane] += len(placed)
            for waiter in placed:
                waiter.wakeup()

    def queued(self, lane: Lane) -> None:
        """One item went into *lane*: count it, wake the pump."""
        self.unsent[lane] += 1
        readable = self.readable
        if readable is not None:
            self.readable = None
            readable.set()


@attrs.define(eq=False)
class Connection:
    """One attached stream, as seen by whoever pumps it.

    Send serialized ``agents.Message`` (``ControlMessage`` for a control
    connection) into ``to_gateway``; close it to leave (like a half-close).
    (:meth:`send` and :meth:`leave` do the same without the hop through the
    routing task.)
    Read what the gateway sends from ``from_gateway``; it ends
    (``EndOfChannel``) when the gateway ends the connection, and then
    ``close_reason`` tells why (None: normal end). Once the gateway ended the
    connection, sending raises ``trio.BrokenResourceError``.
    """

    client_id: str
    kind: ConnKind
    to_gateway: trio.MemorySendChannel[bytes]
    from_gateway: _Outbound
    _link: _Link
    _hub: GatewayHub

    @property
    def close_reason(self) -> tuple[Status, str] | None:
        return self._link.close_reason

    @property
    def discarded(self) -> bool:
        """Whether the gateway dropped what was still queued (slow or superseded)."""
        return self._link.discard

    def try_send(self, data: bytes, *, more: bool = False) -> bool:
        """Route one message now if no step can wait; else route nothing and
        return False (use :meth:`send`). Never blocks; see H4 above. False too
        once the connection ended."""
        link = self._link
        if link.closed or self._hub._full.count:
            return False
        self._hub._carry_out_now(self._hub._receive(link, data), not more)
        return True

    async def send(self, data: bytes, *, more: bool = False) -> None:
        """Route one message in the calling task (no hand-off to the routing
        task; what the network pump uses). Waits while a recipient's lane is
        full. Raises ``trio.BrokenResourceError`` once the connection ended.
        Do not mix with ``to_gateway`` on one connection (ordering).
        ``more``: the caller has more messages to route at once, so direct
        writes are left to the recipients' writers to batch."""
        await self._hub._handle(self._link, data, flush=not more)

    def enable_direct(self, send: DirectSend) -> None:
        """Let routing tasks write messages for this connection with ``send``
        (the transport's non-blocking send) when nothing is queued for it. The
        caller then reports each message it took from ``from_gateway`` with
        :meth:`message_sent` once it has sent it."""
        self._link.direct = send

    def enable_overtaking(self, source: UrgentSource) -> None:
        """While :meth:`send` waits for room for an event, route the RPC
        traffic *source* (this stream) receives meanwhile (H6)."""
        self._link.urgent = source

    def message_sent(self) -> None:
        """One message taken from ``from_gateway`` is sent (see :meth:`enable_direct`)."""
        link = self._link
        if link.taken:
            link.unsent[link.taken.popleft()] -= 1

    def leave(self) -> None:
        """The client is leaving (a half-close): end the connection normally;
        what is queued for it can still be read."""
        self._hub._close(self._link, None)

    def abort(self, status: Status, message: str) -> None:
        """End the connection now with *status*, dropping what is still queued for it."""
        self._hub._close(self._link, (status, message), discard=True)

    async def wait_ended(self) -> None:
        """Wait until the gateway has ended this connection (for any reason)."""
        await self._link.ended.wait()
