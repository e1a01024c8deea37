"""Hypothesis drives several client queues sharing one full-lane count through
random offers, waits, reads, withdrawals and closes, checking Q1-Q6 of
``agentwire/_gateway/_queue.py`` after every step.

A waiting sender resumes in a step of its own (``resume``), after the read
that placed its item, so every interleaving of "a reader frees a slot",
"another route looks at the full-lane count" and "the waiting sender runs
again" is explored; ``route_without_waiting`` asserts that a zero count
really means every lane of every open queue has room (the hub's H4).
"""

from __future__ import annotations

from collections import deque

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from agentwire._gateway._queue import ClientQueue, FullLanes, Lane, Waiter

QUEUES = 3
LANES = st.sampled_from(list(Lane))


class ClientQueueMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.full = FullLanes()
        self.queues = [ClientQueue(c, 2, 2, self.full) for c in (1, 2, 4)]
        self.serial = 0
        # what each queue's reader should see next, per lane (Q4)
        self.expected: list[tuple[deque[bytes], deque[bytes]]] = [
            (deque(), deque()) for _ in range(QUEUES)
        ]
        self.waiting: list[tuple[int, Waiter]] = []  # senders not resumed yet
        self.woken: set[int] = set()  # ids of waiters woken by a read or close
        self.answers = [0] * QUEUES

    def _item(self) -> bytes:
        self.serial += 1
        return str(self.serial).encode()

    @rule(q=st.integers(0, QUEUES - 1), lane=LANES)
    def send(self, q: int, lane: Lane) -> None:
        """A routing task forwards one item: queued now, or it waits."""
        queue = self.queues[q]
        if queue.closed:
            return
        data = self._item()
        if queue.offer(lane, data):
            self.expected[q][lane].append(data)
            return
        waiter = Waiter(lane, data, lambda: None)
        queue.wait(waiter)
        self.waiting.append((q, waiter))

    @rule(q=st.integers(0, QUEUES - 1))
    def answer(self, q: int) -> None:
        queue = self.queues[q]
        if queue.closed or self.answers[q] == queue.answer_capacity:
            return
        data = b"answer" + self._item()
        queue.put_answer(data)
        self.answers[q] += 1
        self.expected[q][Lane.RPC].append(data)

    @rule(q=st.integers(0, QUEUES - 1))
    def read(self, q: int) -> None:
        queue = self.queues[q]
        events_waiting = bool(self.expected[q][Lane.EVENT])
        streak = queue.streak
        item = queue.take()
        if item is None:
            assert not any(self.expected[q])
            return
        data, lane, answer, placed = item
        assert self.expected[q][lane].popleft() == data  # Q4
        if answer:
            self.answers[q] -= 1
        if lane is Lane.RPC and events_waiting:
            assert streak < queue.rpc_burst  # Q5: events are never starved
        for waiter in placed:  # Q2: in the order they waited
            assert waiter.placed
            assert waiter.lane is lane
            self.expected[q][lane].append(waiter.data)
            self.woken.add(id(waiter))

    @precondition(lambda self: self.waiting)
    @rule(data=st.data(), gave_up=st.booleans())
    def resume(self, data: st.DataObject, gave_up: bool) -> None:
        """A waiting sender runs again: woken, or giving up (timeout, cancel)."""
        index = data.draw(st.integers(0, len(self.waiting) - 1))
        q, waiter = self.waiting[index]
        if id(waiter) not in self.woken and not gave_up:
            return  # still asleep
        del self.waiting[index]
        self.queues[q].withdraw(waiter)
        if not waiter.placed:
            assert id(waiter) not in self.woken or self.queues[q].closed
        self.woken.discard(id(waiter))  # gone: a later waiter may get the same id

    @rule(lanes=st.lists(st.tuples(st.integers(0, QUEUES - 1), LANES), max_size=4, unique=True))
    def route_without_waiting(self, lanes: list[tuple[int, Lane]]) -> None:
        """A route in the reader: allowed only while no lane is full (H4), and
        then at most one item per lane never finds it full."""
        if self.full.count:
            return
        for q, lane in lanes:
            queue = self.queues[q]
            if queue.closed:
                continue
            data = self._item()
            assert queue.offer(lane, data)
            self.expected[q][lane].append(data)

    @rule(q=st.integers(0, QUEUES - 1))
    def close(self, q: int) -> None:
        for waiter in self.queues[q].close():
            assert not waiter.placed
            self.woken.add(id(waiter))

    @invariant()
    def invariants_hold(self) -> None:
        for queue in self.queues:
            queue.check_invariants()
        assert self.full.count == sum(queue.full_lanes() for queue in self.queues)  # Q3


ClientQueueMachine.TestCase.settings = settings(
    max_examples=200, stateful_step_count=50, deadline=None
)
TestClientQueueStateful = ClientQueueMachine.TestCase
