"""A worker session's control channel: ``OpenControlChannel`` and its calls.

AutoGen 0.7.5 carries Save/LoadState between workers as ``ControlMessage``s
on a second stream: a request names a ``destination`` (``agentid=type/key``)
and a ``respond_to`` (``clientid=<ours>``); the answer reuses its ``rpc_id``.

Invariants:

* The control channel's failure never ends the data session: its read and
  write failures are caught where they happen, and when it ends every call
  waiting on it fails at once with :class:`ConnectionLostError` (the pending
  map is empty afterwards).
* At most ``max_requests`` incoming control requests are served at once
  (``in_progress``); one more is answered at once with an error response (a
  ``Save/LoadStateResponse`` with ``error``, for those types) and counted in
  ``refused``, without being served.
* ``settled`` is set once the stream opened or failed to open; ``open`` says
  which. A call waits for ``settled`` and fails at once if not ``open``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence

import trio
from google.protobuf import any_pb2
from google.protobuf.message import Message as ProtoMessage

from .._errors import ConnectionLostError
from .._nursery import open_unwrapping_nursery
from .._proto import agent_worker_pb2 as pb
from .._runtime._pending import PendingMap
from ._kinds import describe
from ._protocol import OPEN_CONTROL_CHANNEL, ChannelLike, ClientStreamLike, SessionHandler

__all__ = ["MAX_CONTROL_REQUESTS", "ControlChannel"]

logger = logging.getLogger("agentwire.worker")

#: Control requests (Save/LoadState from other workers) served at once; beyond
#: it a request is answered at once with an error (counted as refused).
MAX_CONTROL_REQUESTS = 64


class ControlChannel:
    """The control stream of one session (``client_id``); run it with :meth:`run`."""

    def __init__(
        self,
        channel: ChannelLike,
        handler: SessionHandler,
        request_ids: Iterator[str],
        *,
        client_id: str,
        metadata: Sequence[tuple[str, str]],
        buffer: int,
        max_requests: int = MAX_CONTROL_REQUESTS,
        lost_error: Callable[[], ConnectionLostError],
    ) -> None:
        self.client_id = client_id
        self._channel = channel
        self._handler = handler
        self._request_ids = request_ids
        self._metadata = metadata
        self._respond_to = f"clientid={client_id}"
        self._lost_error = lost_error
        self._send, self._recv = trio.open_memory_channel[bytes](buffer)
        self.pending: PendingMap[str, any_pb2.Any] = PendingMap()
        self._max_requests = max_requests
        self.in_progress = 0
        self.refused = 0
        self.open = False
        self.settled = trio.Event()

    def close(self) -> None:
        """No more calls: fail the waiting ones, refuse new ones."""
        self.pending.close(lambda _key: self._lost_error())
        self._send.close()

    async def call(self, destination: str, message: ProtoMessage) -> any_pb2.Any:
        """Send a control request to ``destination`` and await the response's payload."""
        await self.settled.wait()
        if not self.open:
            raise ConnectionLostError("the gateway has no open control channel for this worker")
        rpc_id = next(self._request_ids)
        payload = any_pb2.Any()
        payload.Pack(message)
        envelope = pb.ControlMessage(
            rpc_id=rpc_id,
            destination=destination,
            respond_to=self._respond_to,
            rpcMessage=payload,
        )
        with self.pending.register(rpc_id) as waiter:
            try:
                await self._send.send(envelope.SerializeToString())
            except (trio.ClosedResourceError, trio.BrokenResourceError):
                raise self._lost_error() from None
            return await waiter.wait()

    async def run(self) -> None:
        """Run the control channel; its failure does not end the data session.

        Failures of its reads and writes are caught where they happen, so only
        a cancellation ever leaves its nursery (never a group mixing the two).
        """
        try:
            async with self._channel.stream(
                OPEN_CONTROL_CHANNEL, metadata=self._metadata
            ) as stream:
                self.open = True
                self.settled.set()
                async with open_unwrapping_nursery() as inner:
                    inner.start_soon(self._sender, stream, inner.cancel_scope)
                    try:
                        await self._receiver(stream, inner)
                    except Exception as exc:
                        logger.info(
                            "control channel of %s: read failed: %s", self.client_id, describe(exc)
                        )
                    inner.cancel_scope.cancel()
        except Exception as exc:
            logger.info("control channel of %s ended: %s", self.client_id, describe(exc))
        finally:
            self.open = False
            self.settled.set()
            self.pending.fail_all(
                lambda _key: ConnectionLostError("the control channel to the gateway ended")
            )

    async def _receiver(self, stream: ClientStreamLike, nursery: trio.Nursery) -> None:
        while True:
            data = await stream.receive()
            if data is None:
                return
            message = pb.ControlMessage()
            message.ParseFromString(data)
            if message.HasField("respond_to") and message.respond_to:
                if self.in_progress < self._max_requests:
                    self.in_progress += 1
                    nursery.start_soon(self._serve, message)
                else:
                    await self._refuse(message)
            else:
                self.pending.set_value(message.rpc_id, message.rpcMessage)

    async def _sender(self, stream: ClientStreamLike, done: trio.CancelScope) -> None:
        try:
            async with self._recv:
                async for data in self._recv:
                    await stream.send(data)
        except Exception as exc:
            logger.info("control channel of %s: write failed: %s", self.client_id, describe(exc))
            done.cancel()

    async def _refuse(self, message: pb.ControlMessage) -> None:
        """Answer a control request over the limit with an error, without serving it."""
        self.refused += 1
        text = f"the worker is serving {self._max_requests} control requests already: retry later"
        payload = _control_error(message.rpcMessage, text)
        logger.warning(
            "control request %s (%s) refused: %d in progress",
            message.rpc_id,
            message.rpcMessage.type_url,
            self._max_requests,
        )
        if payload is not None:
            await self._answer(message, payload)

    async def _serve(self, message: pb.ControlMessage) -> None:
        try:
            try:
                payload = await self._handler.handle_control(message)
            except Exception:
                logger.exception("control handler failed")
                return
        finally:
            self.in_progress -= 1
        if payload is not None:
            await self._answer(message, payload)

    async def _answer(self, message: pb.ControlMessage, payload: any_pb2.Any) -> None:
        response = pb.ControlMessage(
            rpc_id=message.rpc_id, destination=message.respond_to, rpcMessage=payload
        )
        try:
            await self._send.send(response.SerializeToString())
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
