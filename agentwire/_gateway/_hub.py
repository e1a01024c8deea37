"""The gateway's I/O layer without sockets: per stream, a bounded inbound
memory channel, a :class:`~._queue.ClientQueue` outbound, a routing task; and
a timer for RPC deadlines. ``_service.py`` pumps bytes between a gRPC stream
and a :class:`Connection`; tests use the channels directly.

Invariants (``GatewayHub.check_invariants``; the queue's own are Q1-Q6 in
``_queue.py``):

H1  Links. Every live :class:`~._routing.Conn` of the routing table has
    exactly one ``_Link`` here and vice versa: a link is closed in the same
    synchronous step in which the table forgets its connection.
H2  Bounded memory. A link's queue holds at most ``queue_size`` traffic items
    per lane (forwarded requests, error answers and control messages in the
    RPC lane; events in the event lane) and at most ``max_in_flight`` answers
    (responses settling its own requests). Traffic waits for a slot; answers
    never wait, since the routing table admits no more requests than there is
    answer space (its I6). Nothing that settles an RPC blocks on a slow client.
H3  Full lanes, exactly. ``_full.count`` is the number of full lanes over all
    open links at every point between two steps, including the step in which
    a reader brings a full lane down to where it reopens and the blocked
    senders take their slots (Q2, Q3): those slots are never seen free by
    anyone but those senders.
H4  Routing without waiting. :meth:`Connection.try_send` routes a message only
    while ``_full.count == 0``. A message yields at most one traffic item per
    lane of any link (an event goes once to each subscribed connection; a
    request, reject or control message to one link), so then every item fits
    (H3), and the route never needs to wait. Else it declines and routes
    nothing; the caller routes with :meth:`Connection.send`, which may wait.
H5  Order. A direct write (below) happens only while nothing of its lane is
    queued for the stream or being sent by its pump (``_Link.unsent[lane] ==
    0``); each lane keeps its order; events may be overtaken by RPC traffic,
    never the reverse for more than ``rpc_burst`` messages (Q5). (An RPC
    message written directly while the pump waits to send an event is one
    such overtaking: the transport lets RPC traffic past a full stream.)
H6  Events do not hold up RPCs. While the task routing a stream's messages
    waits for room for an event, it routes the RPC traffic (requests,
    responses) that stream receives meanwhile, as it arrives (when the pump
    enabled it: :meth:`Connection.enable_overtaking`); such a message may
    itself wait for RPC-lane room, and the event keeps its place: events of
    one stream never overtake each other.

Direct writes: the pump of a stream may register its transport's
non-blocking send (:meth:`Connection.enable_direct`). A message for that
stream is then written straight into it by the routing task -- no hop
through the pump task -- when H5 allows and the transport can take it
without waiting; otherwise it is queued. A directly written message takes no
queue slot and no answer space: the transport bounds what it buffers.

Backpressure: a routing task that forwards to a full lane waits, which stops
it reading its own client's stream (HTTP/2 flow control then slows that
client down). If the wait exceeds ``send_timeout`` the *slow* client is
disconnected (its stream ends with UNAVAILABLE) rather than the sender: a
worker that stops reading cannot stall the others for longer than that. A
full event lane never holds up the RPC lane of the same client.
"""

from __future__ import annotations

import logging
import math
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager

import attrs
import trio
from grpclib.const import Status

from .._proto import agent_worker_pb2 as pb
from .._security._guard import MessagePolicy
from ._config import (
    ClusterMembership,
    GatewayConfig,
    GatewayStatistics,
    StateServiceCounters,
)
from ._link import Connection, _Link, _Outbound
from ._placement import placement_strategy
from ._queue import ClientQueue, FullLanes, Lane, QueueFull, Waiter
from ._routing import (
    Action,
    Close,
    Conn,
    ConnKind,
    Deliver,
    RoutingError,
    RoutingTable,
)

__all__ = ["Connection", "GatewayConfig", "GatewayHub", "GatewayStatistics", "open_hub"]

logger = logging.getLogger("agentwire.gateway")


class GatewayHub:
    """Routes between attached connections. Create with :func:`open_hub`."""

    def __init__(self, config: GatewayConfig) -> None:
        self.config = config
        # A cluster of gateways this one is part of (``agentwire._cluster``), or None.
        self.cluster: ClusterMembership | None = None
        # The gateway-hosted state service (``_state.py``), or None.
        self.state_service: StateServiceCounters | None = None
        self.started_at = trio.current_time()  # the start-up grace counts from here
        # trio.current_time() without its two wrappers (read for every routed message)
        self._current_time = trio.lowlevel.current_clock().current_time
        self._table = RoutingTable(
            rpc_timeout=config.rpc_timeout,
            max_in_flight=config.max_in_flight,
            registration_grace=config.registration_grace,
            max_agent_types=config.max_agent_types_per_client,
            max_subscriptions=config.max_subscriptions_per_client,
            max_message_size=config.max_message_size,
            startup_grace=config.startup_grace,
            max_held=config.max_held,
            start_time=self.started_at,
            placement=None if config.placement is None else placement_strategy(config.placement),
            max_placed_keys=config.max_placed_keys,
        )
        self._release_wanted = trio.Event()
        self._links: dict[Conn, _Link] = {}
        self._wakeup = trio.Event()
        self._timer_target = math.inf
        self._slow_disconnects = 0
        self._closing = False
        self._closing_event = trio.Event()  # set with _closing (wait_closing)
        self._changed = trio.lowlevel.ParkingLot()
        self._watchers = 0  # tasks in wait_until (parked on _changed)
        self._full = FullLanes()  # H3, H4

    # ------------------------------------------------------------ unary calls

    async def register(self, client_id: str, agent_type: str) -> None:
        """RegisterAgent for a client (cluster-wide when the hub is part of a
        cluster); raises RoutingError (status and message for the peer)."""
        if self.cluster is None:
            self.register_agent(client_id, agent_type)
        else:
            await self.cluster.register_agent(client_id, agent_type)

    async def subscribe(
        self, client_id: str, subscription: pb.Subscription, *, relay: bool = False
    ) -> None:
        """AddSubscription for a client (cluster-wide in a cluster); *relay*:
        see ``RoutingTable.add_subscription``."""
        if self.cluster is None:
            self.add_subscription(client_id, subscription, relay=relay)
        else:
            await self.cluster.add_subscription(client_id, subscription, relay)

    async def unsubscribe(self, client_id: str, subscription_id: str) -> None:
        """RemoveSubscription for a client (cluster-wide in a cluster)."""
        if self.cluster is None:
            self.remove_subscription(client_id, subscription_id)
        else:
            await self.cluster.remove_subscription(client_id, subscription_id)

    def register_agent(self, client_id: str, agent_type: str, *, peer: bool = False) -> None:
        """RegisterAgent in this gateway only (see :meth:`register`); raises
        RoutingError (status and message for the peer)."""
        self._table.register_agent(client_id, agent_type, trio.current_time(), peer=peer)
        self._after_change()

    def unregister_agent(self, client_id: str, agent_type: str) -> None:
        """Take *agent_type* from *client_id* (a peer gateway; see the routing table)."""
        self._table.unregister_agent(client_id, agent_type)
        self._after_change()

    def add_subscription(
        self,
        client_id: str,
        subscription: pb.Subscription,
        *,
        relay: bool = False,
        peer: bool = False,
    ) -> None:
        """AddSubscription in this gateway only (see :meth:`subscribe`); *relay*
        and *peer*: see ``RoutingTable.add_subscription``."""
        self._table.add_subscription(
            client_id, subscription, trio.current_time(), relay=relay, peer=peer
        )
        self._after_change()

    def remove_subscription(self, client_id: str, subscription_id: str) -> None:
        """RemoveSubscription in this gateway only (see :meth:`unsubscribe`)."""
        self._table.remove_subscription(client_id, subscription_id)
        self._after_change()

    def set_cluster_note(self, note: str) -> None:
        """Add *note* to the error of a request for an agent type nobody here
        serves (why: e.g. the cluster's Redis is out of reach); "" for none."""
        self._table.cluster_note = note

    def on_records_dropped(self, callback: Callable[[str, list[str], list[str]], None]) -> None:
        """Call ``callback(client_id, agent_types, subscription_ids)`` whenever a
        client's records are dropped because it left or its registration
        expired (not on a RemoveSubscription)."""
        self._table._reg.on_drop = callback

    def drain(self, client_id: str) -> bool:
        """Place no new agents of shared types on *client_id*; it keeps its
        own. False if shared types are off or it serves none."""
        drained = self._table.drain(client_id)
        self._after_change()
        return drained

    def _after_change(self) -> None:
        """After a step that may have changed any deadline or what a held
        message waits for (see :meth:`_after_routing` for routed messages)."""
        self._wake_timer()
        if self._table.holding and self._table.wants_release(trio.current_time()):
            self._release_wanted.set()
        if self._watchers:  # wait_until callers (rare): not woken per message for nothing
            self._changed.unpark_all()

    def _after_routing(self) -> None:
        """After routing messages or dropping a connection: of the deadlines
        only a forwarded request adds one (the table notes it), and a held
        message cannot be deliverable yet (it was just found undeliverable)."""
        if self._table.added_deadline < self._timer_target:
            self._wakeup.set()
        if self._watchers:
            self._changed.unpark_all()

    def subscriptions(self) -> list[pb.Subscription]:
        return self._table.subscriptions()

    def owner_of(self, agent_type: str) -> str | None:
        return self._table.owner_of(agent_type)

    def subscription_owner(self, subscription_id: str) -> str | None:
        return self._table.subscription_owner(subscription_id)

    def has_client(self, client_id: str) -> bool:
        return self._table.has_client(client_id)

    def clients(self) -> list[tuple[str, tuple[str, ...], int, bool]]:
        """``(client_id, agent types, subscription count, data stream open)`` per client."""
        return self._table.clients()

    def peer_gateways(self) -> set[str]:
        """The client-ids that are other gateways of a cluster (their connections here)."""
        return {conn.client_id for conn in self._links if conn.peer}

    def set_message_policy(self, policy: MessagePolicy | None) -> None:
        """Ask *policy* about every RPC and event before routing it (access control)."""
        self._table.policy = policy

    # ------------------------------------------------------------ connections

    @asynccontextmanager
    async def connect(
        self, client_id: str, kind: ConnKind = ConnKind.DATA, *, peer: bool = False
    ) -> AsyncIterator[Connection]:
        """Attach a stream of *client_id* for the duration of the block.

        A newer stream of the same kind and client-id supersedes an older one:
        the older one is ended (ABORTED) and its agent types, subscriptions and
        RPCs are cleaned up first. Raises RoutingError(UNAVAILABLE) while the
        gateway shuts down. Leaving the block detaches the stream. *peer*:
        the stream stands for another gateway of a cluster (routing I9).
        """
        if self._closing:
            raise RoutingError(Status.UNAVAILABLE, "agentwire gateway: shutting down")
        old = self._table.connection_of(client_id, kind)
        if old is not None:
            self._close(
                self._links[old],
                (Status.ABORTED, "superseded by a newer stream with the same client-id"),
                discard=True,
            )
        conn = self._table.connect(client_id, kind, peer=peer)
        config = self.config
        in_send, in_recv = trio.open_memory_channel[bytes](config.queue_size)
        answers = config.max_in_flight if kind is ConnKind.DATA else 0
        queue = ClientQueue(config.queue_size, answers, config.rpc_burst, self._full)
        link = _Link(conn, in_send, in_recv, queue)
        self._links[conn] = link
        connection = Connection(client_id, kind, in_send, _Outbound(self, link), link, self)
        self._after_change()
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._route, link)
                yield connection
                link.scope.cancel()
        finally:
            self._close(link, None)

    async def _route(self, link: _Link) -> None:
        """Read *link*'s inbound messages and carry out what the table says."""
        with link.scope:
            async for data in link.in_recv:
                await self._handle(link, data)
            # The client closed its side: it is leaving.
            self._close(link, None)

    def _receive(self, link: _Link, data: bytes) -> list[Action]:
        conn = link.conn
        if conn.kind is ConnKind.DATA:
            return self._table.receive(conn, data, self._current_time())
        return self._table.receive_control(conn, data)

    async def _handle(self, link: _Link, data: bytes, flush: bool = True) -> None:
        """Route one inbound message of *link* and carry out the result."""
        if link.closed:
            raise trio.BrokenResourceError("the gateway ended this connection")
        for action in self._receive(link, data):
            target = self._place(action, flush)
            if target is not None:
                assert isinstance(action, Deliver)
                await self._wait_for_space(target, action, link)
        self._after_routing()

    def _carry_out_now(self, actions: Sequence[Action], flush: bool = True) -> None:
        """Carry out *actions* without waiting: answers, or traffic while H4 holds."""
        for action in actions:
            target = self._place(action, flush)
            if target is not None:  # pragma: no cover - H3/H4 broken
                logger.error("no queue space for %s while routing without waiting", target.conn)
                self._close(target, (Status.INTERNAL, "agentwire gateway: queue overflow"))
        self._after_routing()

    def _place(self, action: Action, flush: bool) -> _Link | None:
        """Carry out *action* if that needs no wait; else return the link whose
        lane is full (nothing done)."""
        if isinstance(action, Close):
            link = self._links.get(action.conn)
            if link is not None:
                self._close(link, (action.status, action.message))
            return None
        link = self._links.get(action.conn)
        if link is None or link.closed:
            return None
        direct = link.direct
        lane = _EVENT if action.event else _RPC
        if direct is not None and not link.unsent[lane] and direct(action.data, flush=flush):
            if action.answer:
                self._table.answer_consumed(link.conn)
            return None
        if action.answer:
            try:
                link.queue.put_answer(action.data)
            except QueueFull:  # pragma: no cover - the table's I6 broken
                logger.error("answer queue of %s overflowed; disconnecting it", link.conn)
                self._close(link, (Status.INTERNAL, "agentwire gateway: answer queue overflow"))
                return None
        elif not link.queue.offer(lane, action.data):
            return link
        link.queued(lane)
        return None

    async def _wait_for_space(
        self, link: _Link, action: Deliver, source: _Link | None = None
    ) -> None:
        """Wait until *link*'s reader moves *action* into the lane (Q2), or
        disconnect *link* as a slow consumer after ``send_timeout``. An event
        from *source* lets *source*'s RPC traffic be routed meanwhile (H6)."""
        lane = _lane(action)
        wake = _Wake()
        waiter = Waiter(lane, action.data, wake.set)
        link.queue.wait(waiter)
        deadline = trio.current_time() + self.config.send_timeout
        urgent = source.urgent if source is not None and lane is Lane.EVENT else None
        try:
            if source is not None and urgent is not None:
                source.urgent = None  # what is routed meanwhile does not overtake in turn
                urgent.on_urgent(wake.set)
            while not waiter.placed and not link.closed:
                if source is not None and urgent is not None:
                    data = urgent.receive_urgent_nowait()
                    if data is not None:
                        await self._handle(source, data)
                        continue
                if trio.current_time() >= deadline:
                    break
                with trio.move_on_at(deadline):
                    await wake.wait()
        finally:
            if source is not None and urgent is not None:
                urgent.on_urgent(None)
                source.urgent = urgent
            link.queue.withdraw(waiter)
        if waiter.placed or link.closed:
            return  # queued by the reader, or the target went away (cleaned up)
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

    def _close(
        self, link: _Link, reason: tuple[Status, str] | None, *, discard: bool = False
    ) -> None:
        """End *link*: the table forgets it (answering stranded callers), its
        routing task stops, and its reader sees the end once the queue drains
        (at once with *discard*)."""
        if link.closed:
            return
        link.closed = True
        link.close_reason = reason
        link.discard = discard
        del self._links[link.conn]
        for waiter in link.queue.close():
            waiter.wakeup()
        self._carry_out_now(self._table.disconnect(link.conn))
        link.scope.cancel()
        link.in_recv.close()
        if link.readable is not None:
            link.readable.set()
        link.ended.set()
        if reason is not None:
            logger.info("ended %s: %s %s", link.conn, reason[0].name, reason[1])

    # ------------------------------------------------------------ deadlines

    def _wake_timer(self) -> None:
        deadline = self._table.next_deadline()
        if deadline is not None and deadline < self._timer_target:
            self._wakeup.set()

    async def _run_timer(self) -> None:
        while True:
            self._table.added_deadline = math.inf
            deadline = self._table.next_deadline()
            self._timer_target = math.inf if deadline is None else deadline
            with trio.move_on_at(self._timer_target):
                await self._wakeup.wait()
            self._wakeup = trio.Event()
            self._carry_out_now(self._table.expire(trio.current_time()))
            self._after_change()  # the grace may be over: release what is held

    async def _run_releaser(self) -> None:
        """Carry out the start-up hold's releases (they may wait for queue space)."""
        while True:
            await self._release_wanted.wait()
            self._release_wanted = trio.Event()
            for action in self._table.release(trio.current_time()):
                target = self._place(action, True)
                if target is not None:
                    assert isinstance(action, Deliver)
                    await self._wait_for_space(target, action)
            self._after_change()

    # ------------------------------------------------------------ shutdown

    @property
    def closing(self) -> bool:
        """Whether shutdown has begun (``wait_until`` sees it change)."""
        return self._closing

    def begin_shutdown(self, reason: str = "agentwire gateway: shutting down") -> None:
        """Refuse new streams, answer every pending RPC with an error and end
        every stream with UNAVAILABLE once its queue has drained."""
        if self._closing:
            return
        self._closing = True
        self._closing_event.set()
        self._carry_out_now(self._table.shutdown())
        for link in list(self._links.values()):
            self._close(link, (Status.UNAVAILABLE, reason))

    async def wait_closing(self) -> None:
        """Wait until shutdown has begun (unlike ``wait_until``, not woken by traffic)."""
        await self._closing_event.wait()

    async def wait_until(self, predicate: Callable[[GatewayStatistics], bool]) -> None:
        """Wait until ``predicate(self.statistics())`` holds (for tests and tooling).

        Re-checked whenever connections, registrations or subscriptions change
        and after every routed message.
        """
        while not predicate(self.statistics()):
            self._watchers += 1
            try:
                await self._changed.park()
            finally:
                self._watchers -= 1

    def statistics(self) -> GatewayStatistics:
        queued = sum(len(link.queue) for link in self._links.values())
        router = attrs.asdict(self._table.statistics(), recurse=False)
        peers = [conn for conn in self._links if conn.peer]
        if peers:  # other gateways' connections are not clients of this one
            router["clients"] -= len({conn.client_id for conn in peers})
            for conn in peers:
                key = "data_connections" if conn.kind is ConnKind.DATA else "control_connections"
                router[key] -= 1
        cluster = self.cluster
        state = self.state_service
        return GatewayStatistics(
            **router,
            slow_disconnects=self._slow_disconnects,
            queued_messages=queued,
            peer_connections=len(peers),
            cluster=None if cluster is None else cluster.statistics(),
            state=None if state is None else state.statistics(),
        )

    def check_invariants(self) -> None:
        """Assert the table's invariants, H1 and H3, and each queue's (tests)."""
        self._table.check_invariants()
        assert set(self._links) == set(self._table._conns)  # H1
        for link in self._links.values():
            link.queue.check_invariants()
        assert self._full.count == sum(link.queue.full_lanes() for link in self._links.values())


_EVENT, _RPC = Lane.EVENT, Lane.RPC


def _lane(action: Deliver) -> Lane:
    return _EVENT if action.event else _RPC


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
            nursery.start_soon(hub._run_releaser)
            try:
                yield hub
            finally:
                hub.begin_shutdown()
                nursery.cancel_scope.cancel()
    finally:
        hub.begin_shutdown()


class _Wake:
    """A wake-up that can be waited for again (a fresh ``trio.Event`` after each wait)."""

    __slots__ = ("_event",)

    def __init__(self) -> None:
        self._event = trio.Event()

    def set(self) -> None:
        self._event.set()

    async def wait(self) -> None:
        await self._event.wait()
        self._event = trio.Event()
