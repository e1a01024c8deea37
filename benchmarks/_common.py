"""Helpers shared by the workload scripts of both systems.

Standard library only: this module is imported by the AutoGen workload script (run in a venv
that has AutoGen but not agentwire) and by the agentwire one (run in the dev venv), so it must
not import either system, nor anything the harness needs (rich, matplotlib).

A workload script is run as ``python -m benchmarks.<script> NAME [--quick] [--arg k=v ...]``.
It prints exactly one line starting with ``RESULT_PREFIX`` followed by a JSON object whose
numeric fields are the measured figures; everything else it prints is ignored.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import socket
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import Any

RESULT_PREFIX = "BENCH-RESULT "
READY_PREFIX = "BENCH-READY "

#: The payload's text field: 32 characters, as the brief says.
TEXT = "abcdefghijklmnopqrstuvwxyz012345"
assert len(TEXT) == 32

#: The in-process topic type every publisher uses and every sink subscribes to.
TOPIC_TYPE = "bench"
#: Concurrent senders in the "concurrent" phases.
CONCURRENCY = 100
#: Distinct agent keys in the activation workload.
ACTIVATIONS = 10_000
#: The flow workload: StateFlow runs of FLOW_STEPS sends, and DAG runs of DAG_TASKS one-send
#: tasks as DAG_WIDTH independent chains (so DAG_WIDTH tasks at a time).
FLOW_STEPS = 10
DAG_TASKS = 1_000
DAG_WIDTH = 100


def percentile(sorted_samples: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) of already sorted samples, nearest-rank with interpolation."""
    if not sorted_samples:
        raise ValueError("percentile of no samples")
    if len(sorted_samples) == 1:
        return float(sorted_samples[0])
    rank = (len(sorted_samples) - 1) * q / 100.0
    low = int(rank)
    high = min(low + 1, len(sorted_samples) - 1)
    frac = rank - low
    return float(sorted_samples[low]) * (1.0 - frac) + float(sorted_samples[high]) * frac


def latency_summary(prefix: str, samples_ns: Sequence[int]) -> dict[str, float]:
    """p50/p95/p99 of latency samples (nanoseconds) as microseconds, keyed ``<prefix>_p50_us``."""
    ordered = sorted(samples_ns)
    return {f"{prefix}_p{q}_us": round(percentile(ordered, q) / 1000.0, 2) for q in (50, 95, 99)}


def rate(count: int, seconds: float) -> float:
    return round(count / seconds, 1) if seconds > 0 else 0.0


def scale_count(pilot_count: int, pilot_seconds: float, duration: float, lo: int, hi: int) -> int:
    """How many operations fill ``duration`` seconds at the pilot's rate, clamped to [lo, hi]."""
    per_second = pilot_count / pilot_seconds if pilot_seconds > 0 else hi
    return max(lo, min(hi, int(per_second * duration)))


async def sequential_loop(
    send: Callable[[], Awaitable[object]], duration: float, latencies: list[int]
) -> int:
    """Await ``send()`` back to back for ``duration`` seconds, appending each latency (ns).

    Returns the number of completed calls. Works under asyncio and trio alike: it only awaits.
    """
    clock = time.perf_counter_ns
    end = clock() + int(duration * 1e9)
    done = 0
    now = clock()
    while now < end:
        started = now
        await send()
        now = clock()
        latencies.append(now - started)
        done += 1
    return done


async def time_per_item(run: Callable[[], Awaitable[object]], items: int, duration: float) -> float:
    """Microseconds per item of ``run()`` (which handles *items* items), awaited back to back
    for about *duration* seconds (at least 3 times) after one warm-up call."""
    await run()
    runs = 0
    started = time.perf_counter()
    elapsed = 0.0
    while runs < 3 or elapsed < duration:
        await run()
        runs += 1
        elapsed = time.perf_counter() - started
    return round(elapsed / (runs * items) * 1e6, 2)


def flow_figures(step: float, step_base: float, task: float, task_base: float) -> dict[str, float]:
    """The flow workload's figures from the per-step and per-task times (µs)."""
    return {
        "flow_step_us": step,
        "flow_baseline_step_us": step_base,
        "flow_step_overhead_us": round(step - step_base, 2),
        "dag_task_us": task,
        "dag_baseline_task_us": task_base,
        "dag_task_overhead_us": round(task - task_base, 2),
    }


async def sequential_figures(
    send: Callable[[], Awaitable[object]], duration: float, prefix: str = "seq"
) -> dict[str, float]:
    """``<prefix>_msgs_per_s`` and latency percentiles of ``send()`` awaited back to back."""
    latencies: list[int] = []
    started = time.perf_counter()
    done = await sequential_loop(send, duration, latencies)
    elapsed = time.perf_counter() - started
    return {f"{prefix}_msgs_per_s": rate(done, elapsed), **latency_summary(prefix, latencies)}


class Counter:
    """Deliveries seen by every sink of this process; wakes a waiter at a target count.

    ``new_event`` makes the framework's event (``asyncio.Event`` or ``trio.Event``).
    """

    def __init__(self, new_event: Callable[[], Any]) -> None:
        self.count = 0
        self.target = -1
        self.reached: Any = None
        self._new_event = new_event

    def hit(self) -> None:
        self.count += 1
        if self.count == self.target and self.reached is not None:
            self.reached.set()

    async def wait_for(self, target: int) -> None:
        if self.count >= target:
            return
        self.target = target
        self.reached = self._new_event()
        await self.reached.wait()


async def publish_and_wait(
    publish: Callable[[], Awaitable[object]], counter: Counter, count: int, fanout: int
) -> float:
    """Publish ``count`` messages and wait for all ``count * fanout`` deliveries; seconds."""
    target = counter.count + count * fanout
    started = time.perf_counter()
    for _ in range(count):
        await publish()
    await counter.wait_for(target)
    return time.perf_counter() - started


async def publish_until_seen(
    publish: Callable[[], Awaitable[object]],
    seen: Callable[[], Awaitable[int]],
    count: int,
    already: int,
) -> float:
    """Publish ``count`` messages, then ask (``seen()``, an RPC) until all arrived; seconds."""
    started = time.perf_counter()
    for _ in range(count):
        await publish()
    while await seen() < already + count:
        pass
    return time.perf_counter() - started


#: Most events one flood phase publishes (a bound on what a fire-and-forget publisher queues).
FLOOD_CAP = 200_000


async def flood_loop(publish: Callable[[], Awaitable[object]], duration: float) -> int:
    """Await ``publish()`` back to back for ``duration`` seconds (at most ``FLOOD_CAP``)."""
    clock = time.perf_counter_ns
    end = clock() + int(duration * 1e9)
    done = 0
    while done < FLOOD_CAP and clock() < end:
        await publish()
        done += 1
    return done


def flood_figures(
    rpcs: int, published: int, seconds: float, latencies: list[int]
) -> dict[str, float]:
    """The figures of the RPC-under-a-publish-flood phase."""
    return {
        "flood_rpc_per_s": rate(rpcs, seconds),
        "flood_published_per_s": rate(published, seconds),
        **latency_summary("flood_rpc", latencies),
    }


def startup_figures(
    prefix: str, spawned_at: float, imported: float, main_at: float, answered: float
) -> dict[str, float]:
    """Start-up in milliseconds: spawn -> first RPC answered, and how it splits."""
    return {
        f"{prefix}startup_ms": round((answered - spawned_at) * 1000, 1),
        f"{prefix}imports_ms": round((imported - spawned_at) * 1000, 1),
        f"{prefix}to_first_rpc_ms": round((answered - main_at) * 1000, 1),
    }


# -- the transport workload: one gRPC bidi stream, raw bytes, no agents ------------------

#: Each message of the transport workload.
TRANSPORT_PAYLOAD = b"x" * 100
#: Messages kept outstanding by the pipelined pattern.
IN_FLIGHT = 64
#: The echo method (answers each message) and the sink (counts, answers the count at the end).
ECHO_PATH = "/bench.Bench/Echo"
SINK_PATH = "/bench.Bench/Sink"


def one_way_count(seconds: float) -> int:
    """How many messages the one-way pattern streams: about ``seconds`` at 40k msg/s."""
    return max(1000, int(40_000 * seconds))


async def ping_pong(
    send: Callable[[bytes], Awaitable[object]],
    receive: Callable[[], Awaitable[object]],
    seconds: float,
) -> float:
    """Round trips per second of send-then-wait-for-the-echo, for about ``seconds``."""
    count = 0
    start = time.perf_counter()
    deadline = start + seconds
    while True:
        for _ in range(100):
            await send(TRANSPORT_PAYLOAD)
            await receive()
        count += 100
        now = time.perf_counter()
        if now >= deadline:
            return count / (now - start)


async def one_way(
    send: Callable[[bytes], Awaitable[object]],
    end: Callable[[], Awaitable[object]],
    receive: Callable[[], Awaitable[object]],
    seconds: float,
) -> float:
    """Messages per second streamed to the sink, until its count comes back."""
    count = one_way_count(seconds)
    start = time.perf_counter()
    for _ in range(count):
        await send(TRANSPORT_PAYLOAD)
    await end()
    reply = await receive()
    elapsed = time.perf_counter() - start
    if reply != str(count).encode():
        raise RuntimeError(f"the sink counted {reply!r}, expected {count}")
    return count / elapsed


def transport_figures(ping_pong: float, pipelined: float, one_way: float) -> dict[str, float]:
    return {
        "pingpong_rt_per_s": round(ping_pong, 1),
        "pipelined_rt_per_s": round(pipelined, 1),
        "oneway_msgs_per_s": round(one_way, 1),
    }


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` (Linux /proc; 0 where unavailable)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_snapshot(*helpers: Helper) -> list[float]:
    """CPU seconds used so far by each helper process, then by this process."""
    return [h.cpu_seconds() for h in helpers] + [process_cpu_seconds(os.getpid())]


def cpu_figures(
    names: Sequence[str], before: Sequence[float], after: Sequence[float]
) -> dict[str, float]:
    """``cpu_<name>_s``: CPU seconds each process used between two snapshots."""
    return {f"cpu_{n}_s": round(a - b, 3) for n, b, a in zip(names, before, after, strict=True)}


def rss_bytes() -> int:
    """Current resident set size of this process (Linux /proc; 0 where unavailable)."""
    try:
        with open("/proc/self/statm") as statm:
            pages = int(statm.read().split()[1])
    except (OSError, ValueError, IndexError):
        return 0
    return pages * os.sysconf("SC_PAGE_SIZE")


class MemoryProbe:
    """Memory retained across a block: tracemalloc's traced bytes, and the RSS delta.

    Both systems use this same probe so the figures compare like with like.
    """

    def __init__(self) -> None:
        self.traced_bytes = 0
        self.rss_bytes = 0

    @contextlib.contextmanager
    def measure(self) -> Iterator[None]:
        gc.collect()
        rss_before = rss_bytes()
        tracemalloc.start()
        traced_before, _ = tracemalloc.get_traced_memory()
        try:
            yield
        finally:
            gc.collect()
            traced_after, _ = tracemalloc.get_traced_memory()
            tracemalloc.stop()
            self.traced_bytes = traced_after - traced_before
            self.rss_bytes = rss_bytes() - rss_before


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (for servers that cannot bind port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def emit(result: dict[str, Any]) -> None:
    """Print the one result line the harness reads."""
    sys.stdout.write(RESULT_PREFIX + json.dumps(result, sort_keys=True) + "\n")
    sys.stdout.flush()


def ready(detail: str = "") -> None:
    """Tell a parent process that this helper process is up (see ``spawn_helper``)."""
    sys.stdout.write(READY_PREFIX + detail + "\n")
    sys.stdout.flush()


class Helper:
    """A child process of a workload script (a gateway or a worker), stopped on exit."""

    def __init__(self, argv: Sequence[str], timeout: float = 60.0) -> None:
        self.argv = list(argv)
        self.timeout = timeout
        self.proc: subprocess.Popen[str] | None = None
        self.detail = ""

    def start(self, ready_test: Callable[[str], str | None] | None = None) -> str:
        """Spawn the process and wait for its ready line; returns the text after the prefix.

        ``ready_test`` may accept another line as the ready signal (e.g. a CLI's "listening"
        line) by returning the detail to report, or None to keep waiting.
        """
        argv = self.argv
        role = "-".join(a for a in argv[2:] if not a.startswith("-"))[:60].replace("/", "_")
        profile_dir = os.environ.get("BENCH_PROFILE_DIR")
        if profile_dir:  # profile the helper too: python -m cProfile -o DIR/<role>.prof ...
            argv = [argv[0], "-m", "cProfile", "-o", f"{profile_dir}/{role}.prof", *argv[1:]]
        passes_dir = os.environ.get("BENCH_PASSES_DIR")
        if passes_dir:  # scheduler passes and blocking waits (benchmarks._passes)
            argv = [argv[0], "-m", "benchmarks._passes", f"{passes_dir}/{role}.json", *argv[1:]]
        callgrind_dir = os.environ.get("BENCH_CALLGRIND_DIR")
        if callgrind_dir:  # instruction counts (repeatable on a busy machine), ~50x slower
            out = f"--callgrind-out-file={callgrind_dir}/{role}.callgrind"
            argv = ["valgrind", "--tool=callgrind", out, *argv]
        self.proc = subprocess.Popen(
            argv,
            stdout=subprocess.PIPE,
            stderr=None,
            stdin=subprocess.DEVNULL,
            text=True,
            bufsize=1,
        )
        assert self.proc.stdout is not None
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                raise RuntimeError(f"helper {self.argv!r} exited before it was ready")
            line = line.rstrip("\n")
            if line.startswith(READY_PREFIX):
                self.detail = line[len(READY_PREFIX) :]
                return self.detail
            if ready_test is not None:
                detail = ready_test(line)
                if detail is not None:
                    self.detail = detail
                    return detail
        raise RuntimeError(f"helper {self.argv!r} was not ready within {self.timeout} s")

    def cpu_seconds(self) -> float:
        """User + system CPU time the process has used so far (Linux /proc; 0 elsewhere)."""
        return process_cpu_seconds(self.proc.pid) if self.proc is not None else 0.0

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def __enter__(self) -> Helper:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


#: The ``payload`` workload's rich message (every kind of proto3 field), as proto3 JSON for
#: ``agentwire.examples.Order`` (``proto/examples/order.proto``); each side builds its
#: classes of it from this, the google class with ``json_format``.
RICH_ORDER_JSON: dict[str, Any] = {
    "id": "o-1",
    "status": "STATUS_OPEN",
    "priority": "PRIORITY_HIGH",
    "lines": [
        {"sku": "tea", "quantity": 2, "price": {"currency": "EUR", "units": 3, "nanos": 500000000}},
        {"sku": "cup", "quantity": 1},
    ],
    "notes": ["fragile", "gift"],
    "labels": {"channel": "web", "region": "eu"},
    "discounts": {"spring": {"currency": "EUR", "units": 1}},
    "shipTo": {"street": "1 Main St", "city": "Lyon"},
    "placedAt": "2026-11-30T17:30:00.123456Z",
    "extra": {"gift": True, "tags": ["a", 1.5, None], "box": {"size": 3}},
    "coupon": "",
}


def per_message_us(round_trip: Callable[[], object], duration: float) -> float:
    """Microseconds per call of *round_trip* (serialize + parse), over about *duration* s."""
    round_trip()  # warm caches (descriptor pools, class lookups)
    calls = 0
    batch = 100
    started = time.perf_counter()
    deadline = started + duration
    while True:
        for _ in range(batch):
            round_trip()
        calls += batch
        now = time.perf_counter()
        if now >= deadline:
            return round((now - started) / calls * 1e6, 2)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="one benchmark workload (prints a JSON line)")
    parser.add_argument("workload")
    parser.add_argument("--quick", action="store_true", help="shorter phases")
    parser.add_argument("--duration", type=float, default=None, help="seconds per timed phase")
    parser.add_argument("--port", type=int, default=0, help="gateway port (helper roles)")
    parser.add_argument(
        "--phases", default=None, help="gRPC workloads: which phases (for profiling one)"
    )
    parser.add_argument("--tls-dir", default=None, help="certificates (the TLS echo role)")
    parser.add_argument(
        "--shared", action="store_true", help="echo role: serve a shared agent type"
    )
    parser.add_argument("--spawned-at", type=float, default=0.0, help="time.monotonic() at spawn")
    return parser.parse_args(argv)


#: The phases each three-process gRPC workload runs unless ``--phases`` names others.
GRPC_PHASES = {"grpc": "seq,conc,pub", "grpc_flood": "flood", "grpc_tls": "seq,conc"}


#: ``grpc_shared``: keys the caller spreads its RPCs over, and its concurrent callers.
SHARED_KEYS = 10_000
SHARED_CALLERS = 64


def grpc_phases(args: argparse.Namespace) -> str:
    """The phases a gRPC workload runs: ``--phases`` if given, else the workload's own."""
    return str(args.phases or GRPC_PHASES[args.workload])


def phase_seconds(args: argparse.Namespace) -> float:
    if args.duration is not None:
        return float(args.duration)
    return 0.6 if args.quick else 1.5
