"""``open_worker`` with several gateway addresses: the worker moves on when its gateway dies."""

from __future__ import annotations

import pathlib

import pytest
import trio

import agentwire
from agentwire import (
    AgentId,
    ConnectionState,
    open_gateway,
    open_worker,
    serializers_for_type,
)
from agentwire._address import InvalidAddressError
from agentwire.security import AccessFileAuthenticator, GatewayRefusedError

from .messages import Echo, Ping, Pong
from .test_worker import run_gateway

GUARD = 20  # seconds: a hang guard, never a synchronisation
FAST = agentwire.RetryPolicy(initial_delay=0.05, max_delay=0.2, max_attempts=200)


async def test_a_worker_re_registers_on_the_next_gateway_when_its_gateway_shuts_down() -> None:
    with trio.fail_after(GUARD):
        async with trio.open_nursery() as nursery, open_gateway(startup_grace=0) as second:
            stop_first = trio.Event()
            first = await nursery.start(run_gateway, "127.0.0.1:0", stop_first)
            async with (
                open_worker([first, second.address], reconnect=FAST) as worker,
                open_worker(second.address) as caller,
            ):
                await Echo.register(worker, "a", Echo)
                caller.add_message_serializer(serializers_for_type(Pong))
                assert second.statistics().agent_types == 0  # on the first gateway
                stop_first.set()  # the first gateway shuts down
                await second.wait_until(lambda s: s.agent_types == 1)
                await worker.wait_connection_state(ConnectionState.CONNECTED)
                reply = await caller.send_message(Ping("via second"), AgentId("a", "k"))
                assert reply == Pong("a/k:via second")
                assert worker.statistics().connects == 2


async def test_a_worker_skips_a_gateway_that_is_down_at_the_start() -> None:
    with trio.fail_after(GUARD):
        async with trio.open_nursery() as nursery, open_gateway(startup_grace=0) as up:
            stop = trio.Event()
            down = await nursery.start(run_gateway, "127.0.0.1:0", stop)
            stop.set()  # gone before the worker starts
            async with open_worker([down, up.address], reconnect=FAST) as worker:
                await Echo.register(worker, "a", Echo)
                assert up.statistics().agent_types == 1
                assert worker.statistics().connects == 1


async def test_a_refused_channel_still_stops_the_worker(tmp_path: pathlib.Path) -> None:
    access = tmp_path / "access.toml"
    access.write_text('[principals.w]\ntoken = "right-token-0123456789"\n')
    authenticator = AccessFileAuthenticator(access)
    with trio.fail_after(GUARD):
        async with (
            open_gateway(authenticator=authenticator) as first,
            open_gateway(startup_grace=0) as second,
        ):
            with pytest.raises(GatewayRefusedError, match="UNAUTHENTICATED"):
                async with open_worker(
                    [first.address, second.address], token="wrong-token-0123456789"
                ):
                    await trio.sleep_forever()  # pragma: no cover
            assert second.statistics().clients == 0  # refused: it did not move on


@pytest.mark.parametrize("addresses", [[], ["127.0.0.1:1", "no port"], [None]])
async def test_bad_address_lists_are_refused_at_once(addresses: list[object]) -> None:
    with pytest.raises(InvalidAddressError):
        async with open_worker(addresses):  # type: ignore[arg-type]
            pass  # pragma: no cover
