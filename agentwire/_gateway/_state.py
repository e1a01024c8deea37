"""The gateway's state service (``open_gateway(state_store=...)``): workers'
``agentwire.state.v1.StateSyncRequest``s applied to one state store.

It holds a control connection of the hub under the client-id
:data:`~agentwire._wire.STATE_CLIENT_ID`, like a worker: a request a worker
sends to :data:`~agentwire._wire.STATE_DESTINATION` is routed to it, and its
answer (same ``rpc_id``) back to the request's ``respond_to``. It only
answers, so only agentwire workers, which ask, ever get one of its messages.

Invariants:

S1  Bounded. At most ``max_requests`` requests are waiting or being served;
    one more is answered at once with an ``unavailable`` error (counted in
    ``refused``). ``max_concurrency`` tasks serve them.
S2  Every request gets one answer: its result, or the error the store raised
    (``conflict`` with the current version, ``invalid``, ``unavailable``).
    A request without ``respond_to`` is served and not answered.
S3  A write is the store's compare-and-set: the update's version must be one
    more than the stored version, else the writer gets a conflict.
"""

from __future__ import annotations

import logging

import attrs
import trio
from google.protobuf.message import DecodeError

from .._nursery import open_unwrapping_nursery
from .._proto import agent_worker_pb2 as pb
from .._proto import agentwire_state_pb2 as spb
from .._security import AccessGuard, Principal
from .._wire import STATE_CLIENT_ID, StateErrorKind
from ..state._stores import StateStore
from ..state._sync import agent_of, change_of, error_response, syncs_of
from ._config import StateServiceStatistics
from ._hub import Connection, GatewayHub
from ._routing import ConnKind

__all__ = ["StateService", "serve_state_service"]

logger = logging.getLogger("agentwire.gateway")

_PRINCIPAL = Principal(STATE_CLIENT_ID)
MAX_STATE_REQUESTS = 1000
STATE_CONCURRENCY = 16


@attrs.define(eq=False)
class StateService:
    """A running state service and its counters (``gateway.statistics().state``)."""

    store: StateStore
    served: int = 0
    failed: int = 0
    refused: int = 0
    received: int = 0  # taken into the queue (refused ones not counted)

    def statistics(self) -> StateServiceStatistics:
        return StateServiceStatistics(
            served=self.served,
            failed=self.failed,
            refused=self.refused,
            waiting=self.received - self.served - self.failed,
        )


async def serve_state_service(
    hub: GatewayHub,
    guard: AccessGuard,
    store: StateStore,
    *,
    max_requests: int = MAX_STATE_REQUESTS,
    max_concurrency: int = STATE_CONCURRENCY,
    task_status: trio.TaskStatus[StateService] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the state requests of *hub*'s workers with *store* until cancelled."""
    service = StateService(store)
    send, receive = trio.open_memory_channel[pb.ControlMessage](max_requests)
    async with (
        hub.connect(STATE_CLIENT_ID, ConnKind.CONTROL) as connection,
        open_unwrapping_nursery() as nursery,
    ):
        guard.claim(_PRINCIPAL, STATE_CLIENT_ID)
        for _ in range(max_concurrency):
            nursery.start_soon(_serve, service, connection, receive.clone())
        hub.state_service = service
        task_status.started(service)
        async for data in connection.from_gateway:
            try:
                message = pb.ControlMessage.FromString(data)
            except DecodeError:
                logger.warning("state service: a malformed control message, dropped")
                continue
            try:
                send.send_nowait(message)
                service.received += 1
            except trio.WouldBlock:
                service.refused += 1
                refusal = spb.StateSyncResponse(
                    error=f"the gateway's state service has {max_requests} requests waiting: "
                    "retry later",
                    error_kind=StateErrorKind.UNAVAILABLE,
                )
                await _answer(connection, message, refusal)
        nursery.cancel_scope.cancel()


async def _serve(
    service: StateService,
    connection: Connection,
    requests: trio.MemoryReceiveChannel[pb.ControlMessage],
) -> None:
    async for message in requests:
        request = spb.StateSyncRequest()
        try:
            if not message.rpcMessage.Unpack(request):
                raise ValueError(f"not a StateSyncRequest: {message.rpcMessage.type_url}")
            response = await _apply(service.store, request)
            service.served += 1
        except Exception as exc:
            service.failed += 1
            logger.debug("state request %s failed: %s", message.rpc_id, exc)
            response = error_response(exc)
        await _answer(connection, message, response)


async def _apply(store: StateStore, request: spb.StateSyncRequest) -> spb.StateSyncResponse:
    response = spb.StateSyncResponse()
    for update in request.state_updates:
        if request.force_sync:
            agent_id = agent_of(update)
            response.states.extend(syncs_of(agent_id, await store.load(agent_id)))
            continue
        agent_id, change = change_of(update)
        version = await store.commit(agent_id, update.version - 1, change)
        response.states.append(spb.StateSync(agent_id=update.agent_id, version=version))
    return response


async def _answer(
    connection: Connection, message: pb.ControlMessage, response: spb.StateSyncResponse
) -> None:
    if not message.respond_to:
        return
    reply = pb.ControlMessage(rpc_id=message.rpc_id, destination=message.respond_to)
    reply.rpcMessage.Pack(response)
    try:
        await connection.send(reply.SerializeToString())
    except trio.BrokenResourceError:
        logger.debug("state answer %s dropped: the gateway is stopping", message.rpc_id)
