"""AutoGen 0.7.5 peers for the worker interop tests, run as subprocesses.

``python autogen_peers/worker_peer.py host``
    Runs AutoGen's host servicer (the routing logic of
    ``GrpcWorkerAgentRuntimeHost``) on 127.0.0.1 with a free port and prints
    ``READY <port>``. Runs until stdin closes.

``python autogen_peers/worker_peer.py worker <address> <json|protobuf>``
    Runs a ``GrpcWorkerAgentRuntime`` with agent type ``ag_echo``:
    RPC ``Ping`` -> ``Pong("ag:" + text)`` (``text == "fail"`` raises
    ``ValueError("kaboom")``); events ``Ping``/``ProtoMessage`` on topic type
    ``interop`` are printed as ``EVENT <type> <text> <sender>``. Prints
    ``READY`` once registered, then obeys one command per stdin line:
    ``send <type>/<key> <text>`` -> ``REPLY <text>`` or ``ERROR <message>``;
    ``publish <topic_type> <text>`` -> ``PUBLISHED``;
    ``unsubscribe`` (the ``interop`` subscription) -> ``UNSUBSCRIBED``;
    ``quit``.

Everything is printed with flush so the test can use lines as sync points.
"""

from __future__ import annotations

import asyncio
import sys
from dataclasses import dataclass

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
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory


def proto_message_class() -> type:
    """``agents.ProtoMessage { string message = 1; }`` built at run time."""
    pool = descriptor_pool.Default()
    try:
        descriptor = pool.FindMessageTypeByName("agents.ProtoMessage")
    except KeyError:
        file = descriptor_pb2.FileDescriptorProto(
            name="agentwire_interop_test.proto", package="agents", syntax="proto3"
        )
        message = file.message_type.add(name="ProtoMessage")
        message.field.add(
            name="message",
            number=1,
            type=descriptor_pb2.FieldDescriptorProto.TYPE_STRING,
            label=descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL,
        )
        pool.Add(file)
        descriptor = pool.FindMessageTypeByName("agents.ProtoMessage")
    return message_factory.GetMessageClass(descriptor)


ProtoMessage = proto_message_class()


@dataclass
class Ping:
    text: str


@dataclass
class Pong:
    text: str


def say(*parts: object) -> None:
    print(*parts, flush=True)


class Echo(RoutedAgent):
    def __init__(self) -> None:
        super().__init__("AutoGen echo agent for interop tests")

    @rpc
    async def on_ping(self, message: Ping, ctx: MessageContext) -> Pong:
        if message.text == "fail":
            raise ValueError("kaboom")
        return Pong("ag:" + message.text)

    @event
    async def on_ping_event(self, message: Ping, ctx: MessageContext) -> None:
        say("EVENT", "Ping", message.text, ctx.sender)

    @event
    async def on_proto_event(self, message: ProtoMessage, ctx: MessageContext) -> None:  # type: ignore[valid-type]
        say("EVENT", "ProtoMessage", message.message, ctx.sender)  # type: ignore[attr-defined]


async def run_host() -> None:
    import grpc
    from autogen_ext.runtimes.grpc import GrpcWorkerAgentRuntimeHostServicer
    from autogen_ext.runtimes.grpc.protos import agent_worker_pb2_grpc

    server = grpc.aio.server()
    servicer = GrpcWorkerAgentRuntimeHostServicer()
    agent_worker_pb2_grpc.add_AgentRpcServicer_to_server(servicer, server)  # type: ignore[no-untyped-call]
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    say("READY", port)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    await server.stop(grace=0)


async def run_worker(address: str, payload_format: str) -> None:
    content_type = "application/x-protobuf" if payload_format == "protobuf" else "application/json"
    runtime = GrpcWorkerAgentRuntime(address, payload_serialization_format=content_type)
    await runtime.start()
    runtime.add_message_serializer(try_get_known_serializers_for_type(Ping))
    runtime.add_message_serializer(try_get_known_serializers_for_type(Pong))
    runtime.add_message_serializer(try_get_known_serializers_for_type(ProtoMessage))
    await Echo.register(runtime, "ag_echo", Echo)
    subscription = TypeSubscription("interop", "ag_echo")
    await runtime.add_subscription(subscription)
    say("READY")
    loop = asyncio.get_running_loop()
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if not line or line.strip() == "quit":
            break
        command, *args = line.strip().split(maxsplit=2)
        if command == "send":
            target, text = args
            agent_type, key = target.split("/", 1)
            try:
                reply = await asyncio.wait_for(
                    runtime.send_message(Ping(text), AgentId(agent_type, key)), 20
                )
                say("REPLY", reply.text)
            except Exception as exc:  # report, keep serving
                say("ERROR", str(exc) or type(exc).__name__)
        elif command == "publish":
            topic_type, text = args
            message: object = Ping(text) if payload_format == "json" else ProtoMessage(message=text)
            await runtime.publish_message(
                message, TopicId(topic_type, "ag"), sender=AgentId("ag_echo", "pub")
            )
            say("PUBLISHED")
        elif command == "unsubscribe":
            await runtime.remove_subscription(subscription.id)
            say("UNSUBSCRIBED")
    await runtime.stop()


def main() -> None:
    if sys.argv[1] == "host":
        asyncio.run(run_host())
    else:
        asyncio.run(run_worker(sys.argv[2], sys.argv[3]))


if __name__ == "__main__":
    main()
