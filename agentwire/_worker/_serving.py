"""Serving a session's incoming RPC requests: a pool of server tasks.

:class:`RequestServers` runs each request the gateway sends in a *server task*
of the session's nursery and sends what the handler answers. A task per
request and a cancel scope per request cost about as much as the rest of
serving it, so servers are kept: a server that answered waits for the next
request instead of ending, and holds one cancel scope for request after
request. Setting a trio scope's deadline costs about as much again (a
context manager and trio's deadline heap, twice per request), so the callers'
deadlines are kept by one *sweeper* task per session (:meth:`RequestServers.sweep`):
a server hands it its scope and its request's deadline, takes them back when
the handler returns, and the sweeper cancels the scope of a server whose
request's deadline passed. Deadlines that come in order (every caller with
the same time limit) cost a dict entry each; one earlier than the last one
handed over (or any while no sweeper runs) is set as the server scope's own
deadline, as before.

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
4. While a server answers or waits for work its scope has no deadline and is
   not in the sweeper's hands, so a response is never cut off half-sent by the
   deadline of its request.
5. ``_expiries`` (server scope -> its request's deadline) is in deadline
   order, holds only scopes of servers running a handler, and the sweeper's
   sleep ends no later than its first deadline; the sweeper removes an entry
   before it cancels that scope, so a server finding its entry gone knows its
   scope was cancelled.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable
from typing import TypeVar

import outcome
import trio

from .._proto import agent_worker_pb2 as pb
from ._kinds import deadline_response, error_response, request_deadline
from ._protocol import SessionHandler

__all__ = ["RequestServers", "pop_due"]

_K = TypeVar("_K")


def pop_due(expiries: dict[_K, float], now: float) -> list[_K]:
    """Remove and return, in order, the leading keys of *expiries* (kept in
    deadline order) whose deadline is *now* or earlier."""
    due = []
    while expiries:
        key, deadline = next(iter(expiries.items()))
        if deadline > now:
            break
        del expiries[key]
        due.append(key)
    return due


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
        # The sweeper's (invariant 5): deadlines in order, the last one handed
        # over, and its sleep (None: no sweeper running) and when that ends.
        self._expiries: dict[trio.CancelScope, float] = {}
        self._latest = -math.inf
        self._sweep: trio.CancelScope | None = None
        self._sweep_at = math.inf
        self._now = trio.lowlevel.current_clock().current_time  # (trio.current_time: 3 frames)

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
        cancel scope, kept by the sweeper or set on the scope itself: a scope is
        entered only once per server and again after a deadline fired, not per
        request.
        """
        holding = True  # the permit of `request` is not given back yet
        expiries = self._expiries
        try:
            while True:
                with trio.CancelScope() as scope:
                    while True:
                        deadline = request_deadline(request, self._now)
                        if deadline == math.inf:
                            response = await self._answer(request)
                        elif self._watch(scope, deadline):
                            try:
                                response = await self._answer(request)
                            finally:
                                swept = expiries.pop(scope, None) is None
                            if swept:  # cancelled as the handler returned:
                                break  # its answer stands; this scope is spent
                        else:
                            scope.deadline = deadline
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

    def _watch(self, scope: trio.CancelScope, deadline: float) -> bool:
        """Hand *scope* and its request's *deadline* to the sweeper; False: the
        deadline is out of order, or no sweeper runs (set it on the scope)."""
        expiries = self._expiries
        sweep = self._sweep
        if sweep is None or (expiries and deadline < self._latest):
            return False
        expiries[scope] = deadline
        self._latest = deadline
        if deadline < self._sweep_at:
            self._sweep_at = deadline
            sweep.deadline = deadline
        return True

    async def sweep(self) -> None:
        """The sweeper: cancel the scope of each server whose request's deadline
        passed. Runs in the servers' nursery, so it ends only when they are
        cancelled too (their requests' deadlines no longer matter then)."""
        expiries = self._expiries
        try:
            while True:
                for scope in pop_due(expiries, trio.current_time()):
                    scope.cancel()
                self._sweep_at = next(iter(expiries.values()), math.inf)
                with trio.CancelScope(deadline=self._sweep_at) as self._sweep:
                    await trio.sleep_forever()
        finally:
            self._sweep = None

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
