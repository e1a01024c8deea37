"""State kept by the agentwire gateway, with an AutoGen 0.7.5 peer in the
room: the AutoGen caller's RPCs reach an agentwire StatefulAgent whose state
the gateway keeps; the state traffic stays between the agentwire worker and
the gateway (AutoGen's worker opens no control channel and is sent none)."""

from __future__ import annotations

import pytest

from agentwire import AgentId, MessageContext, open_gateway, open_worker, rpc, serializers_for_type
from agentwire.state import MemoryStateStore, StatefulAgent

from ..worker.messages import Ping, Pong
from .test_gateway_autogen import spawn_peer

pytestmark = pytest.mark.interop


class CountingEcho(StatefulAgent):
    def __init__(self) -> None:
        super().__init__("an echo that counts in the gateway's store")

    def initial_state(self) -> dict[str, int]:
        return {"count": 0}

    @rpc
    async def on_ping(self, message: Ping, ctx: MessageContext) -> Pong:
        self.state["count"] += 1
        return Pong(f"{self.id}:{message.text}:{self.state['count']}")


async def test_an_autogen_caller_reaches_an_agent_whose_state_the_gateway_keeps() -> None:
    store = MemoryStateStore()
    async with (
        open_gateway("127.0.0.1:0", startup_grace=0, state_store=store) as gateway,
        open_worker(gateway.address) as ours,
        spawn_peer(gateway, "caller") as caller,
    ):
        await CountingEcho.register(ours, "echo", CountingEcho)
        ours.add_message_serializer(serializers_for_type(Pong))
        for i in range(3):
            words = await caller.command(f"send t{i} echo/k hi", "REPLY", f"t{i}")
            assert words[2] == f"echo/k:hi:{i + 1}"
        stats = gateway.statistics()
        stored = await store.load(AgentId("echo", "k"))
    assert stored.materialize() == {"count": 3}
    # the agentwire worker's control channel and the state service's: none of AutoGen's
    assert stats.control_connections == 2
