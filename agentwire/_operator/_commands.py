"""``agentwire call``, ``publish``, ``subscriptions [add|remove]`` and ``status``: a gateway
from a shell.

Each command opens one connection to the gateway (``--gateway``, TLS with
``--tls-ca`` or a ``grpcs://`` address, a bearer token with ``--token`` or
``$AGENTWIRE_TOKEN``), does one thing and exits: 0 on success, 1 when the
gateway or an agent answered with an error, 2 for bad input (a bad address,
JSON that does not parse, an unreadable CA file) or an unreachable gateway.
An error is one line on stderr. Output is for people unless ``--json`` asks
for one JSON document on stdout.

``call`` and ``publish`` speak the Agent Worker Protocol as any worker does:
the payload is the ``--json`` text re-encoded as ``json.dumps`` would encode
the dataclass named by ``--type`` (AutoGen's JSON serializer), under that
type name and ``application/json``. ``subscriptions add`` and ``remove``
call the gateway's operator methods (``_subscriptions.py``): the gateway
keeps the subscription after the command exits.
"""

from __future__ import annotations

import argparse
import json
import os
import ssl
import sys
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any

import trio
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from .._address import InvalidAddressError, parse_address
from .._cloudevents import to_cloud_event
from .._errors import AgentwireError, InvalidIdentifierError
from .._ids import AgentId, TopicId
from .._proto import agent_worker_pb2 as pb
from .._security._client import call_metadata, resolve_tls
from .._security._tls import client_ssl_context
from .._serialization import JSON_DATA_CONTENT_TYPE
from .._subscriptions import TypePrefixSubscription, TypeSubscription, subscription_to_proto
from .._transport import Channel, open_channel
from .._wire import (
    DEFAULT_MAX_MESSAGE_SIZE,
    OPERATOR_ADD_SUBSCRIPTION_METHOD,
    OPERATOR_REMOVE_SUBSCRIPTION_METHOD,
    OPERATOR_STATUS_METHOD,
    SERVICE_PREFIX,
    TIMEOUT_METADATA_KEY,
)
from .._worker._kinds import error_from_response
from ._status import format_status, format_subscription, subscription_to_json

__all__ = ["EXIT_FAILED", "EXIT_USAGE", "CommandError", "add_client_arguments", "add_commands"]

EXIT_FAILED = 1
"""The gateway or an agent answered with an error."""
EXIT_USAGE = 2
"""Bad input, or the gateway could not be reached."""

TOKEN_ENV = "AGENTWIRE_TOKEN"
GATEWAY_ENV = "AGENTWIRE_GATEWAY"
DEFAULT_GATEWAY = "127.0.0.1:50051"


class CommandError(AgentwireError):
    """One line for stderr and the exit status that goes with it."""

    def __init__(self, message: str, status: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.status = status


def add_client_arguments(parser: argparse.ArgumentParser, *, defaults: bool = True) -> None:
    """``--gateway``, ``--tls-ca``, ``--token``, ``--timeout``: how to reach a gateway.

    ``defaults=False`` (a sub-command's parser) sets only what is given, so the
    values given before the sub-command's name stay."""

    def default(value: object) -> Any:
        return value if defaults else argparse.SUPPRESS

    parser.add_argument(
        "--gateway",
        metavar="HOST:PORT",
        default=default(os.environ.get(GATEWAY_ENV, DEFAULT_GATEWAY)),
        help=f"the gateway (grpcs://HOST:PORT for TLS with the system's CAs) "
        f"[default: ${GATEWAY_ENV} or {DEFAULT_GATEWAY}]",
    )
    parser.add_argument(
        "--tls-ca",
        metavar="FILE",
        default=default(None),
        help="use TLS, trusting these PEM CAs for the gateway",
    )
    parser.add_argument(
        "--token",
        default=default(os.environ.get(TOKEN_ENV)),
        help=f"bearer token for a gateway with an access file [default: ${TOKEN_ENV}]",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=default(30.0),
        help="seconds to wait for the gateway and the answer [default: 30.0]",
    )


def add_commands(subparsers: Any) -> None:
    """Add ``call``, ``publish``, ``subscriptions`` and ``status`` to the ``agentwire`` parser."""
    for name, target, output, help_text, description in _COMMANDS:
        parser = subparsers.add_parser(name, help=help_text, description=description)
        if target is not None:
            metavar, what = target
            parser.add_argument(target[1], metavar=metavar, help=f"the {what} ({metavar})")
            parser.add_argument(
                "--type",
                dest="type_name",
                required=True,
                metavar="NAME",
                help="the data type of the payload: the name of the dataclass the agents handle",
            )
            parser.add_argument(
                "--json",
                dest="payload",
                required=True,
                metavar="TEXT",
                help="the payload, a JSON object of the dataclass's fields ('-': read stdin)",
            )
        else:
            parser.add_argument(
                "--json", dest="as_json", action="store_true", help=f"print {output} as JSON"
            )
        add_client_arguments(parser)
        parser.set_defaults(handler=_runner(_HANDLERS[name]))
        if name == "subscriptions":
            _add_subscription_actions(parser)


def _add_subscription_actions(parser: argparse.ArgumentParser) -> None:
    """``agentwire subscriptions add ...`` and ``... remove ID`` (none: list)."""
    actions = parser.add_subparsers(dest="action", metavar="{add,remove}")
    add = actions.add_parser(
        "add",
        help="make the gateway subscribe an agent type to a topic type (prints the id)",
        description="Subscribe AGENT_TYPE to the topic type TOPIC_TYPE (--type) or to every "
        "topic type starting with PREFIX (--type-prefix). The gateway keeps the "
        "subscription after this command exits, until 'agentwire subscriptions remove'; "
        "events reach the worker serving AGENT_TYPE as direct messages (topic type "
        "'AGENT_TYPE:TOPIC_TYPE'). Prints the subscription's id. Exit 1 if the gateway "
        "refuses it (an equal one exists, no right).",
    )
    kind = add.add_mutually_exclusive_group(required=True)
    kind.add_argument("--type", dest="topic_type", metavar="TOPIC_TYPE", help="a topic type")
    kind.add_argument(
        "--type-prefix",
        dest="topic_type_prefix",
        metavar="PREFIX",
        help="every topic type starting with PREFIX",
    )
    add.add_argument("agent_type", metavar="AGENT_TYPE", help="the agent type to subscribe")
    add.add_argument("--id", metavar="ID", help="the subscription's id [default: a new UUID]")
    remove = actions.add_parser(
        "remove",
        help="remove a subscription by its id",
        description="Remove the subscription with this id (one 'agentwire subscriptions' "
        "lists; with an access file, one of your own principal). Exit 1 if there is none.",
    )
    remove.add_argument("id", metavar="ID", help="the subscription's id")
    for action in (add, remove):
        action.add_argument(
            "--json",
            dest="as_json",
            action="store_true",
            default=argparse.SUPPRESS,
            help="print the result as JSON",
        )
        add_client_arguments(action, defaults=False)


_COMMANDS: tuple[tuple[str, tuple[str, str] | None, str, str, str], ...] = (
    (
        "call",
        ("TYPE/KEY", "agent"),
        "",
        "send an RPC to an agent and print its JSON result",
        "Send an RPC to the agent TYPE/KEY through a gateway and print the result (JSON). "
        "Exit 1 if the agent or the gateway answers with an error.",
    ),
    (
        "publish",
        ("TOPIC_TYPE/SOURCE", "topic"),
        "",
        "publish an event to a topic",
        "Publish an event to the topic TOPIC_TYPE/SOURCE through a gateway, as a worker "
        "would; every agent subscribed to it receives it.",
    ),
    (
        "subscriptions",
        None,
        "the subscriptions",
        "list a gateway's subscriptions; add or remove one",
        "List the subscriptions the gateway holds (with an access file: those of your own "
        "principal). 'add' and 'remove' make and remove subscriptions the gateway keeps "
        "itself (see 'agentwire subscriptions add --help').",
    ),
    (
        "status",
        None,
        "the status",
        "show a gateway's clients, agent types, subscriptions and counters",
        "Show the workers connected to a gateway, their agent types and subscriptions, and "
        "the gateway's counters.",
    ),
)


# -- running a command ------------------------------------------------------------------------


def _runner(command: Callable[[argparse.Namespace], Any]) -> Callable[[argparse.Namespace], int]:
    """A handler for ``main``: run *command* under trio, and turn failures into one line."""

    def run(args: argparse.Namespace) -> int:
        name = " ".join(filter(None, (args.command, getattr(args, "action", None))))
        try:
            trio.run(command, args)
        except CommandError as exc:
            print(f"agentwire {name}: {exc}", file=sys.stderr)
            return exc.status
        except AgentwireError as exc:
            print(f"agentwire {name}: {exc}", file=sys.stderr)
            return EXIT_FAILED
        return 0

    return run


def _ssl_context(args: argparse.Namespace) -> ssl.SSLContext | None:
    if args.tls_ca is None:
        return None
    try:
        return client_ssl_context(ca=args.tls_ca)
    except ValueError as exc:
        raise CommandError(str(exc), EXIT_USAGE) from None


@asynccontextmanager
async def _connected(args: argparse.Namespace) -> AsyncIterator[tuple[Channel, tuple[Any, ...]]]:
    """A channel to the gateway and the metadata every call carries; the
    failures of connecting become :class:`CommandError`."""
    try:
        address, context = resolve_tls(args.gateway, _ssl_context(args))
        parse_address(address)
    except (InvalidAddressError, ValueError) as exc:
        raise CommandError(f"invalid --gateway: {exc}", EXIT_USAGE) from None
    try:
        metadata = call_metadata(args.token, ())
    except ValueError as exc:
        raise CommandError(f"invalid --token: {exc}", EXIT_USAGE) from None
    try:
        with trio.fail_after(args.timeout):
            async with open_channel(
                address, ssl_context=context, connect_timeout=args.timeout
            ) as channel:
                yield channel, metadata
    except trio.TooSlowError:
        raise CommandError(f"no answer from {args.gateway} within {args.timeout} s") from None
    except GRPCError as exc:
        raise _grpc_failure(args, exc) from None


def _grpc_failure(args: argparse.Namespace, exc: GRPCError) -> CommandError:
    if exc.status is Status.UNAVAILABLE:
        return CommandError(
            f"cannot reach the gateway at {args.gateway}: {exc.message}", EXIT_USAGE
        )
    if exc.status is Status.UNAUTHENTICATED:
        return CommandError(f"the gateway refused the credentials: {exc.message} (see --token)")
    return CommandError(f"the gateway answered {exc.status.name}: {exc.message}")


def _payload(args: argparse.Namespace) -> bytes:
    """The ``--json`` text as the JSON serializer of a dataclass would write it."""
    text = sys.stdin.read() if args.payload == "-" else args.payload
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CommandError(f"--json is not valid JSON: {exc}", EXIT_USAGE) from None
    if not isinstance(value, dict):
        raise CommandError(
            f"--json must be a JSON object (the fields of {args.type_name}), "
            f"got {type(value).__name__}",
            EXIT_USAGE,
        )
    return json.dumps(value).encode()


def _split(text: str, what: str) -> tuple[str, str]:
    kind, slash, key = text.partition("/")
    if not slash or not kind or not key:
        raise CommandError(f"{what} must be written {what}, got {text!r}", EXIT_USAGE)
    return kind, key


def _client_id() -> str:
    return f"agentwire-cli-{uuid.uuid4()}"


async def _one_exchange(
    channel: Channel, metadata: Sequence[tuple[str, str]], message: pb.Message, *, answer: bool
) -> pb.Message | None:
    """Open a data channel, send *message*, read one answer if *answer*, and
    leave (half-close) -- waiting until the gateway has routed what we sent."""
    path = SERVICE_PREFIX + "OpenChannel"
    headers = (("client-id", _client_id()), *metadata)
    async with channel.stream(path, metadata=headers) as stream:
        await stream.send(message.SerializeToString())
        reply: pb.Message | None = None
        if answer:
            data = await stream.receive()
            if data is None:
                raise CommandError("the gateway ended the channel without an answer")
            reply = pb.Message.FromString(data)
        await stream.end()
        while await stream.receive() is not None:  # until the gateway ends the call (OK)
            pass
    return reply


# -- the commands -----------------------------------------------------------------------------


async def _call(args: argparse.Namespace) -> None:
    try:
        target = AgentId(*_split(args.agent, "TYPE/KEY"))
    except ValueError as exc:
        raise CommandError(f"invalid agent: {exc}", EXIT_USAGE) from None
    request = pb.RpcRequest(
        request_id="1",
        target=target.to_proto(),
        payload=pb.Payload(
            data_type=args.type_name,
            data_content_type=JSON_DATA_CONTENT_TYPE,
            data=_payload(args),
        ),
    )
    request.metadata[TIMEOUT_METADATA_KEY] = f"{args.timeout:.6f}"
    async with _connected(args) as (channel, metadata):
        reply = await _one_exchange(channel, metadata, pb.Message(request=request), answer=True)
    assert reply is not None
    if not reply.HasField("response"):
        raise CommandError(f"unexpected answer from the gateway: {reply.WhichOneof('message')}")
    response = reply.response
    if response.error:
        raise error_from_response(response, limit=DEFAULT_MAX_MESSAGE_SIZE)
    payload = response.payload
    if not payload.data:
        print("null")
        return
    if payload.data_content_type != JSON_DATA_CONTENT_TYPE:
        raise CommandError(
            f"the result is {payload.data_type} as {payload.data_content_type}, not JSON"
        )
    print(payload.data.decode("utf-8", "replace"))


async def _publish(args: argparse.Namespace) -> None:
    try:
        topic = TopicId(*_split(args.topic, "TOPIC_TYPE/SOURCE"))
    except ValueError as exc:
        raise CommandError(f"invalid topic: {exc}", EXIT_USAGE) from None
    event = to_cloud_event(
        topic=topic,
        sender=None,
        type_name=args.type_name,
        content_type=JSON_DATA_CONTENT_TYPE,
        data=_payload(args),
        event_id=str(uuid.uuid4()),
    )
    async with _connected(args) as (channel, metadata):
        await _one_exchange(channel, metadata, pb.Message(cloudEvent=event), answer=False)


async def _subscriptions(args: argparse.Namespace) -> None:
    action = getattr(args, "action", None)
    if action == "add":
        await _add_subscription(args)
        return
    if action == "remove":
        await _remove_subscription(args)
        return
    async with _connected(args) as (channel, metadata):
        data = await channel.unary(
            SERVICE_PREFIX + "GetSubscriptions",
            pb.GetSubscriptionsRequest().SerializeToString(),
            metadata=(("client-id", _client_id()), *metadata),
        )
    subscriptions = [
        subscription_to_json(sub)
        for sub in pb.GetSubscriptionsResponse.FromString(data).subscriptions
    ]
    if args.as_json:
        print(json.dumps(subscriptions))
    else:
        print(f"subscriptions: {len(subscriptions)}")
        for sub in subscriptions:
            print(f"  {format_subscription(sub)}")


async def _add_subscription(args: argparse.Namespace) -> None:
    subscription_id = args.id or str(uuid.uuid4())
    try:
        if args.topic_type is not None:
            made: TypeSubscription | TypePrefixSubscription = TypeSubscription(
                args.topic_type, args.agent_type, subscription_id
            )
        else:
            made = TypePrefixSubscription(args.topic_type_prefix, args.agent_type, subscription_id)
    except (InvalidIdentifierError, ValueError) as exc:
        raise CommandError(f"invalid subscription: {exc}", EXIT_USAGE) from None
    subscription = subscription_to_proto(made)
    request = pb.AddSubscriptionRequest(subscription=subscription)
    async with _connected(args) as (channel, metadata):
        await channel.unary(
            OPERATOR_ADD_SUBSCRIPTION_METHOD, request.SerializeToString(), metadata=metadata
        )
    if args.as_json:
        print(json.dumps(subscription_to_json(subscription)))
    else:
        print(subscription_id)


async def _remove_subscription(args: argparse.Namespace) -> None:
    request = pb.RemoveSubscriptionRequest(id=args.id)
    async with _connected(args) as (channel, metadata):
        await channel.unary(
            OPERATOR_REMOVE_SUBSCRIPTION_METHOD, request.SerializeToString(), metadata=metadata
        )
    print(json.dumps({"removed": args.id}) if args.as_json else f"removed {args.id}")


async def _status(args: argparse.Namespace) -> None:
    async with _connected(args) as (channel, metadata):
        data = await channel.unary(OPERATOR_STATUS_METHOD, b"", metadata=metadata)
    status = json.loads(data)
    print(json.dumps(status) if args.as_json else format_status(status))


_HANDLERS: dict[str, Callable[[argparse.Namespace], Any]] = {
    "call": _call,
    "publish": _publish,
    "subscriptions": _subscriptions,
    "status": _status,
}
