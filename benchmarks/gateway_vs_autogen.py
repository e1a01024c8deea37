"""AutoGen 0.7.5 workers through the agentwire gateway vs through AutoGen's own host.

Same clients on both sides: an AutoGen ``GrpcWorkerAgentRuntime`` echo worker
(its own process) and an AutoGen caller (this process). Only the host differs:

* ``agentwire``: ``python -m agentwire gateway`` (a subprocess);
* ``autogen``: ``GrpcWorkerAgentRuntimeHost`` (a subprocess).

Measured: sequential RPC round trips per second (and median latency), and
RPCs per second with 100 in flight. The hosts alternate for ``--rounds``
rounds; medians are reported. Needs an interpreter with both agentwire and
``autogen-ext[grpc]==0.7.5``::

    python benchmarks/gateway_vs_autogen.py [--seconds 3] [--rounds 3] [--json out.json]

Measured on the 2-core dev machine (loopback, 100-byte payload, medians of
3-5 rounds, other jobs running, so noisy): sequential 750-850 RPC/s through
agentwire vs 920-1050 through AutoGen's host (0.8x; median round trip
1.1-1.2 ms vs 0.9-1.0 ms); with 100 in flight 1,700-2,300 RPC/s vs
1,200-2,450 (0.9x-1.4x, parity within noise). The gateway's own routing is
about 40 us per message; the rest is the HTTP/2 transport in Python against
grpc-core's C++.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass

CONCURRENCY = 100


@dataclass
class Ping:
    text: str


@dataclass
class Pong:
    text: str


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _serializers(runtime: object) -> None:
    from autogen_core import try_get_known_serializers_for_type

    for cls in (Ping, Pong):
        runtime.add_message_serializer(try_get_known_serializers_for_type(cls))  # type: ignore[attr-defined]


# ---------------------------------------------------------------- helper roles


async def _autogen_host_role(address: str) -> None:
    from autogen_ext.runtimes.grpc import GrpcWorkerAgentRuntimeHost

    host = GrpcWorkerAgentRuntimeHost(address)
    host.start()
    print(f"READY {address}", flush=True)
    await asyncio.Event().wait()


async def _echo_role(address: str) -> None:
    from autogen_core import MessageContext, RoutedAgent, rpc
    from autogen_ext.runtimes.grpc import GrpcWorkerAgentRuntime

    # RoutedAgent resolves handler annotations from this module's globals.
    globals()["MessageContext"] = MessageContext

    class Echo(RoutedAgent):
        def __init__(self) -> None:
            super().__init__("echo")

        @rpc
        async def on_ping(self, message: Ping, ctx: MessageContext) -> Pong:
            return Pong(message.text)

    runtime = GrpcWorkerAgentRuntime(address)
    await runtime.start()
    _serializers(runtime)
    await Echo.register(runtime, "echo", Echo)
    print("READY", flush=True)
    await asyncio.Event().wait()


# ---------------------------------------------------------------- measurement


async def _measure(address: str, seconds: float) -> dict[str, float]:
    from autogen_core import AgentId
    from autogen_ext.runtimes.grpc import GrpcWorkerAgentRuntime

    runtime = GrpcWorkerAgentRuntime(address)
    await runtime.start()
    _serializers(runtime)
    target = AgentId("echo", "default")
    ping = Ping("x" * 100)

    for _ in range(50):  # warm up: connection, activation
        await runtime.send_message(ping, target)

    latencies: list[float] = []
    end = time.perf_counter() + seconds
    started = time.perf_counter()
    while time.perf_counter() < end:
        t0 = time.perf_counter()
        await runtime.send_message(ping, target)
        latencies.append(time.perf_counter() - t0)
    sequential = len(latencies) / (time.perf_counter() - started)

    done = 0
    end = time.perf_counter() + seconds
    started = time.perf_counter()
    while time.perf_counter() < end:
        await asyncio.gather(*(runtime.send_message(ping, target) for _ in range(CONCURRENCY)))
        done += CONCURRENCY
    concurrent = done / (time.perf_counter() - started)

    with contextlib.suppress(Exception):  # the helpers are torn down next
        await asyncio.wait_for(runtime.stop(), 5)
    return {
        "sequential_rpc_per_s": round(sequential, 1),
        "sequential_median_ms": round(statistics.median(latencies) * 1000, 3),
        "concurrent100_rpc_per_s": round(concurrent, 1),
    }


def _spawn(argv: list[str]) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line:
        proc.wait()
        raise RuntimeError(f"{argv} exited with {proc.returncode}")
    return proc, line.strip()


def _stop(proc: subprocess.Popen[str]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _run_once(host: str, seconds: float) -> dict[str, float]:
    me = [sys.executable, os.path.abspath(__file__)]
    if host == "agentwire":
        gateway, line = _spawn(
            [sys.executable, "-m", "agentwire", "gateway", "--address", "127.0.0.1:0"]
        )
        address = line.rsplit(" ", 1)[1]
    else:
        address = f"127.0.0.1:{_free_port()}"
        gateway, _ = _spawn([*me, "--role", "host", "--address", address])
    try:
        echo, _ = _spawn([*me, "--role", "echo", "--address", address])
        try:
            return asyncio.run(_measure(address, seconds))
        finally:
            _stop(echo)
    finally:
        _stop(gateway)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="per measurement")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", help="write the medians here")
    parser.add_argument("--role", choices=["host", "echo"], help=argparse.SUPPRESS)
    parser.add_argument("--address", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.role == "host":
        asyncio.run(_autogen_host_role(args.address))
        return
    if args.role == "echo":
        asyncio.run(_echo_role(args.address))
        return

    runs: dict[str, list[dict[str, float]]] = {"agentwire": [], "autogen": []}
    for _ in range(args.rounds):
        for host in runs:
            runs[host].append(_run_once(host, args.seconds))
    medians = {
        host: {key: statistics.median(r[key] for r in results) for key in results[0]}
        for host, results in runs.items()
    }
    print(f"{'metric':28} {'agentwire gw':>14} {'AutoGen host':>14} {'ratio':>7}")
    for key in medians["agentwire"]:
        ours, theirs = medians["agentwire"][key], medians["autogen"][key]
        print(f"{key:28} {ours:14.1f} {theirs:14.1f} {ours / theirs:7.2f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"medians": medians, "runs": runs}, f, indent=2)


if __name__ == "__main__":
    main()
