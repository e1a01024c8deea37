"""The worker's outbox: two bounded lanes, RPC traffic first, events never starved.

A worker writes everything it sends on one ``OpenChannel`` stream. Its own
publishes can be many (a publisher in a loop); an RPC request or response
queued behind thousands of them would wait for all of them. So outgoing
messages go into one of two lanes: :attr:`Lane.RPC` (requests and responses)
or :attr:`Lane.EVENTS` (CloudEvents), and the one writer takes the next
message with :meth:`Outbox.pop`. Sans-IO: no waiting here; the session parks
its producers and its writer around it.

Invariants (tests/worker/test_outbox.py checks them with a Hypothesis state
machine; :meth:`Outbox.check_invariants` states them in code):

1. **Bounded.** A lane never holds more than its capacity; :meth:`push` onto a
   full lane (or onto a closed outbox) refuses and changes nothing.
2. **Order within a lane.** Messages leave a lane in the order they entered it.
   Nothing is dropped or duplicated: every accepted message leaves exactly
   once, through :meth:`pop` or :meth:`drain`.
3. **RPC first.** :meth:`pop` returns an RPC message whenever the RPC lane has
   one, except as rule 4 says.
4. **Events never starved.** While events wait, at most ``rpc_burst`` RPC
   messages in a row leave before the next event does. ``_streak`` counts the
   RPC messages popped since the last event left, so
   ``0 <= _streak <= rpc_burst``, and ``_streak == 0`` while no event waits.
5. **Closing.** After :meth:`close`, :meth:`push` refuses; :meth:`drain`
   empties both lanes, returning what was left (RPC lane first, each lane in
   order).
"""

from __future__ import annotations

import enum
from collections import deque
from typing import Generic, TypeVar

import attrs

__all__ = ["DEFAULT_RPC_BURST", "Lane", "LaneStatistics", "Outbox"]

T = TypeVar("T")

DEFAULT_RPC_BURST = 4
"""RPC messages written in a row, at most, while events wait (then one event)."""


class Lane(enum.IntEnum):
    """Which lane a message travels in."""

    RPC = 0
    """RPC requests and responses: latency matters, few at a time."""
    EVENTS = 1
    """Published CloudEvents: throughput matters, possibly many."""


@attrs.frozen
class LaneStatistics:
    """How full the lanes of an :class:`Outbox` are."""

    rpc_queued: int
    events_queued: int
    capacity: int


class Outbox(Generic[T]):
    """Two bounded FIFO lanes with the pop order of the module's invariants."""

    __slots__ = ("_capacity", "_closed", "_lanes", "_rpc_burst", "_streak")

    def __init__(self, capacity: int, *, rpc_burst: int = DEFAULT_RPC_BURST) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        if rpc_burst < 1:
            raise ValueError(f"rpc_burst must be >= 1, got {rpc_burst}")
        self._capacity = capacity
        self._rpc_burst = rpc_burst
        self._lanes: tuple[deque[T], deque[T]] = (deque(), deque())
        self._streak = 0
        self._closed = False

    @property
    def capacity(self) -> int:
        """The most messages one lane holds."""
        return self._capacity

    @property
    def closed(self) -> bool:
        return self._closed

    def __len__(self) -> int:
        return len(self._lanes[0]) + len(self._lanes[1])

    def queued(self, lane: Lane) -> int:
        return len(self._lanes[lane])

    def has_room(self, lane: Lane) -> bool:
        """Whether :meth:`push` onto *lane* would be accepted now."""
        return not self._closed and len(self._lanes[lane]) < self._capacity

    def push(self, lane: Lane, item: T) -> bool:
        """Queue *item* at the end of *lane*; False (nothing queued) if full or closed."""
        if not self.has_room(lane):
            return False
        self._lanes[lane].append(item)
        return True

    def pop(self) -> tuple[Lane, T] | None:
        """The next message to write and its lane (rules 3 and 4); None if both are empty."""
        rpc, events = self._lanes
        if not events:
            self._streak = 0
            if rpc:
                return Lane.RPC, rpc.popleft()
            return None
        if rpc and self._streak < self._rpc_burst:
            self._streak += 1
            return Lane.RPC, rpc.popleft()
        self._streak = 0
        return Lane.EVENTS, events.popleft()

    def close(self) -> None:
        """Refuse every later :meth:`push` (what is queued stays, for :meth:`drain`)."""
        self._closed = True

    def drain(self) -> list[tuple[Lane, T]]:
        """Remove and return everything queued: the RPC lane, then the event lane."""
        rpc, events = self._lanes
        left = [(Lane.RPC, item) for item in rpc]
        left.extend((Lane.EVENTS, item) for item in events)
        rpc.clear()
        events.clear()
        self._streak = 0
        return left

    def statistics(self) -> LaneStatistics:
        return LaneStatistics(
            rpc_queued=len(self._lanes[Lane.RPC]),
            events_queued=len(self._lanes[Lane.EVENTS]),
            capacity=self._capacity,
        )

    def check_invariants(self) -> None:
        """Assert the invariants that can be seen in the state (1 and 4)."""
        for lane in self._lanes:
            assert len(lane) <= self._capacity, "a lane holds more than its capacity"
        assert 0 <= self._streak <= self._rpc_burst, "the RPC streak left its bounds"
        if not self._lanes[Lane.EVENTS]:
            assert self._streak == 0, "a streak outlived the events it was counted against"
