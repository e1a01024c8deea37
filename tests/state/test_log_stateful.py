"""Hypothesis drives one agent's ``StateLog`` through snapshots, deltas and stale
writes, checking L1-L5 of ``agentwire/state/_log.py`` after every step and L6
(``materialize()`` is the last writer's state) against a model; and the
tracker's T1-T3 as it decides what to write."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from agentwire.state import Delta, Snapshot, StateConflictError, StateError, StoredState
from agentwire.state._log import StateLog, StateTracker, replay
from agentwire.state._patch import apply_patch, extends, make_patch

from .strategies import STATES, VALUES, histories


class LogMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.log = StateLog("counter/k")
        self.model: dict[str, Any] | None = None  # the state of the last accepted write
        self.version = 0

    @rule(state=STATES)
    def write_a_snapshot(self, state: dict[str, Any]) -> None:
        assert self.log.write(self.version, Snapshot(state)) == self.version + 1
        self.version += 1
        self.model = state
        assert self.log.stored.snapshot_version == self.version  # L5
        assert self.log.stored.deltas == ()

    @rule(state=STATES)
    def write_a_delta(self, state: dict[str, Any]) -> None:
        if self.model is None:
            with pytest.raises(StateError, match="must be a snapshot"):  # L4
                self.log.write(0, Delta(make_patch({}, state)))
            return
        deltas = len(self.log.stored.deltas)
        assert self.log.write(self.version, Delta(make_patch(self.model, state))) == (
            self.version + 1
        )
        self.version += 1
        self.model = state
        assert len(self.log.stored.deltas) == deltas + 1

    @rule(state=STATES, behind=st.integers(1, 3), ahead=st.booleans())
    def a_stale_write_is_refused_and_changes_nothing(
        self, state: dict[str, Any], behind: int, ahead: bool
    ) -> None:
        base = self.version + behind if ahead else self.version - behind
        before = self.log.stored
        with pytest.raises(StateConflictError) as caught:  # L3
            self.log.write(base, Snapshot(state))
        assert caught.value.current_version == self.version
        assert caught.value.base_version == base
        assert self.log.stored is before  # L2: a refused write changes nothing

    @invariant()
    def invariants_hold(self) -> None:
        self.log.check_invariants()
        assert self.log.version == self.version  # L2
        assert self.log.stored.materialize() == self.model  # L6


TestLog = LogMachine.TestCase
TestLog.settings = settings(max_examples=60, stateful_step_count=30, deadline=None)


@given(histories())
@settings(max_examples=80, deadline=None)
def test_the_recorded_deltas_applied_in_order_to_the_first_snapshot_give_every_later_state(
    states: list[dict[str, Any]],
) -> None:
    tracker = StateTracker(snapshot_every=1000)
    log = StateLog("counter/k")
    written: list[dict[str, Any]] = []  # the state of each version, in order
    for state in states:
        prepared = tracker.prepare(state)
        assert (prepared is None) == (json.dumps(state) == json.dumps(tracker.committed))  # T3
        if prepared is None:
            continue
        change, normal = prepared
        version = log.write(tracker.version, change)
        assert version == tracker.version + 1  # versions strictly increase
        tracker.committed_as(change, normal, version)
        tracker.check_invariants()
        written.append(state)
    stored = log.stored
    first = written[stored.snapshot_version - 1]
    assert stored.snapshot == first
    assert replay(first, stored.deltas) == written[stored.snapshot_version - 1 :]


@given(histories(max_size=20), st.integers(1, 4))
@settings(max_examples=60, deadline=None)
def test_a_snapshot_is_written_after_every_snapshot_every_deltas(
    states: list[dict[str, Any]], snapshot_every: int
) -> None:
    tracker = StateTracker(snapshot_every)
    run = 0  # deltas in a row
    for state in states:
        prepared = tracker.prepare(state)
        if prepared is None:
            continue
        change, normal = prepared
        run = run + 1 if isinstance(change, Delta) else 0
        assert run <= snapshot_every  # T2
        tracker.committed_as(change, normal, tracker.version + 1)
        tracker.check_invariants()


def test_the_committed_state_is_a_copy_the_agent_cannot_reach() -> None:
    tracker = StateTracker()
    state: dict[str, Any] = {"items": list(range(100))}
    prepared = tracker.prepare(state)
    assert prepared is not None
    tracker.committed_as(*prepared, version=1)
    state["items"].append(100)  # T1
    assert tracker.committed == {"items": list(range(100))}
    prepared = tracker.prepare(state)
    assert prepared is not None
    assert prepared[0] == Delta([{"op": "add", "path": "/items/100", "value": 100}])


def test_a_delta_no_smaller_than_the_state_is_written_as_a_snapshot() -> None:
    tracker = StateTracker()
    prepared = tracker.prepare({"items": list(range(100))})
    assert prepared is not None
    tracker.committed_as(*prepared, version=1)
    prepared = tracker.prepare({"items": list(range(100, 200))})  # every item replaced
    assert prepared is not None
    assert prepared[0] == Snapshot({"items": list(range(100, 200))})


def test_a_small_state_is_written_whole() -> None:
    tracker = StateTracker()
    prepared = tracker.prepare({"n": 1, "items": list(range(40))})
    assert prepared is not None
    tracker.committed_as(*prepared, version=1)
    prepared = tracker.prepare({"n": 2, "items": list(range(40))})
    assert prepared is not None
    assert prepared[0] == Snapshot({"n": 2, "items": list(range(40))})


@pytest.mark.parametrize(
    ("state", "reason"),
    [
        ({"k": (1, 2)}, "lists, not tuples"),
        ({1: "int key"}, "str keys"),
        ({"k": {1, 2}}, "not JSON serializable"),
        ({"k": float("nan")}, "Out of range float"),
    ],
)
def test_a_state_that_is_not_a_json_object_is_refused_precisely(
    state: dict[Any, Any], reason: str
) -> None:
    with pytest.raises(StateError, match=reason):
        StateTracker().prepare(state)


def canonical(state: dict[str, Any]) -> str:
    return json.dumps(state, sort_keys=True)


@given(STATES, STATES, st.lists(VALUES, max_size=4))
@settings(max_examples=300, deadline=None)
def test_a_patch_turns_the_old_state_into_exactly_the_new_one(
    old: dict[str, Any], new: dict[str, Any], appended: list[Any]
) -> None:
    for before, after in [(old, new), (old, {**old, "list": [*old.get("list", []), *appended]})]:
        if not isinstance(before.get("list", []), list):
            continue
        patched = apply_patch(before, make_patch(before, after))
        assert canonical(patched) == canonical(after)  # JSON-exact: 1, 1.0 and true differ


def test_a_list_that_grew_at_its_end_is_patched_with_adds_of_the_new_items() -> None:
    old = {"items": [{"n": i} for i in range(1000)], "name": "log"}
    new = {"items": [*old["items"], {"n": 1000}, {"n": 1001}], "name": "log"}
    assert make_patch(old, new) == [
        {"op": "add", "path": "/items/1000", "value": {"n": 1000}},
        {"op": "add", "path": "/items/1001", "value": {"n": 1001}},
    ]


@pytest.mark.parametrize(("before", "after"), [(1, True), (1, 1.0), (0, False)])
def test_a_value_changing_only_its_json_type_is_a_change(before: Any, after: Any) -> None:
    tracker = StateTracker()
    padding = "p" * 300
    prepared = tracker.prepare({"v": before, "pad": padding})
    assert prepared is not None
    tracker.committed_as(*prepared, version=1)
    prepared = tracker.prepare({"v": after, "pad": padding})
    assert prepared is not None
    stored = StoredState(2, 1, {"v": before, "pad": padding}, (prepared[0].patch,))  # type: ignore[union-attr]
    assert json.dumps(stored.materialize()) == json.dumps({"v": after, "pad": padding})


def test_items_appended_to_a_list_are_copied_checked_and_written_as_adds() -> None:
    tracker = StateTracker()
    state: dict[str, Any] = {"items": [{"n": n} for n in range(50)]}
    prepared = tracker.prepare(state)
    assert prepared is not None
    tracker.committed_as(*prepared, version=1)
    state["items"].append({"n": 50})
    prepared = tracker.prepare(state)
    assert prepared is not None
    assert prepared[0] == Delta([{"op": "add", "path": "/items/50", "value": {"n": 50}}])
    tracker.committed_as(*prepared, version=2)
    tracker.check_invariants()
    state["items"][50]["n"] = "mutated"  # T1: the appended item was copied
    state["items"][0]["n"] = "mutated too"
    assert tracker.committed == {"items": [{"n": n} for n in range(51)]}
    state["items"][0]["n"] = 0
    state["items"][50] = {"n": 50}
    state["items"].append((1, 2))  # a tuple appended: refused like any other
    with pytest.raises(StateError, match="lists, not tuples"):
        tracker.prepare(state)


@pytest.mark.parametrize(
    ("before", "after", "grew"),
    [
        ([], [1], True),
        ([1, 2], [1, 2, 3], True),
        ([1, 2], [1, 23], False),
        ([[1]], [[1, 2]], False),
    ],
)
def test_a_list_that_only_grew_is_recognised_by_its_text(
    before: list[Any], after: list[Any], grew: bool
) -> None:
    old, new = json.dumps(before, separators=(",", ":")), json.dumps(after, separators=(",", ":"))
    assert extends(old, new) is grew
