"""An AutoGen 0.7.5 worker on one gateway of a cluster and an agentwire worker
on another call and publish to each other, unchanged."""

from __future__ import annotations

import pytest
import trio

from agentwire import AgentId, TopicId, TypeSubscription, open_worker, serializers_for_type
from tests.interop.test_worker_autogen import WAIT, open_peer
from tests.worker.messages import Echo, Inbox, Ping, Pong

from ..helpers import converged, new_inbox, open_cluster

pytestmark = pytest.mark.interop


@pytest.fixture(autouse=True)
def fresh_inbox() -> Inbox:
    return new_inbox()


async def test_an_autogen_worker_and_an_agentwire_worker_on_two_gateways(
    redis_url: str, fresh_inbox: Inbox
) -> None:
    with trio.fail_after(WAIT * 2):
        async with (
            open_cluster(redis_url, 2) as (first, second),
            open_peer("worker", first.address, "json") as theirs,
        ):
            await theirs.expect("READY")
            theirs_subscriptions = first.statistics().subscriptions
            async with open_worker(second.address) as ours:
                await Echo.register(ours, "aw", Echo)
                await ours.add_subscription(TypeSubscription("interop", "aw"))
                ours.add_message_serializer(serializers_for_type(Pong))
                # ours: the "interop" one and Echo's default subscription
                await converged([first, second], 2, theirs_subscriptions + 2)

                reply = await ours.send_message(Ping("hi"), AgentId("ag_echo", "k"))
                assert reply == Pong("ag:hi")
                assert await theirs.command("send aw/k yo", "REPLY") == "REPLY aw/k:yo"

                await ours.publish_message(
                    Ping("ours"), TopicId("interop", "x"), sender=AgentId("aw", "p")
                )
                assert await theirs.expect("EVENT") == "EVENT Ping ours aw/p"
                await theirs.command("publish interop theirs", "PUBLISHED")
                await fresh_inbox.wait_for(2)
    assert sorted(fresh_inbox.items) == [
        ("aw/ag", "theirs", "ag_echo/pub"),
        ("aw/x", "ours", "aw/p"),
    ]
