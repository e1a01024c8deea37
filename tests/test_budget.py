"""A checkpoint budget yields to the scheduler every N operations, and only then."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from agentwire._budget import CheckpointBudget


def test_a_full_checkpoint_is_due_every_n_operations() -> None:
    budget = CheckpointBudget(3)
    assert [budget.spend() for _ in range(7)] == [False, False, True, False, False, True, False]


def test_every_must_be_positive() -> None:
    with pytest.raises(ValueError, match="every"):
        CheckpointBudget(0)


async def test_only_every_nth_operation_yields_to_the_scheduler(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real_checkpoint = trio.lowlevel.checkpoint
    yields_at: list[int] = []
    done = 0

    async def counting_checkpoint() -> None:
        yields_at.append(done)
        await real_checkpoint()

    monkeypatch.setattr(trio.lowlevel, "checkpoint", counting_checkpoint)
    budget = CheckpointBudget(4)
    for _ in range(10):
        done += 1
        await budget.checkpoint()
    assert yields_at == [4, 8]


async def test_a_cancelled_producer_stops_at_its_next_operation() -> None:
    budget = CheckpointBudget(1000)
    done = 0
    with trio.CancelScope() as scope:
        scope.cancel()
        for _ in range(5):
            done += 1
            await budget.checkpoint()
    assert done == 1
