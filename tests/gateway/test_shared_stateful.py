"""Hypothesis drives the routing table with shared agent types through random
connects, registrations, drains, hand-backs, requests, events, answers and
disconnects, checking I1-I7 of ``agentwire/_gateway/_routing.py`` after every
step, and single activation against a model: every message for an agent goes
to one connection while that connection lives, and never to a connection that
handed its agents back or left."""

from __future__ import annotations

import contextlib

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from agentwire._gateway._placement import HashPlacement
from agentwire._gateway._routing import Close, Conn, ConnKind, Deliver, RoutingError, RoutingTable
from agentwire._proto import agent_worker_pb2 as pb

from .helpers import event, request, response, type_sub

CLIENTS = st.sampled_from(["A", "B", "C", "D"])
TYPES = st.sampled_from(["t1", "t2"])
KEYS = st.sampled_from(["k1", "k2", "k3", "k4", "k5"])


class SharedRoutingMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.router = RoutingTable(
            rpc_timeout=5.0, max_in_flight=6, placement=HashPlacement(), max_placed_keys=6
        )
        self.conns: dict[str, Conn] = {}
        self.types: dict[str, set[str]] = {}  # registered, per client
        self.released: set[str] = set()
        self.owner: dict[tuple[str, str], Conn] = {}  # model: agent -> serving connection
        self.forwarded: dict[str, Conn] = {}  # gid -> target
        self.next_id = 0
        self.now = 0.0

    def _apply(self, actions: list[Deliver | Close]) -> None:
        for action in actions:
            if isinstance(action, Close):
                self._gone(action.conn)
                continue
            message = pb.Message.FromString(action.data)
            if message.WhichOneof("message") == "request":
                self.forwarded[message.request.request_id] = action.conn
                target = message.request.target
                self._served((target.type, target.key), action.conn)
            if action.answer:
                self.router.answer_consumed(action.conn)

    def _served(self, agent: tuple[str, str], conn: Conn) -> None:
        assert conn.client_id not in self.released
        assert agent[0] in self.types.get(conn.client_id, set())
        previous = self.owner.setdefault(agent, conn)
        assert previous == conn, (agent, previous, conn)  # single activation

    def _gone(self, conn: Conn) -> None:
        self._apply(self.router.disconnect(conn))
        if self.conns.get(conn.client_id) == conn:
            del self.conns[conn.client_id]
            self.types.pop(conn.client_id, None)
            self.released.discard(conn.client_id)
        self.owner = {a: c for a, c in self.owner.items() if c != conn}
        self.forwarded = {g: c for g, c in self.forwarded.items() if c != conn}

    def _id(self) -> str:
        self.next_id += 1
        return f"r{self.next_id}"

    @precondition(lambda self: len(self.conns) < 4)
    @rule(client=CLIENTS)
    def connect(self, client: str) -> None:
        if client not in self.conns:
            self.conns[client] = self.router.connect(client, ConnKind.DATA)
            self.types.setdefault(client, set())

    @rule(client=CLIENTS, agent_type=TYPES)
    def register(self, client: str, agent_type: str) -> None:
        try:
            self.router.register_agent(client, agent_type)
        except RoutingError:
            assert agent_type in self.types.get(client, set())
            return
        self.types.setdefault(client, set()).add(agent_type)
        if client not in self.conns:
            self.types.pop(client)  # records without a channel: not modelled
            self.router.disconnect(self.router.connect(client, ConnKind.DATA))

    @rule(client=CLIENTS)
    def disconnect(self, client: str) -> None:
        conn = self.conns.get(client)
        if conn is not None:
            self._gone(conn)

    @rule(client=CLIENTS)
    def drain(self, client: str) -> None:
        self.router.drain(client)

    @rule(client=CLIENTS)
    def hand_back(self, client: str) -> None:
        assert self.router._shared is not None
        if self.router._shared.hand_back(client):
            self.released.add(client)
            self.owner = {a: c for a, c in self.owner.items() if c.client_id != client}

    @precondition(lambda self: self.conns)
    @rule(data=st.data(), agent_type=TYPES, key=KEYS)
    def send(self, data: st.DataObject, agent_type: str, key: str) -> None:
        caller = self.conns[data.draw(st.sampled_from(sorted(self.conns)))]
        self._apply(self.router.receive(caller, request(self._id(), f"{agent_type}/{key}"), 0.0))

    @precondition(lambda self: self.forwarded)
    @rule(data=st.data())
    def answer(self, data: st.DataObject) -> None:
        gid = data.draw(st.sampled_from(sorted(self.forwarded)))
        target = self.forwarded.pop(gid)
        self._apply(self.router.receive(target, response(gid), 0.0))

    @precondition(lambda self: self.conns)
    @rule(data=st.data(), agent_type=TYPES, source=KEYS)
    def publish(self, data: st.DataObject, agent_type: str, source: str) -> None:
        client = data.draw(st.sampled_from(sorted(self.conns)))
        with contextlib.suppress(RoutingError):  # its own duplicate
            self.router.add_subscription(client, type_sub("news", agent_type, self._id()))
        deliveries = self.router.receive(self.conns[client], event("news", source), 0.0)
        assert len({d.conn for d in deliveries}) == len(deliveries)  # once per worker
        for delivery in deliveries:
            assert isinstance(delivery, Deliver)
            assert delivery.event
            assert delivery.conn.client_id not in self.released

    @invariant()
    def invariants_hold(self) -> None:
        self.router.check_invariants()
        for (agent_type, key), conn in self.owner.items():
            assert self.router.placed_on(agent_type, key) == conn.client_id


TestSharedRouting = SharedRoutingMachine.TestCase
TestSharedRouting.settings = settings(max_examples=150, stateful_step_count=50, deadline=None)
