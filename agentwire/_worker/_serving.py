"""Serving a session's incoming RPC requests: a pool of server tasks.

:class:`RequestServers` runs each request the gateway sends in a *server task*
of the session's nursery and sends what the handler answers. A task per
request and a cancel scope per request cost about as much as the rest of
serving it, so servers are kept: a server that answered waits for the next
request instead of ending, and holds one cancel scope whose deadline is set to
each request's in turn.

Invariants:

1. At most ``max_requests`` requests are in progress (taken and not yet
   answered): each holds a permit from a semaphore of that size, given back
   once its response is queued (or its server ends).
2. There are never more server tasks than permits: a server is started only
   for a request when none is idle, and idle servers wait in ``_waiting``.
3. A request is handled under its caller's deadline (``agentwire-timeout``):
   when it passes the handler is cancelled and the caller answered
   ``deadline exceeded`` (kind ``timeout``); that request only -- the server
   goes on under a fresh scope. A handler that returns as the deadline passes
   (no checkpoint after) keeps its answer.
4. While a server answers or waits for work its scope has no deadline, so a
   response is never cut off half-sent by the deadline of its request.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable

import outcome
import trio

from .._proto import agent_worker_pb2 as pb
from ._kinds import deadline_response, error_response, request_deadline
from ._protocol import SessionHandler

__all__ = ["RequestServers"]

logger = logging.getLogger("agentwire.worker")


class RequestServers:
    """Server tasks for one session's incoming requests (see the module docstring)."""

    def __init__(
        self,
        handler: SessionHandler,
        respond: Callable[[pb.RpcResponse], Awaitable[None]],
        max_requests: int,
    ) -> None:
        self._handler = handler
        self._respond = respond
        self._max_requests = max_requests
        self._limit = trio.Semaphore(max_requests)
        self._idle: trio.Event | None = None  # set when the last request in progress ends
        self._waiting: list[trio.lowlevel.Task] = []  # idle servers

    @property
    def in_progress(self) -> int:
        """Requests taken and not answered yet."""
        return self._max_requests - self._limit.value

    def try_serve(self, nursery: trio.Nursery, request: pb.RpcRequest) -> bool:
        """Start serving *request* now if a permit is free (False: none is, or
        the nursery is closing; nothing was taken)."""
        try:
            self._limit.acquire_nowait()
        except trio.WouldBlock:
            return False
        try:
            self._start(nursery, request)
        except RuntimeError:  # the nursery is closing
            self._limit.release()
            return False
        return True

    async def serve(self, nursery: trio.Nursery, request: pb.RpcRequest) -> None:
        """Start serving *request* once a permit is free."""
        await self._limit.acquire()
        self._start(nursery, request)

    async def wait_idle(self) -> None:
        """Wait until no request is in progress (new ones are still taken meanwhile)."""
        while self._limit.value < self._max_requests:
            if self._idle is None:
                self._idle = trio.Event()
            await self._idle.wait()

    def _start(self, nursery: trio.Nursery, request: pb.RpcRequest) -> None:
        """Hand *request* (its permit taken) to an idle server task, or start one."""
        idle = self._waiting
        if idle:
            trio.lowlevel.reschedule(idle.pop(), outcome.Value(request))
        else:
            nursery.start_soon(self._serve, request)

    async def _serve(self, request: pb.RpcRequest) -> None:
        """A server task: answers *request*, then each request it is handed next.

        Each request is handled under its caller's deadline in the server's
        cancel scope, whose deadline is set per request: a scope is entered
        only once per server and again after a deadline fired, not per request.
        """
        holding = True  # the permit of `request` is not given back yet
        try:
            while True:
                with trio.CancelScope() as scope:
                    while True:
                        scope.deadline = request_deadline(request)
                        response = await self._answer(request)
                        scope.deadline = math.inf
                        if scope.cancel_called:  # fired as the handler returned:
                            break  # its answer stands; this scope is spent
                        holding = False
                        await self._reply(request, response)
                        request = await self._next_request()
                        holding = True
                if scope.cancelled_caught:
                    response = deadline_response(request)
                holding = False
                await self._reply(request, response)
                request = await self._next_request()
                holding = True
        finally:
            if holding:
                self._release_request()

    async def _answer(self, request: pb.RpcRequest) -> pb.RpcResponse:
        try:
            return await self._handler.handle_request(request)
        except Exception as exc:  # the handler should not raise; answer anyway
            logger.exception("request handler failed")
            return error_response(exc)

    async def _reply(self, request: pb.RpcRequest, response: pb.RpcResponse) -> None:
        """Send the *response* to *request*, then give its permit back."""
        try:
            response.request_id = request.request_id
            await self._respond(response)
        finally:
            self._release_request()

    def _release_request(self) -> None:
        self._limit.release()
        idle = self._idle
        if idle is not None and self._limit.value == self._max_requests:
            self._idle = None
            idle.set()

    async def _next_request(self) -> pb.RpcRequest:
        """Wait, as an idle server, to be handed a request (cancelled: the session ends)."""
        task = trio.lowlevel.current_task()
        idle = self._waiting
        idle.append(task)

        def abort(_: Callable[[], object]) -> trio.lowlevel.Abort:
            idle.remove(task)
            return trio.lowlevel.Abort.SUCCEEDED

        request: pb.RpcRequest = await trio.lowlevel.wait_task_rescheduled(abort)
        return request
