"""Webhooks in a cluster: an event published through any gateway reaches the
webhooks of every gateway, each of them once."""

from __future__ import annotations

import trio

from agentwire._operator._webhook import Webhook
from tests.operator import test_webhook
from tests.operator.test_webhook import Target, publish
from tests.redis_server import RedisProcess

from .helpers import GUARD, cluster_gateway, converged

target = test_webhook.target  # the fixture: an HTTP endpoint recording what it is sent


async def test_every_gateways_webhook_gets_the_events_published_through_any_gateway(
    redis_url: str, target: tuple[Target, str]
) -> None:
    endpoint, url = target
    webhooks = [Webhook("greetings", url)]
    with trio.fail_after(GUARD):
        async with (
            cluster_gateway(redis_url, webhooks=webhooks) as east,
            cluster_gateway(redis_url, webhooks=webhooks) as west,
        ):
            # one agent type and one subscription for each gateway's webhook, everywhere
            await converged([east, west], agent_types=2, subscriptions=2)
            await publish(east, "from-east")
            await publish(west, "from-west")
            await endpoint.wait_for("from-east", 2)
            await endpoint.wait_for("from-west", 2)
    # each webhook got each event once
    assert (endpoint.seen("from-east"), endpoint.seen("from-west")) == (2, 2)


async def test_a_webhook_started_while_redis_is_down_joins_the_cluster_when_it_is_back(
    redis_process: RedisProcess, target: tuple[Target, str]
) -> None:
    endpoint, url = target
    with trio.fail_after(GUARD):
        async with cluster_gateway(redis_process.url) as west:
            redis_process.stop()
            async with cluster_gateway(
                redis_process.url, webhooks=[Webhook("greetings", url)]
            ) as east:
                await publish(east, "while-down")  # its own gateway's events: delivered
                await endpoint.wait_for("while-down")
                redis_process.start()
                await converged([east, west], agent_types=1, subscriptions=1)
                await publish(west, "from-west")
                await endpoint.wait_for("from-west")
    assert (endpoint.seen("while-down"), endpoint.seen("from-west")) == (1, 1)
