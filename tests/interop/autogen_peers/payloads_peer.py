"""An AutoGen 0.7.5 worker using google protobuf payloads, run as a subprocess.

``python autogen_peers/payloads_peer.py <address>`` (with the repository root on
``PYTHONPATH``) runs a ``GrpcWorkerAgentRuntime`` in protobuf payload mode with
agent type ``ag_orders``, subscribed to topic type ``to_autogen``. Its message type is
``agentwire.examples.Order`` as protoc compiles ``proto/examples/order.proto``
(``tests/examples_pb2/order_pb2.py``).

Orders travel in lines as ``x`` and the hex of their bytes (``x`` alone for an
Order with every field at its default). Every Order it receives is printed as
``<kind> x<hex> <delivery> <status> <placed_at>``: its deterministic serialization,
then what the google class itself reads from it (the ``delivery`` oneof case or
``-``, the status enum name, the Timestamp as JSON or ``-``).
AutoGen writes RPC requests and responses as JSON whatever its payload format, so
the worker also registers a proto3 JSON serializer for Order (``json_format``).
RPC ``Order`` -> the same Order with status ``STATUS_SHIPPED`` and label
``handled_by=autogen`` (printed as ``RPC ...``); events are printed as
``EVENT ... <sender>``. Prints ``READY`` once registered, then obeys one command
per stdin line: ``send <type>/<key> x<hex>`` -> ``REPLY x<hex>`` or
``ERROR <message>``; ``publish <topic_type> x<hex>`` -> ``PUBLISHED``; ``quit``.
"""

from __future__ import annotations

import asyncio
import sys

from autogen_core import (
    AgentId,
    MessageContext,
    RoutedAgent,
    TopicId,
    TypeSubscription,
    event,
    rpc,
    try_get_known_serializers_for_type,
)
from autogen_ext.runtimes.grpc import GrpcWorkerAgentRuntime
from google.protobuf import json_format

from tests.examples_pb2.order_pb2 import Order


def say(*parts: object) -> None:
    print(*parts, flush=True)


def encode(order: Order) -> str:  # type: ignore[valid-type]
    return "x" + order.SerializeToString(deterministic=True).hex()  # type: ignore[attr-defined]


def decode(text: str) -> Order:  # type: ignore[valid-type]
    return Order.FromString(bytes.fromhex(text.removeprefix("x")))  # type: ignore[attr-defined]


def describe(order: Order) -> str:  # type: ignore[valid-type]
    return " ".join(
        [
            encode(order),
            order.WhichOneof("delivery") or "-",  # type: ignore[attr-defined]
            Order.Status.Name(order.status),  # type: ignore[attr-defined]
            order.placed_at.ToJsonString() if order.HasField("placed_at") else "-",  # type: ignore[attr-defined]
        ]
    )


class OrderJsonSerializer:
    """Order as proto3 JSON, for the RPCs (AutoGen's MessageSerializer protocol)."""

    data_content_type = "application/json"
    type_name = Order.DESCRIPTOR.full_name  # type: ignore[attr-defined]

    def serialize(self, message: Order) -> bytes:  # type: ignore[valid-type]
        return json_format.MessageToJson(message).encode()  # type: ignore[arg-type]

    def deserialize(self, payload: bytes) -> Order:  # type: ignore[valid-type]
        return json_format.Parse(payload, Order())


class OrderDesk(RoutedAgent):
    def __init__(self) -> None:
        super().__init__("AutoGen agent taking protobuf Orders")

    @rpc
    async def on_order(self, message: Order, ctx: MessageContext) -> Order:  # type: ignore[valid-type]
        say("RPC", describe(message))
        reply = Order()
        reply.CopyFrom(message)
        reply.status = Order.STATUS_SHIPPED
        reply.labels["handled_by"] = "autogen"
        return reply

    @event
    async def on_order_event(self, message: Order, ctx: MessageContext) -> None:  # type: ignore[valid-type]
        say("EVENT", describe(message), ctx.sender)


async def run_worker(address: str) -> None:
    runtime = GrpcWorkerAgentRuntime(address, payload_serialization_format="application/x-protobuf")
    await runtime.start()
    runtime.add_message_serializer(try_get_known_serializers_for_type(Order))
    runtime.add_message_serializer(OrderJsonSerializer())
    await OrderDesk.register(runtime, "ag_orders", OrderDesk)
    await runtime.add_subscription(TypeSubscription("to_autogen", "ag_orders"))
    say("READY")
    loop = asyncio.get_running_loop()
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if not line or line.strip() == "quit":
            break
        command, where, data = line.split()
        message = decode(data)
        if command == "send":
            agent_type, key = where.split("/", 1)
            try:
                reply = await asyncio.wait_for(
                    runtime.send_message(message, AgentId(agent_type, key)), 20
                )
                say("REPLY", encode(reply))
            except Exception as exc:  # report, keep serving
                say("ERROR", str(exc) or type(exc).__name__)
        elif command == "publish":
            await runtime.publish_message(
                message, TopicId(where, "ag"), sender=AgentId("ag_orders", "pub")
            )
            say("PUBLISHED")
    await runtime.stop()


if __name__ == "__main__":
    asyncio.run(run_worker(sys.argv[1]))
