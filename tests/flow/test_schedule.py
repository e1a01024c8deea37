"""The DAG scheduler's invariants (agentwire/flow/_schedule.py) under random operations."""

from __future__ import annotations

import itertools

import hypothesis.strategies as st
import pytest
from hypothesis import given, settings
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from agentwire.flow import DagCycleError, critical_path
from agentwire.flow._schedule import Schedule


@st.composite
def dags(draw: st.DrawFn, max_tasks: int = 8) -> dict[str, tuple[str, ...]]:
    """A random DAG: each task depends on some of the tasks before it."""
    count = draw(st.integers(1, max_tasks))
    names = [f"t{i}" for i in range(count)]
    return {
        name: tuple(draw(st.sets(st.sampled_from(names[:i]))) if i else ())
        for i, name in enumerate(names)
    }


class ScheduleMachine(RuleBasedStateMachine):
    @initialize(deps=dags(), fail_fast=st.booleans())
    def start(self, deps: dict[str, tuple[str, ...]], fail_fast: bool) -> None:
        self.schedule = Schedule("d", deps, fail_fast=fail_fast)
        self.started: set[str] = set()

    @rule()
    def take(self) -> None:
        taken = self.schedule.take()
        if self.schedule.fail_fast and self.schedule.failed:
            assert taken == []
        assert not self.started & set(taken)  # each task starts once
        self.started.update(taken)

    @precondition(lambda self: self.schedule.running)
    @rule(data=st.data(), ok=st.booleans())
    def end(self, data: st.DataObject, ok: bool) -> None:
        name = data.draw(st.sampled_from(sorted(self.schedule.running)))
        if ok:
            self.schedule.finish(name)
        else:
            self.schedule.fail(name)

    @invariant()
    def holds(self) -> None:
        self.schedule.check_invariants()
        if self.schedule.finished:
            assert self.schedule.take() == []


TestSchedule = ScheduleMachine.TestCase
TestSchedule.settings = settings(max_examples=200, stateful_step_count=30, deadline=None)


@given(dags())
def test_a_run_without_failures_finishes_every_task(deps: dict[str, tuple[str, ...]]) -> None:
    schedule = Schedule("d", deps, fail_fast=True)
    while not schedule.finished:
        for name in schedule.take():
            schedule.finish(name)
    assert schedule.done == set(deps)
    assert schedule.skipped == set()


@given(dags(), st.data())
def test_cycles_are_always_refused(deps: dict[str, tuple[str, ...]], data: st.DataObject) -> None:
    # add a back edge from an early task to a later one that (transitively) depends on it
    names = list(deps)
    later = data.draw(st.sampled_from(names))
    earlier = data.draw(st.sampled_from(names[: names.index(later) + 1]))
    deps = {**deps, earlier: (*deps[earlier], later)}
    if earlier == later or _depends(deps, later, earlier):
        with pytest.raises(DagCycleError) as caught:
            Schedule("d", deps, fail_fast=True)
        cycle = caught.value.cycle
        assert cycle[0] == cycle[-1]
        for before, after in itertools.pairwise(cycle):
            assert before in deps[after]  # each task of the cycle needs the one before it
    else:
        assert Schedule("d", deps, fail_fast=True).ready


def _depends(deps: dict[str, tuple[str, ...]], task: str, on: str) -> bool:
    stack, seen = [task], set()
    while stack:
        for dep in deps[stack.pop()]:
            if dep == on:
                return True
            if dep not in seen:
                seen.add(dep)
                stack.append(dep)
    return False


def brute_force_longest(deps: dict[str, tuple[str, ...]], weights: dict[str, float]) -> float:
    """The heaviest path, by enumerating every chain of dependencies."""
    best = 0.0

    def walk(name: str, total: float) -> None:
        nonlocal best
        total += weights[name]
        best = max(best, total)
        for other, after in deps.items():
            if name in after:
                walk(other, total)

    for name in deps:
        walk(name, 0.0)
    return best


@given(dags(), st.data())
def test_the_critical_path_is_the_longest_path(
    deps: dict[str, tuple[str, ...]], data: st.DataObject
) -> None:
    weights = {name: data.draw(st.integers(0, 20)) / 2 for name in deps}
    length, path = critical_path(deps, weights)
    assert length == brute_force_longest(deps, weights)
    assert sum(weights[name] for name in path) == length
    for before, after in itertools.pairwise(path):
        assert before in deps[after]  # the path is a chain of dependencies
