"""``serve_gateway`` / ``open_gateway``: the hub plus the AgentRpc service on a socket."""

from __future__ import annotations

import functools
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import trio

from .._address import parse_address
from .._nursery import open_service_nursery, open_unwrapping_nursery
from .._transport import GrpcServer, serve_grpc
from .._wire import DEFAULT_MAX_MESSAGE_SIZE
from ._hub import GatewayConfig, GatewayHub, GatewayStatistics, open_hub
from ._placement import PlacementStrategy
from ._service import AgentRpcService

__all__ = ["DEFAULT_MAX_MESSAGE_SIZE", "Gateway", "open_gateway", "serve_gateway"]

logger = logging.getLogger("agentwire.gateway")


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
    rpc_burst: int = 8,
    registration_grace: float | None = 30.0,
    max_agent_types_per_client: int = 1000,
    max_subscriptions_per_client: int = 10_000,
    startup_grace: float = 5.0,
    max_held: int = 1000,
    placement: str | PlacementStrategy | None = None,
    max_placed_keys: int = 1_000_000,
) -> None:
    """Run an AutoGen-compatible gateway on *address* (``host:port``,
    ``localhost:PORT``, ``[::1]:PORT``; port 0 picks a free one; an invalid
    one raises :class:`~agentwire._address.InvalidAddressError`).

    ``task_status.started(gateway)`` reports the :class:`Gateway` once it
    listens. Returns after ``gateway.shutdown()``. Cancelling it stops at once:
    connections are dropped without answers (use ``shutdown`` to be polite).
    See :class:`GatewayConfig` for the other options (``placement``: shared
    agent types, see the README). A lone failure (e.g.
    the ``OSError`` of a port in use) comes out bare, not in a group.
    """
    host, port = parse_address(address)
    config = GatewayConfig(
        rpc_timeout=rpc_timeout,
        queue_size=queue_size,
        max_in_flight=max_in_flight,
        send_timeout=send_timeout,
        rpc_burst=rpc_burst,
        max_message_size=max_message_size,
        registration_grace=registration_grace,
        max_agent_types_per_client=max_agent_types_per_client,
        max_subscriptions_per_client=max_subscriptions_per_client,
        startup_grace=startup_grace,
        max_held=max_held,
        placement=placement,
        max_placed_keys=max_placed_keys,
    )
    async with open_hub(config) as hub, open_unwrapping_nursery() as nursery:
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
    rpc_burst: int = 8,
    registration_grace: float | None = 30.0,
    max_agent_types_per_client: int = 1000,
    max_subscriptions_per_client: int = 10_000,
    startup_grace: float = 5.0,
    max_held: int = 1000,
    placement: str | PlacementStrategy | None = None,
    max_placed_keys: int = 1_000_000,
) -> AsyncIterator[Gateway]:
    """Run a gateway for the duration of the block::

        async with agentwire.open_gateway("127.0.0.1:0") as gw:
            print(gw.address)

    Leaving the block normally shuts down gracefully (``grace_period``);
    leaving it with an exception stops the gateway at once and re-raises.
    The options are :func:`serve_gateway`'s.
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
        rpc_burst=rpc_burst,
        registration_grace=registration_grace,
        max_agent_types_per_client=max_agent_types_per_client,
        max_subscriptions_per_client=max_subscriptions_per_client,
        startup_grace=startup_grace,
        max_held=max_held,
        placement=placement,
        max_placed_keys=max_placed_keys,
    )
    async with open_service_nursery() as services:
        gateway: Gateway = await services.start(serve)
        yield gateway
        await gateway.shutdown()
