"""What one gateway knows of its cluster, and what of it it mirrors into its
own routing table. Sans-IO: ``_node.py`` feeds it what Redis said (a
snapshot, changes, the live members) and carries out the :data:`Op` s that
:meth:`ClusterView.plan` returns on the gateway's hub.

The shared state (kept in Redis by ``_redis.py``): which gateways are live
(each holds a lease it renews), who owns each agent type (gateway, client),
and the subscription table (id -> owner and the serialized
``agents.Subscription``), all under one version number that every change
increments.

Invariants (``check_invariants``; ``tests/cluster/test_view_stateful.py``):

V1  Version. ``version`` is None exactly when no snapshot is loaded (never
    loaded, or the link to Redis was lost); then ``types``, ``subs`` and
    ``members`` are empty. A change applies only on top of the version just
    before it; a gap asks for a new snapshot (``apply`` returns False).
V2  Members. ``members`` never holds this gateway's own id.
V3  Mirror. ``mirror`` has exactly the peers whose ``peer:`` connection the
    hub holds (as far as the ops returned so far say), each with the agent
    types and subscriptions recorded for it there. A mirrored peer is always
    a member or about to be disconnected by the next ``plan``.
V4  Plan. Right after :meth:`plan`, ``mirror`` equals :meth:`desired`: for
    each live member other than this gateway, the agent types and
    subscriptions the shared state gives it. Ops come in an order the hub
    can carry out: a peer is connected before anything is recorded for it;
    a type or subscription leaves one peer before it is recorded for
    another; a peer that left is disconnected first.
V5  Refusals. An op the hub refused (``refused``) is taken out of
    ``mirror`` so that the next plan tries it again.
V6  Removed here. A ``sub-`` change of a subscription of this gateway's own
    clients (another gateway's client removed it) is queued once in
    ``removed_here`` for the hub to drop too.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import attrs

__all__ = [
    "AddSubscription",
    "Change",
    "ClusterView",
    "ConnectPeer",
    "DisconnectPeer",
    "Op",
    "Owner",
    "RegisterType",
    "RemoveSubscription",
    "Snapshot",
    "UnregisterType",
]


@attrs.frozen(slots=True)
class Owner:
    """Who recorded an agent type or a subscription: a client of a gateway."""

    gateway: str
    client: str


@attrs.frozen(slots=True)
class Snapshot:
    version: int
    types: Mapping[str, Owner]
    subs: Mapping[str, tuple[Owner, bytes]]


@attrs.frozen(slots=True)
class Change:
    """One change of the shared state, numbered by the version it produced.

    ``op``: ``type+`` / ``type-`` (``key`` an agent type), ``sub+`` / ``sub-``
    (``key`` a subscription id, ``data`` its serialized form), ``drop``
    (everything of gateway ``owner.gateway`` went: it left)."""

    version: int
    op: str
    key: str = ""
    owner: Owner | None = None
    data: bytes = b""


@attrs.frozen(slots=True)
class ConnectPeer:
    gateway: str


@attrs.frozen(slots=True)
class DisconnectPeer:
    gateway: str


@attrs.frozen(slots=True)
class RegisterType:
    gateway: str
    agent_type: str


@attrs.frozen(slots=True)
class UnregisterType:
    gateway: str
    agent_type: str


@attrs.frozen(slots=True)
class AddSubscription:
    gateway: str
    subscription_id: str
    data: bytes


@attrs.frozen(slots=True)
class RemoveSubscription:
    gateway: str
    subscription_id: str


Op = (
    ConnectPeer
    | DisconnectPeer
    | RegisterType
    | UnregisterType
    | AddSubscription
    | RemoveSubscription
)


@attrs.define(slots=True)
class _Mirrored:
    types: set[str] = attrs.Factory(set)
    subs: dict[str, bytes] = attrs.Factory(dict)


class ClusterView:
    """The shared state as last read, and the peers mirrored locally (V1-V5)."""

    def __init__(self, me: str) -> None:
        self.me = me
        self.version: int | None = None
        self.members: set[str] = set()
        self.types: dict[str, Owner] = {}
        self.subs: dict[str, tuple[Owner, bytes]] = {}
        self.mirror: dict[str, _Mirrored] = {}
        # (client, subscription id) of this gateway's clients that another
        # gateway removed (any client may remove any subscription): to remove here.
        self.removed_here: list[tuple[str, str]] = []

    # ------------------------------------------------------------ input

    def load(self, snapshot: Snapshot) -> None:
        """Replace the shared state by *snapshot* (at start, after a gap, on re-join)."""
        self.version = snapshot.version
        self.types = dict(snapshot.types)
        self.subs = dict(snapshot.subs)

    def apply(self, change: Change) -> bool:
        """Apply *change*; False if a snapshot is needed first (V1)."""
        if self.version is None:
            return False
        if change.version <= self.version:
            return True  # already in the snapshot
        if change.version != self.version + 1:
            return False
        self.version = change.version
        owner = change.owner
        if change.op == "type+" and owner is not None:
            self.types[change.key] = owner
        elif change.op == "type-":
            self.types.pop(change.key, None)
        elif change.op == "sub+" and owner is not None:
            self.subs[change.key] = (owner, change.data)
            if owner.gateway == self.me and (owner.client, change.key) in self.removed_here:
                self.removed_here.remove((owner.client, change.key))  # added again since
        elif change.op == "sub-":
            removed = self.subs.pop(change.key, None)
            if removed is not None and removed[0].gateway == self.me:
                self.removed_here.append((removed[0].client, change.key))
        elif change.op == "drop" and owner is not None:
            self._forget_gateway(owner.gateway)
            self.members.discard(owner.gateway)
        return True

    def set_members(self, live: Iterable[str]) -> None:
        """The gateways whose lease is live (this one's own id is ignored)."""
        if self.version is None:
            return
        self.members = set(live) - {self.me}

    def heard_from(self, gateway: str) -> None:
        """A message came from *gateway*: it is live (until the next set_members says not)."""
        if self.version is not None and gateway != self.me:
            self.members.add(gateway)

    def unreachable(self, gateway: str) -> None:
        """Writing to *gateway* failed (its lease is gone): not a member until
        the next :meth:`set_members` says otherwise."""
        self.members.discard(gateway)

    def lost(self) -> None:
        """The link to Redis is gone: nothing is known any more (V1)."""
        self.version = None
        self.members.clear()
        self.types.clear()
        self.subs.clear()

    def _forget_gateway(self, gateway: str) -> None:
        self.types = {t: o for t, o in self.types.items() if o.gateway != gateway}
        self.subs = {i: s for i, s in self.subs.items() if s[0].gateway != gateway}

    # ------------------------------------------------------------ output

    def desired(self) -> dict[str, _Mirrored]:
        """What the hub should hold per peer gateway (V4)."""
        wanted = {gateway: _Mirrored() for gateway in self.members}
        for agent_type, owner in self.types.items():
            peer = wanted.get(owner.gateway)
            if peer is not None:
                peer.types.add(agent_type)
        for sub_id, (owner, data) in self.subs.items():
            peer = wanted.get(owner.gateway)
            if peer is not None:
                peer.subs[sub_id] = data
        return wanted

    def plan(self) -> list[Op]:
        """The ops that make the hub hold :meth:`desired` (V4); ``mirror`` is
        updated as if they were all carried out."""
        wanted = self.desired()
        ops: list[Op] = []
        for gateway in [g for g in self.mirror if g not in wanted]:
            ops.append(DisconnectPeer(gateway))
            del self.mirror[gateway]
        added: list[Op] = []
        for gateway, want in wanted.items():
            have = self.mirror.get(gateway)
            if have is None:
                have = self.mirror[gateway] = _Mirrored()
                ops.append(ConnectPeer(gateway))
            for agent_type in have.types - want.types:
                ops.append(UnregisterType(gateway, agent_type))
            for sub_id in [i for i in have.subs if want.subs.get(i) != have.subs[i]]:
                ops.append(RemoveSubscription(gateway, sub_id))
                del have.subs[sub_id]
            added += [RegisterType(gateway, t) for t in sorted(want.types - have.types)]
            added += [
                AddSubscription(gateway, i, data)
                for i, data in want.subs.items()
                if i not in have.subs
            ]
            have.types = set(want.types)
            have.subs = dict(want.subs)
        return ops + added

    def refused(self, op: Op) -> None:
        """The hub could not carry out *op*: the next plan tries again (V5)."""
        if isinstance(op, ConnectPeer):
            self.mirror.pop(op.gateway, None)
            return
        have = self.mirror.get(op.gateway)
        if have is None:
            return
        if isinstance(op, RegisterType):
            have.types.discard(op.agent_type)
        elif isinstance(op, AddSubscription):
            have.subs.pop(op.subscription_id, None)

    def check_invariants(self) -> None:
        """Assert V1-V3 (V4 and V5 are checked by the stateful test around plan)."""
        if self.version is None:
            assert not self.types
            assert not self.subs
            assert not self.members
        assert self.me not in self.members
        assert self.me not in self.mirror
        for gateway, mirrored in self.mirror.items():
            for agent_type in mirrored.types:
                owners = [g for g, m in self.mirror.items() if agent_type in m.types]
                assert owners == [gateway], (agent_type, owners)
