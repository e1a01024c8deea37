"""The sans-IO core of a DAG run: which task may start, which are done, failed or skipped.

Built on :class:`graphlib.TopologicalSorter` (``prepare``/``get_ready``/``done``); a cycle
is refused by the constructor, before anything runs.

Invariants (``check_invariants``; tests/flow/test_schedule.py drives them with Hypothesis):

1. Every task is in exactly one of: waiting, ready, running, done, failed.
2. A task is ready, running, done or failed only if every dependency is done.
3. A failed task's dependents never become ready; in fail-fast mode, once a task has
   failed ``take`` returns nothing (nothing new starts).
4. ``finished`` exactly when nothing runs and nothing can start (the tasks left waiting
   are the ``skipped`` ones: a dependency failed, or the run stopped).
"""

from __future__ import annotations

import graphlib
from collections.abc import Iterable, Mapping

from ._errors import DagCycleError, FlowError

__all__ = ["Schedule", "critical_path", "refuse_cycles"]


def refuse_cycles(dag: str, deps: Mapping[str, Iterable[str]]) -> graphlib.TopologicalSorter[str]:
    """A prepared sorter for *deps*; :class:`DagCycleError` naming a cycle if there is one."""
    sorter: graphlib.TopologicalSorter[str] = graphlib.TopologicalSorter(deps)
    try:
        sorter.prepare()
    except graphlib.CycleError as error:
        raise DagCycleError(dag, error.args[1]) from None
    return sorter


def critical_path(
    deps: Mapping[str, Iterable[str]], weights: Mapping[str, float]
) -> tuple[float, tuple[str, ...]]:
    """The heaviest chain of dependent tasks: ``(total weight, tasks in run order)``.

    A task missing from *weights* weighs 0. Ties go to the chain found first in the
    topological order.
    """
    best: dict[str, tuple[float, tuple[str, ...]]] = {}
    for name in graphlib.TopologicalSorter(deps).static_order():
        before = max(
            (best[dep] for dep in deps.get(name, ())), key=lambda item: item[0], default=(0.0, ())
        )
        best[name] = (before[0] + weights.get(name, 0.0), (*before[1], name))
    return max(best.values(), key=lambda item: item[0], default=(0.0, ()))


class Schedule:
    """Which tasks of a DAG may start now, given which finished and which failed."""

    def __init__(self, dag: str, deps: Mapping[str, Iterable[str]], *, fail_fast: bool) -> None:
        self.deps = {name: tuple(after) for name, after in deps.items()}
        self.fail_fast = fail_fast
        self._sorter = refuse_cycles(dag, self.deps)
        self.ready: list[str] = list(self._sorter.get_ready())
        self.running: set[str] = set()
        self.done: set[str] = set()
        self.failed: set[str] = set()

    @property
    def stopped(self) -> bool:
        """Fail fast after a failure: nothing new starts."""
        return self.fail_fast and bool(self.failed)

    def take(self) -> list[str]:
        """The tasks that may start now (each returned once); they count as running."""
        if self.stopped:
            return []
        taken, self.ready = self.ready, []
        self.running.update(taken)
        return taken

    def finish(self, name: str) -> None:
        """*name* finished: its dependents whose dependencies are all done become ready."""
        self._end(name)
        self.done.add(name)
        self._sorter.done(name)
        self.ready.extend(self._sorter.get_ready())

    def fail(self, name: str) -> None:
        """*name* failed: its dependents never start; in fail-fast mode nothing new does."""
        self._end(name)
        self.failed.add(name)

    def _end(self, name: str) -> None:
        if name not in self.running:
            raise FlowError(f"task {name!r} is not running")
        self.running.discard(name)

    @property
    def finished(self) -> bool:
        return not self.running and (self.stopped or not self.ready)

    @property
    def skipped(self) -> set[str]:
        """The tasks that never started (so far)."""
        started = self.running | self.done | self.failed
        return set(self.deps) - started - set(self.ready)

    def check_invariants(self) -> None:
        groups = [set(self.ready), self.running, self.done, self.failed]
        assert len(self.ready) == len(groups[0])  # 1: no task ready twice
        assert sum(map(len, groups)) == len(set().union(*groups))  # 1
        for name in set().union(*groups):
            assert all(dep in self.done for dep in self.deps[name])  # 2
        for name in self.failed:  # 3
            assert not any(name in self.deps[other] for other in set().union(*groups))
