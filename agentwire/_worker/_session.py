"""One connection of a worker to a gateway: the Agent Worker Protocol client.

A :class:`WorkerSession` is one gRPC channel with one ``client-id``. It opens
``OpenChannel`` (and ``OpenControlChannel``), makes the unary calls
(``RegisterAgent``, ``AddSubscription``, ...), sends RPC requests and
CloudEvents, matches responses to callers, and hands whatever the gateway
sends to a :class:`SessionHandler`. Reconnecting is not its business: when the
connection is lost the session fails everything pending and reports it through
:attr:`WorkerSession.lost`; the worker link (``_link``) opens a new one.

Invariants (kept by this module):

* Every call of a session carries the header ``("client-id", <uuid4>)``; the
  id is made fresh for each session and never reused (the AutoGen host keys
  all its state by it, and a reused id races with the old stream's cleanup).
* ``OpenChannel`` is opened -- our request headers sent, the server's response
  headers *not* awaited (the AutoGen host sends none until it has a message)
  -- before the session is handed out, so every unary call comes after it.
* Outgoing ``Message`` envelopes are written by one writer task
  (:class:`~._writer.Writer`) from a two-lane :class:`~._outbox.Outbox`: RPC
  requests and responses in one lane, CloudEvents in the other, each bounded
  by ``outbox_size``; RPC messages go first, events are never starved, order
  is kept within a lane, and nothing is dropped silently (see there).
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
  caller; a request within the request limit goes to an idle server task or
  starts one; an event fits the event buffer), else by the receive loop,
  which then may wait.
* Incoming requests are served by server tasks in the session's nursery
  (``_serving``), at most ``max_concurrent_requests`` at once, each under its
  caller's deadline (kept by the servers' sweeper task).
* The control channel (``_control``) serves at most ``max_control_requests``
  requests at once and refuses the excess with an error answer.
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

import logging
import math
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TypeVar

import attrs
import trio
from google.protobuf import any_pb2
from google.protobuf.message import Message as ProtoMessage
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from .._budget import CheckpointBudget
from .._errors import ConnectionLostError
from .._nursery import open_unwrapping_nursery
from .._proto import agent_worker_pb2 as pb
from .._proto import cloudevent_pb2 as ce_pb
from .._runtime._pending import PendingMap
from .._wire import DEFAULT_MAX_MESSAGE_SIZE
from ._control import MAX_CONTROL_REQUESTS, ControlChannel
from ._kinds import (
    timed_out,
    too_large_error,
    too_large_response,
)
from ._outbox import Lane
from ._protocol import (
    ADD_SUBSCRIPTION,
    GET_SUBSCRIPTIONS,
    OPEN_CHANNEL,
    REGISTER_AGENT,
    REMOVE_SUBSCRIPTION,
    ChannelLike,
    ClientStreamLike,
    RequestIds,
    SessionHandler,
    Slot,
    enveloped,
    event_body,
    timeout_from_deadline,
)
from ._serving import RequestServers, pop_due
from ._writer import Outgoing, Writer

_REFUSALS = (Status.UNAUTHENTICATED, Status.PERMISSION_DENIED)

logger = logging.getLogger("agentwire.worker")

_R = TypeVar("_R", bound=ProtoMessage)


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
        # The gateway refused this worker's credentials or rights on the data
        # stream (UNAUTHENTICATED, PERMISSION_DENIED): reconnecting cannot help.
        self.refusal: GRPCError | None = None
        self._channel = channel
        self._handler = handler
        self._request_ids = request_ids
        self._unary_timeout = unary_timeout
        self._outbox_size = outbox_size
        self._max_message_size = max_message_size
        self._writer = Writer(outbox_size, lost_error=self._lost_error, mark_lost=self._mark_lost)
        self.control = ControlChannel(
            channel,
            handler,
            request_ids,
            client_id=self.client_id,
            metadata=self.metadata,
            buffer=outbox_size,
            max_requests=max_control_requests,
            lost_error=self._lost_error,
        )
        # Events: a CloudEvent, or its bytes (see SessionHandler.handle_event).
        self._events_send, self._events_recv = trio.open_memory_channel[ce_pb.CloudEvent | bytes](
            event_buffer
        )
        self._pending: PendingMap[str, pb.RpcResponse] = PendingMap()
        self._servers = RequestServers(handler, self._respond, max_concurrent_requests)
        self._messages_received = 0
        self._nursery: trio.Nursery | None = None  # where server tasks run
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
            pending_control=len(self.control.pending),
            outbox_used=len(self._writer.outbox),
            outbox_size=self._outbox_size,
            rpc_lane_used=self._writer.outbox.queued(Lane.RPC),
            event_lane_used=self._writer.outbox.queued(Lane.EVENTS),
            messages_sent=self._writer.messages_sent,
            batches_written=self._writer.batches_written,
            messages_received=self._messages_received,
            late_responses=self._pending.statistics().late + self.control.pending.statistics().late,
            requests_in_progress=self._servers.in_progress,
            events_buffered=self._events_send.statistics().current_buffer_used,
            control_requests_in_progress=self.control.in_progress,
            control_requests_refused=self.control.refused,
        )

    # -- loss ---------------------------------------------------------------

    def _mark_lost(self, reason: str) -> None:
        if self.lost.is_set():
            return
        self.loss_reason = reason
        logger.info("connection %s lost: %s", self.client_id, reason)
        self.lost.set()
        self._writer.session_lost()  # producers fail now, those waiting for room too
        self._pending.close(lambda _key: self._lost_error())
        self.control.pending.close(lambda _key: self._lost_error())

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
        timeout = timeout_from_deadline(self._unary_timeout)
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

    def _check_size(self, data: bytes, what: str) -> None:
        if len(data) > self._max_message_size:
            raise too_large_error(len(data), self._max_message_size, what)

    async def rpc(
        self, request: pb.RpcRequest, *, expires_at: float = math.inf, now: float | None = None
    ) -> pb.RpcResponse:
        """Send ``request`` (its ``request_id`` is assigned here) and await the response.

        Honours the caller's cancel scope: on deadline or cancellation the
        pending entry is removed at once. An error response is returned as is
        (see :func:`~._kinds.error_from_response`). ``expires_at`` (trio clock): raise
        :class:`RpcTimeoutError` if no response came by then. While the
        expiries of a session's calls come in order (a worker's fixed
        ``rpc_timeout``), one sweeper task enforces them all, which saves a
        cancel scope per call; an out-of-order expiry gets a scope of its own.
        ``now``: the trio time, if the caller just read it (else it is read here).
        """
        request_id = next(self._request_ids)
        request.request_id = request_id
        data = enveloped("request", request.SerializeToString())
        self._check_size(data, "RPC request")
        with self._pending.register(request_id) as waiter:
            # Write at once only for a lone call: with others in flight, their
            # tasks are likely about to send too (trio cannot tell us), so the
            # connection's writer sends them all in one write.
            flush = len(self._pending) <= 1
            if expires_at == math.inf:
                await self._writer.send(Lane.RPC, data, flush=flush)
                return await waiter.wait()
            scope = self._expiry_scope
            if (
                scope is None
                or expires_at < self._latest_expiry
                or expires_at <= (trio.current_time() if now is None else now)
                or not await self._writer.try_direct(Lane.RPC, data, flush=flush)
            ):
                with trio.move_on_at(expires_at):
                    await self._writer.send(Lane.RPC, data, flush=flush)
                    return await waiter.wait()
                raise timed_out(request_id)
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
            for request_id in pop_due(expiries, trio.current_time()):
                self._pending.set_error(request_id, timed_out(request_id))
            next_expiry = next(iter(expiries.values()), math.inf)
            with trio.CancelScope(deadline=next_expiry) as scope:
                self._expiry_scope = scope
                try:
                    await trio.sleep_forever()
                finally:
                    self._expiry_scope = None

    async def publish(self, event: ce_pb.CloudEvent | bytes) -> None:
        """Send a CloudEvent (or its serialized bytes); returns once it was
        written to the connection."""
        # Enveloped, not copied into a Message (that copy was half the cost).
        body = event if isinstance(event, bytes) else event.SerializeToString()
        data = enveloped("cloudEvent", body)
        self._check_size(data, "published event")
        # A publisher usually goes on publishing: let the writer batch events.
        if await self._writer.try_direct(Lane.EVENTS, data, flush=False):
            return
        ack = Slot()
        await self._writer.enqueue(Lane.EVENTS, Outgoing(data, ack))
        await ack.wait()

    async def _respond(self, response: pb.RpcResponse) -> None:
        data = enveloped("response", response.SerializeToString())
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
            await self._writer.send(
                Lane.RPC,
                data,
                flush=self._servers.in_progress <= 1,  # a lone request
            )
        except ConnectionLostError:
            # The gateway answers the caller with an error when we disconnect.
            logger.debug("response %s dropped: connection lost", response.request_id)

    async def wait_idle(self) -> None:
        """Wait until no incoming request is being served (new ones are
        still taken meanwhile)."""
        await trio.lowlevel.checkpoint()
        await self._servers.wait_idle()

    # -- the control channel ------------------------------------------------

    async def control_call(self, destination: str, message: ProtoMessage) -> any_pb2.Any:
        """Send a control request to ``destination`` and await the response's payload."""
        return await self.control.call(destination, message)

    # -- loops --------------------------------------------------------------

    def _take(self, data: bytes) -> bool:
        """Take one incoming message in the transport's reader task if that needs
        no waiting (see the invariants); False leaves it to :meth:`_receiver`."""
        nursery = self._nursery
        if nursery is None or self._writer.lost:  # (lost.is_set(), without a call)
            return False
        body = event_body(data)
        if body is not None:  # an event, left unparsed for the handler
            try:
                self._events_send.send_nowait(body)
            except (trio.WouldBlock, trio.ClosedResourceError, trio.BrokenResourceError):
                return False
            self._messages_received += 1
            return True
        message = pb.Message()
        try:
            message.ParseFromString(data)
        except Exception:
            return False  # the receive loop reports it
        kind = message.WhichOneof("message")
        if kind == "response":
            self._pending.set_value(message.response.request_id, message.response)
        elif kind == "request":
            if not self._servers.try_serve(nursery, message.request):
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
                body = event_body(data)
                if body is not None:  # an event, left unparsed for the handler
                    try:  # no trip through the scheduler per event unless full
                        self._events_send.send_nowait(body)
                    except trio.WouldBlock:
                        await self._events_send.send(body)
                    continue
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
                    # waits for a permit: backpressure to the gateway
                    await self._servers.serve(nursery, message.request)
                elif kind == "cloudEvent":
                    try:  # no trip through the scheduler per event unless full
                        self._events_send.send_nowait(message.cloudEvent)
                    except trio.WouldBlock:
                        await self._events_send.send(message.cloudEvent)
                else:
                    logger.warning("empty message from the gateway ignored")
        except Exception as exc:
            if isinstance(exc, GRPCError) and exc.status in _REFUSALS:
                self.refusal = exc
            self._mark_lost(f"read failed: {exc!r}")

    async def _dispatch_events(self) -> None:
        """Hand events to the handler one by one, in arrival order.

        Takes what is buffered without a trip through the scheduler per event
        (a memory channel's ``receive`` always yields), still yielding every
        few events (a :class:`CheckpointBudget`) and always checking for
        cancellation.
        """
        events = self._events_recv
        spend = CheckpointBudget().spend
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
                else:  # the budget's checkpoint, inlined (once per event)
                    if spend():
                        await trio.lowlevel.checkpoint()
                    else:
                        await trio.lowlevel.checkpoint_if_cancelled()
                try:
                    await self._handler.handle_event(event)
                except Exception:
                    logger.exception(
                        "event handler failed; event %s dropped",
                        event.id if isinstance(event, ce_pb.CloudEvent) else "(unparsed)",
                    )


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
            session._writer.direct = getattr(stream, "try_send", None)
            set_handler = getattr(stream, "set_message_handler", None)
            if set_handler is not None:
                session._nursery = nursery
                set_handler(session._take)
            nursery.start_soon(session._writer.run, stream)
            nursery.start_soon(session._receiver, stream, nursery)
            nursery.start_soon(session._dispatch_events)
            nursery.start_soon(session._expire_rpcs)
            nursery.start_soon(session._servers.sweep)
            if control_channel:
                nursery.start_soon(session.control.run)
            else:
                session.control.settled.set()
            try:
                yield session
            finally:
                session._mark_lost("closed")
                nursery.cancel_scope.cancel()
    finally:
        session._mark_lost("closed")
        session._writer.outbox.close()
        session.control.close()
