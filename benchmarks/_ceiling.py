"""Ceilings: the fastest a Python-driven gRPC hop, a relayed hop and a socket go here.

``python -m benchmarks._ceiling ROLE`` runs one helper process; ``workload(duration)`` (the
``ceiling`` workload of both sides) spawns them and measures from this process. No agentwire
or AutoGen code runs: plain grpcio (C-core, its asyncio API, generic handlers with raw bytes,
one bidi stream per client) and plain blocking sockets, with the transport workload's 100-byte
message. Three shapes, each between separate processes:

* ``direct``: client -> echo server, one bidi stream;
* ``relay``: client -> relay -> echo server, the relay opening one upstream bidi stream per
  client stream and copying messages both ways (the shape of a gateway between two workers);
* ``socket``: a TCP ping-pong between two processes (``TCP_NODELAY``, ``recv``/``sendall``).

Each gRPC shape is timed sequentially (one message in flight, per-round-trip latencies) and
with ``CONCURRENCY`` messages in flight on the one stream.
"""

from __future__ import annotations

import asyncio
import socket
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

from . import _common as c

_SERVICE, _METHOD = c.ECHO_PATH[1:].split("/")


def _handler(method: Any) -> Any:
    import grpc

    return grpc.method_handlers_generic_handler(
        _SERVICE, {_METHOD: grpc.stream_stream_rpc_method_handler(method)}
    )


async def _serve(method: Any) -> None:
    import grpc

    server = grpc.aio.server()
    server.add_generic_rpc_handlers((_handler(method),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    c.ready(f"127.0.0.1:{port}")
    await server.wait_for_termination()


async def echo_role() -> None:
    async def echo(requests: AsyncIterator[bytes], context: Any) -> AsyncIterator[bytes]:
        async for message in requests:
            yield message

    await _serve(echo)


async def relay_role(upstream: str) -> None:
    """Each client stream gets an upstream stream; messages are copied both ways."""
    import grpc

    channel = grpc.aio.insecure_channel(upstream)
    open_upstream = channel.stream_stream(c.ECHO_PATH)

    async def relay(requests: AsyncIterator[bytes], context: Any) -> None:
        call = open_upstream()

        async def forward() -> None:
            while (message := await context.read()) is not grpc.aio.EOF:
                await call.write(message)
            await call.done_writing()

        task = asyncio.ensure_future(forward())
        try:
            while (message := await call.read()) is not grpc.aio.EOF:
                await context.write(message)
        finally:
            task.cancel()

    await _serve(relay)


def socket_echo_role() -> None:
    with socket.create_server(("127.0.0.1", 0)) as server:
        c.ready(f"127.0.0.1:{server.getsockname()[1]}")
        conn, _ = server.accept()
        with conn:
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            while data := conn.recv(65536):
                conn.sendall(data)


async def _sequential(address: str, seconds: float) -> tuple[float, list[int]]:
    import grpc

    async with grpc.aio.insecure_channel(address) as channel:
        call = channel.stream_stream(c.ECHO_PATH)()

        async def round_trip() -> None:
            await call.write(c.TRANSPORT_PAYLOAD)
            await call.read()

        for _ in range(200):  # warm-up: connection, stream, caches
            await round_trip()
        samples: list[int] = []
        started = time.perf_counter()
        count = await c.sequential_loop(round_trip, seconds, samples)
        elapsed = time.perf_counter() - started
        call.cancel()
    return count / elapsed, samples


async def pipelined(call: Any, seconds: float, in_flight: int, warm_up: int = 0) -> float:
    """Round trips per second on one grpcio stream with ``in_flight`` messages outstanding
    (after ``warm_up`` answers); the call is cancelled at the end."""
    slots = asyncio.Semaphore(in_flight)

    async def sender() -> None:
        while True:
            await slots.acquire()
            await call.write(c.TRANSPORT_PAYLOAD)

    task = asyncio.ensure_future(sender())
    try:
        for _ in range(warm_up):
            await call.read()
            slots.release()
        received = 0
        start = time.perf_counter()
        deadline = start + seconds
        while True:
            await call.read()
            slots.release()
            received += 1
            if received % 500 == 0 and time.perf_counter() >= deadline:
                return received / (time.perf_counter() - start)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        call.cancel()


async def _concurrent(address: str, seconds: float) -> float:
    """Round trips per second with ``CONCURRENCY`` messages outstanding on one stream."""
    import grpc

    async with grpc.aio.insecure_channel(address) as channel:
        call = channel.stream_stream(c.ECHO_PATH)()
        return await pipelined(call, seconds, c.CONCURRENCY, warm_up=500)


async def _socket_ping_pong(address: str, seconds: float) -> tuple[float, list[int]]:
    host, port = address.rsplit(":", 1)
    with socket.create_connection((host, int(port))) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        size = len(c.TRANSPORT_PAYLOAD)

        async def round_trip() -> None:  # blocking: nothing else runs meanwhile
            sock.sendall(c.TRANSPORT_PAYLOAD)
            got = 0
            while got < size:
                got += len(sock.recv(size - got))

        for _ in range(200):
            await round_trip()
        samples: list[int] = []
        started = time.perf_counter()
        count = await c.sequential_loop(round_trip, seconds, samples)
        elapsed = time.perf_counter() - started
    return count / elapsed, samples


def _grpc_figures(prefix: str, address: str, seconds: float) -> dict[str, float]:
    seq_rate, samples = asyncio.run(_sequential(address, seconds))
    return {
        f"{prefix}_seq_rt_per_s": c.rate(int(seq_rate * 1000), 1000.0),
        **c.latency_summary(f"{prefix}_seq", samples),
        f"{prefix}_conc_rt_per_s": round(asyncio.run(_concurrent(address, seconds)), 1),
    }


def workload(duration: float) -> dict[str, float]:
    me = [sys.executable, "-m", "benchmarks._ceiling"]
    with c.Helper([*me, "echo"]) as echo:
        upstream = echo.start()
        with c.Helper([*me, "relay", upstream]) as relay:
            relayed = relay.start()
            result = _grpc_figures("direct", upstream, duration)
            result.update(_grpc_figures("relay", relayed, duration))
    with c.Helper([*me, "socket-echo"]) as peer:
        rate, samples = asyncio.run(_socket_ping_pong(peer.start(), duration))
    result["socket_rt_per_s"] = round(rate, 1)
    result.update(c.latency_summary("socket", samples))
    return result


def main() -> None:
    role = sys.argv[1]
    match role:
        case "echo":
            asyncio.run(echo_role())
        case "relay":
            asyncio.run(relay_role(sys.argv[2]))
        case "socket-echo":
            socket_echo_role()
        case _:
            raise SystemExit(f"unknown role {role!r}")


if __name__ == "__main__":
    main()
