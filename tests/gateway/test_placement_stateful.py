"""Hypothesis drives the placement table of shared agent types through random
joins, leaves, drains and messages for random keys, checking P1-P4 of
``agentwire/_gateway/_placement.py`` after every step and, against a model,
P5 (a key moves only when its owner leaves) and that a joiner never takes a
placed key."""

from __future__ import annotations

from collections import Counter

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from agentwire._gateway._placement import (
    HashPlacement,
    LeastLoadedPlacement,
    PlacementStrategy,
    PlacementTable,
    rendezvous_score,
)

WORKERS = st.sampled_from(["w1", "w2", "w3", "w4"])
TYPES = st.sampled_from(["t1", "t2"])
KEYS = st.text(alphabet="abcdef", min_size=0, max_size=3)


class PlacementMachine(RuleBasedStateMachine):
    def strategy(self) -> PlacementStrategy:
        return HashPlacement()

    def __init__(self) -> None:
        super().__init__()
        self.table = PlacementTable(self.strategy(), max_keys=40)
        # model: live workers per type, draining workers, owner per placed agent
        self.workers: dict[str, list[str]] = {}
        self.draining: set[str] = set()
        self.placed: dict[tuple[str, str], str] = {}

    @rule(worker=WORKERS, agent_type=TYPES)
    def join(self, worker: str, agent_type: str) -> None:
        self.table.join(worker, agent_type)
        workers = self.workers.setdefault(agent_type, [])
        if worker not in workers:
            workers.append(worker)

    @rule(worker=WORKERS)
    def leave(self, worker: str) -> None:
        unplaced = self.table.leave(worker)
        gone = [agent for agent, owner in self.placed.items() if owner == worker]
        assert unplaced == len(gone)
        for agent in gone:
            del self.placed[agent]
        for agent_type in list(self.workers):
            if worker in self.workers[agent_type]:
                self.workers[agent_type].remove(worker)
            if not self.workers[agent_type]:
                del self.workers[agent_type]
        self.draining.discard(worker)
        for agent in gone:  # every key of a departed worker is unplaced
            assert self.table.owner(*agent) is None

    @rule(worker=WORKERS)
    def drain(self, worker: str) -> None:
        serves = any(worker in ws for ws in self.workers.values())
        assert self.table.drain(worker) == serves
        if serves:
            self.draining.add(worker)

    @rule(agent_type=TYPES, key=KEYS)
    def message(self, agent_type: str, key: str) -> None:
        owner = self.table.place(agent_type, key)
        agent = (agent_type, key)
        if agent in self.placed:
            assert owner == self.placed[agent]  # P5: a placed key stays
            return
        candidates = [w for w in self.workers.get(agent_type, []) if w not in self.draining]
        if not candidates or len(self.placed) >= self.table.max_keys:
            assert owner is None
            assert self.table.why_not(agent_type)
            return
        assert owner in candidates  # P4: new keys go to live, non-draining workers
        if isinstance(self.table.strategy, HashPlacement):
            best = max(candidates, key=lambda w: rendezvous_score(w, agent_type, key))
            assert owner == best
        self.placed[agent] = owner

    @precondition(lambda self: len(self.placed) > 0)
    @rule(data=st.data())
    def message_for_a_placed_key(self, data: st.DataObject) -> None:
        agent = data.draw(st.sampled_from(sorted(self.placed)))
        assert self.table.place(*agent) == self.placed[agent]

    @invariant()
    def invariants_hold(self) -> None:
        self.table.check_invariants()
        assert len(self.table) == len(self.placed)
        for agent, owner in self.placed.items():
            assert self.table.owner(*agent) == owner  # one owner, and it is the model's
            assert owner in self.workers[agent[0]]  # owner is live
        stats = self.table.statistics()
        assert {t: ws for t, ws in self.workers.items()} == {
            t: list(p.keys) for t, p in stats.items()
        }
        per_worker = Counter((t, w) for (t, _), w in self.placed.items())
        for agent_type, p in stats.items():
            assert p.workers == len(self.workers[agent_type])
            for worker, keys in p.keys.items():
                assert keys == per_worker[(agent_type, worker)]


class LeastLoadedMachine(PlacementMachine):
    def strategy(self) -> PlacementStrategy:
        return LeastLoadedPlacement(seed=7)


TestPlacementHash = PlacementMachine.TestCase
TestPlacementHash.settings = settings(max_examples=150, stateful_step_count=60, deadline=None)
TestPlacementLeastLoaded = LeastLoadedMachine.TestCase
TestPlacementLeastLoaded.settings = settings(
    max_examples=100, stateful_step_count=60, deadline=None
)
