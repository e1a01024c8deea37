"""Transport benchmark: one bidi stream, 100-byte messages, three patterns.

agentwire's trio transport (client and server) against plain asyncio grpclib
(client and server) and grpcio's asyncio API (client and server), in the same
run. Each server runs in its own subprocess and the client here, or, with
``--inproc``, both in one process and event loop.

    /work/venv/bin/python benchmarks/transport.py [--seconds S] [--rounds R]
        [--only agentwire,grpclib,grpcio] [--profile agentwire] [--inproc]

Patterns:
  ping-pong   send one message, wait for its echo, repeat       (round trips/s)
  64 in flight keep 64 messages outstanding on the echo stream  (round trips/s)
  one-way     stream messages to a sink that counts them        (messages/s)

Each figure is the median of ``--rounds`` runs of about ``--seconds`` each.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

PAYLOAD = b"x" * 100
IN_FLIGHT = 64
ECHO = "/bench.Bench/Echo"
SINK = "/bench.Bench/Sink"
IMPLEMENTATIONS = ("agentwire", "grpclib", "grpcio")
PATTERNS = ("ping-pong rt/s", "64 in flight rt/s", "one-way msg/s")
Results = dict[str, float]


# -- servers (run in a subprocess, print the port, serve until killed) -----------


def serve_agentwire(inproc_seconds: float | None = None) -> Results | None:
    import trio

    from agentwire._transport import ServerStream, bidi, serve_grpc

    async def echo(stream: ServerStream) -> None:
        while (message := await stream.receive()) is not None:
            await stream.send(message)

    async def sink(stream: ServerStream) -> None:
        count = 0
        while await stream.receive() is not None:
            count += 1
        await stream.send(str(count).encode())

    async def main() -> Results | None:
        methods = {ECHO: bidi(echo), SINK: bidi(sink)}
        async with trio.open_nursery() as nursery:
            server = await nursery.start(serve_grpc, methods, "127.0.0.1", 0)
            if inproc_seconds is None:
                print(server.port, flush=True)
                return None
            result = await _agentwire_patterns(server.address, inproc_seconds)
            nursery.cancel_scope.cancel()
            return result
        return None

    return trio.run(main)


class _RawCodec:
    __content_subtype__ = "proto"

    def encode(self, message: Any, message_type: Any) -> bytes:
        return bytes(message)

    def decode(self, data: bytes, message_type: Any) -> Any:
        return data


def serve_grpclib(inproc_seconds: float | None = None) -> Results | None:
    from grpclib.const import Cardinality, Handler
    from grpclib.server import Server, Stream

    class Service:
        def __mapping__(self) -> dict[str, Handler]:
            bidi = Cardinality.STREAM_STREAM
            return {
                ECHO: Handler(self.echo, bidi, None, None),
                SINK: Handler(self.sink, bidi, None, None),
            }

        async def echo(self, stream: Stream[bytes, bytes]) -> None:
            while (message := await stream.recv_message()) is not None:
                await stream.send_message(message)

        async def sink(self, stream: Stream[bytes, bytes]) -> None:
            count = 0
            while await stream.recv_message() is not None:
                count += 1
            await stream.send_message(str(count).encode())

    async def main() -> Results | None:
        server = Server([Service()], codec=_RawCodec())  # type: ignore[arg-type]
        await server.start("127.0.0.1", 0)
        assert server._server is not None
        port = server._server.sockets[0].getsockname()[1]
        if inproc_seconds is None:
            print(port, flush=True)
            await server.wait_closed()
            return None
        result = await _grpclib_patterns(f"127.0.0.1:{port}", inproc_seconds)
        server.close()
        await server.wait_closed()
        return result

    return asyncio.run(main())


def serve_grpcio(inproc_seconds: float | None = None) -> Results | None:
    import grpc

    async def echo(requests: Any, context: Any) -> Any:
        async for message in requests:
            yield message

    async def sink(requests: Any, context: Any) -> Any:
        count = 0
        async for _ in requests:
            count += 1
        yield str(count).encode()

    async def main() -> Results | None:
        handler = grpc.method_handlers_generic_handler(
            "bench.Bench",
            {
                "Echo": grpc.stream_stream_rpc_method_handler(echo),
                "Sink": grpc.stream_stream_rpc_method_handler(sink),
            },
        )
        server = grpc.aio.server()
        server.add_generic_rpc_handlers((handler,))
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        if inproc_seconds is None:
            print(port, flush=True)
            await server.wait_for_termination()
            return None
        result = await _grpcio_patterns(f"127.0.0.1:{port}", inproc_seconds)
        await server.stop(None)
        return result

    return asyncio.run(main())


SERVERS: dict[str, Callable[[float | None], Results | None]] = {
    "agentwire": serve_agentwire,
    "grpclib": serve_grpclib,
    "grpcio": serve_grpcio,
}


# -- clients --------------------------------------------------------------------


def client_agentwire(address: str, seconds: float) -> Results:
    import trio

    return trio.run(_agentwire_patterns, address, seconds)


async def _agentwire_patterns(address: str, seconds: float) -> Results:
    import trio

    from agentwire._transport import open_channel

    async def ping_pong() -> float:
        async with open_channel(address) as channel, channel.stream(ECHO) as stream:
            count = 0
            start = time.perf_counter()
            deadline = start + seconds
            while True:
                for _ in range(100):
                    await stream.send(PAYLOAD)
                    await stream.receive()
                count += 100
                now = time.perf_counter()
                if now >= deadline:
                    return count / (now - start)

    async def pipelined() -> float:
        async with open_channel(address) as channel, channel.stream(ECHO) as stream:
            slots = trio.Semaphore(IN_FLIGHT)
            received = 0
            stop = False
            start = time.perf_counter()
            deadline = start + seconds

            async def sender() -> None:
                while not stop:
                    # like asyncio.Semaphore: only yield when there is no slot
                    try:
                        slots.acquire_nowait()
                    except trio.WouldBlock:
                        await slots.acquire()
                    await stream.send(PAYLOAD)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(sender)
                while True:
                    await stream.receive()
                    slots.release()
                    received += 1
                    if received % 500 == 0 and time.perf_counter() >= deadline:
                        elapsed = time.perf_counter() - start
                        stop = True
                        nursery.cancel_scope.cancel()
                        return received / elapsed
            raise AssertionError("unreachable")

    async def one_way() -> float:
        count = _one_way_count(seconds)
        async with open_channel(address) as channel, channel.stream(SINK) as stream:
            start = time.perf_counter()
            for _ in range(count):
                await stream.send(PAYLOAD)
            await stream.end()
            reply = await stream.receive()
            elapsed = time.perf_counter() - start
            assert reply == str(count).encode(), reply
            return count / elapsed

    return {
        PATTERNS[0]: await ping_pong(),
        PATTERNS[1]: await pipelined(),
        PATTERNS[2]: await one_way(),
    }


def _one_way_count(seconds: float) -> int:
    return max(1000, int(40_000 * seconds))


def client_grpclib(address: str, seconds: float) -> Results:
    return asyncio.run(_grpclib_patterns(address, seconds))


async def _grpclib_patterns(address: str, seconds: float) -> Results:
    from grpclib.client import Channel
    from grpclib.const import Cardinality

    host, _, port = address.rpartition(":")
    bidi = Cardinality.STREAM_STREAM

    async def ping_pong(channel: Channel) -> float:
        async with channel.request(ECHO, bidi, None, None) as stream:
            count = 0
            start = time.perf_counter()
            deadline = start + seconds
            while True:
                for _ in range(100):
                    await stream.send_message(PAYLOAD)
                    await stream.recv_message()
                count += 100
                now = time.perf_counter()
                if now >= deadline:
                    await stream.cancel()
                    return count / (now - start)

    async def pipelined(channel: Channel) -> float:
        async with channel.request(ECHO, bidi, None, None) as stream:
            await stream.send_request()
            slots = asyncio.Semaphore(IN_FLIGHT)
            received = 0
            start = time.perf_counter()
            deadline = start + seconds

            async def sender() -> None:
                while True:
                    await slots.acquire()
                    await stream.send_message(PAYLOAD)

            task = asyncio.ensure_future(sender())
            try:
                while True:
                    await stream.recv_message()
                    slots.release()
                    received += 1
                    if received % 500 == 0 and time.perf_counter() >= deadline:
                        return received / (time.perf_counter() - start)
            finally:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
                await stream.cancel()

    async def one_way(channel: Channel) -> float:
        count = _one_way_count(seconds)
        async with channel.request(SINK, bidi, None, None) as stream:
            start = time.perf_counter()
            for _ in range(count):
                await stream.send_message(PAYLOAD)
            await stream.end()
            reply = await stream.recv_message()
            elapsed = time.perf_counter() - start
            assert reply == str(count).encode(), reply
            return count / elapsed

    results = {}
    for name, pattern in zip(PATTERNS, (ping_pong, pipelined, one_way), strict=True):
        channel = Channel(host, int(port), codec=_RawCodec())  # type: ignore[arg-type]
        try:
            results[name] = await pattern(channel)
        finally:
            channel.close()
    return results


def client_grpcio(address: str, seconds: float) -> Results:
    return asyncio.run(_grpcio_patterns(address, seconds))


async def _grpcio_patterns(address: str, seconds: float) -> Results:
    import grpc

    async def ping_pong(channel: Any) -> float:
        call = channel.stream_stream(ECHO)()
        count = 0
        start = time.perf_counter()
        deadline = start + seconds
        while True:
            for _ in range(100):
                await call.write(PAYLOAD)
                await call.read()
            count += 100
            now = time.perf_counter()
            if now >= deadline:
                call.cancel()
                return count / (now - start)

    async def pipelined(channel: Any) -> float:
        call = channel.stream_stream(ECHO)()
        slots = asyncio.Semaphore(IN_FLIGHT)
        received = 0
        start = time.perf_counter()
        deadline = start + seconds

        async def sender() -> None:
            while True:
                await slots.acquire()
                await call.write(PAYLOAD)

        task = asyncio.ensure_future(sender())
        try:
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

    async def one_way(channel: Any) -> float:
        count = _one_way_count(seconds)
        call = channel.stream_stream(SINK)()
        start = time.perf_counter()
        for _ in range(count):
            await call.write(PAYLOAD)
        await call.done_writing()
        reply = await call.read()
        elapsed = time.perf_counter() - start
        assert reply == str(count).encode(), reply
        return count / elapsed

    results = {}
    for name, pattern in zip(PATTERNS, (ping_pong, pipelined, one_way), strict=True):
        async with grpc.aio.insecure_channel(address) as channel:
            results[name] = await pattern(channel)
    return results


CLIENTS: dict[str, Callable[[str, float], Results]] = {
    "agentwire": client_agentwire,
    "grpclib": client_grpclib,
    "grpcio": client_grpcio,
}


# -- driver -------------------------------------------------------------------------


def _start_server(impl: str) -> tuple[subprocess.Popen[bytes], str]:
    process = subprocess.Popen([sys.executable, __file__, "--serve", impl], stdout=subprocess.PIPE)
    assert process.stdout is not None
    line = process.stdout.readline()
    if not line:
        process.kill()
        raise RuntimeError(f"{impl} server did not start")
    return process, f"127.0.0.1:{int(line)}"


def _run_client(impl: str, address: str, seconds: float, profile: bool) -> Results:
    if not profile:
        return CLIENTS[impl](address, seconds)
    import cProfile
    import pstats

    profiler = cProfile.Profile()
    result = profiler.runcall(CLIENTS[impl], address, seconds)
    pstats.Stats(profiler).sort_stats("tottime").print_stats(30)
    return result


def _measure(
    impls: list[str], seconds: float, rounds: int, profile: str | None, inproc: bool
) -> dict[str, Results]:
    """Rounds go round-robin over the implementations so that noise hits all alike."""
    servers = {} if inproc else {impl: _start_server(impl) for impl in impls}
    try:
        runs: dict[str, list[Results]] = {impl: [] for impl in impls}
        for round_ in range(rounds):
            for impl in impls:
                if inproc:
                    result = SERVERS[impl](seconds)
                    assert result is not None
                else:
                    result = _run_client(impl, servers[impl][1], seconds, profile == impl)
                runs[impl].append(result)
                figures = ", ".join(f"{k} {v:,.0f}" for k, v in result.items())
                print(f"round {round_ + 1} {impl}: {figures}", flush=True)
        return {
            impl: {name: statistics.median(run[name] for run in runs[impl]) for name in PATTERNS}
            for impl in impls
        }
    finally:
        for process, _ in servers.values():
            process.kill()
            process.wait()


def _table(results: dict[str, Results]) -> str:
    header = "| one bidi stream, 100 B payload | " + " | ".join(PATTERNS) + " |"
    lines = [header, "|---" * (len(PATTERNS) + 1) + "|"]
    labels = {
        "agentwire": "agentwire (trio, h2) client + server",
        "grpclib": "grpclib (asyncio) client + server",
        "grpcio": "grpcio (grpc.aio) client + server",
    }
    for impl, figures in results.items():
        cells = " | ".join(f"{figures[name]:,.0f}" for name in PATTERNS)
        lines.append(f"| {labels[impl]} | {cells} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--serve", choices=IMPLEMENTATIONS, help=argparse.SUPPRESS)
    parser.add_argument("--seconds", type=float, default=1.5, help="length of one run")
    parser.add_argument("--rounds", type=int, default=3, help="runs per figure (median)")
    parser.add_argument("--only", default=",".join(IMPLEMENTATIONS), help="implementations")
    parser.add_argument("--profile", choices=IMPLEMENTATIONS, help="cProfile this client")
    parser.add_argument(
        "--inproc", action="store_true", help="client and server in one process and event loop"
    )
    args = parser.parse_args()
    if args.serve:
        SERVERS[args.serve](None)
        return
    impls = args.only.split(",")
    results = _measure(impls, args.seconds, args.rounds, args.profile, args.inproc)
    print()
    where = "one process, one event loop" if args.inproc else "server in a subprocess"
    print(f"({where}; median of {args.rounds} rounds of {args.seconds:g} s)")
    print(_table(results))


if __name__ == "__main__":
    main()
