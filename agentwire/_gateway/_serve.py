"""``serve_gateway`` / ``open_gateway``: the hub plus the AgentRpc service on a socket."""

from __future__ import annotations

import functools
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import trio

from .._transport import GrpcServer, parse_address, serve_grpc
from ._hub import GatewayConfig, GatewayHub, GatewayStatistics, open_hub
from ._service import AgentRpcService

__all__ = ["DEFAULT_MAX_MESSAGE_SIZE", "Gateway", "open_gateway", "serve_gateway"]

logger = logging.getLogger("agentwire.gateway")

# grpc-core's default receive limit, which AutoGen workers keep: a larger
# message forwarded to them would kill their channel.
DEFAULT_MAX_MESSAGE_SIZE = 4 * 2**20


class Gateway:
    """A running gateway (from :func:`serve_gateway`'s ``task_status`` or
    :func:`open_gateway`)."""

    def __init__(self, server: GrpcServer, hub: GatewayHub, grace_period: float) -> None:
        self._server = server
        self._hub = hub
        self.grace_period = grace_period

    @property
    def address(self) -> str:
        """``host:port`` the gateway listens on (the real port when 0 was asked)."""
        return self._server.address

    @property
    def port(self) -> int:
        return self._server.port

    @property
    def config(self) -> GatewayConfig:
        return self._hub.config

    def statistics(self) -> GatewayStatistics:
        return self._hub.statistics()

    async def wait_until(self, predicate: Callable[[GatewayStatistics], bool]) -> None:
        """Wait until ``predicate(gateway.statistics())`` holds, e.g.
        ``await gw.wait_until(lambda s: s.data_connections == 2)``. Re-checked
        on every change of connections, registrations and subscriptions and
        after every routed message; wrap it in ``trio.fail_after`` to bound it."""
        await self._hub.wait_until(predicate)

    async def shutdown(self, grace: float | None = None) -> None:
        """Stop gracefully: refuse new calls, answer every pending RPC with an
        error, end every worker's stream (UNAVAILABLE) after its queue drains,
        and give calls *grace* seconds (default ``grace_period``) before
        cancelling what is left. Returns when the server has stopped."""
        self._hub.begin_shutdown()
        await self._server.shutdown(self.grace_period if grace is None else grace)


async def serve_gateway(
    address: str,
    *,
    task_status: trio.TaskStatus[Gateway] = trio.TASK_STATUS_IGNORED,
    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
    rpc_timeout: float | None = 300.0,
    grace_period: float = 5.0,
    queue_size: int = 100,
    max_in_flight: int = 1000,
    send_timeout: float = 30.0,
) -> None:
    """Run an AutoGen-compatible gateway on *address* (``host:port``,
    ``localhost:PORT``, ``[::1]:PORT``; port 0 picks a free one).

    ``task_status.started(gateway)`` reports the :class:`Gateway` once it
    listens. Returns after ``gateway.shutdown()``. Cancelling it stops at once:
    connections are dropped without answers (use ``shutdown`` to be polite).
    See :class:`GatewayConfig` for ``rpc_timeout``, ``queue_size``,
    ``max_in_flight`` and ``send_timeout``.
    """
    host, port = parse_address(address)
    config = GatewayConfig(
        rpc_timeout=rpc_timeout,
        queue_size=queue_size,
        max_in_flight=max_in_flight,
        send_timeout=send_timeout,
    )
    async with open_hub(config) as hub, trio.open_nursery() as nursery:
        service = AgentRpcService(hub)
        server: GrpcServer = await nursery.start(
            functools.partial(
                serve_grpc,
                service.methods(),
                host,
                port,
                max_message_size=max_message_size,
                grace_period=grace_period,
            )
        )
        gateway = Gateway(server, hub, grace_period)
        logger.info("gateway listening on %s", gateway.address)
        task_status.started(gateway)


@asynccontextmanager
async def open_gateway(
    address: str = "127.0.0.1:0",
    *,
    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
    rpc_timeout: float | None = 300.0,
    grace_period: float = 5.0,
    queue_size: int = 100,
    max_in_flight: int = 1000,
    send_timeout: float = 30.0,
) -> AsyncIterator[Gateway]:
    """Run a gateway for the duration of the block::

        async with agentwire.open_gateway("127.0.0.1:0") as gw:
            print(gw.address)

    Leaving the block normally shuts down gracefully (``grace_period``);
    leaving it with an exception stops the gateway at once and re-raises.
    """
    serve = functools.partial(
        serve_gateway,
        address,
        max_message_size=max_message_size,
        rpc_timeout=rpc_timeout,
        grace_period=grace_period,
        queue_size=queue_size,
        max_in_flight=max_in_flight,
        send_timeout=send_timeout,
    )
    body_error: BaseException | None = None
    async with trio.open_nursery() as nursery:
        gateway: Gateway = await nursery.start(serve)
        try:
            yield gateway
        except BaseException as exc:
            body_error = exc
            nursery.cancel_scope.cancel()
        else:
            await gateway.shutdown()
    if body_error is not None:
        raise body_error
