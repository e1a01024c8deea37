"""An in-memory stand-in for a transport channel, driven by the test as the "server".

Every unary call and stream opened through a :class:`FakeChannel` is recorded
in order (path and metadata), so tests can check what a worker sends and in
which order without sockets. Streams are pairs of bounded memory channels; the
test plays the gateway through :class:`ServerEnd`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any

import attrs
import trio
from grpclib.const import Status
from grpclib.exceptions import GRPCError


@attrs.define
class Call:
    path: str
    metadata: dict[str, str]
    request: bytes | None = None


class BrokenWrite(Exception):
    """What a fake stream raises when the test breaks its write side."""


class ClientEnd:
    def __init__(self, end: ServerEnd) -> None:
        self._end = end

    async def send(self, message: bytes) -> None:
        if self._end.fail_writes_after is not None:
            if self._end.fail_writes_after <= 0:
                raise BrokenWrite("write failed")
            self._end.fail_writes_after -= 1
        await self._end.to_server_send.send(message)

    async def receive(self) -> bytes | None:
        try:
            item = await self._end.to_client_recv.receive()
        except trio.EndOfChannel:
            return None
        if isinstance(item, BaseException):
            raise item
        return item


class ServerEnd:
    """The gateway's side of one fake stream."""

    def __init__(self, path: str, metadata: dict[str, str], buffer: int) -> None:
        self.path = path
        self.metadata = metadata
        self.to_server_send, self.to_server_recv = trio.open_memory_channel[bytes](buffer)
        self.to_client_send, self.to_client_recv = trio.open_memory_channel[bytes | BaseException](
            buffer
        )
        self.fail_writes_after: int | None = None
        self.cancelled = trio.Event()

    async def send(self, message: bytes) -> None:
        await self.to_client_send.send(message)

    async def receive(self) -> bytes:
        return await self.to_server_recv.receive()

    async def end(self) -> None:
        await self.to_client_send.aclose()

    async def fail(self, error: BaseException) -> None:
        await self.to_client_send.send(error)


class FakeChannel:
    """Records calls; unary calls are answered by ``unary_handler``."""

    def __init__(
        self,
        unary_handler: Callable[[str, bytes, dict[str, str]], bytes] | None = None,
        *,
        buffer: int = 1000,
    ) -> None:
        self.calls: list[Call] = []
        self.streams: list[ServerEnd] = []
        self._unary_handler = unary_handler
        self._buffer = buffer
        self.stream_opened = trio.Event()

    async def unary(
        self,
        path: str,
        request: bytes,
        *,
        metadata: Sequence[tuple[str, str]] = (),
        timeout: float | None = None,  # noqa: ASYNC109
    ) -> bytes:
        md = dict(metadata)
        self.calls.append(Call(path, md, request))
        await trio.lowlevel.checkpoint()
        if self._unary_handler is None:
            return b""
        return self._unary_handler(path, request, md)

    @asynccontextmanager
    async def _stream(self, path: str, metadata: Sequence[tuple[str, str]]) -> AsyncIterator[Any]:
        md = dict(metadata)
        self.calls.append(Call(path, md))
        end = ServerEnd(path, md, self._buffer)
        self.streams.append(end)
        self.stream_opened.set()
        try:
            yield ClientEnd(end)
        finally:
            end.cancelled.set()
            end.to_server_send.close()

    def stream(
        self,
        path: str,
        *,
        metadata: Sequence[tuple[str, str]] = (),
        timeout: float | None = None,
    ) -> Any:
        return self._stream(path, metadata)

    def end_for(self, path: str) -> ServerEnd:
        return [s for s in self.streams if s.path == path][-1]


def reject(status: Status, message: str) -> GRPCError:
    return GRPCError(status, message)
