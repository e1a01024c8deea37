"""A loopback TCP proxy whose connections a test can cut (a simulated network failure)."""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio


class CuttableProxy:
    """Forwards ``127.0.0.1:<port>`` to ``target``; :meth:`cut` closes every socket."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target_host = target_host
        self.target_port = target_port
        self.port = 0
        self.connections = 0
        self._scopes: list[trio.CancelScope] = []
        self._streams: list[trio.abc.Stream] = []
        self.refuse = False

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def cut(self) -> None:
        """Close both sides of every open connection, abruptly."""
        for stream in self._streams:
            await trio.aclose_forcefully(stream)
        for scope in self._scopes:
            scope.cancel()
        self._streams.clear()
        self._scopes.clear()

    async def _pipe(self, source: trio.abc.Stream, sink: trio.abc.Stream) -> None:
        try:
            async for chunk in source:
                await sink.send_all(chunk)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            await trio.aclose_forcefully(sink)

    async def _handle(self, client: trio.SocketStream) -> None:
        if self.refuse:
            await trio.aclose_forcefully(client)
            return
        try:
            upstream = await trio.open_tcp_stream(self.target_host, self.target_port)
        except OSError:
            await trio.aclose_forcefully(client)
            return
        self.connections += 1
        with trio.CancelScope() as scope:
            self._scopes.append(scope)
            self._streams.extend([client, upstream])
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._pipe, client, upstream)
                nursery.start_soon(self._pipe, upstream, client)


@asynccontextmanager
async def open_proxy(target: str) -> AsyncIterator[CuttableProxy]:
    host, _, port = target.rpartition(":")
    proxy = CuttableProxy(host, int(port))
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(
            functools.partial(trio.serve_tcp, proxy._handle, 0, host="127.0.0.1")
        )
        proxy.port = listeners[0].socket.getsockname()[1]
        try:
            yield proxy
        finally:
            nursery.cancel_scope.cancel()
