"""A second, plaintext listener on a loopback address for a server that
speaks TLS elsewhere: for peers that can only dial plaintext (AutoGen 0.7.5
workers use ``grpc.insecure_channel``) running on the same machine.

Connections accepted here are served by the same server (same methods, same
routing, same limits and shutdown) as the TLS ones. Only loopback addresses
are accepted, so the plaintext never leaves the machine.
"""

from __future__ import annotations

import logging
from typing import Protocol

import trio

from .._address import parse_address
from .._errors import AgentwireError
from ._auth import is_loopback_host

__all__ = ["PlaintextListenerError", "serve_loopback_listener"]

logger = logging.getLogger("agentwire.security")


class PlaintextListenerError(AgentwireError, ValueError):
    """The plaintext listener's address is not a loopback address."""


class _Server(Protocol):
    max_connections: int

    async def serve_connection(self, stream: trio.abc.Stream) -> None: ...

    def statistics(self) -> object: ...


def check_loopback_address(address: str) -> tuple[str, int]:
    """``(host, port)`` of *address*, which must be a loopback one."""
    host, port = parse_address(address)
    if not is_loopback_host(host):
        raise PlaintextListenerError(
            f"the plaintext listener must be on a loopback address (127.0.0.1:PORT, "
            f"[::1]:PORT or localhost:PORT), not {address!r}: plaintext must not leave "
            "the machine; give remote workers TLS"
        )
    return host, port


async def serve_loopback_listener(
    server: _Server,
    address: str,
    handler_nursery: trio.Nursery,
    *,
    task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Accept plaintext connections on loopback *address* for *server* until
    cancelled. ``task_status.started("host:port")`` once listening. Each
    connection is served in *handler_nursery*, so cancelling this task stops
    accepting while open connections go on until the server shuts down.
    """
    host, port = check_loopback_address(address)
    listeners = await trio.open_tcp_listeners(port, host=host)
    bound = listeners[0].socket.getsockname()
    shown = f"[{bound[0]}]:{bound[1]}" if ":" in bound[0] else f"{bound[0]}:{bound[1]}"

    async def handle(stream: trio.abc.Stream) -> None:
        connections = getattr(server.statistics(), "connections", 0)
        if connections >= server.max_connections:
            logger.warning("refusing a plaintext connection: %d connections open", connections)
            await trio.aclose_forcefully(stream)
            return
        await server.serve_connection(stream)

    logger.info("plaintext loopback listener on %s", shown)
    await trio.serve_listeners(
        handle, listeners, handler_nursery=handler_nursery, task_status=_Started(task_status, shown)
    )


class _Started:
    """Report *value* instead of the listeners ``trio.serve_listeners`` reports."""

    def __init__(self, task_status: trio.TaskStatus[str], value: str) -> None:
        self._task_status = task_status
        self._value = value

    def started(self, value: object = None) -> None:
        self._task_status.started(self._value)
