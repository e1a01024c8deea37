"""Shared agent types: which worker serves which agent of a type that several
workers registered. Sans-IO; the routing table (``_routing.py``) asks it for
the worker of an ``AgentId`` on every request and event once shared agent
types are on (``GatewayConfig.placement``).

An agent ``type/key`` is *placed* on one worker the first time a message for
it arrives, and stays there while that worker lives: its requests and events
all go there, so its state is never split between two instances (single
activation, as Orleans grains or Dapr actors). Only unplaced keys are placed,
so a worker that joins takes only new keys; when a worker leaves, its keys
are forgotten and each is placed again, on a survivor, by its next message.
A draining worker keeps its keys but is given no new ones.

Invariants (``check_invariants``; ``tests/gateway/test_placement_stateful.py``
drives joins, leaves, drains and messages for random keys):

P1  Workers. ``_workers[t]`` is the (join-ordered) set of live workers of
    type ``t``, never empty (a type without workers has no entry);
    ``_types_of[w]`` is exactly the set of types ``w`` serves.
P2  One live owner. ``_placed[t][k]`` is the only owner of ``t/k``, and it is
    a live worker of ``t`` (possibly draining). So every key of a worker that
    left is unplaced.
P3  Counts. ``_counts[(t, w)]`` is the number of keys of ``t`` placed on
    ``w``, present exactly for the live workers of ``t``; ``_size`` is the
    total number of placed keys, at most ``max_keys``.
P4  Draining. ``_draining`` holds only live workers; a key is placed (for
    the first time) only on a worker that was live and not draining then.
P5  Stability. An entry of ``_placed`` changes only when its owner leaves
    (checked by the state machine's model: a join, a drain or a message for
    another key never moves a key).

Strategies: :class:`HashPlacement` (rendezvous hashing: a key goes to the
worker with the highest ``blake2b(worker, type, key)``; for K keys of a
stable set of W workers, each worker's share is binomial around K/W, within
four standard deviations for all practical purposes) and
:class:`LeastLoadedPlacement` (power of two choices on placed keys). A
strategy is consulted only for unplaced keys.

Memory: a placed key costs one entry in a dict of its type: about 40 bytes
of dict slot, amortized, plus the key string (49 + its length bytes); the
worker id is shared. Measured at the gateway: about 150 bytes per agent with
a 21-character key. ``max_keys`` bounds the total; a message for a new key
beyond it is refused (OVERLOADED) until a worker leaves. Keys are not
forgotten while their owner lives, even when idle: AutoGen workers keep an
agent they activated for their whole life, so placing an idle key anew on
another worker would split its state.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable, Sequence
from typing import Protocol

import attrs

__all__ = [
    "HashPlacement",
    "LeastLoadedPlacement",
    "PlacementStrategy",
    "PlacementTable",
    "TypePlacement",
    "placement_strategy",
]


class PlacementStrategy(Protocol):
    """Chooses the worker for an unplaced key among *candidates* (live, not
    draining, join order, at least one). *keys_of(w)*: keys of this type
    already placed on ``w``."""

    name: str

    def choose(
        self, agent_type: str, key: str, candidates: Sequence[str], keys_of: Callable[[str], int]
    ) -> str: ...


def rendezvous_score(worker: str, agent_type: str, key: str) -> bytes:
    """Highest-random-weight score of *worker* for ``agent_type/key``."""
    data = b"\0".join((worker.encode(), agent_type.encode(), key.encode()))
    return hashlib.blake2b(data, digest_size=8).digest()


class HashPlacement:
    """Rendezvous (highest random weight) hashing: stable, needs no state for
    the choice; a key's worker depends only on the candidates."""

    name = "hash"

    def choose(
        self, agent_type: str, key: str, candidates: Sequence[str], keys_of: Callable[[str], int]
    ) -> str:
        if len(candidates) == 1:
            return candidates[0]
        return max(candidates, key=lambda w: rendezvous_score(w, agent_type, key))


class LeastLoadedPlacement:
    """Power of two choices: of two random candidates, the one with fewer keys
    of the type (ties: the first joined)."""

    name = "least-loaded"

    def __init__(self, seed: int | None = None) -> None:
        self._random = random.Random(seed)

    def choose(
        self, agent_type: str, key: str, candidates: Sequence[str], keys_of: Callable[[str], int]
    ) -> str:
        if len(candidates) <= 2:
            return min(candidates, key=keys_of)
        i, j = sorted(self._random.sample(range(len(candidates)), 2))
        return min(candidates[i], candidates[j], key=keys_of)


def placement_strategy(spec: str | PlacementStrategy) -> PlacementStrategy:
    """A strategy from its name (``"hash"``, ``"least-loaded"``) or itself."""
    if not isinstance(spec, str):
        return spec
    if spec == "hash":
        return HashPlacement()
    if spec == "least-loaded":
        return LeastLoadedPlacement()
    raise ValueError(f"unknown placement strategy {spec!r}: use 'hash' or 'least-loaded'")


@attrs.frozen(slots=True)
class TypePlacement:
    """``statistics().placement[type]``: the workers of a shared agent type."""

    workers: int
    keys: dict[str, int]  # placed keys per worker (client id)
    draining: tuple[str, ...] = ()


class PlacementTable:
    """Owners of the agents of shared types (P1-P5). No I/O."""

    def __init__(self, strategy: PlacementStrategy, *, max_keys: int = 1_000_000) -> None:
        if max_keys < 1:
            raise ValueError(f"max_keys must be at least 1, got {max_keys!r}")
        self.strategy = strategy
        self.max_keys = max_keys
        self._workers: dict[str, dict[str, None]] = {}
        self._types_of: dict[str, set[str]] = {}
        self._placed: dict[str, dict[str, str]] = {}
        self._counts: dict[tuple[str, str], int] = {}
        self._draining: set[str] = set()
        self._size = 0
        self.keys_placed = 0  # counters
        self.keys_replaced = 0  # unplaced because their owner left
        self.refused_full = 0

    def __len__(self) -> int:
        return self._size

    # ------------------------------------------------------------ membership

    def join(self, worker: str, agent_type: str) -> None:
        """*worker* (live) serves *agent_type*. Takes no placed key (P5)."""
        workers = self._workers.setdefault(agent_type, {})
        if worker in workers:
            return
        workers[worker] = None
        self._types_of.setdefault(worker, set()).add(agent_type)
        self._counts[(agent_type, worker)] = 0

    def leave(self, worker: str) -> int:
        """*worker* is gone: forget it and unplace its keys (returns how many)."""
        types = self._types_of.pop(worker, set())
        self._draining.discard(worker)
        unplaced = 0
        for agent_type in types:
            workers = self._workers[agent_type]
            del workers[worker]
            count = self._counts.pop((agent_type, worker))
            placed = self._placed.get(agent_type)
            if not workers:
                del self._workers[agent_type]
                self._placed.pop(agent_type, None)
            elif count and placed is not None:
                for key in [k for k, w in placed.items() if w == worker]:
                    del placed[key]
            if placed is not None and not placed:
                self._placed.pop(agent_type, None)
            unplaced += count
        self._size -= unplaced
        self.keys_replaced += unplaced
        return unplaced

    def drain(self, worker: str) -> bool:
        """*worker* takes no new keys from now on (it keeps its own). False
        if it serves no shared type."""
        if worker not in self._types_of:
            return False
        self._draining.add(worker)
        return True

    def has_worker(self, worker: str) -> bool:
        """Whether *worker* serves some type."""
        return worker in self._types_of

    def is_draining(self, worker: str) -> bool:
        return worker in self._draining

    def keys_of(self, worker: str) -> int:
        """Keys placed on *worker*, over all its types."""
        return sum(self._counts[(t, worker)] for t in self._types_of.get(worker, ()))

    def serves(self, agent_type: str) -> bool:
        return agent_type in self._workers

    # ------------------------------------------------------------ routing

    def owner(self, agent_type: str, key: str) -> str | None:
        """The owner of ``agent_type/key`` if placed (no placing)."""
        placed = self._placed.get(agent_type)
        return None if placed is None else placed.get(key)

    def place(self, agent_type: str, key: str) -> str | None:
        """The worker of ``agent_type/key``, placing it if needed. None: no
        live worker serves the type, all of them drain, or the table is full
        (:meth:`why_not` says which)."""
        placed = self._placed.get(agent_type)
        if placed is not None:
            owner = placed.get(key)
            if owner is not None:
                return owner
        workers = self._workers.get(agent_type)
        if workers is None or self._size >= self.max_keys:
            if workers is not None:
                self.refused_full += 1
            return None
        draining = self._draining
        candidates = [w for w in workers if w not in draining] if draining else list(workers)
        if not candidates:
            return None
        counts = self._counts
        worker = self.strategy.choose(
            agent_type, key, candidates, lambda w: counts[(agent_type, w)]
        )
        if placed is None:
            placed = self._placed[agent_type] = {}
        placed[key] = worker
        counts[(agent_type, worker)] += 1
        self._size += 1
        self.keys_placed += 1
        return worker

    def why_not(self, agent_type: str) -> str:
        """Why :meth:`place` gave no worker for a new key of *agent_type*."""
        workers = self._workers.get(agent_type)
        if workers is None:
            return f"no worker with an open channel serves agent type {agent_type!r}"
        if self._size >= self.max_keys:
            return (
                f"the gateway has placed {self._size} agents, its limit (max_placed_keys); "
                "a new agent is placed once a worker leaves"
            )
        return f"every worker of agent type {agent_type!r} is draining"

    # ------------------------------------------------------------ introspection

    def statistics(self) -> dict[str, TypePlacement]:
        return {
            agent_type: TypePlacement(
                workers=len(workers),
                keys={w: self._counts[(agent_type, w)] for w in workers},
                draining=tuple(w for w in workers if w in self._draining),
            )
            for agent_type, workers in self._workers.items()
        }

    def check_invariants(self) -> None:
        """Assert P1-P4 (P5 is a property of transitions: see the state machine)."""
        types_of: dict[str, set[str]] = {}
        for agent_type, workers in self._workers.items():
            assert workers, agent_type  # P1
            for w in workers:
                types_of.setdefault(w, set()).add(agent_type)
        assert types_of == self._types_of  # P1
        counts: dict[tuple[str, str], int] = {
            (t, w): 0 for t, workers in self._workers.items() for w in workers
        }
        for agent_type, placed in self._placed.items():
            assert placed, agent_type
            for key, w in placed.items():
                assert w in self._workers.get(agent_type, {}), (agent_type, key, w)  # P2
                counts[(agent_type, w)] += 1
        assert counts == self._counts  # P3
        assert self._size == sum(counts.values()) <= self.max_keys  # P3
        assert self._draining <= set(self._types_of)  # P4
