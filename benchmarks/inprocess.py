"""In-process micro-benchmark: agentwire's runtime against AutoGen's
SingleThreadedAgentRuntime, same agents, same workloads.

    python benchmarks/inprocess.py                 # agentwire (and AutoGen if found)
    python benchmarks/inprocess.py --impl autogen  # run under a Python with autogen-core
    python benchmarks/inprocess.py --n 20000 --repeat 5

Workloads (messages are a small dataclass; handlers do no work):

* ``rpc_sequential``: one caller, N send_message round trips, one at a time;
* ``rpc_concurrent_100``: 100 caller tasks share N round trips, one receiver;
* ``publish_1``: N publishes to a topic with 1 subscriber type, then wait idle;
* ``publish_10``: N/10 publishes to a topic with 10 subscriber types (the rate
  counts publishes; deliveries are 10x that).

The AutoGen side runs in a separate interpreter: ``AGENTWIRE_AUTOGEN_PYTHON``
or ``--autogen-python`` (default ``/work/venv-ag/bin/python`` if it exists).
Prints one line per workload: the median rate over ``--repeat`` runs.
"""

import argparse
import dataclasses
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

WORKLOADS = ("rpc_sequential", "rpc_concurrent_100", "publish_1", "publish_10")


@dataclasses.dataclass
class Ping:
    n: int


def _rate(count: int, seconds: float) -> float:
    return count / seconds if seconds > 0 else float("inf")


# -- agentwire ------------------------------------------------------------------------------


def run_agentwire(n: int) -> dict[str, float]:
    import trio

    import agentwire as aw

    class Echo(aw.RoutedAgent):
        def __init__(self) -> None:
            super().__init__("echo")

        @aw.message_handler
        async def on_ping(self, message: Ping, ctx: aw.MessageContext) -> Ping:
            return message

    results: dict[str, float] = {}

    async def main() -> None:
        async with aw.open_runtime() as runtime:
            await Echo.register(runtime, "echo", Echo)
            for i in range(10):
                await Echo.register(runtime, f"sub{i}", Echo)
                await runtime.add_subscription(aw.TypeSubscription("t10", f"sub{i}"))
            await runtime.add_subscription(aw.TypeSubscription("t1", "sub0"))
            target = aw.AgentId("echo", "default")
            send = runtime.send_message
            publish = runtime.publish_message
            await send(Ping(0), target)

            start = time.perf_counter()
            for i in range(n):
                await send(Ping(i), target)
            results["rpc_sequential"] = _rate(n, time.perf_counter() - start)

            async def caller(count: int) -> None:
                for i in range(count):
                    await send(Ping(i), target)

            start = time.perf_counter()
            async with trio.open_nursery() as nursery:
                for _ in range(100):
                    nursery.start_soon(caller, n // 100)
            results["rpc_concurrent_100"] = _rate(n // 100 * 100, time.perf_counter() - start)

            topic1 = aw.TopicId("t1", "x")
            start = time.perf_counter()
            for i in range(n):
                await publish(Ping(i), topic1)
            await runtime.wait_idle()
            results["publish_1"] = _rate(n, time.perf_counter() - start)

            topic10 = aw.TopicId("t10", "x")
            start = time.perf_counter()
            for i in range(n // 10):
                await publish(Ping(i), topic10)
            await runtime.wait_idle()
            results["publish_10"] = _rate(n // 10, time.perf_counter() - start)

    trio.run(main)
    return results


# -- AutoGen --------------------------------------------------------------------------------


def run_autogen(n: int) -> dict[str, float]:
    import asyncio

    from autogen_core import (
        AgentId,
        MessageContext,
        RoutedAgent,
        SingleThreadedAgentRuntime,
        TopicId,
        TypeSubscription,
        message_handler,
    )

    class Echo(RoutedAgent):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__("echo")

        @message_handler  # type: ignore[misc]
        async def on_ping(self, message: Ping, ctx: MessageContext) -> Ping:
            return message

    results: dict[str, float] = {}

    async def main() -> None:
        runtime = SingleThreadedAgentRuntime()
        await Echo.register(runtime, "echo", Echo)
        for i in range(10):
            await Echo.register(runtime, f"sub{i}", Echo)
            await runtime.add_subscription(TypeSubscription("t10", f"sub{i}"))
        await runtime.add_subscription(TypeSubscription("t1", "sub0"))
        runtime.start()
        target = AgentId("echo", "default")
        await runtime.send_message(Ping(0), target)

        start = time.perf_counter()
        for i in range(n):
            await runtime.send_message(Ping(i), target)
        results["rpc_sequential"] = _rate(n, time.perf_counter() - start)

        async def caller(count: int) -> None:
            for i in range(count):
                await runtime.send_message(Ping(i), target)

        start = time.perf_counter()
        await asyncio.gather(*(caller(n // 100) for _ in range(100)))
        results["rpc_concurrent_100"] = _rate(n // 100 * 100, time.perf_counter() - start)

        start = time.perf_counter()
        for i in range(n):
            await runtime.publish_message(Ping(i), TopicId("t1", "x"))
        await runtime.stop_when_idle()
        results["publish_1"] = _rate(n, time.perf_counter() - start)

        runtime.start()
        start = time.perf_counter()
        for i in range(n // 10):
            await runtime.publish_message(Ping(i), TopicId("t10", "x"))
        await runtime.stop_when_idle()
        results["publish_10"] = _rate(n // 10, time.perf_counter() - start)
        await runtime.close()

    asyncio.run(main())
    return results


# -- driver ---------------------------------------------------------------------------------


def _median_runs(run: Callable[[int], dict[str, float]], n: int, repeat: int) -> dict[str, float]:
    runs = [run(n) for _ in range(repeat)]
    return {name: statistics.median(r[name] for r in runs) for name in WORKLOADS}


def _autogen_python(explicit: str | None) -> str | None:
    for candidate in (
        explicit,
        os.environ.get("AGENTWIRE_AUTOGEN_PYTHON"),
        "/work/venv-ag/bin/python",
    ):
        if candidate and os.path.exists(candidate):
            return candidate
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--impl", choices=["agentwire", "autogen", "both"], default="both")
    parser.add_argument("--n", type=int, default=20000, help="messages per workload")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--autogen-python")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)

    if args.impl == "autogen":
        result = _median_runs(run_autogen, args.n, args.repeat)
        print(json.dumps(result) if args.json else _table({"autogen": result}))
        return 0

    results: dict[str, dict[str, float]] = {
        "agentwire": _median_runs(run_agentwire, args.n, args.repeat)
    }
    if args.impl == "both":
        python = _autogen_python(args.autogen_python)
        if python is None:
            print("(AutoGen not found: set AGENTWIRE_AUTOGEN_PYTHON)", file=sys.stderr)
        else:
            # AutoGen is ~20x slower: fewer messages keep the run short.
            n_autogen = max(args.n // 4, 1000)
            out = subprocess.run(
                [
                    python,
                    __file__,
                    "--impl",
                    "autogen",
                    "--json",
                    "--n",
                    str(n_autogen),
                    "--repeat",
                    str(args.repeat),
                ],
                check=True,
                capture_output=True,
                text=True,
            ).stdout
            results["autogen"] = json.loads(out.strip().splitlines()[-1])
    if args.json:
        print(json.dumps(results))
    else:
        print(_table(results))
    return 0


def _table(results: dict[str, dict[str, Any]]) -> str:
    impls = list(results)
    lines = [f"{'workload':<22}" + "".join(f"{name + ' msg/s':>20}" for name in impls)]
    if len(impls) == 2:
        lines[0] += f"{'ratio':>10}"
    for workload in WORKLOADS:
        line = f"{workload:<22}" + "".join(f"{results[i][workload]:>20,.0f}" for i in impls)
        if len(impls) == 2:
            line += f"{results[impls[0]][workload] / results[impls[1]][workload]:>9.1f}x"
        lines.append(line)
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
