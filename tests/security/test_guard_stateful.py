"""Hypothesis drives the access guard beside a small model of the gateway's
router (client records that live while they hold a stream, an agent type or
a subscription; a stream's end drops its client's types and subscriptions),
with principals of different rights borrowing each other's client-ids, and
checks the invariants written at the top of ``agentwire/_security/_guard.py``
after every step."""

from __future__ import annotations

import attrs
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from agentwire._proto import agent_worker_pb2 as pb
from agentwire._security import (
    AccessGuard,
    Credentials,
    NamePatterns,
    PermissionDeniedError,
    Principal,
    Rights,
)

PRINCIPALS = {
    "alice": Principal("alice", Rights(register=NamePatterns(["t1", "t2"]))),
    "bob": Principal("bob", Rights(register=NamePatterns(["t*"]))),
    "eve": Principal(
        "eve",
        Rights(
            register=NamePatterns(["t3"]),
            subscribe=NamePatterns(["x"]),
            publish=NamePatterns(["y"]),
        ),
    ),
}
WHO = st.sampled_from(sorted(PRINCIPALS))
CLIENT_IDS = st.sampled_from(["c1", "c2", "c3", "c4", "c5", "c6"])
TYPES = st.sampled_from(["t1", "t2", "t3"])
TOPICS = st.sampled_from(["x", "y"])
SUB_IDS = st.sampled_from(["s1", "s2", "s3"])


class _Everyone:
    def authenticate(self, credentials: Credentials) -> Principal:
        return PRINCIPALS[credentials.metadata["who"]]


@attrs.define
class _Client:
    stream: bool = False
    types: set[str] = attrs.Factory(set)
    subs: set[str] = attrs.Factory(set)


class GuardMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.clients: dict[str, _Client] = {}
        self.guard = AccessGuard(_Everyone(), is_known=self.clients.__contains__, sweep_floor=2)
        self.peak = 0
        self.type_owner: dict[str, str] = {}
        self.sub_owner: dict[str, str] = {}
        # G1: who created state for each client-id since it was last free
        self.creator: dict[str, str] = {}
        self.refusals = 0

    def _principal(self, who: str) -> Principal:
        return self.guard.authenticate(Credentials({"who": who}))

    def _enter(self, principal: Principal, client_id: str) -> bool:
        try:
            self.guard.check_client(principal, client_id)
        except PermissionDeniedError as exc:
            refusal = str(exc)
        else:
            return True
        self.refusals += 1
        assert client_id not in refusal
        assert self.creator[client_id] != principal.name
        return False

    def _created(self, principal: Principal, client_id: str) -> None:
        self.guard.claim(principal, client_id)
        assert self.creator.setdefault(client_id, principal.name) == principal.name  # G1/G2

    def _forget_if_empty(self, client_id: str) -> None:
        client = self.clients.get(client_id)
        if client is not None and not (client.stream or client.types or client.subs):
            del self.clients[client_id]  # the guard learns it through is_known
            del self.creator[client_id]

    @rule(who=WHO, client_id=CLIENT_IDS)
    def open_stream(self, who: str, client_id: str) -> None:
        principal = self._principal(who)
        if self._enter(principal, client_id):
            self.clients.setdefault(client_id, _Client()).stream = True  # supersedes its own
            self._created(principal, client_id)

    @rule(client_id=CLIENT_IDS)
    def stream_ends(self, client_id: str) -> None:
        client = self.clients.get(client_id)
        if client is None or not client.stream:
            return
        client.stream = False
        for agent_type in client.types:
            del self.type_owner[agent_type]
        for sub_id in client.subs:
            del self.sub_owner[sub_id]
        client.types.clear()
        client.subs.clear()
        self._forget_if_empty(client_id)

    @rule(who=WHO, client_id=CLIENT_IDS, agent_type=TYPES)
    def register(self, who: str, client_id: str, agent_type: str) -> None:
        principal = self._principal(who)
        if not self._enter(principal, client_id):
            return
        try:
            self.guard.check_register(principal, agent_type)
        except PermissionDeniedError:
            self.refusals += 1
            assert not principal.rights.register.allows(agent_type)
            return
        owner = self.type_owner.get(agent_type)
        if owner is not None:
            message = self.guard.registration_conflict(principal, agent_type, owner)
            assert (owner in message) == (self.creator[owner] == principal.name)  # G4
            return
        self.type_owner[agent_type] = client_id
        self.clients.setdefault(client_id, _Client()).types.add(agent_type)
        self._created(principal, client_id)

    @rule(who=WHO, client_id=CLIENT_IDS, topic=TOPICS, agent_type=TYPES, sub_id=SUB_IDS)
    def subscribe(self, who: str, client_id: str, topic: str, agent_type: str, sub_id: str) -> None:
        principal = self._principal(who)
        if not self._enter(principal, client_id):
            return
        sub = pb.Subscription(
            id=sub_id,
            typeSubscription=pb.TypeSubscription(topic_type=topic, agent_type=agent_type),
        )
        try:
            self.guard.check_subscription(principal, sub)
        except PermissionDeniedError:
            self.refusals += 1
            return
        if sub_id in self.sub_owner:
            return  # duplicate: the router refuses it
        self.sub_owner[sub_id] = client_id
        self.clients.setdefault(client_id, _Client()).subs.add(sub_id)
        self._created(principal, client_id)

    @rule(who=WHO, client_id=CLIENT_IDS, sub_id=SUB_IDS)
    def unsubscribe(self, who: str, client_id: str, sub_id: str) -> None:
        principal = self._principal(who)
        if not self._enter(principal, client_id):
            return
        owner = self.sub_owner.get(sub_id)
        if not self.guard.may_see(principal, owner):
            return  # answered as an unknown subscription
        assert owner is not None
        assert self.creator[owner] == principal.name  # G4: only its own
        del self.sub_owner[sub_id]
        self.clients[owner].subs.discard(sub_id)
        self._forget_if_empty(owner)

    @rule(who=WHO)
    def list_subscriptions(self, who: str) -> None:
        principal = self._principal(who)
        seen = [s for s, owner in self.sub_owner.items() if self.guard.may_see(principal, owner)]
        assert all(self.creator[self.sub_owner[s]] == principal.name for s in seen)  # G4
        mine = {c for c, p in self.creator.items() if p == principal.name}
        assert set(seen) == {s for s, owner in self.sub_owner.items() if owner in mine}

    @rule(client_id=CLIENT_IDS, topic=TOPICS)
    def publish(self, client_id: str, topic: str) -> None:
        client = self.clients.get(client_id)
        if client is None or not client.stream:
            return  # only a live stream publishes
        refusal = self.guard.refuse_event(client_id, topic)
        rights = PRINCIPALS[self.creator[client_id]].rights
        assert (refusal is None) == rights.publish.allows(topic)
        if refusal is not None:
            self.refusals += 1

    @invariant()
    def invariants_hold(self) -> None:
        self.peak = max(self.peak, len(self.clients))
        self.guard.check_invariants(self.peak)  # G3
        for client_id, name in self.creator.items():  # G1
            assert self.guard.owner_of(client_id) == name
        assert self.guard.statistics().denials == self.refusals  # G5


GuardMachine.TestCase.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)
TestGuardStateful = GuardMachine.TestCase
