"""Hypothesis drives the router through random connects, registrations,
subscriptions, requests, responses, expiries and disconnects, checking the
invariants written at the top of ``agentwire/_gateway/_routing.py`` after
every step, and that every request is answered exactly once."""

from __future__ import annotations

import math
from collections import Counter

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from agentwire._gateway._held import SUBSCRIPTION_SETTLE
from agentwire._gateway._routing import Close, Conn, ConnKind, Deliver, RoutingError, RoutingTable
from agentwire._proto import agent_worker_pb2 as pb

from .helpers import event, request, response, type_sub

CLIENTS = st.sampled_from(["A", "B", "C"])
TYPES = st.sampled_from(["t1", "t2", "t3"])
TOPICS = st.sampled_from(["default", "news", "t1:x"])


class RoutingTableMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.router = RoutingTable(
            rpc_timeout=5.0,
            max_in_flight=4,
            registration_grace=10.0,
            max_agent_types=2,
            max_subscriptions=3,
            startup_grace=8.0,
            max_held=3,
        )
        self.now = 0.0
        self.conns: dict[str, Conn] = {}
        self.next_rid = 0
        # (caller conn, caller request id) -> number of answers seen
        self.asked: set[tuple[Conn, str]] = set()
        self.answers: Counter[tuple[Conn, str]] = Counter()
        # forwarded requests the targets have not answered: gid -> target conn
        self.forwarded: dict[str, Conn] = {}
        self.unconsumed: Counter[Conn] = Counter()
        self.closed: set[Conn] = set()
        self.subscribed_at = -math.inf  # the latest AddSubscription that succeeded

    def _apply(self, actions: list[Deliver | Close]) -> None:
        for action in actions:
            if isinstance(action, Close):
                self._drop(action.conn)
                continue
            assert action.conn not in self.closed
            message = pb.Message.FromString(action.data)
            kind = message.WhichOneof("message")
            if kind == "request":
                self.forwarded[message.request.request_id] = action.conn
            elif kind == "response":
                key = (action.conn, message.response.request_id)
                assert key in self.asked, key
                self.answers[key] += 1
                if action.answer:
                    self.unconsumed[action.conn] += 1
            else:
                assert kind == "cloudEvent"

    def _drop(self, conn: Conn) -> None:
        self._apply(self.router.disconnect(conn))
        self.closed.add(conn)
        if self.conns.get(conn.client_id) == conn:
            del self.conns[conn.client_id]
        self.unconsumed.pop(conn, None)

    @initialize()
    def start(self) -> None:
        for client in ("A", "B", "C"):
            self.conns[client] = self.router.connect(client, ConnKind.DATA)
        self.router.register_agent("B", "t1")
        self.router.register_agent("C", "t2")
        self.router.add_subscription("B", type_sub("default", "t1", "z"))

    @rule(client=CLIENTS)
    def connect(self, client: str) -> None:
        if client in self.conns:
            self._drop(self.conns[client])
        self.conns[client] = self.router.connect(client, ConnKind.DATA)

    @precondition(lambda self: self.conns)
    @rule(data=st.data())
    def disconnect(self, data: st.DataObject) -> None:
        client = data.draw(st.sampled_from(sorted(self.conns)))
        self._drop(self.conns[client])

    @rule(client=CLIENTS, agent_type=TYPES)
    def register(self, client: str, agent_type: str) -> None:
        owner = self.router.owner_of(agent_type)
        error = None
        try:
            self.router.register_agent(client, agent_type, self.now)
        except RoutingError as exc:
            error = exc.message
        if owner is not None:
            assert error == f"Agent type {agent_type} already registered with client {owner}."
        elif error is not None:
            assert "agent types registered, the gateway's limit per client" in error

    @rule(client=CLIENTS, topic=TOPICS, agent_type=TYPES, sub_id=st.sampled_from("abcdef"))
    def subscribe(self, client: str, topic: str, agent_type: str, sub_id: str) -> None:
        error = None
        try:
            self.router.add_subscription(client, type_sub(topic, agent_type, sub_id), self.now)
            self.subscribed_at = self.now
        except RoutingError as exc:
            error = exc.message
        assert error in (None, "Subscription already exists") or "limit per client" in str(error)

    @rule(client=CLIENTS, sub_id=st.sampled_from("abcdef"))
    def unsubscribe(self, client: str, sub_id: str) -> None:
        known = any(s.id == sub_id for s in self.router.subscriptions())
        try:
            self.router.remove_subscription(client, sub_id)
        except RoutingError:
            assert not known
        else:
            assert known

    @precondition(lambda self: self.conns)
    @rule(
        data=st.data(),
        agent_type=st.sampled_from(["t1", "t2", "t3", "ghost"]),
        timeout=st.sampled_from([None, "0", "1.5", "7", "bad"]),
    )
    def send_request(self, data: st.DataObject, agent_type: str, timeout: str | None) -> None:
        client = data.draw(st.sampled_from(sorted(self.conns)))
        conn = self.conns[client]
        # Workers reuse small ids: collisions between callers are the point.
        rid = str(data.draw(st.integers(0, 3)))
        if (conn, rid) in self.asked and self.answers[(conn, rid)] == 0:
            rid = f"u{self.next_rid}"
            self.next_rid += 1
        self.asked.add((conn, rid))
        self.answers[(conn, rid)] = 0
        metadata = None if timeout is None else {"agentwire-timeout": timeout}
        raw = request(rid, f"{agent_type}/k", metadata=metadata)
        self._apply(self.router.receive(conn, raw, self.now))

    @precondition(lambda self: self.forwarded)
    @rule(data=st.data(), error=st.booleans())
    def respond(self, data: st.DataObject, error: bool) -> None:
        gid = data.draw(st.sampled_from(sorted(self.forwarded)))
        target = self.forwarded.pop(gid)
        if target in self.closed:
            return
        raw = response(gid, error="x" if error else "")
        self._apply(self.router.receive(target, raw, self.now))

    @precondition(lambda self: self.unconsumed)
    @rule(data=st.data())
    def consume_answer(self, data: st.DataObject) -> None:
        conn = data.draw(st.sampled_from(sorted(self.unconsumed, key=lambda c: c.serial)))
        self.router.answer_consumed(conn)
        self.unconsumed[conn] -= 1
        if not self.unconsumed[conn]:
            del self.unconsumed[conn]

    @precondition(lambda self: self.conns)
    @rule(
        data=st.data(),
        topic=st.one_of(TOPICS, st.just("bad topic")),
        source=st.sampled_from(["default", "s2"]),
    )
    def publish(self, data: st.DataObject, topic: str, source: str) -> None:
        """(The invariants then compare every cached event route with a fresh one.)"""
        client = data.draw(st.sampled_from(sorted(self.conns)))
        raw = event(topic, source)
        actions = self.router.receive(self.conns[client], raw, self.now)
        targets = [a.conn for a in actions if isinstance(a, Deliver)]
        assert len(targets) == len(set(targets))
        assert all(isinstance(a, Deliver) and a.data == raw for a in actions)
        self._apply(actions)

    @precondition(lambda self: self.conns)
    @rule(data=st.data(), raw=st.sampled_from([b"\xff", b""]))
    def send_garbage(self, data: st.DataObject, raw: bytes) -> None:
        client = data.draw(st.sampled_from(sorted(self.conns)))
        conn = self.conns[client]
        actions = self.router.receive(conn, raw, self.now)
        assert [(type(a), a.conn) for a in actions] == [(Close, conn)]
        self._apply(actions)

    @rule()
    def release_held(self) -> None:
        """The I/O layer's releaser runs (after registrations, or the grace's end)."""
        if self.router.wants_release(self.now):
            actions = self.router.release(self.now)
            if self.router.holding and any(isinstance(a, Deliver) and a.event for a in actions):
                assert self.now >= self.subscribed_at + SUBSCRIPTION_SETTLE  # G5
            self._apply(actions)

    @rule(dt=st.sampled_from([0.05, 0.5, 2.0, 6.0, 11.0]))
    def advance(self, dt: float) -> None:
        self.now += dt
        self._apply(self.router.expire(self.now))

    @invariant()
    def invariants_hold(self) -> None:
        self.router.check_invariants()
        # R4: nothing a channel-less client recorded outlives the grace
        for client_id, record in self.router._clients.items():
            if record.data is None and (record.types or record.subscriptions):
                assert record.expires is not None
                assert record.expires > self.now, client_id
        assert all(n <= 1 for n in self.answers.values())
        for conn, count in self.unconsumed.items():
            assert self.router.in_flight(conn) >= count

    def teardown(self) -> None:
        self._apply(self.router.shutdown())
        self.router.check_invariants()
        assert self.router.statistics().rpcs_in_flight == 0
        for key in self.asked:
            conn, _ = key
            if conn not in self.closed:
                assert self.answers[key] == 1, key


RoutingTableMachine.TestCase.settings = settings(
    max_examples=150, stateful_step_count=40, deadline=None
)
TestRoutingTableStateful = RoutingTableMachine.TestCase
