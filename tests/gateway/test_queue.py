"""A client's outgoing queue, case by case (the state machine in
``test_queue_stateful.py`` covers the interleavings)."""

from __future__ import annotations

from agentwire._gateway._queue import ClientQueue, FullLanes, Lane, Waiter


def _waiter(name: str) -> Waiter:
    return Waiter(Lane.EVENT, name.encode(), lambda: None)


def test_a_full_lane_reopens_at_half_and_takes_its_waiters_in_one_step() -> None:
    full = FullLanes()
    queue = ClientQueue(4, 0, 1, full)
    for n in range(4):
        assert queue.offer(Lane.EVENT, b"%d" % n)
    assert queue.is_full(Lane.EVENT)
    assert full.count == 1
    waiters = [_waiter(f"w{n}") for n in range(3)]
    for waiter in waiters:
        queue.wait(waiter)

    # One slot free is not enough: nobody is woken, and no newcomer overtakes them.
    assert queue.take() == (b"0", Lane.EVENT, False, ())
    assert not queue.offer(Lane.EVENT, b"late")
    # Down to half: as many waiters as fit go in at once, oldest first.
    assert queue.take() == (b"1", Lane.EVENT, False, waiters[:2])
    assert queue.is_full(Lane.EVENT)
    assert full.count == 1
    assert queue.take() == (b"2", Lane.EVENT, False, ())
    assert queue.take() == (b"3", Lane.EVENT, False, [waiters[2]])
    # The last waiter left room: the lane is open again.
    assert not queue.is_full(Lane.EVENT)
    assert full.count == 0
    assert queue.offer(Lane.EVENT, b"next")
    assert [queue.take()[0] for _ in range(4)] == [b"w0", b"w1", b"w2", b"next"]
    queue.check_invariants()


def test_a_lane_of_one_reopens_at_every_take() -> None:
    full = FullLanes()
    queue = ClientQueue(1, 0, 1, full)
    assert queue.offer(Lane.EVENT, b"a")
    waiter = _waiter("b")
    queue.wait(waiter)
    assert queue.take() == (b"a", Lane.EVENT, False, [waiter])
    assert queue.take() == (b"b", Lane.EVENT, False, ())
    assert full.count == 0
