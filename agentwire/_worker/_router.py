"""The worker's router: the runtime core's sends and publishes, over a gateway link.

A worker's runtime is the core (``agentwire._runtime._core``) with a
:class:`WorkerRouter` underneath that talks the Agent Worker Protocol through
a :class:`~._link.WorkerLink` (reconnecting sessions, see there). The router
is also the handler of the link's sessions (what the gateway sends us).

Wire behaviour (AutoGen 0.7.5's, see the tests in tests/interop):

* RPC payloads are JSON, whatever ``payload_format`` says (AutoGen does the
  same for requests and responses); a message type with no JSON serializer
  but a protobuf one goes as a protobuf ``Any``. Both are accepted on receipt.
* Publish uses ``payload_format``: ``"json"`` -> ``binary_data``,
  ``"protobuf"`` -> ``proto_data`` (an ``Any``), falling back to the other
  format when the message type has no serializer for the chosen one.
* A caller's trio deadline is enforced locally (leaving the cancel scope
  drops the pending entry at once) and also travels in the request metadata
  (``agentwire-timeout``, seconds left; AutoGen ignores it), so an agentwire
  responder cancels the handler when the caller has given up.
* An RPC handler's exception is answered with ``RpcResponse.error = str(exc)``
  (what AutoGen peers raise); agentwire also puts the exception's class name in
  the response metadata (``agentwire-error-type``), which AutoGen ignores, so
  an agentwire caller's :class:`RemoteError` carries it. A handler returning
  ``None`` is answered with an empty response (AutoGen would never answer).

Local short-circuit (the choice, and why):

* **RPC** to an agent type registered on this worker is delivered locally,
  without the gateway (an AutoGen host gives each type one owner, so the
  owner is us). Only remote types cross the wire. With ``shared_types``
  (a gateway whose agent types several workers serve) every RPC and event
  goes through the gateway, which knows where each agent lives.
* **Publish** must reach remote subscribers, so every event goes to the
  gateway, and the gateway (like AutoGen's host) echoes it back to us when we
  have matching subscriptions. By default (``local_publish="immediate"``) the
  worker queues the event for its local subscribers *at once*, then writes it
  to the gateway, and drops the echo by its event id: local subscribers do
  not pay a round trip through the gateway (measured on loopback: publish to
  a local handler ~110 us instead of ~270 us), and an event is never delivered
  twice. If the write to the gateway fails, the caller gets
  :class:`ConnectionLostError` although local subscribers already have it.
  The ids awaiting their echo are bounded (:data:`MAX_AWAITED_ECHOES`,
  oldest forgotten first) and forgotten on reconnect (an old session's echo
  can no longer arrive).
  ``local_publish="echo"`` delivers local subscribers only when the echo comes
  back, exactly like an AutoGen worker (one ordering for local and remote
  events, at the cost of a gateway round trip).

Trace context (``agentwire._observability``): ``traceparent``/``tracestate`` go
in the metadata of requests and responses and in the attributes of published
CloudEvents, as AutoGen 0.7.5 carries them; what arrives is the current
context of the handlers it reaches. With a *tracer_provider*, send, publish and
process spans as AutoGen names them.

Remote state: ``runtime.agent_save_state(agent_id)`` / ``agent_load_state``
for an agent type not registered here go through ``OpenControlChannel`` as
``SaveStateRequest``/``LoadStateRequest`` packed in ``Any`` to
``agentid=<type>/<key>`` with ``respond_to=clientid=<ours>``; the answering
worker reuses ``rpc_id``. An AutoGen peer never answers, so each call is
bounded by ``state_timeout`` and then raises :class:`RemoteError`.

Invariants: the core's own invariants, plus those of ``_session``
and ``_link``; ``_awaited_echoes`` holds only ids of events this worker
published, wrote to the current session and delivered locally.
"""

from __future__ import annotations

import json
import logging
import math
from collections import OrderedDict
from collections.abc import Callable, Mapping
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any, Literal

import attrs
import trio
from google.protobuf import any_pb2, empty_pb2, wrappers_pb2
from google.protobuf.message import DecodeError
from grpclib.exceptions import GRPCError

from .._cloudevents import EventReader, from_cloud_event, serialized_cloud_event
from .._errors import (
    DuplicateSubscriptionError,
    GatewayRejectedError,
    InvalidCloudEventError,
    RemoteError,
    RpcTimeoutError,
    RuntimeClosedError,
    SerializationError,
    UndeliverableError,
    UnknownSubscriptionError,
)
from .._ids import AgentId, TopicId
from .._observability._trace_context import (
    TraceContext,
    current_trace,
    parse_event_trace_context,
    parse_trace_context,
)
from .._observability._tracing import Tracing
from .._proto import agent_worker_pb2 as pb
from .._proto import cloudevent_pb2 as ce_pb
from .._retry import RetryPolicy
from .._runtime._core import Runtime
from .._runtime._deadline import effective_deadline
from .._serialization import (
    JSON_DATA_CONTENT_TYPE,
    PROTOBUF_DATA_CONTENT_TYPE,
    UnknownPayload,
)
from .._subscriptions import Subscription, subscription_to_proto
from .._wire import (
    DEFAULT_MAX_MESSAGE_SIZE,
    DRAIN_DESTINATION,
    RELEASE_DESTINATION,
    TIMEOUT_METADATA_KEY,
)
from ._kinds import UnansweredError, error_from_response, error_response
from ._link import (
    LinkStatistics,
    WorkerLink,
)
from ._protocol import ChannelLike
from ._session import WorkerSession

if TYPE_CHECKING:
    from opentelemetry.trace import TracerProvider

__all__ = ["WorkerRouter", "WorkerStatistics"]

logger = logging.getLogger("agentwire.worker")

#: Published event ids whose echo we wait for, at most (oldest forgotten first).
MAX_AWAITED_ECHOES = 65_536

PayloadFormat = Literal["json", "protobuf"]
_CONTENT_TYPES: dict[str, str] = {
    "json": JSON_DATA_CONTENT_TYPE,
    "protobuf": PROTOBUF_DATA_CONTENT_TYPE,
}


@attrs.frozen
class WorkerStatistics:
    """What the worker's router did (see also ``runtime.statistics()``)."""

    link: LinkStatistics
    local_rpcs: int
    """RPCs delivered without the gateway (target type registered here)."""
    remote_rpcs: int
    incoming_rpcs: int
    published: int
    incoming_events: int
    echoes_dropped: int
    """Our own events coming back from the gateway, dropped (already delivered)."""
    awaited_echoes: int
    undecodable_events: int


class WorkerRouter:
    """The :class:`~._core.Router` of a worker, and the handler of its sessions."""

    def __init__(
        self,
        core: Runtime,
        connect: Callable[[], AbstractAsyncContextManager[ChannelLike]],
        *,
        payload_format: PayloadFormat,
        local_publish: Literal["immediate", "echo"],
        state_timeout: float,
        rpc_timeout: float | None,
        reconnect: RetryPolicy,
        disconnected_wait: float,
        outbox_size: int,
        max_concurrent_requests: int,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
        connect_timeout: float = 0.0,
        tracer_provider: TracerProvider | None = None,
        shared_types: bool = False,
    ) -> None:
        if payload_format not in _CONTENT_TYPES:
            raise ValueError(f"payload_format must be 'json' or 'protobuf', not {payload_format!r}")
        if local_publish not in ("immediate", "echo"):
            raise ValueError(f"local_publish must be 'immediate' or 'echo', not {local_publish!r}")
        self._core = core
        self._content_type = _CONTENT_TYPES[payload_format]
        self._immediate = local_publish == "immediate" and not shared_types
        self._shared = shared_types
        self._state_timeout = state_timeout
        self._rpc_timeout = math.inf if rpc_timeout is None else rpc_timeout
        self._now = trio.lowlevel.current_clock().current_time  # (trio.current_time: 3 frames)
        self._max_message_size = max_message_size
        self._tracing = Tracing(tracer_provider)
        self._spans = self._tracing.spans
        self.link = WorkerLink(
            connect,
            self,
            reconnect=reconnect,
            disconnected_wait=disconnected_wait,
            outbox_size=outbox_size,
            max_concurrent_requests=max_concurrent_requests,
            max_message_size=max_message_size,
            connect_timeout=connect_timeout,
        )
        self._reader = EventReader()
        self._awaited: OrderedDict[str, None] = OrderedDict()
        self._awaited_session: object = None
        self._local_rpcs = 0
        self._remote_rpcs = 0
        self._incoming_rpcs = 0
        self._published = 0
        self._incoming_events = 0
        self._echoes_dropped = 0
        self._undecodable = 0

    def statistics(self) -> WorkerStatistics:
        return WorkerStatistics(
            link=self.link.statistics(),
            local_rpcs=self._local_rpcs,
            remote_rpcs=self._remote_rpcs,
            incoming_rpcs=self._incoming_rpcs,
            published=self._published,
            incoming_events=self._incoming_events,
            echoes_dropped=self._echoes_dropped,
            awaited_echoes=len(self._awaited),
            undecodable_events=self._undecodable,
        )

    # -- payloads ---------------------------------------------------------------

    def _encode(self, message: Any, payload: pb.Payload) -> None:
        """Write *message* (JSON if it can) into *payload*, in place."""
        payload.data_type, payload.data_content_type, payload.data = self._serialize(
            message, JSON_DATA_CONTENT_TYPE
        )

    def _serialize(self, message: Any, preferred: str) -> tuple[str, str, bytes]:
        """``(type name, content type, bytes)`` of *message*: in the *preferred*
        content type, else the other one, else its built-in serializers added."""
        registry = self._core.serialization
        try:
            type_name, data = registry.serialize(message, content_type=preferred)
            return type_name, preferred, data
        except SerializationError:
            other = (
                PROTOBUF_DATA_CONTENT_TYPE
                if preferred == JSON_DATA_CONTENT_TYPE
                else JSON_DATA_CONTENT_TYPE
            )
            try:
                type_name, data = registry.serialize(message, content_type=other)
            except SerializationError:
                registry.add_type(type(message))
                type_name, data = registry.serialize(message, content_type=preferred)
                return type_name, preferred, data
            return type_name, other, data

    def _decode(self, payload: pb.Payload) -> Any:
        if not payload.data_type:
            return None
        return self._core.serialization.deserialize(
            payload.data, type_name=payload.data_type, content_type=payload.data_content_type
        )

    # -- Router: outgoing ---------------------------------------------------------

    async def send(
        self, message: Any, recipient: AgentId, *, sender: AgentId | None, message_id: str
    ) -> Any:
        if not self._shared and self._core.has_agent_type(recipient.type):
            self._local_rpcs += 1
            return await self._core.deliver_request(
                message, recipient, sender=sender, message_id=message_id
            )
        request = pb.RpcRequest()
        target = request.target
        target.type = recipient.type
        target.key = recipient.key
        self._encode(message, request.payload)
        if sender is not None:
            source = request.source
            source.type = sender.type
            source.key = sender.key
        self._remote_rpcs += 1
        # rpc_timeout is enforced by the session (one timer for all calls),
        # not by a cancel scope per call.
        now = self._now()
        expires_at = now + self._rpc_timeout
        deadline = effective_deadline()
        if expires_at < deadline:  # (min() and max() cost a call each: ~0.3 us per RPC)
            deadline = expires_at
        if deadline != math.inf:
            left = deadline - now
            request.metadata[TIMEOUT_METADATA_KEY] = f"{left if left > 0.0 else 0.0:.6f}"
        try:
            if self._spans:
                with self._tracing.sending(
                    "send", recipient.type, recipient.key, message_type=request.payload.data_type
                ) as trace:
                    if trace is not None:
                        trace.inject(request.metadata)
                    response = await self.link.rpc(request, expires_at=expires_at, now=now)
            else:  # no span to make: the current context, if any, is what travels
                trace = current_trace.get()
                if trace is not None:
                    trace.inject(request.metadata)
                response = await self.link.rpc(request, expires_at=expires_at, now=now)
        except RpcTimeoutError:
            raise UnansweredError(
                f"no response from {recipient} within rpc_timeout={self._rpc_timeout:g} s "
                "(an AutoGen host silently drops requests for agent types nobody registered)"
            ) from None
        if response.error:
            raise error_from_response(response, limit=self._max_message_size)
        return self._decode(response.payload)

    async def publish(
        self, message: Any, topic: TopicId, *, sender: AgentId | None, message_id: str
    ) -> None:
        serialized = self._serialize(message, self._content_type)
        if self._spans:
            with self._tracing.sending(
                "publish", topic.type, topic.source, message_type=serialized[0]
            ) as trace:
                await self._publish_event(trace, serialized, message, topic, sender, message_id)
        else:  # no span to make: the current context, if any, is what travels
            trace = current_trace.get()
            await self._publish_event(trace, serialized, message, topic, sender, message_id)
        self._published += 1

    async def _publish_event(
        self,
        trace: TraceContext | None,
        serialized: tuple[str, str, bytes],
        message: Any,
        topic: TopicId,
        sender: AgentId | None,
        message_id: str,
    ) -> None:
        """Deliver to local subscribers at once if that is the policy, and send
        the event: *serialized* (type name, content type, bytes), with *trace*
        context if any."""
        type_name, content_type, data = serialized
        event = serialized_cloud_event(
            topic=topic,
            sender=sender,
            type_name=type_name,
            content_type=content_type,
            data=data,
            event_id=message_id,
            inject=None if trace is None else trace.inject_event,
        )
        if self._immediate and self._core.has_local_recipients(topic):
            self._await_echo(message_id)
            await self._core.deliver_event(message, topic, sender=sender, message_id=message_id)
        try:
            await self.link.publish(event)
        except BaseException:
            self._awaited.pop(message_id, None)
            raise

    def _await_echo(self, event_id: str) -> None:
        session = self.link.session
        if session is not self._awaited_session:
            # A new session: echoes of the old one can no longer arrive.
            self._awaited.clear()
            self._awaited_session = session
        self._awaited[event_id] = None
        if len(self._awaited) > MAX_AWAITED_ECHOES:
            self._awaited.popitem(last=False)

    async def register_agent_type(self, agent_type: str) -> None:
        try:
            await self.link.register_agent_type(agent_type)
        except GRPCError as exc:
            raise _rejected(f"agent type {agent_type!r}", exc) from exc

    async def add_subscription(self, subscription: Subscription) -> None:
        try:
            await self.link.add_subscription(subscription_to_proto(subscription))
        except GRPCError as exc:
            if "already exists" in (exc.message or ""):
                raise DuplicateSubscriptionError(subscription) from exc
            raise _rejected(f"subscription {subscription.id}", exc) from exc

    async def remove_subscription(self, subscription_id: str) -> None:
        try:
            await self.link.remove_subscription(subscription_id)
        except GRPCError as exc:
            if "does not exist" in (exc.message or ""):
                raise UnknownSubscriptionError(subscription_id) from exc
            raise _rejected(f"removing subscription {subscription_id}", exc) from exc

    # -- SessionHandler: incoming ---------------------------------------------------

    async def handle_request(self, request: pb.RpcRequest) -> pb.RpcResponse:
        self._incoming_rpcs += 1
        parent = parse_trace_context(request.metadata)
        if parent is None and not self._spans:  # nothing to trace: no block
            return await self._answer(request)
        target = request.target
        with self._tracing.handling(
            parent,
            target.type,
            target.key,
            message_type=request.payload.data_type,
        ) as trace:
            response = await self._answer(request)
        if trace is not None:
            trace.inject(response.metadata)
        return response

    async def _answer(self, request: pb.RpcRequest) -> pb.RpcResponse:
        try:
            target = request.target  # (AgentId.from_proto, without its extra call)
            recipient = AgentId(target.type, target.key)
            if request.HasField("source"):
                source = request.source
                sender: AgentId | None = AgentId(source.type, source.key)
            else:
                sender = None
            message = self._decode(request.payload)
            # The caller's deadline is the session's business (see _session).
            result = await self._core.deliver_request(
                message, recipient, sender=sender, message_id=request.request_id
            )
            if result is None:
                return pb.RpcResponse()
            response = pb.RpcResponse()
            self._encode(result, response.payload)
            return response
        except Exception as exc:
            if not isinstance(exc, UndeliverableError):
                logger.debug("RPC %s failed: %r", request.request_id, exc)
            return error_response(exc)

    async def handle_event(self, event: ce_pb.CloudEvent | bytes) -> None:
        self._incoming_events += 1
        received = parsed = None
        if not isinstance(event, bytes):
            parsed = event
        else:
            received = self._reader.read(event)  # without a message, if it can
            if received is None:
                try:
                    parsed = ce_pb.CloudEvent.FromString(event)
                except DecodeError:
                    self._undecodable += 1
                    logger.warning("undecodable event from the gateway dropped")
                    return
        if parsed is not None:
            event_id = parsed.id
        else:
            assert received is not None
            event_id = received.event_id
        if self._awaited and event_id in self._awaited:
            del self._awaited[event_id]
            self._echoes_dropped += 1
            self._core.notify_change()  # for runtime.wait_until
            return
        try:
            if received is None:
                assert parsed is not None
                received = from_cloud_event(parsed)
            message = self._core.serialization.deserialize(
                received.data, type_name=received.type_name, content_type=received.content_type
            )
        except (InvalidCloudEventError, SerializationError, ValueError) as exc:
            self._undecodable += 1
            logger.warning("event %s dropped: %s", event_id, exc)
            return
        if isinstance(message, UnknownPayload):
            logger.debug("event %s has no local serializer (%s)", event_id, message.type_name)
        # An event read from its bytes has no trace context (EventReader).
        parent = None if parsed is None else parse_event_trace_context(parsed.attributes)
        topic = received.topic
        # checked: the session's dispatch loop checkpoints before each event.
        # (The delivery runs when awaited, so inside the span if there is one.)
        delivery = self._core.deliver_event(
            message,
            topic,
            sender=received.sender,
            message_id=event_id,
            is_rpc=received.is_rpc,
            checked=True,
        )
        try:
            if parent is None and not self._spans:  # nothing to trace: no block
                await delivery
            else:
                with self._tracing.handling(
                    parent, topic.type, topic.source, topic=True, message_type=received.type_name
                ):
                    await delivery
        except RuntimeClosedError:
            logger.debug("event %s dropped: the runtime is closing", event_id)

    async def handle_control(self, message: pb.ControlMessage) -> any_pb2.Any | None:
        payload = message.rpcMessage
        out = any_pb2.Any()
        if payload.TypeName() == "agents.SaveStateRequest":
            save = pb.SaveStateRequest()
            payload.Unpack(save)
            try:
                agent_id = self._local_agent(message.destination, save.agentId)
                state = await self._core.agent_save_state(agent_id)
                out.Pack(pb.SaveStateResponse(state=json.dumps(dict(state))))
            except Exception as exc:
                out.Pack(pb.SaveStateResponse(error=str(exc) or type(exc).__name__))
            return out
        if payload.TypeName() == "agents.LoadStateRequest":
            load = pb.LoadStateRequest()
            payload.Unpack(load)
            try:
                agent_id = self._local_agent(message.destination, load.agentId)
                await self._core.agent_load_state(agent_id, json.loads(load.state or "{}"))
                out.Pack(pb.LoadStateResponse())
            except Exception as exc:
                out.Pack(pb.LoadStateResponse(error=str(exc) or type(exc).__name__))
            return out
        logger.warning("control message %s of type %s ignored", message.rpc_id, payload.type_url)
        return None

    def _local_agent(self, destination: str, agent: pb.AgentId) -> AgentId:
        if agent.type:
            agent_id = AgentId.from_proto(agent)
        elif destination.startswith("agentid="):
            agent_id = AgentId.from_str(destination.removeprefix("agentid="))
        else:
            raise ValueError("the state request names no agent")
        if not self._core.has_agent_type(agent_id.type):
            raise UndeliverableError(f"agent type {agent_id.type!r} is not registered here")
        return agent_id

    # -- remote state ---------------------------------------------------------------

    async def save_remote_state(self, agent: AgentId) -> Mapping[str, Any]:
        answer = await self._control(agent, pb.SaveStateRequest(agentId=agent.to_proto()))
        response = pb.SaveStateResponse()
        if not answer.Unpack(response):
            raise RemoteError(f"unexpected answer to SaveState: {answer.type_url}")
        if response.HasField("error"):
            raise RemoteError(response.error)
        state: Mapping[str, Any] = json.loads(response.state or "{}")
        return state

    async def load_remote_state(self, agent: AgentId, state: Mapping[str, Any]) -> None:
        request = pb.LoadStateRequest(agentId=agent.to_proto(), state=json.dumps(dict(state)))
        answer = await self._control(agent, request)
        response = pb.LoadStateResponse()
        if not answer.Unpack(response):
            raise RemoteError(f"unexpected answer to LoadState: {answer.type_url}")
        if response.HasField("error"):
            raise RemoteError(response.error)

    # -- shared agent types: drain ------------------------------------------------

    async def drain(self) -> None:
        """See :meth:`WorkerRuntime.drain`."""
        session = await self.link.session_for_call()
        await self._ask_gateway(session, DRAIN_DESTINATION, "drain")
        await session.wait_idle()
        await self._ask_gateway(session, RELEASE_DESTINATION, "release")
        await session.wait_idle()

    async def _ask_gateway(self, session: WorkerSession, destination: str, what: str) -> None:
        answer = None
        with trio.move_on_after(self._state_timeout):
            answer = await session.control_call(destination, empty_pb2.Empty())
        if answer is None:
            raise GatewayRejectedError(
                f"the {what} request",
                "UNAVAILABLE",
                f"no answer within {self._state_timeout:g} s; drain needs the agentwire "
                "gateway (AutoGen's host has no such request)",
            )
        done = wrappers_pb2.BoolValue()
        if not answer.Unpack(done) or not done.value:
            raise GatewayRejectedError(
                f"the {what} request",
                "FAILED_PRECONDITION",
                "drain needs shared agent types (agentwire gateway --shared-agent-types) "
                "and an agent type registered by this worker",
            )

    async def _control(self, agent: AgentId, request: Any) -> any_pb2.Any:
        with trio.move_on_after(self._state_timeout):
            return await self.link.control_call(f"agentid={agent}", request)
        raise RemoteError(
            f"no answer about the state of {agent} within {self._state_timeout:g} s: the "
            "owning worker does not implement state over the control channel (AutoGen "
            "workers do not), or it is gone"
        )


def _rejected(what: str, exc: GRPCError) -> GatewayRejectedError:
    return GatewayRejectedError(what, exc.status.name, exc.message or "")
