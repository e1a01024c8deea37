"""The worker's link to its gateway: sessions, one after the other, with reconnect.

A :class:`WorkerLink` keeps one :class:`~._session.WorkerSession`
open at a time. When it is lost, the link waits (exponential backoff with
jitter, capped, from a :class:`~agentwire._retry.RetryPolicy`), connects again
with a **new client-id**, replays what the worker had told the gateway (agent
types and subscriptions, in their original order), and only then lets calls
through again.

Reconnect policy (what callers see):

* An RPC or publish that was in flight when the connection was lost fails at
  once with :class:`ConnectionLostError` (we cannot know whether the peer got
  it; RPCs are not idempotent, so nothing is retried behind the caller's back).
* A call made while disconnected waits for the link to come back, bounded by
  the caller's trio deadline and by ``disconnected_wait`` seconds; then it
  fails with :class:`ConnectionLostError`. If the link has given up (retry
  policy exhausted) or is closed, calls fail at once.
* Registrations and subscription changes are idempotent as far as the gateway
  is concerned (the next session replays them anyway), so those are retried
  on the next session within the same bounds.
* After a loss the first attempt is made at once (a restarted gateway is
  often back already), then the policy's delays apply (short, jittered,
  growing to its cap).
* The first connection is retried the same way for up to ``connect_timeout``
  seconds (a worker started before its gateway waits for it); then, or at
  once with ``connect_timeout=0``, ``run`` raises
  :class:`ConnectionLostError` naming the last failure.
* With several gateways (:class:`Rotation`, a cluster) one attempt tries
  each in turn, starting with the one after the gateway used last, so after
  a loss the worker goes on with the next gateway at once; the backoff
  applies between full rotations.

Invariants:

* ``_log`` is exactly what the gateway has been told and not taken back, in
  the order it was told; an entry is added only after the gateway accepted
  it. It is replayed into every new session before that session is published
  as ``_session`` (and calls can use it): issued in its order, pipelined (no
  registration waits for the answer to the one before), all answered before
  the session is published. Changes to ``_log`` (registrations, removals)
  may be in flight at once, each on the current session; a replay waits
  until none is in flight (``_ops``) and none starts while it runs
  (``_replaying``), so nothing is lost between a change and a replay.
* ``_session`` is ``None`` or a session that was fully replayed; state is
  ``CONNECTED`` exactly when ``_session`` is not ``None``.
"""

from __future__ import annotations

import enum
import logging
import math
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from typing import TypeVar

import attrs
import trio
from google.protobuf import any_pb2
from google.protobuf.message import Message as ProtoMessage

from .._errors import ConnectionLostError, GatewayRefusedError, RpcTimeoutError
from .._proto import agent_worker_pb2 as pb
from .._proto import cloudevent_pb2 as ce_pb
from .._retry import RetryPolicy
from .._wire import DEFAULT_MAX_MESSAGE_SIZE
from ._kinds import describe
from ._protocol import ChannelLike, SessionHandler, request_ids
from ._session import SessionStatistics, WorkerSession, open_session

logger = logging.getLogger("agentwire.worker")

T = TypeVar("T")

#: The default reconnect policy (after an immediate first retry): 0.05 s
#: doubling up to 1 s, shortened by up to 50 % at random, practically never
#: giving up. So a worker is back at most ~1 s after its gateway is.
DEFAULT_RECONNECT = RetryPolicy(
    initial_delay=0.05, max_delay=1.0, multiplier=2.0, max_attempts=1_000_000, jitter=0.5
)
#: How long ``open_worker`` waits for its first connection by default.
DEFAULT_CONNECT_TIMEOUT = 10.0
#: Registrations a reconnect replays in flight at once (each a unary call).
REPLAY_IN_FLIGHT = 32


class ConnectionState(enum.Enum):
    """Where a worker's link to the gateway stands."""

    CONNECTING = "connecting"
    """Opening a connection and replaying registrations."""
    CONNECTED = "connected"
    """Calls go through."""
    DISCONNECTED = "disconnected"
    """Lost; waiting (backoff) before the next attempt."""
    CLOSED = "closed"
    """Closed by the worker, or given up after the retry policy ran out."""


@attrs.frozen
class LinkStatistics:
    state: ConnectionState
    client_id: str | None
    connects: int
    """Sessions that were established (first connection included)."""
    failed_attempts: int
    """Connection attempts that failed (each followed by a backoff sleep)."""
    registrations: int
    """Agent types and subscriptions replayed into each new session."""
    session: SessionStatistics | None


_Op = tuple[str, str]  # ("type", agent_type) | ("sub", subscription_id)

Connect = Callable[[], AbstractAsyncContextManager[ChannelLike]]


class Rotation:
    """A ``connect`` for :class:`WorkerLink` over several gateways (*connects*,
    one per gateway, named by *names* in errors).

    Each connection it opens tries the gateways in turn, beginning with the
    one after the gateway it used (or tried) last, until one accepts the
    connection; if none does, it raises :class:`ConnectionLostError` naming
    every failure. So one attempt of the link is one rotation at most, the
    link's backoff comes between rotations, and a worker whose gateway died
    goes on with the next one at once.
    """

    def __init__(self, connects: Sequence[Connect], names: Sequence[str]) -> None:
        if not connects or len(connects) != len(names):
            raise ValueError("a rotation needs one name per connect, and at least one")
        self._connects = tuple(connects)
        self._names = tuple(names)
        self._next = 0
        self.current: str | None = None
        """The gateway of the last connection opened."""

    @asynccontextmanager
    async def __call__(self) -> AsyncIterator[ChannelLike]:
        failures: list[str] = []
        async with AsyncExitStack() as stack:
            for _ in self._connects:
                index = self._next
                self._next = (index + 1) % len(self._connects)
                try:
                    channel = await stack.enter_async_context(self._connects[index]())
                except Exception as exc:
                    failures.append(f"{self._names[index]}: {describe(exc)}")
                    logger.debug("gateway %s: %s", self._names[index], failures[-1])
                    continue
                self.current = self._names[index]
                break
            else:
                raise ConnectionLostError("no gateway answered (" + "; ".join(failures) + ")")
            yield channel


class WorkerLink:
    """Reconnecting link; run it with ``nursery.start(link.run)``."""

    def __init__(
        self,
        connect: Callable[[], AbstractAsyncContextManager[ChannelLike]],
        handler: SessionHandler,
        *,
        reconnect: RetryPolicy = DEFAULT_RECONNECT,
        disconnected_wait: float = 10.0,
        outbox_size: int = 256,
        max_concurrent_requests: int = 256,
        unary_timeout: float = 30.0,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
        connect_timeout: float = 0.0,
        rng: random.Random | None = None,
    ) -> None:
        self._connect = connect
        self._handler = handler
        self._reconnect = reconnect
        self._disconnected_wait = disconnected_wait
        self._outbox_size = outbox_size
        self._max_concurrent_requests = max_concurrent_requests
        self._unary_timeout = unary_timeout
        self._max_message_size = max_message_size
        self._connect_timeout = connect_timeout
        self._rng = rng
        self.request_ids = request_ids()
        self._session: WorkerSession | None = None
        self._state = ConnectionState.CONNECTING
        self._state_changed = trio.Event()
        self._ops = 0  # registrations and removals in flight
        self._ops_done = trio.Event()  # set when _ops drops to 0
        self._ops_done.set()
        self._replaying = False
        self._log: dict[_Op, pb.Subscription | None] = {}
        self._connects = 0
        self._failed_attempts = 0

    # -- state --------------------------------------------------------------

    @property
    def state(self) -> ConnectionState:
        return self._state

    @property
    def session(self) -> WorkerSession | None:
        return self._session

    def _set_state(self, state: ConnectionState) -> None:
        if state is self._state:
            return
        logger.info("gateway link: %s -> %s", self._state.value, state.value)
        self._state = state
        event, self._state_changed = self._state_changed, trio.Event()
        event.set()

    async def wait_state_change(self) -> ConnectionState:
        """Wait for the next state change; return the new state."""
        await self._state_changed.wait()
        return self._state

    async def states(self) -> AsyncIterator[ConnectionState]:
        """The current state, then each new one (latest-value: fast flips may merge)."""
        last = self._state
        yield last
        while last is not ConnectionState.CLOSED:
            await self._state_changed.wait()
            if self._state is not last:
                last = self._state
                yield last

    async def wait_for_state(self, state: ConnectionState) -> None:
        while self._state is not state:
            await self._state_changed.wait()

    def statistics(self) -> LinkStatistics:
        session = self._session
        return LinkStatistics(
            state=self._state,
            client_id=session.client_id if session is not None else None,
            connects=self._connects,
            failed_attempts=self._failed_attempts,
            registrations=len(self._log),
            session=session.statistics() if session is not None else None,
        )

    # -- the loop -------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Connect, then keep reconnecting until cancelled or the policy runs out.

        ``task_status.started()`` is called after the first session is up. The
        first connection is retried (with the policy's delays) for up to
        ``connect_timeout`` seconds; then its failure raises
        :class:`ConnectionLostError`. A channel the gateway refuses
        (UNAUTHENTICATED, PERMISSION_DENIED) raises :class:`GatewayRefusedError`
        at once: reconnecting cannot help.
        """
        first = True
        give_up_at = trio.current_time() + self._connect_timeout
        delays = self._retry_delays()
        try:
            while True:
                self._set_state(ConnectionState.CONNECTING)
                try:
                    async with (
                        self._connect() as channel,
                        self._open_session(channel) as session,
                    ):
                        await self._replay(session)
                        self._connects += 1
                        if first:
                            first = False
                            task_status.started()
                        delays = self._retry_delays()
                        await session.lost.wait()
                        self._session = None
                        self._set_state(ConnectionState.DISCONNECTED)
                        if session.refusal is not None:
                            refusal = session.refusal
                            raise GatewayRefusedError(
                                f"the gateway refused this worker ({refusal.status.name}): "
                                f"{refusal.message}; check its token, certificate or rights"
                            )
                except GatewayRefusedError:
                    raise
                except Exception as exc:
                    self._session = None
                    self._failed_attempts += 1
                    delay = next(delays, None)
                    if first and (
                        delay is None
                        or self._connect_timeout <= 0
                        or trio.current_time() + delay > give_up_at
                    ):
                        raise ConnectionLostError(
                            f"could not connect to the gateway: {describe(exc)}"
                            + (
                                f" (tried for {self._connect_timeout:g} s)"
                                if self._connect_timeout
                                else ""
                            )
                        ) from exc
                    logger.info("connection attempt failed: %s", describe(exc))
                else:
                    delay = next(delays, None)
                self._set_state(ConnectionState.DISCONNECTED)
                if delay is None:
                    logger.warning("gateway link: giving up after the retry policy ran out")
                    return
                if delay:
                    await trio.sleep(delay)
                else:
                    await trio.lowlevel.checkpoint()
        finally:
            self._session = None
            self._set_state(ConnectionState.CLOSED)

    def _retry_delays(self) -> Iterator[float]:
        """The sleeps before the attempts after a loss: none before the first."""
        yield 0.0
        yield from self._reconnect.delays(self._rng)

    def _open_session(self, channel: ChannelLike) -> AbstractAsyncContextManager[WorkerSession]:
        return open_session(
            channel,
            self._handler,
            self.request_ids,
            outbox_size=self._outbox_size,
            max_concurrent_requests=self._max_concurrent_requests,
            unary_timeout=self._unary_timeout,
            max_message_size=self._max_message_size,
        )

    async def _replay(self, session: WorkerSession) -> None:
        """Replay ``_log`` into *session*, pipelined, then publish the session.

        Every registration is issued in the log's order without waiting for
        the answers before it (at most ``REPLAY_IN_FLIGHT`` at once); all are
        awaited before the session is published. If any fails, the first
        failure in log order is raised (the attempt fails; the next replays
        everything again).
        """
        self._replaying = True
        try:
            while self._ops:  # changes made on the last session finish first
                await self._ops_done.wait()
            entries = list(self._log.items())
            failures: list[tuple[int, Exception]] = []
            in_flight = trio.Semaphore(REPLAY_IN_FLIGHT)

            async def one(
                index: int,
                op: _Op,
                subscription: pb.Subscription | None,
                *,
                task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
            ) -> None:
                async with in_flight:
                    task_status.started()  # the next one is issued after this one
                    try:
                        if op[0] == "type":
                            await session.register_agent_type(op[1])
                        else:
                            assert subscription is not None
                            await session.add_subscription(subscription)
                    except Exception as exc:
                        failures.append((index, exc))

            async with trio.open_nursery() as nursery:
                for index, (op, subscription) in enumerate(entries):
                    await nursery.start(one, index, op, subscription)
            if failures:
                raise min(failures, key=lambda failure: failure[0])[1]
            self._session = session
            self._set_state(ConnectionState.CONNECTED)
        finally:
            self._replaying = False

    # -- calls ----------------------------------------------------------------

    async def session_for_call(self) -> WorkerSession:
        """The current session; wait for one if disconnected (see the module policy)."""
        session = self._session
        if session is not None and not session.lost.is_set():  # connected: no clock read
            return session
        deadline = trio.current_time() + self._disconnected_wait
        while True:
            session = self._session
            if session is not None and not session.lost.is_set():
                return session
            if self._state is ConnectionState.CLOSED:
                raise ConnectionLostError("the worker is not connected to a gateway (link closed)")
            with trio.move_on_at(deadline):
                await self._state_changed.wait()
                continue
            raise ConnectionLostError(
                "not connected to the gateway: still reconnecting after "
                f"{self._disconnected_wait:g} s"
            )

    async def _control_op(self, op: Callable[[WorkerSession], Awaitable[T]]) -> T:
        """Run *op* on the current session (several may be in flight at once);
        retried on the next session if this one is lost meanwhile."""
        while True:
            session = await self.session_for_call()
            if session is not self._session or self._replaying:
                await trio.lowlevel.checkpoint()
                continue
            self._ops += 1
            if self._ops == 1:
                self._ops_done = trio.Event()
            try:
                return await op(session)
            except ConnectionLostError:
                if self._state is ConnectionState.CLOSED:
                    raise
                await trio.lowlevel.checkpoint()
            finally:
                self._ops -= 1
                if not self._ops:
                    self._ops_done.set()

    async def register_agent_type(self, agent_type: str) -> None:
        async def op(session: WorkerSession) -> None:
            await session.register_agent_type(agent_type)
            self._log[("type", agent_type)] = None

        await self._control_op(op)

    async def add_subscription(self, subscription: pb.Subscription) -> None:
        async def op(session: WorkerSession) -> None:
            await session.add_subscription(subscription)
            self._log[("sub", subscription.id)] = subscription

        await self._control_op(op)

    async def remove_subscription(self, subscription_id: str) -> None:
        async def op(session: WorkerSession) -> None:
            await session.remove_subscription(subscription_id)
            self._log.pop(("sub", subscription_id), None)

        await self._control_op(op)

    async def get_subscriptions(self) -> list[pb.Subscription]:
        return await self._control_op(lambda session: session.get_subscriptions())

    async def rpc(
        self, request: pb.RpcRequest, *, expires_at: float = math.inf, now: float | None = None
    ) -> pb.RpcResponse:
        """:meth:`WorkerSession.rpc` on the current session; waiting for a
        session counts against ``expires_at`` too (:class:`RpcTimeoutError`).
        ``now``: the trio time, if the caller just read it."""
        session = self._session
        if session is None or session.lost.is_set():
            now = None  # it will be later than that
            with trio.move_on_at(expires_at):
                session = await self.session_for_call()
            if session is None or session.lost.is_set():
                raise RpcTimeoutError(
                    f"no connection to the gateway in time for {request.request_id}"
                )
        return await session.rpc(request, expires_at=expires_at, now=now)

    async def publish(self, event: ce_pb.CloudEvent | bytes) -> None:
        """:meth:`WorkerSession.publish` on the current session."""
        session = self._session
        if session is None or session.lost.is_set():  # (connected: no call to wait in)
            session = await self.session_for_call()
        await session.publish(event)

    async def control_call(self, destination: str, message: ProtoMessage) -> any_pb2.Any:
        session = await self.session_for_call()
        return await session.control_call(destination, message)
