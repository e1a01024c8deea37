"""Property: the runtime's ordering guarantees under random interleavings.

For any mix of RPCs and publishes from several sender tasks to several agents,
with handlers and senders yielding at random points:

* each agent handles one message at a time;
* for each (sender task, receiving agent) pair, messages are handled in the
  order they were sent;
* every message is handled exactly once, and the runtime is at rest after.
"""

from __future__ import annotations

import dataclasses
import math

import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

from agentwire import (
    AgentId,
    MessageContext,
    RoutedAgent,
    TopicId,
    TypeSubscription,
    message_handler,
    open_runtime,
)


@dataclasses.dataclass
class Step:
    sender: int
    seq: int
    pauses: int


class Recorder(RoutedAgent):
    def __init__(self) -> None:
        super().__init__("records")
        self.log: list[tuple[int, int]] = []
        self.active = 0
        self.max_active = 0

    @message_handler
    async def on_step(self, message: Step, ctx: MessageContext) -> int:
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        self.log.append((message.sender, message.seq))
        for _ in range(message.pauses):
            await trio.lowlevel.checkpoint()
        self.active -= 1
        return message.seq


operation = st.tuples(
    st.integers(0, 2),  # target: agent 0, agent 1, or publish to both
    st.booleans(),  # RPC (only for a single target) or publish
    st.integers(0, 3),  # handler pauses
    st.integers(0, 2),  # sender pauses before the next operation
)
programs = st.lists(st.lists(operation, max_size=12), min_size=1, max_size=4)


@settings(max_examples=60, deadline=None)
@given(programs=programs, mailbox_size=st.integers(1, 4))
def test_per_pair_order_and_one_at_a_time(
    programs: list[list[tuple[int, bool, int, int]]], mailbox_size: int
) -> None:
    expected: dict[tuple[int, int], list[int]] = {}

    async def main() -> None:
        async with open_runtime(mailbox_size=mailbox_size) as runtime:
            await Recorder.register(runtime, "rec", Recorder, skip_direct_message_subscription=True)
            for key in ("0", "1"):
                await runtime.add_subscription(TypeSubscription(f"to{key}", "rec"))
            await runtime.add_subscription(TypeSubscription("both", "rec"))
            agents = [AgentId("rec", "0"), AgentId("rec", "1")]

            async def sender(index: int, program: list[tuple[int, bool, int, int]]) -> None:
                for seq, (target, is_rpc, pauses, sender_pauses) in enumerate(program):
                    runtime._check_invariants()
                    message = Step(index, seq, pauses)
                    if target == 2:
                        for key in (0, 1):
                            expected.setdefault((index, key), []).append(seq)
                        # "both" maps to rec/<source>: publish once per agent
                        await runtime.publish_message(message, TopicId("both", "0"))
                        await runtime.publish_message(message, TopicId("both", "1"))
                    else:
                        expected.setdefault((index, target), []).append(seq)
                        if is_rpc:
                            assert await runtime.send_message(message, agents[target]) == seq
                        else:
                            await runtime.publish_message(
                                message, TopicId(f"to{target}", str(target))
                            )
                    for _ in range(sender_pauses):
                        await trio.lowlevel.checkpoint()

            async with trio.open_nursery() as nursery:
                for index, program in enumerate(programs):
                    nursery.start_soon(sender, index, program)
            await runtime.wait_idle()
            runtime._check_invariants()
            stats = runtime.statistics()
            assert (stats.queued, stats.in_flight, stats.pending_rpcs, stats.busy_agents) == (
                0,
                0,
                0,
                0,
            )
            for key in (0, 1):
                agent = await runtime.try_get_underlying_agent_instance(agents[key], Recorder)
                assert agent.max_active <= 1
                for index in range(len(programs)):
                    got = [seq for s, seq in agent.log if s == index]
                    assert got == expected.get((index, key), [])

    trio.run(main)


class Sleeper(RoutedAgent):
    def __init__(self) -> None:
        super().__init__("sleeps")
        self.started: list[tuple[int, int]] = []
        self.active = 0
        self.max_active = 0

    @message_handler
    async def on_step(self, message: Step, ctx: MessageContext) -> int:
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        self.started.append((message.sender, message.seq))
        try:
            await trio.sleep(message.pauses)
        finally:
            self.active -= 1
        return message.seq


timed_operation = st.tuples(
    st.booleans(),  # RPC or publish
    st.integers(0, 3),  # handler sleeps this many seconds
    st.none() | st.integers(0, 4),  # the RPC caller's timeout
)
timed_programs = st.lists(st.lists(timed_operation, max_size=8), min_size=1, max_size=4)


def _is_subsequence(small: list[int], big: list[int]) -> bool:
    items = iter(big)
    return all(any(x == y for y in items) for x in small)


@settings(max_examples=60, deadline=None)
@given(programs=timed_programs, mailbox_size=st.integers(1, 3))
def test_cancelled_callers_leave_the_runtime_consistent(
    programs: list[list[tuple[bool, int, int | None]]], mailbox_size: int
) -> None:
    sent: dict[int, list[int]] = {}

    async def main() -> None:
        async with open_runtime(mailbox_size=mailbox_size) as runtime:
            await Sleeper.register(runtime, "sl", Sleeper)
            await runtime.add_subscription(TypeSubscription("t", "sl"))
            target = AgentId("sl", "k")

            async def sender(index: int, program: list[tuple[bool, int, int | None]]) -> None:
                for seq, (is_rpc, pauses, timeout) in enumerate(program):
                    sent.setdefault(index, []).append(seq)
                    message = Step(index, seq, pauses)
                    if is_rpc:
                        with trio.move_on_after(math.inf if timeout is None else timeout):
                            assert await runtime.send_message(message, target) == seq
                    else:
                        await runtime.publish_message(message, TopicId("t", "k"))
                    runtime._check_invariants()

            async with trio.open_nursery() as nursery:
                for index, program in enumerate(programs):
                    nursery.start_soon(sender, index, program)
            await runtime.wait_idle()
            runtime._check_invariants()
            stats = runtime.statistics()
            assert (stats.queued, stats.in_flight, stats.pending_rpcs, stats.busy_agents) == (
                0,
                0,
                0,
                0,
            )
            agent = await runtime.try_get_underlying_agent_instance(target, Sleeper)
            assert agent.max_active <= 1
            for index in range(len(programs)):
                started = [seq for s, seq in agent.started if s == index]
                # a request whose caller gave up before it started is skipped
                assert _is_subsequence(started, sent.get(index, []))
                published = {seq for seq, op in enumerate(programs[index]) if not op[0]}
                assert published <= set(started)

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
