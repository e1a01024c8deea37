"""A cluster of gateways: RPCs across two gateways against the same through one.

Processes: a ``redis-server`` (a free port, persistence off), gateways
(``python -m agentwire gateway [--cluster ...]``), an echo worker (its own
process) on the last gateway, the caller (this process) on the first. Measured
per topology: sequential RPC round trips per second, their median latency, and
RPCs per second with ``CONCURRENCY`` in flight::

    python -m benchmarks.cluster [--seconds 3] [--rounds 3] [--json out.json]

(also the ``cluster`` workload of ``nox -s bench``: one round, agentwire only).

A round runs "one gateway" (no cluster: caller and echo on the same gateway)
then "two gateways" (a cluster on Redis: every request and response crosses
it through the gateways' inbox streams); medians over the rounds.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import time
from dataclasses import dataclass

import trio

import agentwire
from agentwire import AgentId, MessageContext, RoutedAgent, rpc, serializers_for_type

from ._common import Helper, ready
from .stateful import redis_server

CONCURRENCY = 64


@dataclass
class Ping:
    n: int


@dataclass
class Pong:
    n: int


class Echo(RoutedAgent):
    def __init__(self) -> None:
        super().__init__("echo")

    @rpc
    async def on_ping(self, message: Ping, ctx: MessageContext) -> Pong:
        return Pong(message.n)


async def echo_role(address: str) -> None:
    async with agentwire.open_worker(address) as runtime:
        runtime.add_message_serializer(serializers_for_type(Ping))
        await Echo.register(runtime, "echo", Echo)
        ready()
        await trio.sleep_forever()


async def caller(address: str, seconds: float) -> dict[str, float]:
    target = AgentId("echo", "k")
    async with agentwire.open_worker(address) as runtime:
        runtime.add_message_serializer(serializers_for_type(Pong))
        with trio.fail_after(30):  # the echo's type reaches this gateway
            while True:
                try:
                    await runtime.send_message(Ping(0), target)
                    break
                except agentwire.UndeliverableError:
                    await trio.sleep(0.05)
        latencies: list[float] = []
        deadline = time.perf_counter() + seconds
        while (now := time.perf_counter()) < deadline:
            await runtime.send_message(Ping(1), target)
            latencies.append(time.perf_counter() - now)
        sequential = len(latencies) / seconds
        count = 0
        deadline = time.perf_counter() + seconds

        async def loop() -> None:
            nonlocal count
            while time.perf_counter() < deadline:
                await runtime.send_message(Ping(2), target)
                count += 1

        started = time.perf_counter()
        async with trio.open_nursery() as nursery:
            for _ in range(CONCURRENCY):
                nursery.start_soon(loop)
        concurrent = count / (time.perf_counter() - started)
    return {
        "sequential_rpc_per_s": sequential,
        "sequential_p50_us": statistics.median(latencies) * 1e6,
        "concurrent_rpc_per_s": concurrent,
    }


def _listening(line: str) -> str | None:
    prefix = "agentwire gateway listening on "
    return line[len(prefix) :] if line.startswith(prefix) else None


def run_topology(redis_url: str | None, seconds: float) -> dict[str, float]:
    gateway = [sys.executable, "-m", "agentwire", "gateway", "--address", "127.0.0.1:0"]
    if redis_url is not None:
        gateway += ["--cluster", redis_url]
    with contextlib.ExitStack() as stack:
        first = stack.enter_context(Helper(gateway)).start(_listening)
        last = (
            first if redis_url is None else stack.enter_context(Helper(gateway)).start(_listening)
        )
        echo = stack.enter_context(
            Helper([sys.executable, "-m", "benchmarks.cluster", "echo", last])
        )
        echo.start()
        return trio.run(caller, first, seconds)


def run(duration: float) -> dict[str, float]:
    """One round of both topologies (the harness's ``cluster`` workload)."""
    with redis_server() as url:
        if url is None:
            return {}
        one = run_topology(None, duration)
        two = run_topology(url, duration)
    return {
        **{f"one_{key}": value for key, value in one.items()},
        **{f"two_{key}": value for key, value in two.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("role", nargs="*", help=argparse.SUPPRESS)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    if args.role[:1] == ["echo"]:
        with contextlib.suppress(KeyboardInterrupt):
            trio.run(echo_role, args.role[1])
        return
    runs: dict[str, list[dict[str, float]]] = {"one_gateway": [], "two_gateways": []}
    with redis_server() as url:
        if url is None:
            raise SystemExit("needs redis-server and coredis (the cluster extra)")
        for _ in range(args.rounds):
            runs["one_gateway"].append(run_topology(None, args.seconds))
            runs["two_gateways"].append(run_topology(url, args.seconds))
    result = {
        name: {key: statistics.median(r[key] for r in rounds) for key in rounds[0]}
        for name, rounds in runs.items()
    }
    for name, figures in result.items():
        print(
            f"{name:13} sequential {figures['sequential_rpc_per_s']:8.0f} rt/s "
            f"(p50 {figures['sequential_p50_us']:6.0f} us)   "
            f"{CONCURRENCY} in flight {figures['concurrent_rpc_per_s']:8.0f} rt/s"
        )
    if args.json:
        with open(args.json, "w") as out:
            json.dump(result, out, indent=2)


if __name__ == "__main__":
    main()
