"""Hypothesis drives three gateways' cluster views over an in-memory model of
the shared state: claims and releases of agent types, subscriptions added and
removed, gateways joining, leaving and losing Redis, the change log trimmed.
After every sync a view's mirror must equal what the model gives the live
peers (V4), and every op it returns must make sense to a real routing table
(V3), where a local client's calls in flight to a peer that goes are each
answered ``gateway-unreachable``."""

from __future__ import annotations

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from agentwire._cluster._view import (
    AddSubscription,
    Change,
    ClusterView,
    ConnectPeer,
    DisconnectPeer,
    Op,
    Owner,
    RegisterType,
    RemoveSubscription,
    Snapshot,
    UnregisterType,
)
from agentwire._gateway._routing import Conn, ConnKind, Deliver, RoutingTable
from agentwire._proto import agent_worker_pb2 as pb
from agentwire._wire import ERROR_KIND_KEY, ErrorKind
from tests.gateway.helpers import parse, request, type_sub

GATEWAYS = ["g1", "g2", "g3"]
GW = st.sampled_from(GATEWAYS)
TYPES = st.sampled_from(["t1", "t2", "t3", "t4"])
SUBS = st.sampled_from(["s1", "s2", "s3"])
CLIENTS = st.sampled_from(["a", "b"])


class FakeHub:
    """One gateway's routing table as the cluster node drives it: a peer
    connection per other gateway, and one local client that calls agents of
    the peers (its requests in flight are answered when a peer goes)."""

    def __init__(self) -> None:
        self.peers: dict[str, tuple[set[str], dict[str, bytes]]] = {}
        self.refuse: set[str] = set()  # agent types a local client holds (stale peer state)
        self.table = RoutingTable(startup_grace=0.0, registration_grace=None, max_agent_types=1)
        self.local = self.table.connect("local", ConnKind.DATA)
        self.conns: dict[str, Conn] = {}
        self.pending: dict[str, str] = {}  # request id -> the peer gateway it went to
        self.requests = 0

    def carry_out(self, view: ClusterView, op: Op) -> None:
        peer = f"peer:{op.gateway}"
        if isinstance(op, ConnectPeer):
            assert op.gateway not in self.peers
            self.peers[op.gateway] = (set(), {})
            self.conns[op.gateway] = self.table.connect(peer, ConnKind.DATA, peer=True)
        elif isinstance(op, DisconnectPeer):
            del self.peers[op.gateway]
            for action in self.table.disconnect(self.conns.pop(op.gateway)):
                assert isinstance(action, Deliver)
                assert action.conn is self.local
                answer = parse(action.data).response
                assert answer.metadata[ERROR_KIND_KEY] == ErrorKind.GATEWAY_UNREACHABLE
                assert self.pending.pop(answer.request_id) == op.gateway
            assert op.gateway not in self.pending.values()  # every request answered
        elif isinstance(op, RegisterType):
            assert all(op.agent_type not in types for types, _ in self.peers.values())
            if op.agent_type in self.refuse:
                view.refused(op)
                return
            self.peers[op.gateway][0].add(op.agent_type)
            self.table.register_agent(peer, op.agent_type, peer=True)
        elif isinstance(op, UnregisterType):
            self.peers[op.gateway][0].remove(op.agent_type)
            self.table.unregister_agent(peer, op.agent_type)
        elif isinstance(op, AddSubscription):
            assert all(op.subscription_id not in subs for _, subs in self.peers.values())
            self.peers[op.gateway][1][op.subscription_id] = op.data
            subscription = pb.Subscription.FromString(op.data)
            self.table.add_subscription(peer, subscription, peer=True)
        else:
            assert isinstance(op, RemoveSubscription)
            del self.peers[op.gateway][1][op.subscription_id]
            self.table.remove_subscription(peer, op.subscription_id)

    def call(self, agent_type: str) -> None:
        """The local client calls an agent of *agent_type*."""
        self.requests += 1
        request_id = f"r{self.requests}"
        [action] = self.table.receive(self.local, request(request_id, f"{agent_type}/k"), 0.0)
        assert isinstance(action, Deliver)
        if action.conn is self.local:  # refused: nobody here serves it
            assert parse(action.data).response.error
            assert all(agent_type not in types for types, _ in self.peers.values())
        else:
            [gateway] = [g for g, conn in self.conns.items() if conn is action.conn]
            assert agent_type in self.peers[gateway][0]
            self.pending[request_id] = gateway


class ClusterViewMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.live = set(GATEWAYS)
        self.types: dict[str, Owner] = {}
        self.subs: dict[str, tuple[Owner, bytes]] = {}
        self.version = 0
        self.log: list[Change] = []
        self.views = {g: ClusterView(g) for g in GATEWAYS}
        self.hubs = {g: FakeHub() for g in GATEWAYS}
        self.trimmed = 0  # log entries before this index are gone

    def _change(
        self, op: str, key: str = "", owner: Owner | None = None, data: bytes = b""
    ) -> None:
        self.version += 1
        self.log.append(Change(self.version, op, key, owner, data))

    @initialize()
    def each_gateway_serves_a_type(self) -> None:
        for gateway, agent_type in zip(GATEWAYS, ["t1", "t2", "t3"], strict=True):
            self.claim(gateway, "a", agent_type)
        for gateway in GATEWAYS:
            self.sync(gateway)

    # ------------------------------------------------------------ the shared state

    @rule(gateway=GW, client=CLIENTS, agent_type=TYPES)
    def claim(self, gateway: str, client: str, agent_type: str) -> None:
        current = self.types.get(agent_type)
        if gateway in self.live and (current is None or current.gateway not in self.live):
            self.types[agent_type] = owner = Owner(gateway, client)
            self._change("type+", agent_type, owner)

    @rule(agent_type=TYPES)
    def release(self, agent_type: str) -> None:
        if self.types.pop(agent_type, None) is not None:
            self._change("type-", agent_type)

    @rule(gateway=GW, client=CLIENTS, sub_id=SUBS, topic=st.sampled_from(["x", "y"]))
    def subscribe(self, gateway: str, client: str, sub_id: str, topic: str) -> None:
        data = type_sub(topic, f"agent-{sub_id}", sub_id).SerializeToString()
        current = self.subs.get(sub_id)
        if gateway in self.live and (current is None or current[0].gateway not in self.live):
            self.subs[sub_id] = (owner := Owner(gateway, client), data)
            self._change("sub+", sub_id, owner, data)

    @rule(sub_id=SUBS)
    def unsubscribe(self, sub_id: str) -> None:
        if self.subs.pop(sub_id, None) is not None:
            self._change("sub-", sub_id)

    @rule(gateway=GW)
    def lease_expires(self, gateway: str) -> None:
        """The gateway is gone; the first survivor to notice cleans up."""
        self.live.discard(gateway)
        self.types = {t: o for t, o in self.types.items() if o.gateway != gateway}
        self.subs = {i: s for i, s in self.subs.items() if s[0].gateway != gateway}
        self._change("drop", owner=Owner(gateway, ""))

    @rule(gateway=GW)
    def joins(self, gateway: str) -> None:
        self.live.add(gateway)

    @rule()
    def trim_log(self) -> None:
        self.trimmed = len(self.log)

    # ------------------------------------------------------------ one gateway's view

    @rule(gateway=GW)
    def loses_redis(self, gateway: str) -> None:
        view = self.views[gateway]
        view.lost()
        self._plan(gateway)
        assert self.hubs[gateway].peers == {}

    @rule(gateway=GW, agent_type=TYPES)
    def local_client_holds(self, gateway: str, agent_type: str) -> None:
        """A local client holds *agent_type* while the view still has a peer
        claim for it coming (a stale change): registering it for the peer fails."""
        hub = self.hubs[gateway]
        if all(agent_type not in types for types, _ in hub.peers.values()):
            hub.refuse.add(agent_type)

    @rule(gateway=GW, agent_type=TYPES)
    def local_client_calls(self, gateway: str, agent_type: str) -> None:
        self.hubs[gateway].call(agent_type)

    @rule(gateway=GW)
    def local_client_calls_every_peer(self, gateway: str) -> None:
        hub = self.hubs[gateway]
        for types, _ in list(hub.peers.values()):
            for agent_type in sorted(types):
                hub.call(agent_type)

    @rule(gateway=GW)
    def local_client_leaves(self, gateway: str) -> None:
        self.hubs[gateway].refuse.clear()

    @rule(gateway=GW, sender=GW)
    def message_arrives(self, gateway: str, sender: str) -> None:
        view = self.views[gateway]
        view.heard_from(sender)
        self._plan(gateway)
        assert gateway not in self.hubs[gateway].peers

    @rule(gateway=GW)
    def sync(self, gateway: str) -> None:
        """What the node does: follow the change log; on a gap, or when the
        heartbeat's version differs, load a snapshot."""
        view = self.views[gateway]
        for change in self.log[self.trimmed :]:
            if not view.apply(change):
                break
        if view.version != self.version:
            view.load(Snapshot(self.version, dict(self.types), dict(self.subs)))
        self._finish_sync(gateway)

    def _finish_sync(self, gateway: str) -> None:
        view = self.views[gateway]
        assert view.version == self.version
        view.set_members(self.live)
        self._plan(gateway)
        hub = self.hubs[gateway]
        expected: dict[str, tuple[set[str], dict[str, bytes]]] = {
            g: (set(), {}) for g in self.live - {gateway}
        }
        for agent_type, owner in self.types.items():
            if owner.gateway in expected and agent_type not in hub.refuse:
                expected[owner.gateway][0].add(agent_type)
        for sub_id, (owner, data) in self.subs.items():
            if owner.gateway in expected:
                expected[owner.gateway][1][sub_id] = data
        assert hub.peers == expected

    def _plan(self, gateway: str) -> None:
        view, hub = self.views[gateway], self.hubs[gateway]
        removed, view.removed_here = view.removed_here, []
        assert len(set(removed)) == len(removed)  # V6: once each
        for client, sub_id in removed:  # never one its client holds now
            assert self.subs.get(sub_id, (None, b""))[0] != Owner(gateway, client)
        for op in view.plan():
            hub.carry_out(view, op)
        assert set(view.mirror) == set(hub.peers)

    @invariant()
    def views_and_tables_hold_their_invariants(self) -> None:
        for view in self.views.values():
            view.check_invariants()
        for hub in self.hubs.values():
            hub.table.check_invariants()


TestClusterView = ClusterViewMachine.TestCase
TestClusterView.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)
