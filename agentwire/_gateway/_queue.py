"""One client's outgoing queue in the gateway: two bounded lanes, fair interleaving.

Sans-IO: no trio, no awaits. ``_hub.py`` wraps it with the waiting (a
:class:`Waiter` per sender blocked on a full lane) and the pump reading it.

Lanes. The *RPC lane* carries requests forwarded to the client, answers to
its own requests, error answers, and control messages; the *event lane*
carries CloudEvents. A burst of events therefore never delays an RPC by more
than ``rpc_burst`` messages' worth of interleaving.

Invariants (``check_invariants``; ``tests/gateway/test_queue_stateful.py``
drives random offers, waits, takes, withdrawals and closes):

Q1  Bounds. Each lane holds at most ``capacity`` *traffic* items; the RPC
    lane holds besides at most ``answer_capacity`` *answers* (responses that
    settle the client's own requests; the router admits no more requests than
    there is answer space, so :meth:`put_answer` never finds it full).
Q2  Waiting in batches. A lane is *full* from the offer that fills it to
    ``capacity`` until a take brings it down to ``resume_at`` (half the
    capacity); it has waiters only while full, and takes no offer while full
    (so no newcomer overtakes a waiter). The take that brings it down moves
    the waiters' items into it at once, oldest first, while there is room, and
    only if that leaves room is the lane no longer full. So a sender blocked
    on a busy client is woken once per half a lane of progress, not once per
    message, and a slot handed to a waiter is never seen free in between (the
    window this closes: a route that must not wait finding "no full lane" and
    then no space).
Q3  Full-lane count. ``FullLanes.count`` is the number of full lanes over
    every open queue sharing it. A lane that is not full holds fewer than
    ``capacity`` traffic items, so ``count == 0`` means any lane of any open
    queue accepts one more traffic item without waiting.
Q4  Order. Each lane is FIFO, and so are its waiters; a placed waiter's item
    goes behind what is already queued.
Q5  Fairness. :meth:`take` serves the RPC lane first, but after
    ``rpc_burst`` RPC-lane items taken while events were waiting it takes one
    event: ``streak`` (those items since the last event) is at most
    ``rpc_burst``, and 0 while the event lane is empty.
Q6  Closing. A closed queue has no waiters (:meth:`close` releases them
    unplaced), takes no new items, and no longer counts in ``FullLanes``;
    what it holds can still be taken (or dropped by the caller).
"""

from __future__ import annotations

import contextlib
import enum
from collections import deque
from collections.abc import Callable, Sequence

__all__ = ["ClientQueue", "FullLanes", "Lane", "QueueFull", "Waiter"]


class Lane(enum.IntEnum):
    RPC = 0  # requests, responses, control messages, error answers
    EVENT = 1  # CloudEvents


class QueueFull(Exception):
    """A put that must never find the queue full found it full (a broken invariant)."""


class FullLanes:
    """The number of full lanes over the open queues sharing this counter (Q3)."""

    __slots__ = ("count",)

    def __init__(self) -> None:
        self.count = 0


class Waiter:
    """A sender blocked on a full lane, holding its item until a slot frees.

    ``placed`` turns true when :meth:`ClientQueue.take` moved the item into the
    lane; ``wakeup`` is for the I/O layer (called by it, never by the queue).
    """

    __slots__ = ("data", "lane", "placed", "wakeup")

    def __init__(self, lane: Lane, data: bytes, wakeup: Callable[[], object]) -> None:
        self.lane = lane
        self.data = data
        self.placed = False
        self.wakeup = wakeup


class ClientQueue:
    """The outgoing queue of one client connection (see the invariants above)."""

    __slots__ = (
        "_answers",
        "_blocked",
        "_full",
        "_items",
        "_traffic",
        "_waiters",
        "answer_capacity",
        "capacity",
        "closed",
        "resume_at",
        "rpc_burst",
        "streak",
    )

    def __init__(
        self, capacity: int, answer_capacity: int, rpc_burst: int, full: FullLanes
    ) -> None:
        if capacity < 1 or answer_capacity < 0 or rpc_burst < 1:
            raise ValueError("capacity and rpc_burst must be >= 1, answer_capacity >= 0")
        self.capacity = capacity
        self.answer_capacity = answer_capacity
        self.rpc_burst = rpc_burst
        self.resume_at = capacity // 2
        self._full = full
        self._blocked = [False, False]  # per lane: full (Q2)
        # RPC lane: (data, is_answer); event lane: (data, False).
        self._items: tuple[deque[tuple[bytes, bool]], deque[tuple[bytes, bool]]] = (
            deque(),
            deque(),
        )
        self._traffic = [0, 0]
        self._answers = 0
        self._waiters: tuple[deque[Waiter], deque[Waiter]] = (deque(), deque())
        self.streak = 0
        self.closed = False

    def __len__(self) -> int:
        return len(self._items[0]) + len(self._items[1])

    def is_full(self, lane: Lane) -> bool:
        """Whether *lane* takes no offer now (Q2: until it is down to ``resume_at``)."""
        return self._blocked[lane]

    def waiting(self, lane: Lane) -> int:
        return len(self._waiters[lane])

    def offer(self, lane: Lane, data: bytes) -> bool:
        """Queue a traffic item if its lane has room; False (nothing done) if full."""
        if self.closed:
            return True  # nobody will read it: taken and dropped
        if self._blocked[lane]:
            return False
        self._items[lane].append((data, False))
        traffic = self._traffic[lane] = self._traffic[lane] + 1
        if traffic == self.capacity:
            self._blocked[lane] = True
            self._full.count += 1
        return True

    def put_answer(self, data: bytes) -> None:
        """Queue an answer; never waits (Q1). Raises QueueFull if the router overcommitted."""
        if self.closed:
            return
        if self._answers >= self.answer_capacity:
            raise QueueFull("answer space exhausted")
        self._answers += 1
        self._items[Lane.RPC].append((data, True))

    def wait(self, waiter: Waiter) -> None:
        """Park *waiter* on its lane, which must be full (an :meth:`offer` just failed)."""
        assert not self.closed, "wait on a closed queue"
        assert self.is_full(waiter.lane), "wait only on a full lane"
        self._waiters[waiter.lane].append(waiter)

    def withdraw(self, waiter: Waiter) -> None:
        """A waiter gave up (timeout, cancellation); no-op if it was placed or released."""
        if not waiter.placed and not self.closed:
            with contextlib.suppress(ValueError):
                self._waiters[waiter.lane].remove(waiter)

    def take(self) -> tuple[bytes, Lane, bool, Sequence[Waiter]] | None:
        """The next item to send: ``(data, lane, is_answer, placed_waiters)``; None if empty.

        ``placed_waiters`` are the waiters whose items this take moved into the
        lane (Q2), usually none: the caller wakes them.
        """
        rpc, events = self._items
        if events and (self.streak >= self.rpc_burst or not rpc):
            lane = Lane.EVENT
            self.streak = 0
        elif rpc:
            lane = Lane.RPC
            if events:
                self.streak += 1
        else:
            return None
        data, answer = self._items[lane].popleft()
        if answer:
            self._answers -= 1
            return data, lane, True, ()
        traffic = self._traffic[lane] - 1
        placed: list[Waiter] | tuple[()] = ()
        if self._blocked[lane] and traffic <= self.resume_at and not self.closed:
            waiters = self._waiters[lane]
            if waiters:
                placed = []
                items = self._items[lane]
                while waiters and traffic < self.capacity:
                    waiter = waiters.popleft()
                    waiter.placed = True
                    items.append((waiter.data, False))
                    placed.append(waiter)
                    traffic += 1
            if traffic < self.capacity:
                self._blocked[lane] = False
                self._full.count -= 1
        self._traffic[lane] = traffic
        return data, lane, False, placed

    def close(self) -> list[Waiter]:
        """Accept nothing more; release (unplaced) and return every waiter (Q6)."""
        if self.closed:
            return []
        self.closed = True
        released: list[Waiter] = []
        for lane in Lane:
            if self._blocked[lane]:
                self._blocked[lane] = False
                self._full.count -= 1
            released.extend(self._waiters[lane])
            self._waiters[lane].clear()
        return released

    def full_lanes(self) -> int:
        """Full lanes counted in ``FullLanes`` (0 once closed)."""
        return 0 if self.closed else sum(self.is_full(lane) for lane in Lane)

    def check_invariants(self) -> None:
        """Assert Q1, Q2, Q5 and Q6 for this queue (Q3 needs every queue: the hub's)."""
        rpc_answers = sum(1 for _, answer in self._items[Lane.RPC] if answer)
        assert not any(answer for _, answer in self._items[Lane.EVENT])
        assert self._answers == rpc_answers <= self.answer_capacity
        for lane in Lane:
            traffic = len(self._items[lane]) - (rpc_answers if lane is Lane.RPC else 0)
            assert traffic == self._traffic[lane]
            if not self.closed:
                assert traffic <= self.capacity
                if self._blocked[lane]:  # Q2
                    assert traffic > self.resume_at
                else:
                    assert traffic < self.capacity
                    assert not self._waiters[lane]
            else:
                assert not self._waiters[lane]
                assert not self._blocked[lane]
            assert not any(w.placed for w in self._waiters[lane])
        assert 0 <= self.streak <= self.rpc_burst
        assert self._items[Lane.EVENT] or self.streak == 0
