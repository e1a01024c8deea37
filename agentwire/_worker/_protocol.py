"""What a worker session needs and shares: transport protocols, method paths, request ids.

Nothing here does I/O by itself. :class:`ChannelLike` and
:class:`ClientStreamLike` are what a session needs from a transport (the
trio-native one in ``agentwire._transport``, or the in-memory fakes of the
tests); :class:`SessionHandler` is what it hands incoming traffic to.
"""

from __future__ import annotations

import itertools
import math
import uuid
from collections.abc import Iterator, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol

import trio
from google.protobuf import any_pb2

from .._cloudevents import length_prefix, varint_at
from .._proto import agent_worker_pb2 as pb
from .._proto import cloudevent_pb2 as ce_pb
from .._wire import SERVICE_PREFIX

__all__ = [
    "ADD_SUBSCRIPTION",
    "GET_SUBSCRIPTIONS",
    "OPEN_CHANNEL",
    "OPEN_CONTROL_CHANNEL",
    "REGISTER_AGENT",
    "REMOVE_SUBSCRIPTION",
    "ChannelLike",
    "ClientStreamLike",
    "DirectSend",
    "RequestIds",
    "SessionHandler",
    "Slot",
    "enveloped",
    "request_ids",
    "timeout_from_deadline",
]

SERVICE = SERVICE_PREFIX
OPEN_CHANNEL = SERVICE + "OpenChannel"
OPEN_CONTROL_CHANNEL = SERVICE + "OpenControlChannel"
REGISTER_AGENT = SERVICE + "RegisterAgent"
ADD_SUBSCRIPTION = SERVICE + "AddSubscription"
REMOVE_SUBSCRIPTION = SERVICE + "RemoveSubscription"
GET_SUBSCRIPTIONS = SERVICE + "GetSubscriptions"


class ClientStreamLike(Protocol):
    """What the session needs from a transport client stream."""

    async def send(self, message: bytes) -> None: ...
    async def receive(self) -> bytes | None: ...


class DirectSend(Protocol):
    """A stream's non-blocking send (``try_send``): True if the message was taken."""

    def __call__(self, message: bytes, *, flush: bool = True) -> bool: ...


class ChannelLike(Protocol):
    """What the session needs from a transport channel (``agentwire._transport.Channel``)."""

    async def unary(
        self,
        path: str,
        request: bytes,
        *,
        metadata: Sequence[tuple[str, str]] = (),
        timeout: float | None = None,  # noqa: ASYNC109 (the transport's signature)
    ) -> bytes: ...

    def stream(
        self,
        path: str,
        *,
        metadata: Sequence[tuple[str, str]] = (),
        timeout: float | None = None,
    ) -> AbstractAsyncContextManager[ClientStreamLike]: ...


class SessionHandler(Protocol):
    """Receives what the gateway sends to this worker.

    ``handle_request`` runs in one of the session's server tasks (as many as
    requests in progress, bounded by the session's request limit), under the
    caller's deadline: the session cancels it when that passes and answers
    for it. It returns the response to send. ``handle_event`` runs in one
    event-dispatch task, in arrival order, with the event or, when the
    gateway's message held that and nothing else, its serialized bytes (not
    parsed yet: see :func:`event_body`); it may block (backpressure): the
    receive loop keeps reading (RPC responses included) while at most
    ``event_buffer`` events wait for it, then it blocks too.
    ``handle_control`` answers a control request; ``None`` sends nothing.
    """

    async def handle_request(self, request: pb.RpcRequest) -> pb.RpcResponse: ...

    async def handle_event(self, event: ce_pb.CloudEvent | bytes) -> None: ...

    async def handle_control(self, message: pb.ControlMessage) -> any_pb2.Any | None: ...


RequestIds = Iterator[str]
"""Request ids unique to one worker (see :func:`request_ids`)."""


def request_ids() -> RequestIds:
    """``<random prefix>-1``, ``<random prefix>-2``...: an iterator of C calls (``map``
    over a counter), not a Python ``__next__`` per request."""
    return map(f"{uuid.uuid4().hex[:12]}-{{}}".format, itertools.count(1))


class Slot:
    """A one-shot result box a caller waits on."""

    __slots__ = ("_error", "_event", "_value")

    def __init__(self) -> None:
        self._event = trio.Event()
        self._value: Any = None
        self._error: BaseException | None = None

    def set(self, value: Any) -> None:
        if not self._event.is_set():
            self._value = value
            self._event.set()

    def fail(self, error: BaseException) -> None:
        if not self._event.is_set():
            self._error = error
            self._event.set()

    @property
    def done(self) -> bool:
        return self._event.is_set()

    async def wait(self) -> Any:
        await self._event.wait()
        if self._error is not None:
            raise self._error
        return self._value


def timeout_from_deadline(default: float) -> float:
    """The time left before the caller's deadline, capped by ``default``."""
    left = trio.current_effective_deadline() - trio.current_time()
    if math.isinf(left):
        return default
    return max(0.0, min(default, left))


def _field_key(name: str) -> bytes:
    """The wire key of ``Message``'s length-delimited field *name* (one byte: fields 1-15)."""
    key = (pb.Message.DESCRIPTOR.fields_by_name[name].number << 3) | 2
    assert key < 0x80
    return bytes((key,))


_ENVELOPE_KEYS = {name: _field_key(name) for name in ("request", "response", "cloudEvent")}


def enveloped(field: str, body: bytes) -> bytes:
    """``pb.Message(**{field: m}).SerializeToString()`` from ``body = m.SerializeToString()``.

    A ``Message`` holding one field is that field's key, its length (a
    varint) and its bytes; writing them saves copying *m* into a new
    ``Message`` (about half the cost of an RPC request's or response's
    encoding).
    """
    return _ENVELOPE_KEYS[field] + length_prefix(len(body)) + body


_EVENT_KEY = _ENVELOPE_KEYS["cloudEvent"][0]


def event_body(data: bytes) -> bytes | None:
    """The serialized CloudEvent of a ``Message`` that holds one and nothing else
    (the inverse of :func:`enveloped`), else None (parse it as a ``Message``)."""
    if len(data) < 2 or data[0] != _EVENT_KEY:
        return None
    size = data[1]
    pos = 2
    if size >= 0x80:  # (one byte is the usual case: no call)
        size, pos = varint_at(data, 1)
    if pos + size != len(data):
        return None
    return data[pos:]
