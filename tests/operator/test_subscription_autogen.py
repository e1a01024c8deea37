"""An operator-made subscription reaches a real AutoGen 0.7.5 worker's agent (run by
``nox -s interop``)."""

from __future__ import annotations

import pytest
import trio

from agentwire import open_gateway
from tests.interop.test_gateway_autogen import spawn_peer
from tests.operator.cli import agentwire

pytestmark = pytest.mark.interop


async def test_an_autogen_agent_receives_the_events_of_an_operator_subscription() -> None:
    async with open_gateway(startup_grace=0) as gw, spawn_peer(gw, "sub") as sub:
        await sub.register("listener")  # no subscription of its own but the direct one
        added = await agentwire(
            "subscriptions", "add", "--gateway", gw.address, "--type", "orders", "listener"
        )
        assert added.status == 0, added.err
        published = await agentwire(
            "publish", "--gateway", gw.address, "orders/s1", "--type", "Ping", "--json",
            '{"text": "from-shell"}',
        )  # fmt: skip
        assert published.status == 0, published.err
        with trio.fail_after(30):
            words = await sub.expect("EVENT", "listener/s1")
        assert words[2:4] == ["json", "from-shell"]
