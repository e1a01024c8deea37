"""A grpcio (grpc.aio) test peer with raw-bytes handlers: no generated stubs.

``python peer_grpcio.py server`` prints the port it listens on, then serves.
``python peer_grpcio.py client ADDRESS SCENARIO...`` runs client scenarios and
prints one JSON object per scenario.
"""

from __future__ import annotations

import asyncio
import json
import sys

import grpc

OPTIONS = [
    ("grpc.max_receive_message_length", 32 * 2**20),
    ("grpc.max_send_message_length", 32 * 2**20),
]


def serve() -> None:
    cancelled = asyncio.Event()
    server: grpc.aio.Server | None = None

    async def echo(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        return request

    async def metadata(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        return dict(context.invocation_metadata()).get("client-id", "").encode()

    async def fail(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        await context.abort(grpc.StatusCode.NOT_FOUND, "no such thing")
        raise AssertionError("unreachable")

    async def bidi_echo(requests, context):  # type: ignore[no-untyped-def]
        async for message in requests:
            yield message

    async def hang(requests, context):  # type: ignore[no-untyped-def]
        yield b"started"
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    async def was_cancelled(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        try:
            await asyncio.wait_for(cancelled.wait(), 10)
        except TimeoutError:
            return b"no"
        return b"yes"

    async def shutdown(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        assert server is not None
        asyncio.get_running_loop().call_soon(lambda: asyncio.ensure_future(server.stop(0.3)))
        return b"ok"

    async def main() -> None:
        nonlocal server
        handler = grpc.method_handlers_generic_handler(
            "test.Test",
            {
                "Echo": grpc.unary_unary_rpc_method_handler(echo),
                "Metadata": grpc.unary_unary_rpc_method_handler(metadata),
                "Fail": grpc.unary_unary_rpc_method_handler(fail),
                "BidiEcho": grpc.stream_stream_rpc_method_handler(bidi_echo),
                "Hang": grpc.stream_stream_rpc_method_handler(hang),
                "WasCancelled": grpc.unary_unary_rpc_method_handler(was_cancelled),
                "Shutdown": grpc.unary_unary_rpc_method_handler(shutdown),
            },
        )
        server = grpc.aio.server(options=OPTIONS)
        server.add_generic_rpc_handlers((handler,))
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        print(port, flush=True)
        await server.wait_for_termination()

    asyncio.run(main())


def _error(exc: grpc.aio.AioRpcError) -> dict[str, object]:
    return {"status": exc.code().value[0], "message": exc.details()}


async def scenario(channel: grpc.aio.Channel, name: str) -> dict[str, object]:
    try:
        if name == "unary":
            return {"result": (await channel.unary_unary("/test.Test/Echo")(b"hello")).decode()}
        if name == "metadata":
            call = channel.unary_unary("/test.Test/Metadata")
            return {"result": (await call(b"", metadata=[("client-id", "abc-123")])).decode()}
        if name == "gzip":
            payload = b"compressible " * 10_000
            call = channel.unary_unary("/test.Test/Echo")
            reply = await call(payload, compression=grpc.Compression.Gzip)
            return {"result": reply == payload}
        if name == "big":
            payload = bytes(range(256)) * (10 * 4096)
            reply = await channel.unary_unary("/test.Test/Echo")(payload)
            return {"result": reply == payload}
        if name == "pingpong":
            call = channel.stream_stream("/test.Test/BidiEcho")()
            replies = []
            for i in range(20):
                await call.write(b"%d" % i)
                replies.append(await call.read())
            await call.done_writing()
            tail = await call.read()
            ok = replies == [b"%d" % i for i in range(20)] and tail is grpc.aio.EOF
            return {"result": ok, "code": (await call.code()).value[0]}
        if name == "quiet":
            # a call silent for a while (the server pings meanwhile), then more calls
            call = channel.stream_stream("/test.Test/Quiet")()
            replies = [await call.read(), await call.read(), await call.read()]
            echo = await channel.unary_unary("/test.Test/Echo")(b"after")
            ok = replies == [b"started", b"done", grpc.aio.EOF] and echo == b"after"
            return {"result": ok, "code": (await call.code()).value[0]}
        if name == "slow_reader":
            # reads one message, then nothing for a while: the server gives up on it
            call = channel.stream_stream("/test.Test/Flood")()
            received = len(await call.read())
            await asyncio.sleep(3)
            try:
                while (message := await call.read()) is not grpc.aio.EOF:
                    received += len(message)
            except grpc.aio.AioRpcError as exc:
                return {**_error(exc), "received": received > 0}
            return {"result": "no error"}
        if name == "error":
            await channel.unary_unary("/test.Test/Fail")(b"")
            return {"result": "no error"}
        if name == "unimplemented":
            await channel.unary_unary("/test.Test/Nope")(b"")
            return {"result": "no error"}
        if name == "deadline":
            call = channel.stream_stream("/test.Test/Hang")(timeout=0.5)
            assert await call.read() == b"started"
            await call.read()
            return {"result": "no error"}
        if name == "cancel":
            call = channel.stream_stream("/test.Test/Hang")()
            assert await call.read() == b"started"
            call.cancel()
            reply = await channel.unary_unary("/test.Test/WasCancelled")(b"")
            return {"result": reply.decode()}
        if name == "shutdown":
            call = channel.stream_stream("/test.Test/BidiEcho")()
            await call.write(b"before")
            assert await call.read() == b"before"
            await channel.unary_unary("/test.Test/Shutdown")(b"")
            try:
                while True:
                    await call.write(b"x")
                    if await call.read() is grpc.aio.EOF:
                        break
            except (asyncio.InvalidStateError, grpc.aio.AioRpcError):
                # the call has finished (a write racing its end fails with
                # "Internal error from Core"): the call's status tells how
                pass
            code = await call.code()
            return {"status": code.value[0], "message": await call.details()}
        raise ValueError(name)
    except grpc.aio.AioRpcError as exc:
        return _error(exc)


async def client(address: str, names: list[str]) -> None:
    async with grpc.aio.insecure_channel(address, options=OPTIONS) as channel:
        for name in names:
            print(json.dumps({"scenario": name, **await scenario(channel, name)}), flush=True)


if __name__ == "__main__":
    if sys.argv[1] == "server":
        serve()
    else:
        asyncio.run(client(sys.argv[2], sys.argv[3:]))
