"""Checkpoint budgets: let others run every N operations of a producer that never blocks.

A trio checkpoint on every single send or delivery costs a scheduler pass each
(measured: 2.5x slower pipelined); none at all lets a producer that never
blocks starve everyone else. A :class:`CheckpointBudget` does a full
checkpoint every ``every`` operations and otherwise only honours a pending
cancellation, so every operation stays cancellable.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

import trio

__all__ = ["DEFAULT_EVERY", "CheckpointBudget"]

DEFAULT_EVERY = 32
"""Operations between two full checkpoints unless a budget says otherwise."""


class CheckpointBudget:
    """Counts operations; :meth:`checkpoint` yields to the scheduler every ``every`` of them."""

    __slots__ = ("spend",)

    def __init__(self, every: int = DEFAULT_EVERY) -> None:
        if every < 1:
            raise ValueError("every must be >= 1")
        # The count is an endless cycle of every-1 False and one True: taking
        # the next one is a single call into C, cheaper than any Python method
        # (hot paths call spend() once per message).
        self.spend: Callable[[], bool] = itertools.cycle((False,) * (every - 1) + (True,)).__next__
        """Count one operation; True when a full checkpoint is due (the caller yields)."""

    async def checkpoint(self) -> None:
        """Count one operation: a full checkpoint when due, else only a cancellation check."""
        if self.spend():
            await trio.lowlevel.checkpoint()
        else:
            await trio.lowlevel.checkpoint_if_cancelled()
