"""A cluster of gateways: traffic across two gateways against the same through one.

Processes: a ``redis-server`` (a free port, persistence off), gateways
(``python -m agentwire gateway [--cluster ...]``), an echo worker (its own
process) on the last gateway, the caller (this process) on the first. Measured
per topology: sequential RPC round trips per second and their median latency,
RPCs per second with ``CONCURRENCY`` in flight, events per second published by
the caller and delivered to the echo worker's subscriber, and the CPU each
process spends per RPC (request and response) and per event: the gateways
(``/proc``), redis-server (``INFO cpu``)::

    python -m benchmarks.cluster [--seconds 3] [--rounds 3] [--json out.json]

(also the ``cluster`` workload of ``nox -s bench``: one round, agentwire only).

A round runs "one gateway" (no cluster: caller and echo on the same gateway)
then "two gateways" (a cluster on Redis: every request, response and event
crosses it through the gateways' inbox streams); medians over the rounds. The
ratio of the two is the cost of crossing.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import socket
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

import trio

import agentwire
from agentwire import (
    AgentId,
    MessageContext,
    RoutedAgent,
    TopicId,
    TypeSubscription,
    event,
    rpc,
    serializers_for_type,
)

from ._common import FLOOD_CAP, Helper, ready
from .stateful import redis_server

CONCURRENCY = 100
TOPIC = "ticks"


@dataclass
class Ping:
    n: int


@dataclass
class Pong:
    n: int


@dataclass
class Tick:
    n: int


class Echo(RoutedAgent):
    """Answers pings; counts the ticks published to ``TOPIC`` (a ping of -1 asks the count)."""

    ticks = 0

    def __init__(self) -> None:
        super().__init__("echo")

    @rpc
    async def on_ping(self, message: Ping, ctx: MessageContext) -> Pong:
        return Pong(Echo.ticks if message.n < 0 else message.n)

    @event
    async def on_tick(self, message: Tick, ctx: MessageContext) -> None:
        Echo.ticks += 1


async def echo_role(address: str) -> None:
    async with agentwire.open_worker(address) as runtime:
        runtime.add_message_serializer(serializers_for_type(Ping))
        runtime.add_message_serializer(serializers_for_type(Tick))
        await Echo.register(runtime, "echo", Echo)
        await runtime.add_subscription(TypeSubscription(TOPIC, "echo"))
        ready()
        await trio.sleep_forever()


CpuSnapshot = Callable[[], dict[str, float]]


def _per(
    before: dict[str, float], after: dict[str, float], count: int, unit: str
) -> dict[str, float]:
    """CPU microseconds per *unit* of each process between two snapshots."""
    return {
        f"cpu_{name}_us_per_{unit}": round((after[name] - before[name]) / max(count, 1) * 1e6, 1)
        for name in before
    }


async def caller(address: str, seconds: float, cpu: CpuSnapshot) -> dict[str, float]:
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
        figures = {
            "sequential_rpc_per_s": len(latencies) / seconds,
            "sequential_p50_us": statistics.median(latencies) * 1e6,
        }

        count = 0
        deadline = time.perf_counter() + seconds

        async def loop() -> None:
            nonlocal count
            while time.perf_counter() < deadline:
                await runtime.send_message(Ping(2), target)
                count += 1

        before, started = cpu(), time.perf_counter()
        async with trio.open_nursery() as nursery:
            for _ in range(CONCURRENCY):
                nursery.start_soon(loop)
        figures["concurrent_rpc_per_s"] = count / (time.perf_counter() - started)
        figures.update(_per(before, cpu(), count, "rpc"))

        # Events: publish for *seconds*, then wait until the subscriber has them all.
        seen: Pong = await runtime.send_message(Ping(-1), target)
        topic, published = TopicId(TOPIC, "k"), 0
        before, started = cpu(), time.perf_counter()
        deadline = started + seconds
        while published < FLOOD_CAP and time.perf_counter() < deadline:
            await runtime.publish_message(Tick(published), topic)
            published += 1
        with trio.fail_after(60):
            while (await runtime.send_message(Ping(-1), target)).n < seen.n + published:
                pass
        figures["published_per_s"] = published / (time.perf_counter() - started)
        figures.update(_per(before, cpu(), published, "event"))
    return figures


def redis_cpu_seconds(url: str) -> float:
    """used_cpu_sys + used_cpu_user of the redis-server at *url* (``INFO cpu``)."""
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 6379)) as sock:
        sock.sendall(b"INFO cpu\r\n")
        reply = b""
        while not reply.endswith(b"\r\n") or reply.count(b"\r\n") < 3:
            chunk = sock.recv(65536)
            if not chunk:
                break
            reply += chunk
    fields = dict(line.split(":", 1) for line in reply.decode().splitlines() if ":" in line)
    return float(fields["used_cpu_sys"]) + float(fields["used_cpu_user"])


def _listening(line: str) -> str | None:
    prefix = "agentwire gateway listening on "
    return line[len(prefix) :] if line.startswith(prefix) else None


def run_topology(redis_url: str | None, seconds: float) -> dict[str, float]:
    """One gateway (*redis_url* None) or two of a cluster on *redis_url*."""
    gateway = [sys.executable, "-m", "agentwire", "gateway", "--address", "127.0.0.1:0"]
    if redis_url is not None:
        gateway += ["--cluster", redis_url]
    with contextlib.ExitStack() as stack:
        gateways = [stack.enter_context(Helper(gateway))]
        first = last = gateways[0].start(_listening)
        if redis_url is not None:
            gateways.append(stack.enter_context(Helper(gateway)))
            last = gateways[1].start(_listening)
        echo = stack.enter_context(
            Helper([sys.executable, "-m", "benchmarks.cluster", "echo", last])
        )
        echo.start()

        def cpu() -> dict[str, float]:
            snapshot = {name: g.cpu_seconds() for name, g in zip("ab", gateways, strict=False)}
            if redis_url is not None:
                snapshot["redis"] = redis_cpu_seconds(redis_url)
            return snapshot

        return trio.run(caller, first, seconds, cpu)


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
            f"{name:13} sequential {figures['sequential_rpc_per_s']:6.0f} rt/s "
            f"(p50 {figures['sequential_p50_us']:5.0f} us)  {CONCURRENCY} in flight "
            f"{figures['concurrent_rpc_per_s']:6.0f} rt/s  "
            f"events {figures['published_per_s']:6.0f}/s"
        )
        cpu = {k: v for k, v in figures.items() if k.startswith("cpu_")}
        print("    CPU " + "  ".join(f"{k[4:]} {v:.0f}" for k, v in cpu.items()))
    if args.json:
        with open(args.json, "w") as out:
            json.dump(result, out, indent=2)


if __name__ == "__main__":
    main()
