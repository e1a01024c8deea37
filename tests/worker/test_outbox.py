"""The worker's two-lane outbox: a Hypothesis state machine against its invariants."""

from __future__ import annotations

from collections import deque

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from agentwire._worker._outbox import Lane, Outbox

lanes = st.sampled_from([Lane.RPC, Lane.EVENTS])


class OutboxMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.capacity = 3
        self.burst = 2
        self.outbox: Outbox[int] = Outbox(self.capacity, rpc_burst=self.burst)
        self.model: dict[Lane, deque[int]] = {Lane.RPC: deque(), Lane.EVENTS: deque()}
        self.counter = 0
        self.accepted: set[int] = set()
        self.left: list[int] = []
        self.rpc_in_a_row_while_events_waited = 0

    @rule(lane=lanes)
    def push(self, lane: Lane) -> None:
        self.counter += 1
        room = not self.outbox.closed and len(self.model[lane]) < self.capacity
        assert self.outbox.push(lane, self.counter) is room  # 1: bounded; refused changes nothing
        if room:
            self.model[lane].append(self.counter)
            self.accepted.add(self.counter)

    @rule()
    def pop(self) -> None:
        events_waited = bool(self.model[Lane.EVENTS])
        popped = self.outbox.pop()
        if popped is None:
            assert not self.model[Lane.RPC]
            assert not self.model[Lane.EVENTS]
            return
        lane, item = popped
        assert item == self.model[lane].popleft()  # 2: order within a lane
        self.left.append(item)
        if lane is Lane.RPC:
            if events_waited:
                self.rpc_in_a_row_while_events_waited += 1
        else:
            # 3: RPC first, unless the burst is used up while events wait
            assert not self.model[Lane.RPC] or self.rpc_in_a_row_while_events_waited == self.burst
            self.rpc_in_a_row_while_events_waited = 0
        # 4: events never starved
        assert self.rpc_in_a_row_while_events_waited <= self.burst
        if not self.model[Lane.EVENTS]:
            self.rpc_in_a_row_while_events_waited = 0

    @precondition(lambda self: not self.outbox.closed)
    @rule()
    def close(self) -> None:
        self.outbox.close()

    @rule()
    def drain(self) -> None:
        drained = self.outbox.drain()
        expected = [(Lane.RPC, i) for i in self.model[Lane.RPC]]
        expected += [(Lane.EVENTS, i) for i in self.model[Lane.EVENTS]]
        assert drained == expected  # 5: what is left, RPC lane first, in order
        self.left.extend(item for _, item in drained)
        for lane in self.model.values():
            lane.clear()
        self.rpc_in_a_row_while_events_waited = 0

    @invariant()
    def state_matches(self) -> None:
        self.outbox.check_invariants()
        assert self.outbox.queued(Lane.RPC) == len(self.model[Lane.RPC])
        assert self.outbox.queued(Lane.EVENTS) == len(self.model[Lane.EVENTS])
        # 2: nothing dropped or duplicated
        queued = set(self.model[Lane.RPC]) | set(self.model[Lane.EVENTS])
        assert len(self.left) == len(set(self.left))
        assert set(self.left) | queued == self.accepted


TestOutbox = OutboxMachine.TestCase
TestOutbox.settings = settings(max_examples=200, stateful_step_count=40, deadline=None)


def test_rpc_messages_overtake_queued_events_but_events_keep_moving() -> None:
    outbox: Outbox[str] = Outbox(10, rpc_burst=2)
    for n in range(3):
        assert outbox.push(Lane.EVENTS, f"e{n}")
    for n in range(5):
        assert outbox.push(Lane.RPC, f"r{n}")
    order = []
    while (popped := outbox.pop()) is not None:
        order.append(popped[1])
    assert order == ["r0", "r1", "e0", "r2", "r3", "e1", "r4", "e2"]


def test_a_full_lane_refuses_and_the_other_lane_still_takes() -> None:
    outbox: Outbox[int] = Outbox(2)
    assert outbox.push(Lane.EVENTS, 1)
    assert outbox.push(Lane.EVENTS, 2)
    assert not outbox.push(Lane.EVENTS, 3)
    assert outbox.push(Lane.RPC, 4)
    assert outbox.statistics().events_queued == 2


def test_bad_bounds_are_refused() -> None:
    with pytest.raises(ValueError, match="capacity"):
        Outbox(0)
    with pytest.raises(ValueError, match="rpc_burst"):
        Outbox(1, rpc_burst=0)
