"""Compiler-generated protobuf payloads between agentwire and AutoGen 0.7.5 workers.

One ``.proto`` (``proto/examples/order.proto``: nested messages, enums, repeated and
map fields, a oneof, an optional field, ``Timestamp`` and ``Struct``) compiled twice
by ``nox -s proto``: betterproto2 dataclasses for agentwire (``agentwire._examples``),
the google protobuf class for AutoGen (``tests/examples_pb2``). Our worker runs in
protobuf payload mode in the test, the AutoGen worker in a subprocess
(``autogen_peers/payloads_peer.py``), through AutoGen's host or our gateway.

The AutoGen side prints every Order it receives re-serialized by the google class,
plus what the google class reads from it (oneof case, enum name, Timestamp), so
each assertion compares what one side sent with what the other side's class holds.

Publish needs nothing but the generated classes. RPC needs one more thing: AutoGen
0.7.5 writes every RPC request and response as ``application/json``, whatever its
payload format, so both sides register a proto3 JSON serializer for the message
(``google.protobuf.json_format`` there, betterproto2's ``to_json``/``from_json``
here, which agree on the proto3 JSON mapping).
"""

from __future__ import annotations

import dataclasses
import functools
import os
import pathlib
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

import pytest
import trio

from agentwire import (
    JSON_DATA_CONTENT_TYPE,
    AgentId,
    MessageContext,
    RoutedAgent,
    TopicId,
    TypeSubscription,
    WorkerRuntime,
    event,
    open_gateway,
    open_worker,
    rpc,
    serializers_for_type,
)
from agentwire._examples.agentwire.examples import Order, OrderStatus

from ..proto_messages import CASES, Case
from ..worker.messages import Inbox
from .test_worker_autogen import WAIT, Peer, open_peer

pytestmark = pytest.mark.interop

ROOT = pathlib.Path(__file__).resolve().parents[2]
PEER = pathlib.Path(__file__).parent / "autogen_peers" / "payloads_peer.py"
KINDS = ["autogen-host", "agentwire-gateway"]


def encode(order: Order) -> str:
    """An Order as the peer's lines carry it."""
    return "x" + bytes(order).hex()


def decode(text: str) -> Order:
    return Order.parse(bytes.fromhex(text.removeprefix("x")))


def as_seen_by_autogen(line: str) -> tuple[Order, str, str, str]:
    """``<kind> x<hex> <delivery> <status> <placed_at> ...`` from the peer."""
    _, data, delivery, status, placed_at, *_ = line.split()
    return decode(data), delivery, status, placed_at


def as_expected(case: Case) -> tuple[Order, str, str, str]:
    return case.order, case.delivery, case.status, case.placed_at


def shipped(order: Order, by: str) -> Order:
    """What both sides' order desks answer."""
    labels = {**order.labels, "handled_by": by}
    return dataclasses.replace(order, status=OrderStatus.SHIPPED, labels=labels)


class Proto3JsonSerializer:
    """A betterproto2 message as proto3 JSON: what AutoGen 0.7.5 puts in RPCs."""

    data_content_type = JSON_DATA_CONTENT_TYPE

    def __init__(self, cls: type[Order]) -> None:
        self.message_type = cls
        [protobuf] = serializers_for_type(cls)
        self.type_name = protobuf.type_name

    def serialize(self, message: Order) -> bytes:
        return message.to_json().encode()

    def deserialize(self, payload: bytes) -> Order:
        return self.message_type.from_json(payload)


class OrderDesk(RoutedAgent):
    """Records the Orders it gets (as hex); answers an Order RPC with it shipped."""

    inbox = Inbox()

    def __init__(self) -> None:
        super().__init__("agentwire agent taking protobuf Orders")

    @rpc
    async def on_order(self, message: Order, ctx: MessageContext) -> Order:
        OrderDesk.inbox.add("rpc", encode(message), ctx.sender)
        return shipped(message, "agentwire")

    @event
    async def on_order_event(self, message: Order, ctx: MessageContext) -> None:
        OrderDesk.inbox.add("event", encode(message), ctx.sender)


@pytest.fixture(autouse=True)
def fresh_inbox() -> Inbox:
    OrderDesk.inbox = Inbox()
    return OrderDesk.inbox


@asynccontextmanager
async def open_payloads_peer(address: str) -> AsyncIterator[Peer]:
    async with trio.open_nursery() as nursery:
        process: trio.Process = await nursery.start(
            functools.partial(
                trio.run_process,
                [sys.executable, str(PEER), address],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                env={**os.environ, "PYTHONPATH": str(ROOT)},
                check=False,
            )
        )
        try:
            yield Peer(process)
        finally:
            assert process.stdin is not None
            with trio.move_on_after(5) as scope:
                scope.shield = True
                await process.stdin.aclose()
                await process.wait()
            process.kill()


@asynccontextmanager
async def topology(kind: str) -> AsyncIterator[tuple[WorkerRuntime, Peer]]:
    """Our worker (protobuf payloads, ``aw_orders`` subscribed to ``to_agentwire``)
    and the AutoGen worker (``ag_orders`` subscribed to ``to_autogen``), through a
    host or our gateway."""
    async with AsyncExitStack() as stack:
        if kind == "autogen-host":
            host = await stack.enter_async_context(open_peer("host"))
            address = f"127.0.0.1:{(await host.expect('READY')).split()[1]}"
        else:
            gateway = await stack.enter_async_context(open_gateway("127.0.0.1:0", grace_period=0.1))
            address = gateway.address
        ours = await stack.enter_async_context(open_worker(address, payload_format="protobuf"))
        theirs = await stack.enter_async_context(open_payloads_peer(address))
        await theirs.expect("READY")
        await OrderDesk.register(ours, "aw_orders", OrderDesk)
        await ours.add_subscription(TypeSubscription("to_agentwire", "aw_orders"))
        yield ours, theirs


@pytest.mark.parametrize("kind", KINDS)
async def test_published_orders_cross_both_ways_with_every_field_kind(
    kind: str, fresh_inbox: Inbox
) -> None:
    with trio.fail_after(WAIT * 2):
        async with topology(kind) as (ours, theirs):
            for n, case in enumerate(CASES.values()):
                await ours.publish_message(
                    case.order, TopicId("to_autogen", "x"), sender=AgentId("aw_orders", "p")
                )
                line = await theirs.expect("EVENT")
                assert as_seen_by_autogen(line) == as_expected(case)
                assert line.endswith(" aw_orders/p")
                await theirs.command(f"publish to_agentwire {encode(case.order)}", "PUBLISHED")
                await fresh_inbox.wait_for(n + 1)
    assert [(kind_, decode(text), sender) for kind_, text, sender in fresh_inbox.items] == [
        ("event", case.order, "ag_orders/pub") for case in CASES.values()
    ]


@pytest.mark.parametrize("kind", KINDS)
async def test_rpc_orders_cross_both_ways_with_every_field_kind(
    kind: str, fresh_inbox: Inbox
) -> None:
    with trio.fail_after(WAIT * 2):
        async with topology(kind) as (ours, theirs):
            ours.add_message_serializer(Proto3JsonSerializer(Order))
            for n, case in enumerate(CASES.values()):
                reply = await ours.send_message(case.order, AgentId("ag_orders", "k"))
                assert reply == shipped(case.order, "autogen")
                assert as_seen_by_autogen(await theirs.expect("RPC")) == as_expected(case)
                line = await theirs.command(f"send aw_orders/k {encode(case.order)}", "REPLY")
                assert decode(line.split()[1]) == shipped(case.order, "agentwire")
                await fresh_inbox.wait_for(n + 1)
    assert [(kind_, decode(text)) for kind_, text, _ in fresh_inbox.items] == [
        ("rpc", case.order) for case in CASES.values()
    ]
