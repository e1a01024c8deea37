"""Where the processes of a workload wait: trio scheduler passes and blocking waits, per process.

``BENCH_PASSES_DIR=DIR python -m benchmarks._agentwire_side grpc --phases conc`` runs each
helper process (gateway, echo worker) as ``python -m benchmarks._passes DIR/<role>.json -m
MODULE ...`` and records the calling process too (``record``). Each process writes, at exit:

* the scheduler passes trio ran, and how many tasks each pass stepped;
* task steps per task (by the task's short name);
* every interval the process spent blocked waiting for I/O (an ``epoll_wait`` with a
  timeout), on the system-wide monotonic clock, so the processes' timelines line up.

``python -m benchmarks._passes report DIR`` then prints, over the middle 40% of the time all
processes ran, how much of it each spent blocked, and how long at a time, and for how much
of it 0, 1, 2 or 3 processes were busy (not blocked): with two vCPUs and three processes,
time with one busy process is capacity left unused.
"""

from __future__ import annotations

import atexit
import collections
import json
import os
import pathlib
import runpy
import sys
import time
from typing import Any

import trio

__all__ = ["record", "record_from_env", "report"]

_recording = False


class _Passes(trio.abc.Instrument):
    def __init__(self) -> None:
        self.steps: collections.Counter[str] = collections.Counter()
        self.per_pass: collections.Counter[int] = collections.Counter()
        self.blocked: list[tuple[float, float]] = []
        self._stepped = 0
        self._since: float | None = None

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        self.steps[task.name.rsplit(".", 1)[-1]] += 1
        self._stepped += 1

    def before_io_wait(self, timeout: float) -> None:
        self.per_pass[min(self._stepped, 20)] += 1
        self._stepped = 0
        if timeout > 0:
            self._since = time.monotonic()

    def after_io_wait(self, timeout: float) -> None:
        if self._since is not None:
            self.blocked.append((self._since, time.monotonic()))
            self._since = None


def record(path: str) -> None:
    """Record every ``trio.run`` of this process from now on; write ``path`` at exit."""
    global _recording
    _recording = True
    passes = _Passes()
    run = trio.run

    def instrumented_run(*args: Any, **kwargs: Any) -> Any:
        kwargs["instruments"] = [*kwargs.get("instruments", ()), passes]
        return run(*args, **kwargs)

    trio.run = instrumented_run

    def write() -> None:
        data = {
            "argv": " ".join(sys.argv),
            "steps": dict(passes.steps.most_common(12)),
            "passes": sum(passes.per_pass.values()),
            "tasks_per_pass": sorted(passes.per_pass.items()),
            "blocked": passes.blocked,
        }
        pathlib.Path(path).write_text(json.dumps(data))

    atexit.register(write)


def record_from_env(role: str) -> None:
    """:func:`record` into ``$BENCH_PASSES_DIR/<role>.json`` if that is set (and this
    process is not recorded already)."""
    directory = os.environ.get("BENCH_PASSES_DIR")
    if directory and not _recording:
        record(f"{directory}/{role}.json")


def _busy_profile(blocked: list[list[list[float]]], lo: float, hi: float) -> list[float]:
    """Seconds of [lo, hi] during which exactly n of the processes were not blocked."""
    edges: list[tuple[float, int]] = []
    for intervals in blocked:
        for start, end in intervals:
            if lo < start < hi:
                edges.append((start, -1))
            if lo < end < hi:
                edges.append((end, +1))
    edges.sort()
    busy = len(blocked) - sum(1 for intervals in blocked for s, e in intervals if s <= lo < e)
    seconds = [0.0] * (len(blocked) + 1)
    now = lo
    for when, change in edges:
        seconds[busy] += when - now
        now = when
        busy += change
    seconds[busy] += hi - now
    return seconds


def report(directory: str) -> None:
    runs = [json.loads(p.read_text()) for p in sorted(pathlib.Path(directory).glob("*.json"))]
    runs = [r for r in runs if r["blocked"]]
    start = max(r["blocked"][0][0] for r in runs)
    end = min(r["blocked"][-1][1] for r in runs)
    lo, hi = start + 0.3 * (end - start), start + 0.7 * (end - start)
    span = hi - lo
    for r in runs:
        inside = [(s, e) for s, e in r["blocked"] if e > lo and s < hi]
        idle = sum(min(e, hi) - max(s, lo) for s, e in inside)
        print(
            f"{r['argv'][-60:]:60}  blocked {100 * idle / span:4.1f}%,"
            f" {len(inside) / span:6.0f} waits/s of {1e6 * idle / max(len(inside), 1):5.0f} µs;"
            f" {r['passes']} passes; steps {r['steps']}"
        )
    shares = _busy_profile([r["blocked"] for r in runs], lo, hi)
    print("time with n processes busy: " + ", ".join(
        f"{n}: {100 * s / span:.1f}%" for n, s in enumerate(shares)
    ))  # fmt: skip


def _main() -> None:
    if sys.argv[1] == "report":
        report(sys.argv[2])
        return
    # _passes OUT -m MODULE ARGS...: run MODULE as __main__ with the passes recorded
    out, flag, module, *rest = sys.argv[1:]
    if flag != "-m":
        raise SystemExit("usage: python -m benchmarks._passes OUT -m MODULE [ARGS...]")
    from benchmarks import _passes  # this module as the workload will import it

    _passes.record(out)
    sys.argv = [module, *rest]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    _main()
