"""Message types and agents shared by the worker tests."""

from __future__ import annotations

from typing import Any

import attrs
import trio

from agentwire import MessageContext, RoutedAgent, event, rpc
from tests.proto_messages import BetterProtoMessage, GoogleProtoMessage


@attrs.define
class Ping:
    text: str


@attrs.define
class Pong:
    text: str


class Inbox:
    """What agents received, with an event per expected count."""

    def __init__(self) -> None:
        self.items: list[tuple[str, str, str | None]] = []
        self._waiters: list[tuple[int, trio.Event]] = []

    def add(self, agent: str, text: str, sender: object) -> None:
        self.items.append((agent, text, None if sender is None else str(sender)))
        for count, waiter in self._waiters:
            if len(self.items) >= count:
                waiter.set()

    async def wait_for(self, count: int) -> None:
        if len(self.items) >= count:
            return
        waiter = trio.Event()
        self._waiters.append((count, waiter))
        await waiter.wait()


class EchoBase(RoutedAgent):
    """RPC Ping -> Pong("<id>:<text>"), "fail" raises; records Ping events; has state."""

    inbox = Inbox()

    def __init__(self) -> None:
        super().__init__("echo")
        self.count = 0

    @rpc
    async def on_ping(self, message: Ping, ctx: MessageContext) -> Pong:
        if message.text == "fail":
            raise ValueError("kaboom")
        self.count += 1
        return Pong(f"{self.id}:{message.text}")

    @event
    async def on_ping_event(self, message: Ping, ctx: MessageContext) -> None:
        EchoBase.inbox.add(str(self.id), message.text, ctx.sender)

    async def save_state(self) -> dict[str, Any]:
        return {"count": self.count}

    async def load_state(self, state: Any) -> None:
        self.count = int(state["count"])


class Echo(EchoBase):
    """EchoBase that also records google protobuf ``agents.ProtoMessage`` events."""

    @event
    async def on_google_event(self, message: GoogleProtoMessage, ctx: MessageContext) -> None:  # type: ignore[valid-type]
        EchoBase.inbox.add(str(self.id), "proto:" + message.message, ctx.sender)  # type: ignore[attr-defined]


class BetterEcho(EchoBase):
    """EchoBase that also records betterproto2 ``agents.ProtoMessage`` events."""

    @event
    async def on_better_event(self, message: BetterProtoMessage, ctx: MessageContext) -> None:
        EchoBase.inbox.add(str(self.id), "proto:" + message.message, ctx.sender)
