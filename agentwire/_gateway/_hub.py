"""The gateway's I/O-free-but-async layer: one pair of bounded trio memory
channels per connected stream, a routing task per stream, and a timer for RPC
deadlines. It knows nothing about sockets: ``_service.py`` pumps bytes between
a gRPC stream and a :class:`Connection`; tests use the channels directly.

Invariants:

* Every live :class:`~._routing.Conn` in the router has exactly one ``_Link``
  here and vice versa (a link is closed in the same synchronous step in which
  the router forgets its connection).
* A link's outbound queue holds at most ``queue_size`` *traffic* items
  (forwarded requests, events, control messages, error answers to a client's
  own bad requests) and at most ``max_in_flight`` *answers* (responses
  settling its pending requests). Traffic waits for one of ``queue_size``
  tokens; answers never wait, since the router admits no more requests than
  there is answer space (its invariant I6). So memory per client is bounded,
  and nothing that settles an RPC ever blocks on a slow client.

Direct writes: the pump of a stream may register its transport's
non-blocking send (:meth:`Connection.enable_direct`). A message for that
stream is then written straight into it by the routing task -- no hop
through the pump task -- when nothing is queued for the stream or being sent
by its pump (``_Link.unsent == 0``, which keeps the order) and the transport
can take it without waiting; otherwise it is queued as above. A directly
written message takes no token and no answer space: the transport bounds
what it buffers.

Routing in the reader: :meth:`Connection.try_send` routes a message without
waiting or declines it (then the pump routes it with :meth:`Connection.send`,
which may wait). It routes only while no link holds all its ``queue_size``
tokens (``GatewayHub._full_links == 0``): a message yields at most one
traffic item per link (events go once to each subscribed connection), so
then no step can need to wait. The network pump uses it from the
transport's reader task for a message that arrived alone (a request/response
pattern), saving the wake-up of the pump.

Backpressure: a routing task that forwards to a full queue waits, which stops
it reading its own client's stream (HTTP/2 flow control then slows that
client down). If the wait exceeds ``send_timeout`` the *slow* client is
disconnected (its stream ends with UNAVAILABLE) rather than the sender: a
worker that stops reading cannot stall the others for longer than that.
"""

from __future__ import annotations

import logging
import math
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any, Protocol

import attrs
import trio
from grpclib.const import Status

from .._proto import agent_worker_pb2 as pb
from ._routing import (
    Action,
    Close,
    Conn,
    ConnKind,
    Deliver,
    Router,
    RouterStatistics,
    RoutingError,
)

__all__ = ["Connection", "GatewayConfig", "GatewayHub", "GatewayStatistics", "open_hub"]

logger = logging.getLogger("agentwire.gateway")


def _positive(_: object, attribute: attrs.Attribute[Any], value: float | None) -> None:
    if value is not None and not value > 0:
        raise ValueError(f"{attribute.name} must be positive, got {value!r}")


@attrs.frozen(slots=True)
class GatewayConfig:
    """Tuning knobs of a gateway.

    * ``rpc_timeout``: seconds a forwarded RPC may stay unanswered before the
      caller gets an error response (None: never; AutoGen never times out).
      A caller's shorter ``agentwire-timeout`` request metadata wins.
    * ``queue_size``: forwarded messages queued per client before senders wait.
    * ``max_in_flight``: unanswered requests per client; more are refused with
      an error response at once.
    * ``send_timeout``: how long a sender waits for a full client queue before
      that (slow) client is disconnected.
    """

    rpc_timeout: float | None = attrs.field(default=300.0, validator=_positive)
    queue_size: int = attrs.field(default=100, validator=attrs.validators.ge(1))
    max_in_flight: int = attrs.field(default=1000, validator=attrs.validators.ge(1))
    send_timeout: float = attrs.field(default=30.0, validator=_positive)


@attrs.frozen(slots=True)
class GatewayStatistics(RouterStatistics):
    """A snapshot of a gateway's state and counters: the router's, and the I/O layer's."""

    slow_disconnects: int
    queued_messages: int  # over all clients' outbound queues

    @classmethod
    def _of(cls, router: RouterStatistics, slow: int, queued: int) -> GatewayStatistics:
        return cls(
            **attrs.asdict(router, recurse=False), slow_disconnects=slow, queued_messages=queued
        )


class DirectSend(Protocol):
    """A stream's non-blocking send: True if it took the message (in order)."""

    def __call__(self, message: bytes, *, flush: bool = True) -> bool: ...


class _Outbound(trio.abc.ReceiveChannel[bytes]):
    """The gateway-to-client side of a connection; gives tokens back as items leave."""

    def __init__(self, hub: GatewayHub, link: _Link) -> None:
        self._hub = hub
        self._link = link

    async def receive(self) -> bytes:
        link = self._link
        if link.discard:
            await trio.lowlevel.checkpoint()
            raise trio.EndOfChannel
        data, answer = await link.out_recv.receive()
        if answer:
            self._hub._router.answer_consumed(link.conn)
        elif not link.closed:  # (closing closes tokens_recv: nothing to give back)
            link.tokens_recv.receive_nowait()
            self._hub._token_returned(link)
        return data

    def statistics(self) -> trio.MemoryChannelStatistics:
        return self._link.out_recv.statistics()

    async def aclose(self) -> None:
        await self._link.out_recv.aclose()


@attrs.define(eq=False)
class _Link:
    conn: Conn
    in_send: trio.MemorySendChannel[bytes]
    in_recv: trio.MemoryReceiveChannel[bytes]
    out_send: trio.MemorySendChannel[tuple[bytes, bool]]
    out_recv: trio.MemoryReceiveChannel[tuple[bytes, bool]]
    tokens_send: trio.MemorySendChannel[None]
    tokens_recv: trio.MemoryReceiveChannel[None]
    scope: trio.CancelScope = attrs.Factory(trio.CancelScope)
    ended: trio.Event = attrs.Factory(trio.Event)
    closed: bool = False
    discard: bool = False  # drop what is still queued (slow or superseded client)
    close_reason: tuple[Status, str] | None = None
    direct: DirectSend | None = None  # see "Direct writes" above
    unsent: int = 0  # queued on out_send and not yet reported sent by the pump
    tokens_held: int = 0  # traffic items queued (tokens taken, not yet given back)


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
    from_gateway: trio.abc.ReceiveChannel[bytes]
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
        return False (use :meth:`send`). Never blocks; see "Routing in the
        reader" above. False too once the connection ended."""
        return self._hub._try_handle(self._link, data, not more)

    async def send(self, data: bytes, *, more: bool = False) -> None:
        """Route one message in the calling task (no hand-off to the routing
        task; what the network pump uses). Waits while a recipient's queue is
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

    def message_sent(self) -> None:
        """One message taken from ``from_gateway`` is sent (see :meth:`enable_direct`)."""
        self._link.unsent -= 1

    def leave(self) -> None:
        """The client is leaving (a half-close): end the connection normally;
        what is queued for it can still be read."""
        self._hub._close(self._link, None)

    async def wait_ended(self) -> None:
        """Wait until the gateway has ended this connection (for any reason)."""
        await self._link.ended.wait()


class GatewayHub:
    """Routes between attached connections. Create with :func:`open_hub`."""

    def __init__(self, config: GatewayConfig) -> None:
        self.config = config
        self._router = Router(rpc_timeout=config.rpc_timeout, max_in_flight=config.max_in_flight)
        self._links: dict[Conn, _Link] = {}
        self._wakeup = trio.Event()
        self._timer_target = math.inf
        self._slow_disconnects = 0
        self._closing = False
        self._changed = trio.lowlevel.ParkingLot()
        self._full_links = 0  # links holding all their tokens (see _try_handle)

    # ------------------------------------------------------------ unary calls

    def register_agent(self, client_id: str, agent_type: str) -> None:
        """RegisterAgent; raises RoutingError (status and message for the peer)."""
        self._router.register_agent(client_id, agent_type)
        self._changed.unpark_all()

    def add_subscription(self, client_id: str, subscription: pb.Subscription) -> None:
        self._router.add_subscription(client_id, subscription)
        self._changed.unpark_all()

    def remove_subscription(self, client_id: str, subscription_id: str) -> None:
        self._router.remove_subscription(client_id, subscription_id)
        self._changed.unpark_all()

    def subscriptions(self) -> list[pb.Subscription]:
        return self._router.subscriptions()

    # ------------------------------------------------------------ connections

    @asynccontextmanager
    async def connect(
        self, client_id: str, kind: ConnKind = ConnKind.DATA
    ) -> AsyncIterator[Connection]:
        """Attach a stream of *client_id* for the duration of the block.

        A newer stream of the same kind and client-id supersedes an older one:
        the older one is ended (ABORTED) and its agent types, subscriptions and
        RPCs are cleaned up first. Raises RoutingError(UNAVAILABLE) while the
        gateway shuts down. Leaving the block detaches the stream.
        """
        if self._closing:
            raise RoutingError(Status.UNAVAILABLE, "agentwire gateway: shutting down")
        old = self._router.connection_of(client_id, kind)
        if old is not None:
            self._close(
                self._links[old],
                (Status.ABORTED, "superseded by a newer stream with the same client-id"),
                discard=True,
            )
        conn = self._router.connect(client_id, kind)
        size = self.config.queue_size
        in_send, in_recv = trio.open_memory_channel[bytes](size)
        answers = self.config.max_in_flight if kind is ConnKind.DATA else 0
        out_send, out_recv = trio.open_memory_channel[tuple[bytes, bool]](size + answers)
        tokens_send, tokens_recv = trio.open_memory_channel[None](size)
        link = _Link(conn, in_send, in_recv, out_send, out_recv, tokens_send, tokens_recv)
        self._links[conn] = link
        connection = Connection(client_id, kind, in_send, _Outbound(self, link), link, self)
        self._changed.unpark_all()
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._route, link)
                yield connection
                link.scope.cancel()
        finally:
            self._close(link, None)

    async def _route(self, link: _Link) -> None:
        """Read *link*'s inbound messages and carry out what the router says."""
        with link.scope:
            async for data in link.in_recv:
                await self._handle(link, data)
            # The client closed its side: it is leaving.
            self._close(link, None)

    async def _handle(self, link: _Link, data: bytes, flush: bool = True) -> None:
        """Route one inbound message of *link* and carry out the result."""
        if link.closed:
            raise trio.BrokenResourceError("the gateway ended this connection")
        conn = link.conn
        if conn.kind is ConnKind.DATA:
            actions = self._router.receive(conn, data, trio.current_time())
        else:
            actions = self._router.receive_control(conn, data)
        for action in actions:
            await self._carry_out(action, flush)
        self._wake_timer()
        self._changed.unpark_all()

    def _try_handle(self, link: _Link, data: bytes, flush: bool) -> bool:
        """Route one inbound message of *link* if that cannot wait (see "Routing
        in the reader"); False: nothing done."""
        if link.closed or self._full_links:
            return False
        conn = link.conn
        if conn.kind is ConnKind.DATA:
            actions = self._router.receive(conn, data, trio.current_time())
        else:
            actions = self._router.receive_control(conn, data)
        for action in actions:
            if isinstance(action, Close):
                target = self._links.get(action.conn)
                if target is not None:
                    self._close(target, (action.status, action.message))
            elif action.answer:
                self._deliver_now(action, flush)
            else:
                self._deliver_traffic_now(action, flush)
        self._wake_timer()
        self._changed.unpark_all()
        return True

    def _deliver_traffic_now(self, action: Deliver, flush: bool) -> None:
        link = self._links.get(action.conn)
        if link is None or link.closed:
            return
        direct = link.direct
        if direct is not None and not link.unsent and direct(action.data, flush=flush):
            return
        try:
            link.tokens_send.send_nowait(None)
        except trio.WouldBlock:  # pragma: no cover - _full_links was 0: a broken invariant
            logger.error("no queue space for %s while routing without waiting", link.conn)
            self._close(link, (Status.INTERNAL, "agentwire gateway: queue overflow"))
            return
        self._token_taken(link)
        link.out_send.send_nowait((action.data, False))
        link.unsent += 1

    def _token_taken(self, link: _Link) -> None:
        if link.closed:
            return
        link.tokens_held += 1
        if link.tokens_held == self.config.queue_size:
            self._full_links += 1

    def _token_returned(self, link: _Link) -> None:
        if link.tokens_held == self.config.queue_size:
            self._full_links -= 1
        link.tokens_held -= 1

    async def _carry_out(self, action: Action, flush: bool = True) -> None:
        if isinstance(action, Close):
            link = self._links.get(action.conn)
            if link is not None:
                self._close(link, (action.status, action.message))
            return
        if action.answer:
            self._deliver_now(action, flush)
            return
        link = self._links.get(action.conn)
        if link is None or link.closed:
            return
        direct = link.direct
        if direct is not None and not link.unsent and direct(action.data, flush=flush):
            return
        try:
            link.tokens_send.send_nowait(None)
        except trio.WouldBlock:
            pass
        else:
            self._token_taken(link)
            link.out_send.send_nowait((action.data, False))
            link.unsent += 1
            return
        try:
            with trio.move_on_after(self.config.send_timeout) as scope:
                await link.tokens_send.send(None)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return  # the target went away while we waited; the router cleaned up
        if scope.cancelled_caught:
            self._slow_disconnects += 1
            self._close(
                link,
                (
                    Status.UNAVAILABLE,
                    f"agentwire gateway: this client did not read its stream for "
                    f"{self.config.send_timeout:g} s (slow consumer); disconnected",
                ),
                discard=True,
            )
            return
        if link.closed:  # ended while this task was being woken
            return
        self._token_taken(link)
        link.out_send.send_nowait((action.data, False))
        link.unsent += 1

    def _deliver_now(self, action: Deliver, flush: bool = True) -> None:
        """Deliver an answer; never waits (space is reserved, see the router's I6)."""
        link = self._links.get(action.conn)
        if link is None or link.closed:
            return
        direct = link.direct
        if direct is not None and not link.unsent and direct(action.data, flush=flush):
            self._router.answer_consumed(link.conn)
            return
        try:
            link.out_send.send_nowait((action.data, True))
            link.unsent += 1
        except trio.WouldBlock:  # pragma: no cover - would be a broken invariant
            logger.error("answer queue of %s overflowed; disconnecting it", link.conn)
            self._close(link, (Status.INTERNAL, "agentwire gateway: answer queue overflow"))

    def _carry_out_now(self, actions: Sequence[Action]) -> None:
        for action in actions:
            assert isinstance(action, Deliver), action
            assert action.answer, action
            self._deliver_now(action)

    def _close(
        self, link: _Link, reason: tuple[Status, str] | None, *, discard: bool = False
    ) -> None:
        """End *link*: the router forgets it (answering stranded callers), its
        routing task stops, and its reader sees the end once the queue drains
        (at once with *discard*)."""
        if link.closed:
            return
        link.closed = True
        link.close_reason = reason
        link.discard = discard
        if link.tokens_held >= self.config.queue_size:
            self._full_links -= 1
        link.tokens_held = 0
        del self._links[link.conn]
        self._carry_out_now(self._router.disconnect(link.conn))
        link.scope.cancel()
        link.out_send.close()
        link.tokens_recv.close()
        link.in_recv.close()
        link.ended.set()
        self._changed.unpark_all()
        if reason is not None:
            logger.info("ended %s: %s %s", link.conn, reason[0].name, reason[1])

    # ------------------------------------------------------------ deadlines

    def _wake_timer(self) -> None:
        deadline = self._router.next_deadline()
        if deadline is not None and deadline < self._timer_target:
            self._wakeup.set()

    async def _run_timer(self) -> None:
        while True:
            deadline = self._router.next_deadline()
            self._timer_target = math.inf if deadline is None else deadline
            with trio.move_on_at(self._timer_target):
                await self._wakeup.wait()
            self._wakeup = trio.Event()
            self._carry_out_now(self._router.expire(trio.current_time()))

    # ------------------------------------------------------------ shutdown

    def begin_shutdown(self, reason: str = "agentwire gateway: shutting down") -> None:
        """Refuse new streams, answer every pending RPC with an error and end
        every stream with UNAVAILABLE once its queue has drained."""
        if self._closing:
            return
        self._closing = True
        self._carry_out_now(self._router.shutdown())
        for link in list(self._links.values()):
            self._close(link, (Status.UNAVAILABLE, reason))

    async def wait_until(self, predicate: Callable[[GatewayStatistics], bool]) -> None:
        """Wait until ``predicate(self.statistics())`` holds (for tests and tooling).

        Re-checked whenever connections, registrations or subscriptions change
        and after every routed message.
        """
        while not predicate(self.statistics()):
            await self._changed.park()

    def statistics(self) -> GatewayStatistics:
        links = self._links.values()
        queued = sum(link.out_recv.statistics().current_buffer_used for link in links)
        return GatewayStatistics._of(self._router.statistics(), self._slow_disconnects, queued)

    def check_invariants(self) -> None:
        """Assert the router's invariants and the link bookkeeping (tests)."""
        self._router.check_invariants()
        assert set(self._links) == set(self._router._conns)


@asynccontextmanager
async def open_hub(config: GatewayConfig | None = None) -> AsyncIterator[GatewayHub]:
    """Run a gateway hub (the routing without the network) for the block.

    Leaving the block answers every pending RPC with an error and ends every
    attached connection (UNAVAILABLE).
    """
    hub = GatewayHub(config or GatewayConfig())
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(hub._run_timer)
            try:
                yield hub
            finally:
                hub.begin_shutdown()
                nursery.cancel_scope.cancel()
    finally:
        hub.begin_shutdown()
