"""An AutoGen 0.7.5 worker (GrpcWorkerAgentRuntime) driven line by line, for
the gateway interop tests. Run as a subprocess::

    python gateway_peer.py HOST:PORT [json|protobuf]

It prints ``STARTED <client-id>`` once connected, then reads one command per
stdin line and prints one result line per command (flushed), so the test uses
printed lines as its only synchronisation:

``register <type> [topic=<t>]... [prefix=<p>]...``
    ``Agent.register`` of an echo agent type (class subscriptions skipped,
    direct-message prefix kept), plus the given subscriptions ->
    ``REGISTERED <type> <sub-id>...`` or ``ERROR register <text>``.
``unsubscribe <id>`` -> ``UNSUBSCRIBED <id>`` or ``ERROR unsubscribe <text>``.
``send <tag> <type>/<key> <text>`` (runs concurrently) ->
    ``REPLY <tag> <text>`` or ``ERROR <tag> <text>``.
``publish <topic-type> <source> <kind> <text>`` with kind json|proto|nested
    -> ``PUBLISHED``.
``release`` -> lets every held handler answer -> ``RELEASED <n>``.
``quit`` -> stops the runtime and exits.

The echo agent answers RPC ``Ping(text)`` with ``Pong("<type>/<key>:<text>")``;
text ``fail`` raises ``ValueError("kaboom")``; text starting with ``hold``
prints ``HELD <type>/<key> <text>`` and waits for ``release``. Events print
``EVENT <type>/<key> <kind> <text> <sender>``.
"""

import asyncio
import json
import sys
from dataclasses import dataclass
from typing import Any

from autogen_core import (
    AgentId,
    MessageContext,
    RoutedAgent,
    TopicId,
    TypePrefixSubscription,
    TypeSubscription,
    event,
    rpc,
    try_get_known_serializers_for_type,
)
from autogen_ext.runtimes.grpc import GrpcWorkerAgentRuntime
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory


def _build_test_protos() -> tuple[Any, Any]:
    """``agents.ProtoMessage`` and ``agents.NestingProtoMessage``, built at run time
    (the test protos of AutoGen's own suite, same names and fields)."""
    f = descriptor_pb2.FieldDescriptorProto
    file = descriptor_pb2.FileDescriptorProto(
        name="agentwire_gateway_interop.proto", package="agents", syntax="proto3"
    )
    proto = file.message_type.add(name="ProtoMessage")
    proto.field.add(name="message", number=1, type=f.TYPE_STRING, label=f.LABEL_OPTIONAL)
    nesting = file.message_type.add(name="NestingProtoMessage")
    nesting.field.add(name="message", number=1, type=f.TYPE_STRING, label=f.LABEL_OPTIONAL)
    nesting.field.add(
        name="nested",
        number=2,
        type=f.TYPE_MESSAGE,
        label=f.LABEL_OPTIONAL,
        type_name=".agents.ProtoMessage",
    )
    pool = descriptor_pool.Default()
    pool.Add(file)
    return (
        message_factory.GetMessageClass(pool.FindMessageTypeByName("agents.ProtoMessage")),
        message_factory.GetMessageClass(pool.FindMessageTypeByName("agents.NestingProtoMessage")),
    )


ProtoMessage, NestingProtoMessage = _build_test_protos()


@dataclass
class Ping:
    text: str


@dataclass
class Pong:
    text: str


def say(*parts: object) -> None:
    print(*parts, flush=True)


RELEASE = asyncio.Event()
HELD = 0


class Echo(RoutedAgent):
    def __init__(self) -> None:
        super().__init__("echo agent for the gateway interop tests")

    @rpc
    async def on_ping(self, message: Ping, ctx: MessageContext) -> Pong:
        global HELD
        if message.text == "fail":
            raise ValueError("kaboom")
        if message.text.startswith("hold"):
            HELD += 1
            say("HELD", self.id, message.text)
            await RELEASE.wait()
        return Pong(f"{self.id}:{message.text}")

    def _sender(self, ctx: MessageContext) -> str:
        return str(ctx.sender) if ctx.sender is not None else "none"

    @event
    async def on_event(self, message: Ping, ctx: MessageContext) -> None:
        say("EVENT", self.id, "json", message.text, self._sender(ctx))

    @event
    async def on_proto(self, message: ProtoMessage, ctx: MessageContext) -> None:
        say("EVENT", self.id, "proto", message.message, self._sender(ctx))

    @event
    async def on_nested(self, message: NestingProtoMessage, ctx: MessageContext) -> None:
        text = f"{message.message}+{message.nested.message}"
        say("EVENT", self.id, "nested", text, self._sender(ctx))


async def command(runtime: GrpcWorkerAgentRuntime, words: list[str]) -> None:
    global HELD
    match words:
        case ["register", agent_type, *subs]:
            try:
                await Echo.register(runtime, agent_type, Echo, skip_class_subscriptions=True)
                ids = []
                for spec in subs:
                    kind, _, value = spec.partition("=")
                    sub: TypeSubscription | TypePrefixSubscription
                    if kind == "topic":
                        sub = TypeSubscription(value, agent_type)
                    else:
                        sub = TypePrefixSubscription(value, agent_type)
                    await runtime.add_subscription(sub)
                    ids.append(sub.id)
            except Exception as exc:
                say("ERROR", "register", json.dumps(str(exc)))
            else:
                say("REGISTERED", agent_type, *ids)
        case ["unsubscribe", sub_id]:
            try:
                await runtime.remove_subscription(sub_id)
            except Exception as exc:
                say("ERROR", "unsubscribe", json.dumps(str(exc)))
            else:
                say("UNSUBSCRIBED", sub_id)
        case ["send", tag, target, text]:
            try:
                reply = await runtime.send_message(Ping(text), AgentId.from_str(target))
            except Exception as exc:
                say("ERROR", tag, json.dumps(str(exc)))
            else:
                say("REPLY", tag, reply.text)
        case ["publish", topic_type, source, kind, text]:
            message: Any
            if kind == "json":
                message = Ping(text)
            elif kind == "proto":
                message = ProtoMessage(message=text)
            else:
                message = NestingProtoMessage(message=text, nested=ProtoMessage(message="inner"))
            try:
                await runtime.publish_message(
                    message, TopicId(topic_type, source), sender=AgentId("publisher", "p1")
                )
            except Exception as exc:
                say("ERROR", "publish", json.dumps(str(exc)))
            else:
                say("PUBLISHED")
        case ["release"]:
            say("RELEASED", HELD)
            HELD = 0
            RELEASE.set()
        case _:
            say("ERROR", "unknown-command", json.dumps(words))


async def main() -> None:
    address = sys.argv[1]
    fmt = sys.argv[2] if len(sys.argv) > 2 else "json"
    content_type = "application/x-protobuf" if fmt == "protobuf" else "application/json"
    runtime = GrpcWorkerAgentRuntime(address, payload_serialization_format=content_type)
    for cls in (Ping, Pong, ProtoMessage, NestingProtoMessage):
        runtime.add_message_serializer(try_get_known_serializers_for_type(cls))
    await runtime.start()
    assert runtime._host_connection is not None
    say("STARTED", runtime._host_connection._client_id)

    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    tasks: set[asyncio.Task[None]] = set()
    while line := (await reader.readline()).decode():
        words = line.split()
        if words == ["quit"]:
            break
        if not words:
            continue
        task = asyncio.create_task(command(runtime, words))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    RELEASE.set()
    await asyncio.wait_for(runtime.stop(), 10)
    say("STOPPED")


if __name__ == "__main__":
    asyncio.run(main())
