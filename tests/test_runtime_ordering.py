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

import trio
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
