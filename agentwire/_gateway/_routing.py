"""The gateway's routing core: who owns which agent type, who subscribed to
what, and which RPCs are in flight. Sans-IO: every method is synchronous,
takes bytes (and the current time) and returns :class:`Deliver` /
:class:`Close` actions for the I/O layer (``_hub.py``) to carry out.

Invariants (checked after every step by ``tests/gateway/test_routing_stateful.py``;
each is written next to the code that keeps it: here, or in the module named):

I1  Clients, agent types and subscriptions: R1-R5 of ``_registry.py``
    (``_reg``), which this table builds on.
I2  Start-up hold: G1-G5 of ``_held.py`` (``_hold``; None once the grace is
    over). Held requests count as in flight (I6).
I3  Connections. ``_conns`` holds exactly the live connections;
    ``_reg.clients[c].data`` / ``.control`` is the client's live connection of
    that kind, or None. A connection's serial is never reused, so a connection that
    ended never comes back (a late event for it is recognised and ignored).
I4  Pending RPCs (kept by ``_inflight.py``). Every entry of ``_pending`` has
    a live *data* caller and a live *data* target; its index by connection
    holds exactly the gateway ids whose caller or target is that connection
    (no empty sets are kept).
I5  Exactly one answer. A request admitted into ``_pending`` leaves it exactly
    once: by the target's response, by expiry, by either side's disconnect or
    by shutdown. The caller gets exactly one answer (the response, or an
    ``RpcResponse`` with ``error``) unless the caller itself is gone. Gateway
    request ids are never reused; every deadline is in the heap (both kept
    by ``_inflight.py``). A deadline is ``now + rpc_timeout``, or sooner when
    the caller sent its own remaining time in the request metadata
    (``agentwire-timeout``, seconds; agentwire workers do).
I6  In-flight bound. For each connection, (pending entries it is the caller
    of) + (answers handed to the I/O layer and not yet consumed) is at most
    ``max_in_flight``. The I/O layer reserves that much queue space for
    answers, so delivering an answer never waits.
I7  Shared agent types (``placement`` given): ``_shared.py``; requests and
    events for an agent of such a type go to the live owner of its key only.
I8  Relayed subscriptions (operator-made): ``_events.py``.
I9  Peer gateways (a cluster): a message crosses at most one
    gateway-to-gateway hop; see ``_peers.py``.
I10 Cached event routes: ``_events.py``.

Wire compatibility notes (AutoGen 0.7.5's Python host is the reference):

* RegisterAgent, AddSubscription, RemoveSubscription: see ``_registry.py``;
  CloudEvents: ``_events.py``; control messages: ``_control.py``.
* Requests get a gateway-unique ``request_id`` on the way to the owner and
  their own id back on the way out (AutoGen issue #7016). Every request is
  answered; AutoGen drops undeliverable ones and the caller hangs.
* Every error ``RpcResponse`` of the gateway carries ``ERROR_KIND_KEY``
  metadata (an :class:`~agentwire._wire.ErrorKind`) next to the ``error``
  text, which AutoGen workers see unchanged.
"""

from __future__ import annotations

import logging
import math

from google.protobuf.message import DecodeError
from grpclib.const import Status

from .._ids import is_valid_agent_type
from .._operator._relay import Relays
from .._proto import agent_worker_pb2 as pb
from .._security._guard import MessagePolicy
from .._wire import DEFAULT_MAX_MESSAGE_SIZE, ErrorKind
from ._actions import ERROR_PREFIX, Action, Close, Deliver, RouterStatistics, error_response
from ._control import ControlRouting
from ._events import EventFanout
from ._held import HeldRequest, StartupHold
from ._inflight import InFlight, Pending, earlier, request_timeout
from ._peers import lost_answer
from ._placement import PlacementStrategy
from ._registry import UNKNOWN_SUBSCRIPTION_MESSAGE, Conn, ConnKind, Registry, RoutingError
from ._shared import SharedTypes

__all__ = [
    "UNKNOWN_SUBSCRIPTION_MESSAGE",
    "Action",
    "Close",
    "Conn",
    "ConnKind",
    "Deliver",
    "RouterStatistics",
    "RoutingError",
    "RoutingTable",
]

logger = logging.getLogger("agentwire.gateway")


class RoutingTable:
    """The routing state of one gateway. Not thread-safe; no I/O; no awaits."""

    def __init__(
        self,
        *,
        rpc_timeout: float | None = 300.0,
        max_in_flight: int = 1000,
        registration_grace: float | None = 30.0,
        max_agent_types: int = 1000,
        max_subscriptions: int = 10_000,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
        startup_grace: float = 0.0,
        max_held: int = 1000,
        start_time: float = 0.0,
        placement: PlacementStrategy | None = None,
        max_placed_keys: int = 1_000_000,
    ) -> None:
        if rpc_timeout is not None and not rpc_timeout > 0:
            raise ValueError(f"rpc_timeout must be positive or None, got {rpc_timeout!r}")
        if max_in_flight < 1:
            raise ValueError(f"max_in_flight must be at least 1, got {max_in_flight!r}")
        self.rpc_timeout = rpc_timeout
        self.max_in_flight = max_in_flight
        self.max_message_size = max_message_size
        self._reg = reg = Registry(
            registration_grace=registration_grace,
            max_agent_types=max_agent_types,
            max_subscriptions=max_subscriptions,
            shared=placement is not None,
        )
        # Shared agent types (I7); None: one owner per type, as AutoGen.
        self._shared: SharedTypes | None = None
        if placement is not None:
            self._shared = SharedTypes(reg.clients, placement, max_placed_keys)
        self._clients = reg.clients
        self._owner = reg.owner
        self._relays = Relays()  # I8
        self._fanout = EventFanout(reg, self._shared, self._relays)
        self._control = ControlRouting(reg, self._shared)
        # The start-up hold (``_held.py``); None once its grace is over.
        self._hold: StartupHold | None = None
        if startup_grace > 0:
            self._hold = StartupHold(start_time + startup_grace, max_held)
        self.holding = self._hold is not None  # the start-up grace is not over
        self._conns: set[Conn] = set()
        self._serial = 0
        self._pending = InFlight()
        # Per live data connection: requests it sent that are unanswered, plus
        # answers to it that the I/O layer has not consumed yet (I6).
        self._outstanding: dict[Conn, int] = {}
        # The earliest deadline a routed request added since the I/O layer last
        # set this to inf and read next_deadline() (it need not ask after every message).
        self.added_deadline = math.inf
        self._now = float("-inf")
        self._closed = False
        # Access control per message (the gateway's AccessGuard); None: allow all.
        self.policy: MessagePolicy | None = None
        # Added to "no worker has registered" errors (a cluster out of reach).
        self.cluster_note = ""
        # counters
        self._rpcs_forwarded = 0
        self._rpcs_failed = 0
        self._responses_forwarded = 0
        self._responses_dropped = 0
        self._protocol_errors = 0

    # ------------------------------------------------------------ clients

    def connection_of(self, client_id: str, kind: ConnKind) -> Conn | None:
        """The client's live connection of *kind*, if any."""
        client = self._clients.get(client_id)
        if client is None:
            return None
        return client.data if kind is ConnKind.DATA else client.control

    def is_live(self, conn: Conn) -> bool:
        return conn in self._conns

    def connect(self, client_id: str, kind: ConnKind, *, peer: bool = False) -> Conn:
        """Attach a new stream. The client must not have a live one of this kind
        (end the old one with :meth:`disconnect` first). *peer*: the stream of
        another gateway of the cluster (I9)."""
        if self._closed:
            raise RoutingError(Status.UNAVAILABLE, ERROR_PREFIX + "shutting down")
        if self.connection_of(client_id, kind) is not None:
            raise RuntimeError(f"client {client_id} already has a live {kind.value} connection")
        self._serial += 1
        conn = Conn(client_id, self._serial, kind, peer)
        self._reg.attach(conn)
        if kind is ConnKind.DATA:
            self._outstanding[conn] = 0
            if self._shared is not None:
                self._shared.connected(client_id)
        self._conns.add(conn)
        if kind is ConnKind.DATA and self._hold is not None:
            self._hold.arrived()
        logger.debug("%s opened", conn)
        return conn

    def disconnect(self, conn: Conn) -> list[Action]:
        """Detach *conn*. For a data connection this drops the client's agent
        types and subscriptions (as AutoGen), answers every request routed to it
        with an error, and forgets the requests it sent. Idempotent."""
        if conn not in self._conns:
            return []
        self._conns.discard(conn)
        actions: list[Action] = []
        if conn.kind is ConnKind.DATA:
            self._outstanding.pop(conn, None)
            if self._shared is not None:
                self._shared.disconnected(conn)
            for p in self._pending.drop_conn(conn):
                actions.append(self._fail(p, *lost_answer(conn, p.target_agent)))
            if self._hold is not None:
                self._hold.forget_caller(conn)
        self._reg.detach(conn)
        self._relays.prune(self._reg.sub_owner)
        logger.debug("%s closed", conn)
        return actions

    # ------------------------------------------------------------ unary calls

    def register_agent(
        self, client_id: str, agent_type: str, now: float | None = None, *, peer: bool = False
    ) -> None:
        """RegisterAgent. Works before the client opened a channel (as AutoGen);
        the records of a client that opens none expire (R4). *now*: the
        current time (default: the latest the table has seen). *peer*: for a
        peer gateway (no per-client bounds)."""
        self._reg.register_agent(client_id, agent_type, self._clock(now), peer=peer)
        if self._shared is not None:
            self._shared.registered(client_id, agent_type)
        if self._hold is not None:
            self._hold.arrived()

    def add_subscription(
        self,
        client_id: str,
        subscription: pb.Subscription,
        now: float | None = None,
        *,
        relay: bool = False,
        peer: bool = False,
    ) -> None:
        """AddSubscription. *relay*: the worker of the agent type does not
        hold this subscription itself (an operator made it), so its events
        are also relayed to that worker as direct messages (I8). *peer*: for
        a peer gateway (no per-client bounds, I9)."""
        now = self._clock(now)
        self._reg.add_subscription(client_id, subscription, now, peer=peer)
        if relay:
            self._relays.add(subscription)
        if self._hold is not None:
            self._hold.subscribed(now)

    def unregister_agent(self, client_id: str, agent_type: str) -> None:
        """Take *agent_type* from *client_id* (a peer gateway whose client left)."""
        if self._shared is None:
            self._reg.unregister_agent(client_id, agent_type)

    def remove_subscription(self, client_id: str, subscription_id: str) -> None:
        """Any client may remove any subscription (as AutoGen)."""
        self._reg.remove_subscription(subscription_id)
        self._relays.discard(subscription_id)

    def subscriptions(self) -> list[pb.Subscription]:
        """GetSubscriptions: every client's subscriptions, in insertion order."""
        return self._reg.subscriptions()

    def owner_of(self, agent_type: str) -> str | None:
        return self._owner.get(agent_type)

    def placed_on(self, agent_type: str, key: str) -> str | None:
        """The worker serving agent ``agent_type/key`` of a shared type, if placed."""
        return None if self._shared is None else self._shared.placement.owner(agent_type, key)

    def drain(self, client_id: str) -> bool:
        """Place no new agents on *client_id* (it keeps those it has). False
        if shared agent types are off or it serves none (with a channel)."""
        return self._shared is not None and self._shared.drain(client_id)

    def subscription_owner(self, subscription_id: str) -> str | None:
        """The client-id that recorded *subscription_id*, if it exists."""
        return self._reg.sub_owner.get(subscription_id)

    def has_client(self, client_id: str) -> bool:
        """Whether the table holds anything of *client_id* (a stream, a type, a subscription)."""
        return client_id in self._clients

    def clients(self) -> list[tuple[str, tuple[str, ...], int, bool]]:
        return self._reg.snapshot()

    def _clock(self, now: float | None) -> float:
        if now is not None:
            self._now = max(now, self._now)
        return self._now if self._now > -math.inf else 0.0

    # ------------------------------------------------------------ data channel

    def receive(self, conn: Conn, data: bytes, now: float) -> list[Action]:
        """A serialized ``agents.Message`` arrived on data connection *conn*."""
        if conn not in self._conns:
            return []
        self._now = now = now if now > self._now else self._now  # (max() costs a call)
        try:
            message = pb.Message.FromString(data)
        except DecodeError as exc:
            return [self._protocol_error(conn, f"malformed agents.Message ({exc})")]
        kind = message.WhichOneof("message")
        if kind == "request":
            return self._request(conn, message, now)
        if kind == "response":
            return self._response(conn, message)
        if kind == "cloudEvent":
            return self._fanout.receive(
                conn, message.cloudEvent, data, now, self.policy, self._hold
            )
        why = "agents.Message sets none of request, response, cloudEvent (empty or unknown)"
        return [self._protocol_error(conn, why)]

    def _protocol_error(self, conn: Conn, message: str) -> Close:
        self._protocol_errors += 1
        logger.warning("ending %s: %s", conn, message)
        return Close(conn, Status.INVALID_ARGUMENT, message)

    def _reject(self, caller: Conn, request_id: str, kind: ErrorKind, error: str) -> Deliver:
        """An error answer for a request that was never admitted (sent through
        the caller's ordinary, back-pressured queue)."""
        self._rpcs_failed += 1
        logger.debug("request %r from %s failed: %s", request_id, caller, error)
        return Deliver(caller, error_response(request_id, kind, error))

    def _target(
        self, caller: Conn, request: pb.RpcRequest, target_agent: str
    ) -> Conn | tuple[ErrorKind, str]:
        """Where *request* (to *target_agent*) goes, or why it cannot be forwarded now."""
        target = request.target
        if not is_valid_agent_type(target.type):
            return ErrorKind.INVALID_ARGUMENT, f"invalid target agent type {target.type!r}"
        if self.policy is not None:
            denied = self.policy.refuse_request(caller.client_id, target.type)
            if denied is not None:
                return ErrorKind.PERMISSION_DENIED, denied
        if request.HasField("source") and not is_valid_agent_type(request.source.type):
            return (
                ErrorKind.INVALID_ARGUMENT,
                f"invalid source agent type {request.source.type!r}"
                " (omit source when there is no sender)",
            )
        if self._shared is not None:
            placed = self._shared.target(target.type, target.key)
            if not isinstance(placed, Conn):
                return placed
            data_conn = placed
        else:
            owner = self._owner.get(target.type)
            if owner is None:
                return (
                    ErrorKind.UNDELIVERABLE,
                    f"no worker has registered agent type {target.type!r}"
                    f"{self.cluster_note}; the request to {target_agent} was not delivered",
                )
            owner_conn = self._clients[owner].data
            if owner_conn is None:
                return (
                    ErrorKind.UNDELIVERABLE,
                    f"the worker owning agent type {target.type!r} "
                    + (f"(client {owner}) " if self.policy is None else "")
                    + f"has no open channel; the request to {target_agent} was not delivered",
                )
            data_conn = owner_conn
        if caller.peer and data_conn.peer:  # I9
            return (
                ErrorKind.UNDELIVERABLE,
                f"agent type {target.type!r} is served by another gateway than this one; "
                f"the request to {target_agent} was not delivered",
            )
        if self._outstanding.get(caller, 0) >= self.max_in_flight:
            return (
                ErrorKind.OVERLOADED,
                f"too many requests in flight from this client "
                f"(limit {self.max_in_flight}); the request to {target_agent} was not sent",
            )
        return data_conn

    def _request(self, caller: Conn, message: pb.Message, now: float) -> list[Action]:
        request = message.request
        request_id = request.request_id
        target = request.target
        target_agent = f"{target.type}/{target.key}"
        target_conn = self._target(caller, request, target_agent)
        if not isinstance(target_conn, Conn):
            refusal = target_conn
            hold = self._hold
            if (
                refusal[0] is ErrorKind.UNDELIVERABLE
                and hold is not None
                and hold.accepts(now)
                and self.in_flight(caller) < self.max_in_flight
            ):
                hold.requests.append(HeldRequest(caller, message))
                self._outstanding[caller] += 1  # G3
                return []
            return [self._reject(caller, request_id, *refusal)]
        gid = self._pending.new_id()
        timeout, callers = request_timeout(request, self.rpc_timeout)
        deadline = None if timeout == math.inf else now + timeout
        request.request_id = gid
        data = message.SerializeToString()
        if len(data) > self.max_message_size:
            return [
                self._reject(
                    caller,
                    request_id,
                    ErrorKind.TOO_LARGE,
                    f"the request to {target_agent} is {len(data)} bytes as forwarded, over "
                    f"the message size limit ({self.max_message_size} bytes); send less",
                )
            ]
        self._pending.add(
            gid, Pending(caller, request_id, target_conn, target_agent, deadline, timeout, callers)
        )
        self._outstanding[caller] += 1
        self._rpcs_forwarded += 1
        if deadline is not None and deadline < self.added_deadline:
            self.added_deadline = deadline
        return [Deliver(target_conn, data)]

    def _response(self, conn: Conn, message: pb.Message) -> list[Action]:
        response = message.response
        gid = response.request_id
        p = self._pending.entries.get(gid)
        if p is None or p.target != conn:
            # Late (the caller left, or the request timed out) or bogus.
            self._responses_dropped += 1
            logger.debug("dropping response %r from %s: no such request in flight", gid, conn)
            return []
        self._pending.settle(gid, p)
        response.request_id = p.caller_request_id
        data = message.SerializeToString()
        if len(data) > self.max_message_size:
            return [
                self._fail(
                    p,
                    ErrorKind.TOO_LARGE,
                    f"the response of {p.target_agent} is {len(data)} bytes, over the message "
                    f"size limit ({self.max_message_size} bytes)",
                )
            ]
        self._responses_forwarded += 1
        return [Deliver(p.caller, data, True)]  # what _answer makes, without the call

    # ------------------------------------------------------------ pending RPCs

    def in_flight(self, conn: Conn) -> int:
        """Requests *conn* sent that are unanswered, plus answers not yet consumed."""
        return self._outstanding.get(conn, 0)

    def answer_consumed(self, conn: Conn) -> None:
        """The I/O layer took one ``Deliver(answer=True)`` for *conn* off its queue."""
        if self._outstanding.get(conn, 0) > 0:
            self._outstanding[conn] -= 1

    def _answer(self, caller: Conn, data: bytes) -> Deliver:
        # The caller's outstanding count moves from "pending" to "answer not
        # yet consumed": unchanged until answer_consumed().
        return Deliver(caller, data, answer=True)

    def _fail(self, p: Pending, kind: ErrorKind, error: str) -> Deliver:
        self._rpcs_failed += 1
        return self._answer(p.caller, error_response(p.caller_request_id, kind, error))

    def next_deadline(self) -> float | None:
        """When the next pending request or channel-less registration expires,
        or the start-up hold ends (None: nothing can expire)."""
        first = earlier(self._pending.next_deadline(), self._reg.next_expiry())
        return first if self._hold is None else earlier(first, self._hold.next_deadline(self._now))

    # ------------------------------------------------------------ start-up hold

    def wants_release(self, now: float) -> bool:
        """Whether :meth:`release` has work: a held message may be deliverable
        now, or the grace is over."""
        return self._hold is not None and self._hold.wants_release(now)

    def release(self, now: float) -> list[Action]:
        """Retry the held messages that may be deliverable (events once settled,
        G5 of ``_held.py``); at or after the end of the grace, give what is
        still undeliverable its usual fate. The actions may include traffic
        (forwarded requests, events): the I/O layer carries them out in a
        task that may wait."""
        hold = self._hold
        if hold is None:
            return []
        self._now = now = max(now, self._now)
        if now >= hold.until:
            self._hold = None
            self.holding = False
        requests, events = hold.take(now)
        actions: list[Action] = []
        for held in requests:
            if held.caller in self._conns:
                self._outstanding[held.caller] -= 1  # re-admitted below (or held again)
                actions += self._request(held.caller, held.message, now)
        return actions + self._fanout.release(events, self._hold)

    def expire(self, now: float) -> list[Action]:
        """Answer every request whose deadline has passed with an error, and
        drop the records of clients that opened no channel in time (R4)."""
        self._now = now = max(now, self._now)
        self._reg.expire(now)
        self._relays.prune(self._reg.sub_owner)
        if self._hold is not None and now >= self._hold.until and not len(self._hold):
            self._hold = None  # G2: the grace is over and nothing waits for a release
            self.holding = False
        actions: list[Action] = []
        for p in self._pending.pop_expired(now):
            whose = "the caller's deadline" if p.callers_timeout else "rpc_timeout"
            actions.append(
                self._fail(
                    p,
                    ErrorKind.TIMEOUT,
                    f"no response from {p.target_agent} within {p.timeout:g} s ({whose})",
                )
            )
        return actions

    def shutdown(self) -> list[Action]:
        """Refuse new connections and answer every pending request with an error."""
        self._closed = True
        actions: list[Action] = []
        if self._hold is not None:
            for caller, error in self._hold.refusals():
                self._rpcs_failed += 1
                actions.append(self._answer(caller, error))
            self._hold = None
            self.holding = False
        for p in self._pending.take_all():
            actions.append(
                self._fail(
                    p,
                    ErrorKind.SHUTTING_DOWN,
                    f"the gateway is shutting down; no answer from {p.target_agent}",
                )
            )
        return actions

    # ------------------------------------------------------------ control channel

    def receive_control(self, conn: Conn, data: bytes) -> list[Action]:
        """A serialized ``agents.ControlMessage`` arrived on control connection *conn*."""
        if conn not in self._conns:
            return []
        try:
            message = pb.ControlMessage.FromString(data)
        except DecodeError as exc:
            return [self._protocol_error(conn, f"malformed agents.ControlMessage ({exc})")]
        return self._control.route(conn, message, data, self.policy)

    # ------------------------------------------------------------ introspection

    def statistics(self) -> RouterStatistics:
        clients = self._clients.values()
        return RouterStatistics(
            clients=len(self._clients),
            data_connections=sum(1 for c in clients if c.data is not None),
            control_connections=sum(1 for c in clients if c.control is not None),
            agent_types=len(self._owner) + len(self._reg.servers),
            subscriptions=len(self._reg.table),
            rpcs_in_flight=len(self._pending),
            rpcs_forwarded=self._rpcs_forwarded,
            rpcs_failed=self._rpcs_failed,
            responses_forwarded=self._responses_forwarded,
            responses_dropped=self._responses_dropped,
            events_received=self._fanout.received,
            event_deliveries=self._fanout.deliveries,
            events_dropped=self._fanout.dropped,
            control_forwarded=self._control.forwarded,
            control_undeliverable=self._control.undeliverable,
            protocol_errors=self._protocol_errors,
            registrations_expired=self._reg.expired,
            held_messages=0 if self._hold is None else len(self._hold),
            placement={} if self._shared is None else self._shared.statistics(),
            placed_agents=0 if self._shared is None else len(self._shared.placement),
        )

    def check_invariants(self) -> None:
        """Assert I1-I8 and I10 (for tests; O(size of the state))."""
        self._reg.check_invariants()
        self._relays.check_invariants(self._reg.sub_owner)  # I8
        self._fanout.check_invariants()  # I10
        if self._shared is not None:
            self._shared.check_invariants()  # I7
        live = {c for client in self._clients.values() for c in (client.data, client.control)}
        assert self._conns == live - {None}
        self._pending.check_invariants(self._conns)
        assert set(self._outstanding) == {c for c in self._conns if c.kind is ConnKind.DATA}
        assert self.holding == (self._hold is not None)
        hold_requests = [] if self._hold is None else self._hold.requests
        if self._hold is not None:
            self._hold.check_invariants(self._conns)
        for conn, outstanding in self._outstanding.items():
            calls = sum(1 for p in self._pending.entries.values() if p.caller == conn)
            calls += sum(1 for h in hold_requests if h.caller == conn)
            assert calls <= outstanding <= self.max_in_flight, (conn, calls, outstanding)
