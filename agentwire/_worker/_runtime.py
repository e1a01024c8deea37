"""``open_worker(address)``: the runtime core on a gateway link.

``async with agentwire.open_worker("host:port") as runtime:`` gives the same
runtime API as ``open_runtime()`` (a :class:`WorkerRuntime` *is* the core, see
``agentwire._runtime._core``), with a :class:`~._router.WorkerRouter`
underneath (see there for the wire behaviour) and the link's state on top.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import TYPE_CHECKING, Literal, TypeVar

import attrs
import trio

from .._address import InvalidAddressError, parse_address
from .._errors import GatewayRejectedError
from .._nursery import open_unwrapping_nursery
from .._proto import agent_worker_pb2 as pb
from .._retry import RetryPolicy
from .._runtime._core import Router, Runtime, RuntimeStatistics, open_core
from .._runtime._interventions import InterventionHandler
from .._security._client import call_metadata, resolve_tls, with_metadata
from .._wire import DEFAULT_MAX_MESSAGE_SIZE
from ._link import (
    DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_RECONNECT,
    Connect,
    ConnectionState,
    Rotation,
)
from ._protocol import ChannelLike
from ._router import PayloadFormat, WorkerRouter, WorkerStatistics

if TYPE_CHECKING:
    from opentelemetry.trace import TracerProvider

__all__ = [
    "WorkerRuntime",
    "WorkerRuntimeStatistics",
    "open_worker",
]

T = TypeVar("T")

#: What every gateway's refusal of a taken agent type says (AutoGen's host,
#: agentwire's, a cluster's; with access control "... by another principal's worker").
ALREADY_REGISTERED = "already registered"

#: How long one attempt to open a TCP connection to the gateway may take.
ATTEMPT_TIMEOUT = 10.0


@attrs.frozen
class WorkerRuntimeStatistics(RuntimeStatistics):
    """``runtime.statistics()`` of a worker: the core's counters plus the link's state."""

    connection_state: ConnectionState
    client_id: str | None
    """The current connection's ``client-id`` (None while disconnected)."""
    connects: int
    """Connections established so far (1 + reconnects)."""
    remote_pending_rpcs: int
    """Our RPCs waiting for a response from the gateway."""


class WorkerRuntime(Runtime):
    """The runtime ``open_worker`` yields: the core's API plus the gateway link."""

    def __init__(
        self,
        services: trio.Nursery,
        make_worker: Callable[[Runtime], WorkerRouter],
        *,
        mailbox_size: int,
        max_overflow: int,
        ignore_unhandled_exceptions: bool,
        intervention_handlers: Sequence[InterventionHandler],
    ) -> None:
        def make_router(core: Runtime) -> Router:
            self._worker = make_worker(core)
            return self._worker

        super().__init__(
            services,
            make_router,
            mailbox_size=mailbox_size,
            max_overflow=max_overflow,
            ignore_unhandled_exceptions=ignore_unhandled_exceptions,
            intervention_handlers=intervention_handlers,
        )

    def statistics(self) -> WorkerRuntimeStatistics:
        """The core's counters (see :class:`RuntimeStatistics`) and the link's state."""
        core = super().statistics()
        link = self._worker.link.statistics()
        return WorkerRuntimeStatistics(
            **attrs.asdict(core, recurse=False),
            connection_state=link.state,
            client_id=link.client_id,
            connects=link.connects,
            remote_pending_rpcs=link.session.pending_rpcs if link.session is not None else 0,
        )

    @property
    def connection_state(self) -> ConnectionState:
        """Where the link to the gateway stands right now."""
        return self._worker.link.state

    def connection_states(self) -> AsyncIterator[ConnectionState]:
        """``async for state in runtime.connection_states():`` the current state, then
        each change (latest value: very fast flips may be merged)."""
        return self._worker.link.states()

    async def wait_connection_state(self, state: ConnectionState) -> None:
        """Wait until the link is in *state*."""
        await self._worker.link.wait_for_state(state)

    def worker_statistics(self) -> WorkerStatistics:
        """Counters of the worker's router and link (``statistics()`` has the core's)."""
        return self._worker.statistics()

    async def drain(self) -> None:
        """Leave a gateway with shared agent types without failing a call.

        Asks the gateway to place no new agents here, waits until no incoming
        request is being served, hands this worker's agents back (the gateway
        places each anew, on another worker, on its next message) and waits
        for the requests already on their way here. Then leave the
        ``async with open_worker(...)`` block. Agent state is not moved: a
        handed-back agent starts afresh on its new worker. Raises
        :class:`GatewayRejectedError` if the gateway has no shared agent
        types (or is AutoGen's host, which does not answer) or this worker
        registered none. Applies to the current connection only.
        """
        await self._worker.drain()

    async def register_standby(
        self, register: Callable[[], Awaitable[T]], *, retry_every: float = 0.5
    ) -> T:
        """Stand by for an agent type another worker holds, and take it over
        once that worker is gone: ``await runtime.register_standby(lambda:
        Counter.register(runtime, "counter", make_counter))``.

        Calls *register* (any registration of one agent type) every
        *retry_every* seconds for as long as the gateway (or any gateway of
        its cluster) answers that the type is already registered, and returns
        what it returns once one goes through. Any other error comes out at
        once. With a shared state store, the agents it then activates load
        their last committed state (README, "Failover in a cluster")."""
        if not retry_every > 0:
            raise ValueError(f"retry_every must be positive, not {retry_every!r}")
        while True:
            try:
                return await register()
            except GatewayRejectedError as exc:
                if ALREADY_REGISTERED not in exc.gateway_message:
                    raise
            await trio.sleep(retry_every)

    async def gateway_subscriptions(self) -> list[pb.Subscription]:
        """``GetSubscriptions``: every subscription the gateway knows (all workers')."""
        return await self._worker.link.get_subscriptions()


@asynccontextmanager
async def open_worker(
    address: str | Sequence[str],
    *,
    payload_format: PayloadFormat = "json",
    local_publish: Literal["immediate", "echo"] = "immediate",
    reconnect: RetryPolicy = DEFAULT_RECONNECT,
    disconnected_wait: float = 10.0,
    state_timeout: float = 10.0,
    rpc_timeout: float | None = 300.0,
    keepalive_interval: float | None = 360.0,
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
    outbox_size: int = 256,
    max_concurrent_requests: int = 256,
    mailbox_size: int = 64,
    max_overflow: int = 10_000,
    ignore_unhandled_exceptions: bool = True,
    intervention_handlers: Sequence[InterventionHandler] = (),
    ssl_context: ssl.SSLContext | None = None,
    token: str | None = None,
    metadata: Sequence[tuple[str, str]] = (),
    connect: Callable[[], AbstractAsyncContextManager[ChannelLike]] | None = None,
    tracer_provider: TracerProvider | None = None,
    shared_types: bool = False,
) -> AsyncIterator[WorkerRuntime]:
    """A worker connected to the gateway at *address* (``host:port``, or
    ``grpcs://host:port`` for TLS with the system's CAs), or to one of several
    gateways (a cluster): a sequence of such addresses.

    ``async with open_worker("127.0.0.1:50051", payload_format="protobuf") as runtime:``

    With several addresses the worker connects to the first that answers,
    in order; when its connection is lost it reconnects to the next one (then
    the one after, round and round; *reconnect*'s backoff applies after each
    full round that found none). Each address may be ``grpcs://`` or not;
    *ssl_context* applies to the bare ones.

    * *payload_format*: how published events are encoded (RPCs are always
      JSON, as with AutoGen); ``"json"`` or ``"protobuf"``.
    * *local_publish*: ``"immediate"`` (default) delivers to local subscribers
      at once and drops the gateway's echo; ``"echo"`` waits for the echo.
    * *reconnect*: the backoff between reconnect attempts (after a loss the
      first attempt is made at once; the default then waits 0.05 s doubling to
      1 s, jittered).
    * *connect_timeout*: how long to wait for the first connection (a worker
      started before its gateway waits for it, retrying with *reconnect*'s
      delays); then :class:`ConnectionLostError`. ``0``: fail at once.
    * *disconnected_wait*: how long a call made while reconnecting waits
      (within its own trio deadline) before :class:`ConnectionLostError`.
    * *state_timeout*: bound on remote ``agent_save_state``/``agent_load_state``.
    * *rpc_timeout*: the longest a remote RPC waits when the caller set no
      earlier trio deadline; then an error that is both an
      :class:`RpcTimeoutError` and an :class:`UndeliverableError` (an AutoGen
      host never answers a request for an unknown agent type). ``None``: no
      bound beyond the caller's own.
    * *keepalive_interval*: idle seconds before an HTTP/2 ping (default 6
      minutes: grpc-core servers punish pings more often than every 5 minutes
      with GOAWAY); ``None`` disables pings.
    * *max_message_size*: largest message sent or received (4 MiB, grpc-core's
      default, which AutoGen keeps). An RPC request or publish over it raises
      :class:`MessageTooLargeError` for that call only; a result over it is
      answered with that error (kind ``too-large``) instead of being sent.
    * *outbox_size*: bound of each of the two outgoing lanes (RPC requests and
      responses, which go first; published events, which are never starved).
      A full event lane makes publishers wait; RPCs do not queue behind it.
    * *max_concurrent_requests*: incoming RPCs handled at once (beyond it,
      reading from the gateway pauses: backpressure).
    * *mailbox_size*, *max_overflow*, *ignore_unhandled_exceptions*,
      *intervention_handlers*: as for :func:`~agentwire.open_runtime`.
    * *ssl_context*: TLS to the gateway (e.g.
      :func:`agentwire.security.client_ssl_context`, with a client certificate
      for mutual TLS); ALPN ``h2``.
    * *token*: sent as ``authorization: Bearer <token>`` on every call (a
      gateway with an access file); *metadata*: more headers for every call.
    * *connect*: replaces the transport (tests); returns a channel context.
    * *tracer_provider*: an OpenTelemetry ``TracerProvider`` (the ``tracing``
      extra): send, publish and process spans named as AutoGen's, the remote
      context as their parent. Without it no span is made, and the W3C trace
      context that arrives with a message is still carried on by what its
      handler sends (``agentwire.current_trace_context()``).
    * *shared_types*: the gateway lets several workers serve one agent type
      (``agentwire gateway --shared-agent-types``): every RPC and publish goes
      through the gateway, even to agent types registered here, so each agent
      is reached on the one worker it lives on (*local_publish* is then
      ``"echo"``).

    Leaving the block stops the core (pending RPCs fail with
    ``RuntimeClosedError``, agents are closed), then cancels the streams so the
    gateway drops our types and subscriptions.
    """
    addresses = [address] if isinstance(address, str) else list(address)
    if not addresses or not all(isinstance(a, str) for a in addresses):
        raise InvalidAddressError(
            f"the gateway address must be a str 'host:port' or a non-empty sequence of them, "
            f"not {address!r}"
        )
    targets = [resolve_tls(a, ssl_context) for a in addresses]
    for bare, _ in targets:
        parse_address(bare)
    if connect_timeout < 0:
        raise ValueError(f"connect_timeout must be >= 0 seconds, got {connect_timeout!r}")
    if connect is None:
        from .._transport import open_channel

        def connect_to(bare: str, context: ssl.SSLContext | None) -> Connect:
            def connect() -> AbstractAsyncContextManager[ChannelLike]:
                return open_channel(
                    bare,
                    ssl_context=context,
                    keepalive_interval=keepalive_interval,
                    connect_timeout=ATTEMPT_TIMEOUT,
                    max_message_size=max_message_size,
                )

            return connect

        connects = [connect_to(bare, context) for bare, context in targets]
        connect = connects[0] if len(connects) == 1 else Rotation(connects, addresses)

    connect = with_metadata(connect, call_metadata(token, metadata))

    router: WorkerRouter | None = None

    def make_router(core: Runtime) -> WorkerRouter:
        nonlocal router
        router = WorkerRouter(
            core,
            connect,
            payload_format=payload_format,
            local_publish=local_publish,
            state_timeout=state_timeout,
            rpc_timeout=rpc_timeout,
            reconnect=reconnect,
            disconnected_wait=disconnected_wait,
            outbox_size=outbox_size,
            max_concurrent_requests=max_concurrent_requests,
            max_message_size=max_message_size,
            connect_timeout=connect_timeout,
            tracer_provider=tracer_provider,
            shared_types=shared_types,
        )
        return router

    async with open_unwrapping_nursery() as link_nursery:
        try:
            async with open_core(
                lambda services: WorkerRuntime(
                    services,
                    make_router,
                    mailbox_size=mailbox_size,
                    max_overflow=max_overflow,
                    ignore_unhandled_exceptions=ignore_unhandled_exceptions,
                    intervention_handlers=intervention_handlers,
                )
            ) as runtime:
                assert router is not None
                await link_nursery.start(router.link.run)
                yield runtime
        finally:
            link_nursery.cancel_scope.cancel()
