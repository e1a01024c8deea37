"""Cost per operation of the gRPC worker path, counted rather than timed.

``python -m benchmarks._percall pub|seq|conc N [--profile]`` runs a gateway and two workers
(a caller and the echo side of ``benchmarks._agentwire_side``) in this one process over
loopback, warms up, then does ``N`` operations of one kind:

* ``pub``: ``N`` publishes to the sink, until the probe RPC says all were delivered;
* ``seq``: ``N`` sequential RPCs to the echo agent;
* ``conc``: ``N`` RPCs from ``CONCURRENCY`` tasks at once.

Run it under ``valgrind --tool=callgrind`` (``PYTHONHASHSEED=0``) at two values of ``N`` and
divide the difference of the instruction totals by the difference of ``N``: the warm-up and
start-up costs cancel out. ``--profile`` prints cProfile's function calls per operation of the
measured part instead, split by the module that makes them (everything in one process: the
caller's, the gateway's and the echo worker's calls added up).
"""

from __future__ import annotations

import argparse
import collections
import cProfile
import pstats
from typing import Any

import trio

import agentwire
from agentwire import AgentId, TopicId

from . import _agentwire_side as side
from . import _common as c

_STALLED = 120.0
"""Seconds without a delivery after which the publishes still missing are taken as lost
(generous: under callgrind everything is ~50x slower)."""


async def _operations(runtime: Any, mode: str, n: int) -> None:
    msg = side.Ping(1, c.TEXT)
    target = AgentId("echo", "default")
    if mode == "pub":
        topic = TopicId(c.TOPIC_TYPE, "default")
        probe = AgentId("probe", "default")
        already = side.COUNTER.count
        for _ in range(n):
            await runtime.publish_message(msg, topic)
        seen, moved = -1, trio.current_time()
        while (count := (await runtime.send_message(side.Probe(0), probe)).n) < already + n:
            if count != seen:
                seen, moved = count, trio.current_time()
            elif trio.current_time() - moved > _STALLED:
                missing = already + n - count
                raise RuntimeError(f"{missing} of {n} events published never arrived")
    elif mode == "seq":
        for _ in range(n):
            await runtime.send_message(msg, target)
    else:
        per_task, extra = divmod(n, c.CONCURRENCY)

        async def one(count: int) -> None:
            for _ in range(count):
                await runtime.send_message(msg, target)

        async with trio.open_nursery() as nursery:
            for index in range(c.CONCURRENCY):
                nursery.start_soon(one, per_task + (index < extra))


async def _run(mode: str, n: int, profile: bool) -> None:
    async with (
        agentwire.open_gateway("127.0.0.1:0") as gateway,
        agentwire.open_worker(gateway.address) as echo,
        agentwire.open_worker(gateway.address) as caller,
    ):
        await side._register_echo_side(echo)
        side._add_serializers(caller)
        await _operations(caller, "seq", 200)  # warm-up: connections, activation
        await _operations(caller, "pub", 200)
        await _operations(caller, "conc", 200)
        if not profile:
            await _operations(caller, mode, n)
            return
        profiler = cProfile.Profile()
        profiler.enable()
        await _operations(caller, mode, n)
        profiler.disable()
        _print_calls(profiler, n)


def _print_calls(profiler: cProfile.Profile, n: int) -> None:
    stats: dict[Any, Any] = pstats.Stats(profiler).stats  # type: ignore[attr-defined]
    by_area: collections.Counter[str] = collections.Counter()
    for (filename, _, _), (_, ncalls, *_rest) in stats.items():
        area = "builtins" if filename == "~" else filename.split("site-packages/")[-1]
        if "agentwire/" in area:
            area = "agentwire/" + area.split("agentwire/", 1)[1]
        by_area[area] += ncalls
    total = sum(by_area.values())
    print(f"calls per operation: {total / n:.1f}")
    for area, calls in by_area.most_common(25):
        print(f"  {calls / n:8.2f}  {area}")
    print("most called functions:")
    busiest = sorted(stats.items(), key=lambda item: -item[1][1])[:60]
    for (filename, line, name), (_, ncalls, *_rest) in busiest:
        print(f"  {ncalls / n:8.2f}  {name}  {filename.split('site-packages/')[-1]}:{line}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("mode", choices=("pub", "seq", "conc"))
    parser.add_argument("n", type=int)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    trio.run(_run, args.mode, args.n, args.profile)


if __name__ == "__main__":
    main()
