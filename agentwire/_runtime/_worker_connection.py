"""One connection of a worker to a gateway: the Agent Worker Protocol client.

A :class:`WorkerSession` is one gRPC channel with one ``client-id``. It opens
``OpenChannel`` (and ``OpenControlChannel``), makes the unary calls
(``RegisterAgent``, ``AddSubscription``, ...), sends RPC requests and
CloudEvents, matches responses to callers, and hands whatever the gateway
sends to a :class:`SessionHandler`. Reconnecting is not its business: when the
connection is lost the session fails everything pending and reports it through
:attr:`WorkerSession.lost`; the worker link (``_worker_link``) opens a new one.

Invariants (kept by this module):

* Every call of a session carries the header ``("client-id", <uuid4>)``; the
  id is made fresh for each session and never reused (the AutoGen host keys
  all its state by it, and a reused id races with the old stream's cleanup).
* ``OpenChannel`` is opened -- our request headers sent, the server's response
  headers *not* awaited (the AutoGen host sends none until it has a message)
  -- before the session is handed out, so every unary call comes after it.
* Outgoing ``Message`` envelopes are written by one sender task from a
  two-lane :class:`~agentwire._worker._outbox.Outbox`: RPC requests and
  responses in one lane, CloudEvents in the other, each bounded by
  ``outbox_size``. RPC messages go first, but while events wait at most
  ``DEFAULT_RPC_BURST`` RPC messages are written in a row before the next
  event (events are never starved). Within a lane messages are written in the
  order they were queued. If a write fails, that message and every message
  still queued (both lanes) fail their waiters with
  :class:`ConnectionLostError`; nothing is written after a failed write,
  nothing is dropped silently, nothing reordered within a lane.
  When nothing of its lane is queued or being written (``_unsent[lane] == 0``)
  a message may be handed to the stream directly by the task producing it
  (the transport's non-blocking ``try_send``), saving the hop through the
  sender task; if that cannot be done without waiting, the message is queued
  as usual. So within a lane the order is the order of the calls either way.
* Nothing larger than ``max_message_size`` is sent: an oversize request or
  publish raises :class:`MessageTooLargeError` for that call only; an
  oversize response is replaced by an error response of kind
  ``ErrorKind.TOO_LARGE``. (A peer's transport would end the whole stream.)
* When the session ends (lost or closed), every pending RPC and control call
  of the session fails at once with :class:`ConnectionLostError`; the pending
  maps are empty afterwards.
* Incoming messages are taken in arrival order: by the transport's reader
  task through :meth:`WorkerSession._take` when the receive loop is idle and
  the message can be dealt with without waiting (a response settles its
  caller; a request within the request limit starts its task; an event fits
  the event buffer), else by the receive loop, which then may wait.
* At most ``max_control_requests`` control requests (Save/LoadState from
  other workers) are served at once; one more is answered at once with an
  error response (a ``Save/LoadStateResponse`` with ``error``) and counted in
  ``control_requests_refused``.
* Incoming events reach the handler in arrival order through one dispatch
  task and a bounded buffer, so a handler blocked on a full mailbox does not
  stop RPC responses behind it until that buffer is full too.
* A caller leaving its cancel scope (deadline, cancellation) removes its
  pending entry at once; a response arriving later is dropped and counted.
* An RPC given an expiry fails with :class:`RpcTimeoutError` once it passes
  (no later than a cancel scope would). Expiries kept by the session's
  sweeper are in ``_expiries`` in expiry order (out-of-order ones take a
  scope instead), each entry leaves when its call ends, and the sweeper
  sleeps until the first of them.
* Request ids are unique per worker (a random per-worker prefix plus a
  counter shared by all sessions of the worker), so responses cannot collide
  at a host that keys pending requests by the raw id (AutoGen issue #7016).
"""

from __future__ import annotations

import itertools
import logging
import math
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any, Protocol, TypeVar

import attrs
import trio
from google.protobuf import any_pb2
from google.protobuf.message import Message as ProtoMessage
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from .._budget import CheckpointBudget
from .._errors import ConnectionLostError, MessageTooLargeError, RpcTimeoutError
from .._nursery import open_unwrapping_nursery
from .._proto import agent_worker_pb2 as pb
from .._proto import cloudevent_pb2 as ce_pb
from .._wire import DEFAULT_MAX_MESSAGE_SIZE, ERROR_KIND_KEY, ErrorKind
from .._worker._kinds import error_from_response, error_response
from .._worker._outbox import Lane, Outbox
from ._pending import PendingMap

logger = logging.getLogger("agentwire.worker")

SERVICE = "/agents.AgentRpc/"
OPEN_CHANNEL = SERVICE + "OpenChannel"
OPEN_CONTROL_CHANNEL = SERVICE + "OpenControlChannel"
REGISTER_AGENT = SERVICE + "RegisterAgent"
ADD_SUBSCRIPTION = SERVICE + "AddSubscription"
REMOVE_SUBSCRIPTION = SERVICE + "RemoveSubscription"
GET_SUBSCRIPTIONS = SERVICE + "GetSubscriptions"

#: Control requests (Save/LoadState from other workers) served at once; beyond
#: it a request is answered at once with an error (counted as refused).
MAX_CONTROL_REQUESTS = 64

_R = TypeVar("_R", bound=ProtoMessage)


class ClientStreamLike(Protocol):
    """What the session needs from a transport client stream."""

    async def send(self, message: bytes) -> None: ...
    async def receive(self) -> bytes | None: ...


class _DirectSend(Protocol):
    def __call__(self, message: bytes, *, flush: bool = True) -> bool: ...


class ChannelLike(Protocol):
    """What the session needs from a transport channel (``agentwire._transport.Channel``)."""

    async def unary(
        self,
        path: str,
        request: bytes,
        *,
        metadata: Any = (),
        timeout: float | None = None,  # noqa: ASYNC109 (the transport's signature)
    ) -> bytes: ...

    def stream(self, path: str, *, metadata: Any = (), timeout: float | None = None) -> Any: ...


class SessionHandler(Protocol):
    """Receives what the gateway sends to this worker.

    ``handle_request`` runs in its own task (bounded by the session's request
    limit) and returns the response to send. ``handle_event`` runs in one
    event-dispatch task, in arrival order; it may block (backpressure): the
    receive loop keeps reading (RPC responses included) while at most
    ``event_buffer`` events wait for it, then it blocks too.
    ``handle_control`` answers a control request; ``None`` sends nothing.
    """

    async def handle_request(self, request: pb.RpcRequest) -> pb.RpcResponse: ...

    async def handle_event(self, event: ce_pb.CloudEvent) -> None: ...

    async def handle_control(self, message: pb.ControlMessage) -> any_pb2.Any | None: ...


class RequestIds:
    """Request ids unique to one worker: ``<random prefix>-<counter>``."""

    def __init__(self) -> None:
        self._prefix = uuid.uuid4().hex[:12]
        self._counter = itertools.count(1)

    def __next__(self) -> str:
        return f"{self._prefix}-{next(self._counter)}"

    def __iter__(self) -> Iterator[str]:
        return self


class _Slot:
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


@attrs.define(slots=True)
class _Outgoing:
    data: bytes
    ack: _Slot | None


@attrs.frozen(slots=True)
class SessionStatistics:
    client_id: str
    pending_rpcs: int
    pending_control: int
    outbox_used: int
    """Messages queued in both lanes of the outbox."""
    outbox_size: int
    """The capacity of each lane."""
    rpc_lane_used: int
    event_lane_used: int
    messages_sent: int
    batches_written: int
    messages_received: int
    late_responses: int
    requests_in_progress: int
    events_buffered: int
    control_requests_in_progress: int
    control_requests_refused: int
    """Control requests answered with an error: over ``MAX_CONTROL_REQUESTS``."""


class WorkerSession:
    """One connection (one ``client-id``) to a gateway. Made by :func:`open_session`."""

    def __init__(
        self,
        channel: ChannelLike,
        handler: SessionHandler,
        request_ids: RequestIds,
        *,
        outbox_size: int,
        max_concurrent_requests: int,
        unary_timeout: float,
        event_buffer: int = 1024,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
        max_control_requests: int = MAX_CONTROL_REQUESTS,
    ) -> None:
        self.client_id = str(uuid.uuid4())
        self.metadata: tuple[tuple[str, str], ...] = (("client-id", self.client_id),)
        self.lost = trio.Event()
        self.loss_reason: str | None = None
        self._channel = channel
        self._handler = handler
        self._request_ids = request_ids
        self._unary_timeout = unary_timeout
        self._outbox_size = outbox_size
        self._max_message_size = max_message_size
        self._outbox: Outbox[_Outgoing] = Outbox(outbox_size)
        # producers waiting for room, per lane; the sender waiting for work
        self._space = (trio.lowlevel.ParkingLot(), trio.lowlevel.ParkingLot())
        self._work = trio.lowlevel.ParkingLot()
        self._unsent = [0, 0]  # per lane: messages queued for (or held by) the sender
        self._budget = CheckpointBudget()
        self._control_send, self._control_recv = trio.open_memory_channel[bytes](outbox_size)
        self._events_send, self._events_recv = trio.open_memory_channel[ce_pb.CloudEvent](
            event_buffer
        )
        self._pending: PendingMap[str, pb.RpcResponse] = PendingMap()
        self._pending_control: PendingMap[str, any_pb2.Any] = PendingMap()
        self._max_requests = max_concurrent_requests
        self._request_limit = trio.Semaphore(max_concurrent_requests)
        self._max_control = max_control_requests
        self._control_in_progress = 0
        self._control_refused = 0
        self._control_open = False
        self._control_settled = trio.Event()  # set once the control stream opened or failed
        self._messages_sent = 0
        self._batches_written = 0
        self._messages_received = 0
        # the stream's non-blocking send, if the transport has one (see _send)
        self._direct: _DirectSend | None = None
        self._nursery: trio.Nursery | None = None  # where request tasks run
        # RPC time limits (see rpc): request id -> expiry, in expiry order, and
        # the sweeper task's sleep, whose deadline is the earliest expiry.
        self._expiries: dict[str, float] = {}
        self._latest_expiry = -math.inf
        self._expiry_scope: trio.CancelScope | None = None

    # -- statistics ---------------------------------------------------------

    def statistics(self) -> SessionStatistics:
        return SessionStatistics(
            client_id=self.client_id,
            pending_rpcs=len(self._pending),
            pending_control=len(self._pending_control),
            outbox_used=len(self._outbox),
            outbox_size=self._outbox_size,
            rpc_lane_used=self._outbox.queued(Lane.RPC),
            event_lane_used=self._outbox.queued(Lane.EVENTS),
            messages_sent=self._messages_sent,
            batches_written=self._batches_written,
            messages_received=self._messages_received,
            late_responses=self._pending.statistics().late
            + self._pending_control.statistics().late,
            requests_in_progress=self._max_requests - self._request_limit.value,
            events_buffered=self._events_send.statistics().current_buffer_used,
            control_requests_in_progress=self._control_in_progress,
            control_requests_refused=self._control_refused,
        )

    # -- loss ---------------------------------------------------------------

    def _mark_lost(self, reason: str) -> None:
        if self.lost.is_set():
            return
        self.loss_reason = reason
        logger.info("connection %s lost: %s", self.client_id, reason)
        self.lost.set()
        for space in self._space:
            space.unpark_all()  # producers waiting for room fail now
        self._pending.close(lambda _key: self._lost_error())
        self._pending_control.close(lambda _key: self._lost_error())

    def _lost_error(self) -> ConnectionLostError:
        return ConnectionLostError(
            f"connection to the gateway lost: {self.loss_reason or 'closed'}"
        )

    # -- unary calls --------------------------------------------------------

    async def unary(self, path: str, request: ProtoMessage, response_type: type[_R]) -> _R:
        """Make one unary call with this session's ``client-id``.

        Raises ``GRPCError`` for a non-OK status, :class:`ConnectionLostError`
        if the session is lost (or gets lost meanwhile).
        """
        if self.lost.is_set():
            raise self._lost_error()
        timeout = _timeout_from_deadline(self._unary_timeout)
        try:
            data = await self._channel.unary(
                path, request.SerializeToString(), metadata=self.metadata, timeout=timeout
            )
        except GRPCError as exc:
            if exc.status is not Status.UNAVAILABLE:
                raise
            # The transport reports a gone connection as UNAVAILABLE.
            self._mark_lost(f"call failed: {exc.message or exc.status.name}")
            raise self._lost_error() from exc
        except (OSError, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            self._mark_lost(f"call failed: {exc!r}")
            raise self._lost_error() from exc
        response = response_type()
        response.ParseFromString(data)
        return response

    async def register_agent_type(self, agent_type: str) -> None:
        await self.unary(
            REGISTER_AGENT,
            pb.RegisterAgentTypeRequest(type=agent_type),
            pb.RegisterAgentTypeResponse,
        )

    async def add_subscription(self, subscription: pb.Subscription) -> None:
        await self.unary(
            ADD_SUBSCRIPTION,
            pb.AddSubscriptionRequest(subscription=subscription),
            pb.AddSubscriptionResponse,
        )

    async def remove_subscription(self, subscription_id: str) -> None:
        await self.unary(
            REMOVE_SUBSCRIPTION,
            pb.RemoveSubscriptionRequest(id=subscription_id),
            pb.RemoveSubscriptionResponse,
        )

    async def get_subscriptions(self) -> list[pb.Subscription]:
        response = await self.unary(
            GET_SUBSCRIPTIONS, pb.GetSubscriptionsRequest(), pb.GetSubscriptionsResponse
        )
        return list(response.subscriptions)

    # -- the data channel ---------------------------------------------------

    async def _enqueue(self, lane: Lane, item: _Outgoing) -> None:
        """Queue one message in *lane*, waiting for room (behind earlier waiters).

        A cancellation before the message is queued queues nothing.
        """
        space = self._space[lane]
        waited = False
        if not space:
            await self._budget.checkpoint()
        while True:
            if self.lost.is_set():
                raise self._lost_error()
            if (waited or not space) and self._outbox.push(lane, item):
                break
            await space.park()
            waited = True
        self._unsent[lane] += 1
        self._work.unpark()

    async def _try_direct(self, lane: Lane, data: bytes, *, flush: bool = True) -> bool:
        """Write one envelope from the calling task if nothing of its lane is queued.

        True: it is buffered on the stream, after everything of its lane sent
        before it. False: nothing was sent; queue it. A cancellation point
        before anything is sent (when the direct path is available at all).
        ``flush``: the caller is about to wait (an RPC): write the socket now
        if nothing else could join the write; otherwise the connection's
        writer batches it.
        """
        direct = self._direct
        if direct is None or self._unsent[lane] or self.lost.is_set():
            return False
        await self._budget.checkpoint()
        if self._unsent[lane] or self.lost.is_set() or not direct(data, flush=flush):
            return False
        self._messages_sent += 1
        self._batches_written += 1
        return True

    async def _send(self, lane: Lane, data: bytes, *, flush: bool = True) -> None:
        """Send one envelope: directly when its lane is idle, else through the sender."""
        if not await self._try_direct(lane, data, flush=flush):
            await self._enqueue(lane, _Outgoing(data, None))

    def _check_size(self, data: bytes, what: str) -> None:
        if len(data) > self._max_message_size:
            raise MessageTooLargeError(len(data), self._max_message_size, what)

    async def rpc(self, request: pb.RpcRequest, *, expires_at: float = math.inf) -> pb.RpcResponse:
        """Send ``request`` (its ``request_id`` is assigned here) and await the response.

        Honours the caller's cancel scope: on deadline or cancellation the
        pending entry is removed at once. An error response is returned as is
        (see :func:`raise_for_response`). ``expires_at`` (trio clock): raise
        :class:`RpcTimeoutError` if no response came by then. While the
        expiries of a session's calls come in order (a worker's fixed
        ``rpc_timeout``), one sweeper task enforces them all, which saves a
        cancel scope per call; an out-of-order expiry gets a scope of its own.
        """
        request_id = next(self._request_ids)
        request.request_id = request_id
        data = pb.Message(request=request).SerializeToString()
        self._check_size(data, "RPC request")
        with self._pending.register(request_id) as waiter:
            # Write at once only for a lone call: with others in flight, their
            # tasks are likely about to send too (trio cannot tell us), so the
            # connection's writer sends them all in one write.
            flush = len(self._pending) <= 1
            if expires_at == math.inf:
                await self._send(Lane.RPC, data, flush=flush)
                return await waiter.wait()
            scope = self._expiry_scope
            if (
                scope is None
                or expires_at < self._latest_expiry
                or expires_at <= trio.current_time()
                or not await self._try_direct(Lane.RPC, data, flush=flush)
            ):
                with trio.move_on_at(expires_at):
                    await self._send(Lane.RPC, data, flush=flush)
                    return await waiter.wait()
                raise _timed_out(request_id)
            # Sent; the sweeper ends the wait at expires_at (set_error).
            self._latest_expiry = expires_at
            self._expiries[request_id] = expires_at
            if expires_at < scope.deadline:
                scope.deadline = expires_at
            try:
                return await waiter.wait()
            finally:
                self._expiries.pop(request_id, None)

    async def _expire_rpcs(self) -> None:
        """The sweeper: fail the calls in ``_expiries`` whose time is up."""
        expiries = self._expiries
        while True:
            now = trio.current_time()
            while expiries:
                request_id, expires_at = next(iter(expiries.items()))
                if expires_at > now:
                    break
                del expiries[request_id]
                self._pending.set_error(request_id, _timed_out(request_id))
            next_expiry = next(iter(expiries.values()), math.inf)
            with trio.CancelScope(deadline=next_expiry) as scope:
                self._expiry_scope = scope
                try:
                    await trio.sleep_forever()
                finally:
                    self._expiry_scope = None

    async def publish(self, event: ce_pb.CloudEvent) -> None:
        """Send a CloudEvent; returns once it was written to the connection."""
        data = pb.Message(cloudEvent=event).SerializeToString()
        self._check_size(data, "published event")
        # A publisher usually goes on publishing: let the writer batch events.
        if await self._try_direct(Lane.EVENTS, data, flush=False):
            return
        ack = _Slot()
        await self._enqueue(Lane.EVENTS, _Outgoing(data, ack))
        await ack.wait()

    async def _respond(self, response: pb.RpcResponse) -> None:
        data = pb.Message(response=response).SerializeToString()
        if len(data) > self._max_message_size:
            logger.warning(
                "response %s not sent: %d bytes, over the %d-byte limit",
                response.request_id,
                len(data),
                self._max_message_size,
            )
            data = pb.Message(
                response=too_large_response(response, len(data), self._max_message_size)
            ).SerializeToString()
        try:
            await self._send(
                Lane.RPC,
                data,
                flush=self._request_limit.value >= self._max_requests - 1,  # a lone request
            )
        except ConnectionLostError:
            # The gateway answers the caller with an error when we disconnect.
            logger.debug("response %s dropped: connection lost", response.request_id)

    # -- the control channel ------------------------------------------------

    async def control_call(self, destination: str, message: ProtoMessage) -> any_pb2.Any:
        """Send a control request to ``destination`` and await the response's payload."""
        await self._control_settled.wait()
        if not self._control_open:
            raise ConnectionLostError("the gateway has no open control channel for this worker")
        rpc_id = next(self._request_ids)
        payload = any_pb2.Any()
        payload.Pack(message)
        envelope = pb.ControlMessage(
            rpc_id=rpc_id,
            destination=destination,
            respond_to=f"clientid={self.client_id}",
            rpcMessage=payload,
        )
        with self._pending_control.register(rpc_id) as waiter:
            try:
                await self._control_send.send(envelope.SerializeToString())
            except (trio.ClosedResourceError, trio.BrokenResourceError):
                raise self._lost_error() from None
            return await waiter.wait()

    # -- loops --------------------------------------------------------------

    async def _sender(self, stream: ClientStreamLike) -> None:
        """Write queued messages, one at a time in the outbox's order.

        A *batch* is what is written between two waits for work (the
        transport coalesces it into few socket writes). However it ends (write
        failure, cancellation), the message being written and every message
        still queued fail their waiters; none is dropped.
        """
        outbox = self._outbox
        held: tuple[Lane, _Outgoing] | None = None
        fresh = True
        try:
            while True:
                held = outbox.pop()
                if held is None:
                    fresh = True
                    await self._work.park()
                    continue
                lane, item = held
                self._space[lane].unpark()
                if fresh:
                    fresh = False
                    self._batches_written += 1
                try:
                    await stream.send(item.data)
                except Exception as exc:
                    self._mark_lost(f"write failed: {exc!r}")
                    return
                held = None
                self._unsent[lane] -= 1
                self._messages_sent += 1
                if item.ack is not None:
                    item.ack.set(None)
        finally:
            self._mark_lost("closed")
            outbox.close()
            error = self._lost_error()
            unwritten = [] if held is None else [held]
            unwritten.extend(outbox.drain())
            for lane, item in unwritten:
                self._unsent[lane] -= 1
                if item.ack is not None:
                    item.ack.fail(error)

    def _take(self, data: bytes) -> bool:
        """Take one incoming message in the transport's reader task if that needs
        no waiting (see the invariants); False leaves it to :meth:`_receiver`."""
        nursery = self._nursery
        if nursery is None or self.lost.is_set():
            return False
        message = pb.Message()
        try:
            message.ParseFromString(data)
        except Exception:
            return False  # the receive loop reports it
        kind = message.WhichOneof("message")
        if kind == "response":
            self._pending.set_value(message.response.request_id, message.response)
        elif kind == "request":
            try:
                self._request_limit.acquire_nowait()
            except trio.WouldBlock:
                return False
            try:
                nursery.start_soon(self._serve_request, message.request)
            except RuntimeError:  # the nursery is closing
                self._request_limit.release()
                return False
        elif kind == "cloudEvent":
            try:
                self._events_send.send_nowait(message.cloudEvent)
            except (trio.WouldBlock, trio.ClosedResourceError, trio.BrokenResourceError):
                return False
        else:
            return False
        self._messages_received += 1
        return True

    async def _receiver(self, stream: ClientStreamLike, nursery: trio.Nursery) -> None:
        try:
            while True:
                data = await stream.receive()
                if data is None:
                    self._mark_lost("the gateway ended the stream")
                    return
                self._messages_received += 1
                message = pb.Message()
                try:
                    message.ParseFromString(data)
                except Exception:
                    logger.warning("undecodable message from the gateway dropped")
                    continue
                kind = message.WhichOneof("message")
                if kind == "response":
                    self._pending.set_value(message.response.request_id, message.response)
                elif kind == "request":
                    await self._request_limit.acquire()  # backpressure to the gateway
                    nursery.start_soon(self._serve_request, message.request)
                elif kind == "cloudEvent":
                    try:  # no trip through the scheduler per event unless full
                        self._events_send.send_nowait(message.cloudEvent)
                    except trio.WouldBlock:
                        await self._events_send.send(message.cloudEvent)
                else:
                    logger.warning("empty message from the gateway ignored")
        except Exception as exc:
            self._mark_lost(f"read failed: {exc!r}")

    async def _dispatch_events(self) -> None:
        """Hand events to the handler one by one, in arrival order.

        Takes what is buffered without a trip through the scheduler per event
        (a memory channel's ``receive`` always yields), still yielding every
        few events (a :class:`CheckpointBudget`) and always checking for
        cancellation.
        """
        events = self._events_recv
        budget = CheckpointBudget()
        async with events:
            while True:
                try:
                    event = events.receive_nowait()
                except trio.WouldBlock:
                    try:
                        event = await events.receive()
                    except trio.EndOfChannel:
                        return
                except trio.EndOfChannel:
                    await trio.lowlevel.checkpoint()
                    return
                else:
                    await budget.checkpoint()
                try:
                    await self._handler.handle_event(event)
                except Exception:
                    logger.exception("event handler failed; event %s dropped", event.id)

    async def _serve_request(self, request: pb.RpcRequest) -> None:
        try:
            try:
                response = await self._handler.handle_request(request)
            except Exception as exc:  # the handler should not raise; answer anyway
                logger.exception("request handler failed")
                response = error_response(exc)
            response.request_id = request.request_id
            await self._respond(response)
        finally:
            self._request_limit.release()

    async def _control_loop(self) -> None:
        """Run the control channel; its failure does not end the data session.

        Failures of its reads and writes are caught where they happen, so only
        a cancellation ever leaves its nursery (never a group mixing the two).
        """
        try:
            async with self._channel.stream(OPEN_CONTROL_CHANNEL, metadata=self.metadata) as stream:
                self._control_open = True
                self._control_settled.set()
                async with open_unwrapping_nursery() as inner:
                    inner.start_soon(self._control_sender, stream, inner.cancel_scope)
                    try:
                        await self._control_receiver(stream, inner)
                    except Exception as exc:
                        logger.info("control channel of %s: read failed: %r", self.client_id, exc)
                    inner.cancel_scope.cancel()
        except Exception as exc:
            logger.info("control channel of %s ended: %r", self.client_id, exc)
        finally:
            self._control_open = False
            self._control_settled.set()
            self._pending_control.fail_all(
                lambda _key: ConnectionLostError("the control channel to the gateway ended")
            )

    async def _control_receiver(self, stream: ClientStreamLike, nursery: trio.Nursery) -> None:
        while True:
            data = await stream.receive()
            if data is None:
                return
            message = pb.ControlMessage()
            message.ParseFromString(data)
            if message.HasField("respond_to") and message.respond_to:
                if self._control_in_progress < self._max_control:
                    self._control_in_progress += 1
                    nursery.start_soon(self._serve_control, message)
                else:
                    await self._refuse_control(message)
            else:
                self._pending_control.set_value(message.rpc_id, message.rpcMessage)

    async def _control_sender(self, stream: ClientStreamLike, done: trio.CancelScope) -> None:
        try:
            async with self._control_recv:
                async for data in self._control_recv:
                    await stream.send(data)
        except Exception as exc:
            logger.info("control channel of %s: write failed: %r", self.client_id, exc)
            done.cancel()

    async def _refuse_control(self, message: pb.ControlMessage) -> None:
        """Answer a control request over the limit with an error, without serving it."""
        self._control_refused += 1
        text = f"the worker is serving {self._max_control} control requests already: retry later"
        payload = _control_error(message.rpcMessage, text)
        logger.warning(
            "control request %s (%s) refused: %d in progress",
            message.rpc_id,
            message.rpcMessage.type_url,
            self._max_control,
        )
        if payload is not None:
            await self._answer_control(message, payload)

    async def _serve_control(self, message: pb.ControlMessage) -> None:
        try:
            try:
                payload = await self._handler.handle_control(message)
            except Exception:
                logger.exception("control handler failed")
                return
        finally:
            self._control_in_progress -= 1
        if payload is not None:
            await self._answer_control(message, payload)

    async def _answer_control(self, message: pb.ControlMessage, payload: any_pb2.Any) -> None:
        response = pb.ControlMessage(
            rpc_id=message.rpc_id, destination=message.respond_to, rpcMessage=payload
        )
        try:
            await self._control_send.send(response.SerializeToString())
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            logger.debug("control response %s dropped: channel closed", message.rpc_id)


_CONTROL_ANSWERS: dict[str, type[pb.SaveStateResponse] | type[pb.LoadStateResponse]] = {
    "agents.SaveStateRequest": pb.SaveStateResponse,
    "agents.LoadStateRequest": pb.LoadStateResponse,
}


def _control_error(request: any_pb2.Any, text: str) -> any_pb2.Any | None:
    """An error answer to a control request of a known type, else None."""
    answer_type = _CONTROL_ANSWERS.get(request.TypeName())
    if answer_type is None:
        return None
    payload = any_pb2.Any()
    payload.Pack(answer_type(error=text))
    return payload


def _timeout_from_deadline(default: float) -> float:
    """The time left before the caller's deadline, capped by ``default``."""
    left = trio.current_effective_deadline() - trio.current_time()
    if math.isinf(left):
        return default
    return max(0.0, min(default, left))


def too_large_response(response: pb.RpcResponse, size: int, limit: int) -> pb.RpcResponse:
    """The error response sent instead of *response*, which is *size* bytes, over *limit*."""
    answer = pb.RpcResponse(
        request_id=response.request_id,
        error=f"the result is too large to send: {size} bytes, over the {limit}-byte "
        "message size limit",
    )
    answer.metadata[ERROR_KIND_KEY] = ErrorKind.TOO_LARGE
    return answer


def _timed_out(request_id: str) -> RpcTimeoutError:
    return RpcTimeoutError(f"no response to request {request_id} in time")


def raise_for_response(response: pb.RpcResponse) -> pb.RpcResponse:
    """Raise the error ``response`` carries (by its kind, see ``_kinds``), else return it."""
    if response.error:
        raise error_from_response(response)
    return response


@asynccontextmanager
async def open_session(
    channel: ChannelLike,
    handler: SessionHandler,
    request_ids: RequestIds,
    *,
    outbox_size: int = 256,
    max_concurrent_requests: int = 256,
    unary_timeout: float = 30.0,
    control_channel: bool = True,
    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
    max_control_requests: int = MAX_CONTROL_REQUESTS,
) -> AsyncIterator[WorkerSession]:
    """Open ``OpenChannel`` (and ``OpenControlChannel``) on ``channel``; yield the session.

    Leaving the block cancels the streams (RST_STREAM, which is how an AutoGen
    host learns that a worker left) and fails whatever is still pending with
    :class:`ConnectionLostError`. A lost connection does not raise here: it
    sets :attr:`WorkerSession.lost`.
    """
    session = WorkerSession(
        channel,
        handler,
        request_ids,
        outbox_size=outbox_size,
        max_concurrent_requests=max_concurrent_requests,
        unary_timeout=unary_timeout,
        max_message_size=max_message_size,
        max_control_requests=max_control_requests,
    )
    try:
        async with (
            channel.stream(OPEN_CHANNEL, metadata=session.metadata) as stream,
            open_unwrapping_nursery() as nursery,
        ):
            session._direct = getattr(stream, "try_send", None)
            set_handler = getattr(stream, "set_message_handler", None)
            if set_handler is not None:
                session._nursery = nursery
                set_handler(session._take)
            nursery.start_soon(session._sender, stream)
            nursery.start_soon(session._receiver, stream, nursery)
            nursery.start_soon(session._dispatch_events)
            nursery.start_soon(session._expire_rpcs)
            if control_channel:
                nursery.start_soon(session._control_loop)
            else:
                session._control_settled.set()
            try:
                yield session
            finally:
                session._mark_lost("closed")
                nursery.cancel_scope.cancel()
    finally:
        session._mark_lost("closed")
        session._outbox.close()
        session._control_send.close()
