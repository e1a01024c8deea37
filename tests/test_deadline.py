"""The current task's effective deadline, read without trio's recursive walk."""

from __future__ import annotations

import math

import pytest
import trio

from agentwire._runtime import _deadline
from agentwire._runtime._deadline import effective_deadline


def test_the_loop_is_used_with_the_checked_trio() -> None:
    assert trio.__version__.split(".")[:2] == _deadline.CHECKED_VERSION.split(".")[:2]
    assert effective_deadline is not trio.current_effective_deadline
    assert _deadline._fields_in_place()


def test_another_trio_series_gets_trios_own_function(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(trio, "__version__", "0.99.0")
    assert not _deadline._fields_in_place()


async def agree() -> float:
    ours = effective_deadline()
    assert ours == trio.current_effective_deadline()
    return ours


async def test_no_deadline_is_infinite() -> None:
    assert await agree() == math.inf


async def test_the_earliest_deadline_of_the_enclosing_scopes_counts() -> None:
    now = trio.current_time()
    with trio.move_on_at(now + 30):
        with trio.move_on_at(now + 10):
            with trio.CancelScope():
                assert await agree() == now + 10
        assert await agree() == now + 30


async def test_a_shield_hides_the_deadlines_outside_it() -> None:
    now = trio.current_time()
    with trio.move_on_at(now + 10):
        with trio.CancelScope(shield=True):
            with trio.CancelScope():
                assert await agree() == math.inf
            with trio.move_on_at(now + 20):
                assert await agree() == now + 20
        with trio.move_on_at(now + 20, shield=True):
            assert await agree() == now + 20


async def test_a_cancelled_task_has_minus_infinity() -> None:
    with trio.CancelScope() as outer:
        with trio.move_on_at(trio.current_time() + 10):
            outer.cancel()
            assert await agree() == -math.inf
            with trio.CancelScope(shield=True):
                assert await agree() == math.inf


async def test_a_child_task_sees_its_nurserys_deadlines() -> None:
    now = trio.current_time()
    seen: list[float] = []

    async def child() -> None:
        with trio.move_on_at(now + 40):
            seen.append(await agree())
        seen.append(await agree())

    with trio.move_on_at(now + 50):
        async with trio.open_nursery() as nursery:
            nursery.cancel_scope.deadline = now + 45
            nursery.start_soon(child)
    assert seen == [now + 40, now + 45]


async def test_a_moved_deadline_counts_at_once() -> None:
    with trio.CancelScope() as scope:
        scope.deadline = trio.current_time() + 5
        assert await agree() == scope.deadline
        scope.deadline = math.inf
        assert await agree() == math.inf
        scope.relative_deadline = 3  # an entered scope: absolute at once
        assert await agree() == scope.deadline
