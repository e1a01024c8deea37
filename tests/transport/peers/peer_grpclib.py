"""A grpclib (asyncio) test peer with raw-bytes handlers: no generated stubs.

``python peer_grpclib.py server`` prints the port it listens on, then serves.
``python peer_grpclib.py client ADDRESS SCENARIO...`` runs client scenarios and
prints one JSON object per scenario.
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

from grpclib.client import Channel
from grpclib.const import Cardinality, Handler, Status
from grpclib.encoding.base import CodecBase
from grpclib.exceptions import GRPCError, StreamTerminatedError
from grpclib.server import Server, Stream


class RawCodec(CodecBase):
    """Messages are bytes already."""

    __content_subtype__ = "proto"

    def encode(self, message: Any, message_type: Any) -> bytes:
        return bytes(message)

    def decode(self, data: bytes, message_type: Any) -> Any:
        return data


class Service:
    def __init__(self) -> None:
        self.cancelled = asyncio.Event()
        self.server: Server | None = None

    def __mapping__(self) -> dict[str, Handler]:
        unary, bidi = Cardinality.UNARY_UNARY, Cardinality.STREAM_STREAM
        return {
            "/test.Test/Echo": Handler(self.echo, unary, None, None),
            "/test.Test/Metadata": Handler(self.metadata, unary, None, None),
            "/test.Test/Fail": Handler(self.fail, unary, None, None),
            "/test.Test/BidiEcho": Handler(self.bidi_echo, bidi, None, None),
            "/test.Test/Hang": Handler(self.hang, bidi, None, None),
            "/test.Test/WasCancelled": Handler(self.was_cancelled, unary, None, None),
            "/test.Test/Shutdown": Handler(self.shutdown, unary, None, None),
        }

    async def echo(self, stream: Stream[bytes, bytes]) -> None:
        await stream.send_message(await stream.recv_message())

    async def metadata(self, stream: Stream[bytes, bytes]) -> None:
        await stream.recv_message()
        assert stream.metadata is not None
        await stream.send_message(str(stream.metadata.get("client-id", "")).encode())

    async def fail(self, stream: Stream[bytes, bytes]) -> None:
        await stream.recv_message()
        raise GRPCError(Status.NOT_FOUND, "no such thing")

    async def bidi_echo(self, stream: Stream[bytes, bytes]) -> None:
        async for message in stream:
            await stream.send_message(message)

    async def hang(self, stream: Stream[bytes, bytes]) -> None:
        await stream.send_message(b"started")
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.cancelled.set()
            raise

    async def was_cancelled(self, stream: Stream[bytes, bytes]) -> None:
        await stream.recv_message()
        try:
            await asyncio.wait_for(self.cancelled.wait(), 10)
        except TimeoutError:
            await stream.send_message(b"no")
        else:
            await stream.send_message(b"yes")

    async def shutdown(self, stream: Stream[bytes, bytes]) -> None:
        await stream.recv_message()
        await stream.send_message(b"ok")
        assert self.server is not None
        asyncio.get_running_loop().call_later(0.3, self.server.close)


def serve() -> None:
    async def main() -> None:
        service = Service()
        server = Server([service], codec=RawCodec())
        service.server = server
        await server.start("127.0.0.1", 0)
        assert server._server is not None
        print(server._server.sockets[0].getsockname()[1], flush=True)
        await server.wait_closed()

    asyncio.run(main())


async def scenario(channel: Channel, name: str) -> dict[str, object]:
    unary, bidi = Cardinality.UNARY_UNARY, Cardinality.STREAM_STREAM
    try:
        if name == "unary":
            async with channel.request("/test.Test/Echo", unary, None, None) as stream:
                await stream.send_message(b"hello", end=True)
                return {"result": (await stream.recv_message()).decode()}
        if name == "metadata":
            metadata = {"client-id": "abc-123"}
            async with channel.request(
                "/test.Test/Metadata", unary, None, None, metadata=metadata
            ) as stream:
                await stream.send_message(b"", end=True)
                return {"result": (await stream.recv_message()).decode()}
        if name == "big":
            payload = bytes(range(256)) * (10 * 4096)
            async with channel.request("/test.Test/Echo", unary, None, None) as stream:
                await stream.send_message(payload, end=True)
                return {"result": await stream.recv_message() == payload}
        if name == "pingpong":
            async with channel.request("/test.Test/BidiEcho", bidi, None, None) as stream:
                replies = []
                for i in range(20):
                    await stream.send_message(b"%d" % i)
                    replies.append(await stream.recv_message())
                await stream.end()
                tail = await stream.recv_message()
                return {"result": replies == [b"%d" % i for i in range(20)] and tail is None}
        if name in ("error", "unimplemented"):
            path = "/test.Test/Fail" if name == "error" else "/test.Test/Nope"
            async with channel.request(path, unary, None, None) as stream:
                await stream.send_message(b"", end=True)
                await stream.recv_message()
            return {"result": "no error"}
        if name == "deadline":
            async with channel.request("/test.Test/Hang", bidi, None, None, timeout=0.5) as stream:
                await stream.send_request()
                assert await stream.recv_message() == b"started"
                await stream.recv_message()
            return {"result": "no error"}
        if name == "cancel":
            async with channel.request("/test.Test/Hang", bidi, None, None) as stream:
                await stream.send_request()
                assert await stream.recv_message() == b"started"
                await stream.cancel()
            async with channel.request("/test.Test/WasCancelled", unary, None, None) as stream:
                await stream.send_message(b"", end=True)
                return {"result": (await stream.recv_message()).decode()}
        if name == "shutdown":
            async with channel.request("/test.Test/BidiEcho", bidi, None, None) as stream:
                await stream.send_message(b"before")
                assert await stream.recv_message() == b"before"
                async with channel.request("/test.Test/Shutdown", unary, None, None) as call:
                    await call.send_message(b"", end=True)
                    await call.recv_message()
                while True:
                    await stream.send_message(b"x")
                    if await stream.recv_message() is None:
                        break
            return {"result": "no error"}
        raise ValueError(name)
    except GRPCError as exc:
        return {"status": exc.status.value, "message": exc.message}
    except StreamTerminatedError as exc:
        return {"status": Status.UNAVAILABLE.value, "message": f"terminated: {exc}"}
    except TimeoutError:
        return {"status": Status.DEADLINE_EXCEEDED.value, "message": "timeout"}


async def client(address: str, names: list[str]) -> None:
    host, _, port = address.rpartition(":")
    channel = Channel(host, int(port), codec=RawCodec())
    try:
        for name in names:
            print(json.dumps({"scenario": name, **await scenario(channel, name)}), flush=True)
    finally:
        channel.close()


if __name__ == "__main__":
    if sys.argv[1] == "server":
        serve()
    else:
        asyncio.run(client(sys.argv[2], sys.argv[3:]))
