"""Property: a publish reaches exactly the agents its topic's subscriptions name at that moment.

The runtime keeps each topic's recipients between publishes; whatever the mix of
subscriptions added and removed (type, prefix and custom ones) between
publishes, every publish is handled by the agents ``recipients(topic)`` names
when it is published, once per matching subscription.
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
    TypePrefixSubscription,
    TypeSubscription,
    message_handler,
    open_runtime,
)


@dataclasses.dataclass
class Note:
    seq: int


class Listener(RoutedAgent):
    def __init__(self) -> None:
        super().__init__("listens")
        self.seen: list[int] = []

    @message_handler
    async def on_note(self, message: Note, ctx: MessageContext) -> None:
        self.seen.append(message.seq)


class Switchable:
    """A custom subscription whose answer the test flips between publishes."""

    def __init__(self, id: str, agent_type: str) -> None:
        self.id = id
        self.agent_type = agent_type
        self.on = True

    def is_match(self, topic_id: TopicId) -> bool:
        return self.on and topic_id.type.startswith("t")

    def map_to_agent(self, topic_id: TopicId) -> AgentId:
        return AgentId(self.agent_type, topic_id.source)


TOPICS = [TopicId("t1", "a"), TopicId("t1", "b"), TopicId("t2", "a")]
AGENT_TYPES = ["l1", "l2"]

subscription = st.one_of(
    st.tuples(st.just("type"), st.sampled_from(["t1", "t2"]), st.sampled_from(AGENT_TYPES)),
    st.tuples(st.just("prefix"), st.sampled_from(["t", "t1"]), st.sampled_from(AGENT_TYPES)),
    st.tuples(st.just("custom"), st.just(""), st.sampled_from(AGENT_TYPES)),
)
operation = st.one_of(
    st.tuples(st.just("add"), subscription),
    st.tuples(st.just("remove"), st.integers(0, 5)),
    st.tuples(st.just("flip"), st.integers(0, 5)),
    st.tuples(st.just("publish"), st.sampled_from(range(len(TOPICS)))),
)


@settings(max_examples=80, deadline=None)
@given(program=st.lists(operation, max_size=25))
def test_each_publish_reaches_the_recipients_of_that_moment(
    program: list[tuple[str, object]],
) -> None:
    async def main() -> None:
        expected: dict[AgentId, list[int]] = {}
        async with open_runtime() as runtime:
            for agent_type in AGENT_TYPES:
                await Listener.register(
                    runtime, agent_type, Listener, skip_direct_message_subscription=True
                )
            added: list[object] = []
            for seq, (kind, argument) in enumerate(program):
                if kind == "add":
                    assert isinstance(argument, tuple)
                    form, topic_type, agent_type = argument
                    sub: object
                    if form == "type":
                        sub = TypeSubscription(topic_type, agent_type, id=f"s{seq}")
                    elif form == "prefix":
                        sub = TypePrefixSubscription(topic_type, agent_type, id=f"s{seq}")
                    else:
                        sub = Switchable(f"s{seq}", agent_type)
                    if any(_same(sub, other) for other in added):
                        continue  # equal subscriptions are refused; not what is tested here
                    await runtime.add_subscription(sub)  # type: ignore[arg-type]
                    added.append(sub)
                elif kind == "remove" and added:
                    assert isinstance(argument, int)
                    gone = added.pop(argument % len(added))
                    await runtime.remove_subscription(gone.id)  # type: ignore[attr-defined]
                elif kind == "flip":
                    assert isinstance(argument, int)
                    custom = [sub for sub in added if isinstance(sub, Switchable)]
                    if custom:
                        custom[argument % len(custom)].on ^= True
                elif kind == "publish":
                    assert isinstance(argument, int)
                    topic = TOPICS[argument]
                    recipients = runtime.subscriptions.recipients(topic)
                    for agent_id in recipients:
                        expected.setdefault(agent_id, []).append(seq)
                    assert runtime.has_local_recipients(topic) == bool(recipients)
                    await runtime.publish_message(Note(seq), topic)
                runtime._check_invariants()
            await runtime.wait_idle()
            runtime._check_invariants()
            for agent_type in AGENT_TYPES:
                for source in ("a", "b"):
                    agent_id = AgentId(agent_type, source)
                    got = expected.get(agent_id, [])
                    if got:
                        agent = await runtime.try_get_underlying_agent_instance(agent_id, Listener)
                        assert agent.seen == got

    trio.run(main)


def _same(a: object, b: object) -> bool:
    if isinstance(a, Switchable) or isinstance(b, Switchable):
        return False
    return a == b
