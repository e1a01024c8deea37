"""Versioned agent state, sans-IO: what a store keeps and what an agent sends it.

An agent's state is a JSON object (``dict`` with ``str`` keys, JSON values).
Every accepted write makes a new *version*: 1 for the first, then one more per
write; version 0 means "never written". A write names the version it was
based on and is refused with :class:`StateConflictError` unless that is still
the current version (optimistic concurrency, as Orleans' ETags or Dapr's
first-write-wins). A write is a :class:`Snapshot` (the whole state) or a
:class:`Delta` (an RFC 6902 JSON Patch against the previous version).

:class:`StateLog` is what a store keeps per agent: the last snapshot and the
deltas written since. Invariants (``check_invariants``;
``tests/state/test_log_stateful.py`` drives random snapshots, deltas and
stale writes):

L1  Shape. ``version == snapshot_version + len(deltas)``; ``version == 0``
    exactly when nothing was written (``snapshot is None``, no deltas).
L2  Versions strictly increase: an accepted write makes ``version + 1``; a
    refused one changes nothing.
L3  Stale writes are refused: a write whose base is not ``version`` raises
    :class:`StateConflictError` carrying ``version``.
L4  The first write is a snapshot (a delta has nothing to apply to).
L5  A snapshot write drops the deltas: ``snapshot_version == version``.
L6  ``materialize()`` is the state the writer of ``version`` had: the
    snapshot with the deltas applied in order (checked against a model).

:class:`StateTracker` is the agent's side: the last committed state and its
version; ``prepare(state)`` says what to write (nothing, a delta, or a
snapshot when the delta would be no smaller, or after ``snapshot_every``
deltas). Invariants:

T1  ``committed`` is a deep, JSON-normal copy: the agent's later mutations
    never reach it.
T2  ``deltas_since_snapshot <= snapshot_every``; a write made when it equals
    ``snapshot_every`` is a snapshot.
T3  ``prepare`` returns ``None`` exactly when the JSON text of every member
    of the state equals ``committed``'s (so ``1`` -> ``true`` is a change,
    though ``1 == True``), and there are the same members.
T4  A delta is written only when its JSON is shorter than the state's, and
    the state's is over ``SMALL_STATE`` (256) characters.
T5  The texts the tracker keeps are those of ``committed``'s members.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any, TypeAlias

import attrs

from .._errors import AgentwireError
from ._patch import apply_patch, extends, make_patch

__all__ = [
    "Change",
    "Delta",
    "Snapshot",
    "StateConflictError",
    "StateError",
    "StateLog",
    "StateStoreUnavailableError",
    "StateTracker",
    "StoredState",
    "check_write",
    "normalize_state",
]

# A state whose JSON text is at most this long is written whole, never diffed: a
# patch would save next to nothing, and computing one costs more than the write.
SMALL_STATE = 256

JsonObject: TypeAlias = dict[str, Any]
Patch: TypeAlias = list[dict[str, Any]]


class StateError(AgentwireError, ValueError):
    """An agent's state cannot be stored (not a JSON object, or a malformed write)."""


class StateConflictError(AgentwireError):
    """A write was based on a version that is no longer current: another write came first.

    ``current_version`` is the version the store holds. The writer's in-memory
    state is stale: reload it (a :class:`~agentwire.state.StatefulAgent` does
    so before its next message) and redo the change.
    """

    def __init__(self, agent: str, base_version: int, current_version: int) -> None:
        self.agent = agent
        self.base_version = base_version
        self.current_version = current_version
        super().__init__(
            f"state of {agent} is at version {current_version}, not {base_version}: "
            "another write came first; reload the state and retry"
        )


class StateStoreUnavailableError(AgentwireError):
    """The state store could not be reached in time: the change was not
    committed, or was without an answer (the next write finds out, with a
    :class:`StateConflictError`). Retry once it is back."""


@attrs.frozen
class Snapshot:
    """The whole state (a JSON object)."""

    state: JsonObject


@attrs.frozen
class Delta:
    """An RFC 6902 JSON Patch from the previous version's state."""

    patch: Patch


Change: TypeAlias = Snapshot | Delta


@attrs.frozen
class StoredState:
    """What a store holds for one agent: ``snapshot`` (the state at
    ``snapshot_version``) and the deltas of versions ``snapshot_version + 1``
    to ``version``, in order. ``version == 0``: never written."""

    version: int = 0
    snapshot_version: int = 0
    snapshot: JsonObject | None = None
    deltas: tuple[Patch, ...] = ()

    def materialize(self) -> JsonObject | None:
        """The state at ``version`` (a fresh object), or ``None`` if never written."""
        if self.snapshot is None:
            return None
        state = normalize_state(self.snapshot)
        for patch in self.deltas:
            state = apply_patch(state, patch)
        return state


def normalize_state(state: Mapping[str, Any]) -> JsonObject:
    """A deep copy of *state* through JSON; :class:`StateError` if that would change it
    (non-``str`` keys, tuples, sets, NaN, objects JSON does not know)."""
    return _normalize(state)[0]


def _normalize(state: Mapping[str, Any]) -> tuple[JsonObject, str]:
    """``normalize_state`` and the JSON text of the state."""
    try:
        text = json.dumps(state, allow_nan=False)
        copy = json.loads(text)
    except (TypeError, ValueError) as exc:
        raise StateError(f"agent state must be a JSON object: {exc}") from None
    if not isinstance(copy, dict) or copy != state:
        raise StateError(
            "agent state must be a JSON object with str keys and JSON values "
            "(lists, not tuples); it would not survive a round trip through JSON"
        )
    return copy, text


def check_write(agent: str, current_version: int, base_version: int, change: Change) -> int:
    """The version a write of *change* based on *base_version* makes, or the error.

    What every store runs under its own lock or transaction (L2-L4).
    """
    if base_version != current_version:
        raise StateConflictError(agent, base_version, current_version)
    if current_version == 0 and not isinstance(change, Snapshot):
        raise StateError(f"the first write of the state of {agent} must be a snapshot")
    return current_version + 1


class StateLog:
    """One agent's stored state, in memory (see the module docstring)."""

    __slots__ = ("_agent", "_stored")

    def __init__(self, agent: str) -> None:
        self._agent = agent
        self._stored = StoredState()

    @property
    def stored(self) -> StoredState:
        return self._stored

    @property
    def version(self) -> int:
        return self._stored.version

    def write(self, base_version: int, change: Change) -> int:
        """Apply *change* (based on *base_version*); return the new version."""
        stored = self._stored
        version = check_write(self._agent, stored.version, base_version, change)
        if isinstance(change, Snapshot):
            self._stored = StoredState(version, version, normalize_state(change.state), ())
        else:
            self._stored = attrs.evolve(
                stored, version=version, deltas=(*stored.deltas, list(change.patch))
            )
        return version

    def check_invariants(self) -> None:
        s = self._stored
        assert s.version == s.snapshot_version + len(s.deltas)  # L1
        assert (s.version == 0) == (s.snapshot is None)  # L1, L4
        if s.version == 0:
            assert not s.deltas
            assert s.snapshot_version == 0


class StateTracker:
    """The agent's side: last committed state and version, and what to write next.

    It keeps the compact JSON text of each top-level member of the committed
    state, so that a commit encodes the state once, compares member by member,
    and decodes (copies) only the members that changed: what is unchanged is
    shared with the previous committed copy, which nobody mutates.
    """

    __slots__ = (
        "_pending",
        "_texts",
        "committed",
        "deltas_since_snapshot",
        "snapshot_every",
        "version",
    )

    def __init__(self, snapshot_every: int = 16) -> None:
        if snapshot_every < 1:
            raise ValueError(f"snapshot_every must be at least 1, not {snapshot_every}")
        self.snapshot_every = snapshot_every
        self.version = 0
        self.committed: JsonObject | None = None
        # per member of committed: its JSON text (compared, not the objects: 1 == True)
        self._texts: dict[str, str] = {}
        self._pending: tuple[JsonObject, dict[str, str]] | None = None
        self.deltas_since_snapshot = 0

    def loaded(self, stored: StoredState) -> JsonObject | None:
        """Start from what a store returned; the state to give the agent (a fresh copy)."""
        state = stored.materialize()
        self.version = stored.version
        self._pending = None
        if state is None:
            self.committed, self._texts = None, {}
        else:
            self.committed = normalize_state(state)
            self._texts = {key: _member_text(value) for key, value in self.committed.items()}
        # More deltas than this tracker allows (a store written with another
        # setting) mean the next write is a snapshot, as exactly snapshot_every do.
        self.deltas_since_snapshot = min(len(stored.deltas), self.snapshot_every)
        return state

    def prepare(self, state: Mapping[str, Any]) -> tuple[Change, JsonObject] | None:
        """What to write for *state* (and its normalized copy), or ``None`` if unchanged."""
        texts = _member_texts(state)
        old = self._texts
        if self.committed is not None and texts == old:
            return None
        committed = self.committed or {}
        current: JsonObject = {}
        changed: JsonObject = {}
        for key, text in texts.items():
            before = old.get(key)
            if before == text:
                current[key] = committed[key]
            else:
                copy = _copy_member(key, text, state[key], before, committed.get(key))
                current[key] = changed[key] = copy
        self._pending = (current, texts)
        size = _object_size(texts)
        if (
            self.committed is None
            or self.deltas_since_snapshot >= self.snapshot_every
            or size <= SMALL_STATE
        ):
            return Snapshot(current), current
        patch = make_patch(committed, current, changed, old, texts)
        if len(json.dumps(patch, separators=(",", ":"))) >= size:
            return Snapshot(current), current
        return Delta(patch), current

    def committed_as(self, change: Change, state: JsonObject, version: int) -> None:
        """Record that *change* (leading to *state*) was written as *version*."""
        pending, self._pending = self._pending, None
        self.version = version
        self.committed = state
        if pending is not None and pending[0] is state:
            self._texts = pending[1]
        else:
            self._texts = {key: _member_text(value) for key, value in state.items()}
        if isinstance(change, Snapshot):
            self.deltas_since_snapshot = 0
        else:
            self.deltas_since_snapshot += 1

    def check_invariants(self) -> None:
        assert 0 <= self.deltas_since_snapshot <= self.snapshot_every  # T2
        assert (self.version == 0) == (self.committed is None)
        if self.committed is not None:
            assert self._texts == {k: _member_text(v) for k, v in self.committed.items()}


def _member_text(value: Any) -> str:
    return json.dumps(value, allow_nan=False, separators=(",", ":"))


def _member_texts(state: Mapping[str, Any]) -> dict[str, str]:
    """The compact JSON text of each member of *state*; StateError if it has none."""
    if not isinstance(state, Mapping):
        raise StateError(f"agent state must be a JSON object, not {type(state).__name__}")
    texts: dict[str, str] = {}
    try:
        for key, value in state.items():
            if not isinstance(key, str):
                raise StateError(f"agent state must have str keys, not {key!r}")
            texts[key] = _member_text(value)
    except (TypeError, ValueError) as exc:
        if isinstance(exc, StateError):
            raise
        raise StateError(f"agent state must be a JSON object: {exc}") from None
    return texts


def _copy_member(key: str, text: str, value: Any, old_text: str | None, old: Any) -> Any:
    """A fresh copy of *value* through its JSON *text*; StateError if that changes it.

    A list that only grew at its end (its previous text *old_text*, its
    previous copy *old*) is copied as *old*'s items (shared: nobody mutates
    them) and copies of the new ones: only those are decoded.
    """
    if (
        isinstance(old, list)
        and isinstance(value, list)
        and old_text is not None
        and extends(old_text, text)
    ):
        added = json.loads(text if old_text == "[]" else "[" + text[len(old_text) :])
        if added != value[len(old) :]:
            raise _not_json(key)
        return old + added
    copy = json.loads(text)
    if copy != value:
        raise _not_json(key)
    return copy


def _not_json(key: str) -> StateError:
    return StateError(
        f"agent state member {key!r} would not survive a round trip through JSON "
        "(str keys and JSON values, lists, not tuples)"
    )


def _object_size(texts: dict[str, str]) -> int:
    """The length of the compact JSON text of the object whose members have *texts*."""
    return (
        1
        + sum(len(json.dumps(key)) + 1 + len(text) for key, text in texts.items())
        + max(len(texts) - 1, 0)
        + 1
    )


def replay(snapshot: JsonObject, deltas: Sequence[Patch]) -> list[JsonObject]:
    """Every state from *snapshot* through each delta in turn (for tests and tools)."""
    states = [normalize_state(snapshot)]
    for patch in deltas:
        states.append(apply_patch(states[-1], patch))
    return states
