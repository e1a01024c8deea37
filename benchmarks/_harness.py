"""``python -m benchmarks``: agentwire beside AutoGen 0.7.5, one run, side by side.

Each system runs in its own interpreter (AutoGen pins grpcio and protobuf): the AutoGen
workloads with ``$AGENTWIRE_AUTOGEN_PYTHON`` (``nox -s bench`` builds that venv), agentwire's
with this interpreter. Each workload is run A/B/A/B... and the medians of the runs are compared.
A fixed CPU loop is timed before, between and after the pairs of runs so that a busy machine
shows; a workload whose loop times spread by more than 10% is run again once (by default) and
the quieter attempt is kept. Every attempt and run is in the JSON report.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import pathlib
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from typing import Any

from . import _common
from ._spec import (
    HEADERS,
    MIN_RUNS,
    SYSTEMS,
    WORKLOAD_NAMES,
    WORKLOADS,
    Row,
    Run,
    Workload,
    ceiling_rows,
    markdown_table,
    median_figures,
    rows_for,
    spread,
    table_lines,
    workload,
)

ROOT = pathlib.Path(__file__).resolve().parent.parent
RESULTS = pathlib.Path(__file__).resolve().parent / "results"
SCRIPTS = {"autogen": "benchmarks._autogen_side", "agentwire": "benchmarks._agentwire_side"}
NAMES = {"autogen": "AutoGen 0.7.5", "agentwire": "agentwire"}
CALIBRATION_ROUNDS = 3_000_000
#: Calibration spread ((max - min) / min) above which a workload's runs count as noisy.
NOISY_SPREAD = 0.10


def calibrate() -> float:
    """Seconds for a fixed pure-Python CPU loop (the same work every time)."""
    started = time.perf_counter()
    acc = 0
    for i in range(CALIBRATION_ROUNDS):
        acc = (acc + i * i) % 1_000_003
    elapsed = time.perf_counter() - started
    if acc < 0:  # keeps the loop from being optimised away, never true
        raise AssertionError
    return elapsed


def parse_result(stdout: str) -> dict[str, float]:
    """The figures from a workload script's output (its one result line)."""
    for line in reversed(stdout.splitlines()):
        if line.startswith(_common.RESULT_PREFIX):
            data = json.loads(line[len(_common.RESULT_PREFIX) :])
            if not isinstance(data, dict):
                raise ValueError("result line is not a JSON object")
            return {str(k): float(v) for k, v in data.items() if isinstance(v, int | float)}
    raise ValueError("no result line in the workload's output")


#: Imports that warm each side's bytecode cache before anything is timed.
WARM_UP = {
    "autogen": "import autogen_core, autogen_ext.runtimes.grpc, benchmarks._autogen_side",
    "agentwire": "import agentwire, agentwire._cli, benchmarks._agentwire_side",
}


def child_env(pycache: pathlib.Path) -> dict[str, str]:
    """The environment of the workload processes: bytecode caching on, in a private tree.

    With ``PYTHONDONTWRITEBYTECODE`` set (or a source checkout never imported before), a side
    whose modules have no ``.pyc`` would pay compilation in every start-up figure while the
    other (installed from wheels) would not. A fresh ``PYTHONPYCACHEPREFIX`` tree, warmed by
    ``WARM_UP`` for both sides, makes them equal.
    """
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = str(pycache)
    return env


def warm_up(python: str, system: str, env: dict[str, str]) -> None:
    subprocess.run(
        [python, "-c", WARM_UP[system]], cwd=ROOT, env=env, check=True, timeout=120,
        stdin=subprocess.DEVNULL,
    )  # fmt: skip


def run_once(
    python: str,
    system: str,
    wl: Workload,
    index: int,
    *,
    quick: bool,
    duration: float | None,
    env: dict[str, str] | None = None,
) -> Run:
    argv = [python, "-m", SCRIPTS[system], wl.name]
    if quick:
        argv.append("--quick")
    if duration is not None:
        argv += ["--duration", str(duration)]
    started = time.monotonic()
    if wl.needs_spawn_time:
        argv += ["--spawned-at", repr(started)]
    try:
        proc = subprocess.run(
            argv,
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=wl.timeout,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired:
        return Run(system, index, time.monotonic() - started, error=f"timed out ({wl.timeout} s)")
    wall = time.monotonic() - started
    try:
        if proc.returncode != 0:
            raise ValueError(f"exit status {proc.returncode}")
        return Run(system, index, round(wall, 3), parse_result(proc.stdout))
    except ValueError as exc:
        tail = "\n".join(proc.stderr.strip().splitlines()[-6:])
        return Run(system, index, round(wall, 3), error=f"{exc}: {tail}")


def _dist_versions_code(dists: Sequence[str]) -> str:
    return (
        "import importlib.metadata as m, json, platform\n"
        "out = {'python': platform.python_version()}\n"
        f"for d in {list(dists)!r}:\n"
        "    try: out[d] = m.version(d)\n"
        "    except m.PackageNotFoundError: out[d] = None\n"
        "print(json.dumps(out))\n"
    )


def versions(python: str, dists: Sequence[str]) -> dict[str, Any]:
    try:
        proc = subprocess.run(
            [python, "-c", _dist_versions_code(dists)],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        data: dict[str, Any] = json.loads(proc.stdout)
        return data
    except (OSError, subprocess.SubprocessError, ValueError) as exc:
        return {"error": str(exc)}


def source_commit() -> str | None:
    """The commit measured: ``$AGENTWIRE_BENCH_COMMIT`` (for exported trees), else git's HEAD."""
    if os.environ.get("AGENTWIRE_BENCH_COMMIT"):
        return os.environ["AGENTWIRE_BENCH_COMMIT"]
    try:
        proc = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "HEAD"],
            capture_output=True, text=True, timeout=10, check=True,
        )  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    return proc.stdout.strip() or None


def machine_info() -> dict[str, Any]:
    cpu = platform.processor()
    try:
        for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_total = None
    try:
        for line in pathlib.Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem_total = int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "mem_total_bytes": mem_total,
        "loadavg": os.getloadavg() if hasattr(os, "getloadavg") else None,
    }


# -- presentation ----------------------------------------------------------------------------


class _Plain:
    """Progress and output without rich."""

    def log(self, text: str) -> None:
        print(text, flush=True)

    def table(self, rows: Sequence[Row]) -> None:
        print(markdown_table(rows), flush=True)


def _print_rich_table(console: Any, rows: Sequence[Row]) -> None:
    from rich.table import Table

    table = Table(title="agentwire vs AutoGen 0.7.5 (medians)", show_lines=False)
    for i, header in enumerate(HEADERS):
        table.add_column(header or "verdict", justify="right" if 2 <= i <= 4 else "left")
    last = None
    for row, cells in zip(rows, table_lines(rows), strict=True):
        if last is not None and row.workload != last:
            table.add_section()
        last = row.workload
        style = {True: "green", False: "bold red", None: ""}[row.met]
        cells[-1] = f"[{style}]{cells[-1]}[/]" if style else cells[-1]
        table.add_row(*cells)
    console.print(table)


def plot_ratios(rows: Sequence[Row], path: pathlib.Path, title: str) -> bool:
    """A horizontal bar chart of the headline ratios (log scale) with their targets."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    shown = [r for r in rows if r.plot and r.ratio is not None]
    if not shown:
        return False
    labels = [
        f"{r.title}: {r.label}" + ("" if r.higher_is_better else " (lower is better)")
        for r in shown
    ]
    values = [r.ratio or 0.0 for r in shown]
    colours = [{True: "#2a9d3f", False: "#d1495b", None: "#8a8a8a"}[r.met] for r in shown]
    fig, ax = plt.subplots(figsize=(10, 0.45 * len(shown) + 1.6))
    ys = list(range(len(shown)))[::-1]
    ax.barh(ys, values, color=colours)
    for y, r in zip(ys, shown, strict=True):
        if r.target_ratio is not None:
            ax.plot([r.target_ratio] * 2, [y - 0.4, y + 0.4], color="black", linewidth=2)
        ax.text(r.ratio or 0.0, y, f" {r.ratio:.2f}x", va="center", fontsize=8)
    ax.axvline(1.0, color="#444444", linewidth=0.8, linestyle="--")
    ax.set_xscale("log")
    top = max([*values, *(r.target_ratio or 0.0 for r in shown)])
    ax.set_xlim(right=top * 2.5)
    ax.set_yticks(ys, labels, fontsize=8)
    ax.set_xlabel("agentwire / AutoGen 0.7.5 (log scale; black tick = target; green = met)")
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


# -- the run ---------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks", description="agentwire vs AutoGen 0.7.5, side by side"
    )
    parser.add_argument("--quick", action="store_true", help="short phases, 3 runs (~2 min)")
    parser.add_argument(
        "--only", action="append", choices=WORKLOAD_NAMES, metavar="NAME",
        help=f"run only this workload (repeatable): {', '.join(WORKLOAD_NAMES)}",
    )  # fmt: skip
    parser.add_argument("--runs", type=int, default=None, help="runs per system (>= 3)")
    parser.add_argument("--duration", type=float, default=None, help="seconds per timed phase")
    parser.add_argument(
        "--retries",
        type=int,
        default=None,
        help="re-run a workload whose calibration spread shows a busy machine, keeping the "
        "quieter attempt (default 1; 0 with --quick)",
    )
    parser.add_argument(
        "--autogen-python",
        default=os.environ.get("AGENTWIRE_AUTOGEN_PYTHON"),
        help="python with autogen-ext[grpc]==0.7.5 (default $AGENTWIRE_AUTOGEN_PYTHON)",
    )
    parser.add_argument(
        "--output",
        type=pathlib.Path,
        default=None,
        help="output path stem (default benchmarks/results/latest; .../quick with --quick and "
        ".../partial with --only, both git-ignored, so that only full runs replace latest)",
    )
    parser.add_argument(
        "--markdown",
        type=pathlib.Path,
        metavar="JSON",
        help="print the table of a saved report as Markdown (for README.md) and exit",
    )
    args = parser.parse_args(argv)
    if args.markdown is not None:
        return args
    if args.runs is None:
        args.runs = MIN_RUNS if args.quick else 5
    if args.retries is None:
        args.retries = 0 if args.quick else 1
    if args.runs < MIN_RUNS:
        parser.error(f"--runs must be at least {MIN_RUNS} (medians of >= {MIN_RUNS} runs)")
    if not args.autogen_python:
        parser.error("set AGENTWIRE_AUTOGEN_PYTHON (or --autogen-python); `nox -s bench` does")
    if args.output is None:
        args.output = RESULTS / ("partial" if args.only else "quick" if args.quick else "latest")
    return args


def run_workloads(
    args: argparse.Namespace,
    selected: Sequence[Workload],
    log: Callable[[str], None],
    step: Callable[[str], None],
    grow: Callable[[int], None] = lambda n: None,
) -> tuple[dict[str, Any], list[Row]]:
    pythons = {"autogen": args.autogen_python, "agentwire": sys.executable}
    pycache = pathlib.Path(tempfile.mkdtemp(prefix="agentwire-bench-pycache-"))
    env = child_env(pycache)
    try:
        for system in SYSTEMS:
            step(f"warming {NAMES[system]}'s bytecode cache")
            warm_up(pythons[system], system, env)
        return _run_workloads(args, selected, log, step, pythons, env, grow)
    finally:
        shutil.rmtree(pycache, ignore_errors=True)


def _attempt(
    args: argparse.Namespace,
    wl: Workload,
    step: Callable[[str], None],
    pythons: dict[str, str],
    env: dict[str, str],
    log: Callable[[str], None],
) -> tuple[list[Run], list[float]]:
    """One A/B/A/B... series of a workload, with the calibration loop timed between pairs."""
    runs: list[Run] = []
    calibration = [calibrate()]
    n = runs_for(args, wl)
    for index in range(n):
        for system in SYSTEMS:  # A/B/A/B...
            step(f"{wl.title}: {NAMES[system]} run {index + 1}/{n}")
            run = run_once(
                pythons[system],
                system,
                wl,
                index,
                quick=args.quick,
                duration=args.duration,
                env=env,
            )
            if run.error is not None:
                log(f"  {wl.name} {system} run {index + 1} failed: {run.error}")
            runs.append(run)
        calibration.append(calibrate())
    return runs, calibration


def runs_for(args: argparse.Namespace, wl: Workload) -> int:
    return int(args.runs) + (0 if args.quick else wl.extra_runs)


def _run_workloads(
    args: argparse.Namespace,
    selected: Sequence[Workload],
    log: Callable[[str], None],
    step: Callable[[str], None],
    pythons: dict[str, str],
    env: dict[str, str],
    grow: Callable[[int], None],
) -> tuple[dict[str, Any], list[Row]]:
    report: dict[str, Any] = {}
    all_rows: list[Row] = []
    for wl in selected:
        attempts: list[dict[str, Any]] = []
        series: list[list[Run]] = []
        for attempt in range(1 + args.retries):
            runs, calibration = _attempt(args, wl, step, pythons, env, log)
            noise = spread(calibration)
            noisy = noise > NOISY_SPREAD
            log(
                f"{wl.title}: calibration loop {min(calibration) * 1000:.0f}-"
                f"{max(calibration) * 1000:.0f} ms across the runs (spread {noise:.1%})"
                + ("  NOISY" if noisy else "")
            )
            attempts.append(
                {
                    "calibration_s": [round(c, 4) for c in calibration],
                    "spread": round(noise, 4),
                    "noisy": noisy,
                    "runs": [r.to_json() for r in runs],
                }
            )
            series.append(runs)
            if not noisy:
                break
            if attempt < args.retries:
                log(f"{wl.title}: the machine was busy; running it again, keeping the quieter")
                grow(2 * runs_for(args, wl))
        best = min(range(len(attempts)), key=lambda i: attempts[i]["spread"])
        medians = {system: median_figures(series[best], system) for system in SYSTEMS}
        rows = rows_for(wl, medians)
        all_rows += rows
        report[wl.name] = {
            "title": wl.title,
            "calibration_s": attempts[best]["calibration_s"],
            "noisy": attempts[best]["noisy"],
            "chosen_attempt": best,
            "attempts": attempts,
            "runs": attempts[best]["runs"],
            "median": medians,
            "rows": [r.to_json() for r in rows],
        }
    all_rows += ceiling_rows({name: data["median"] for name, data in report.items()})
    return report, all_rows


def rows_from_report(document: dict[str, Any]) -> list[Row]:
    """The table rows of a saved report, recomputed from its medians."""
    rows: list[Row] = []
    for name, data in document["workloads"].items():
        rows += rows_for(workload(name), data["median"])
    rows += ceiling_rows({name: data["median"] for name, data in document["workloads"].items()})
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.markdown is not None:
        print(markdown_table(rows_from_report(json.loads(args.markdown.read_text()))))
        return 0
    selected = [workload(name) for name in args.only] if args.only else list(WORKLOADS)
    try:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )
    except ImportError:
        Console = None  # type: ignore[assignment,misc]

    started = datetime.datetime.now(datetime.UTC)
    total_steps = len(SYSTEMS) + sum(2 * runs_for(args, w) for w in selected)
    plain = _Plain()
    if Console is not None:
        console = Console()
        if not console.is_terminal:
            console = Console(width=140)
        console.print(f"[bold]agentwire vs AutoGen 0.7.5[/] ({len(selected)} workloads)")
        with Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
        ) as progress:
            task = progress.add_task("starting", total=total_steps)
            first = [True]

            def step(text: str) -> None:
                if not first[0]:
                    progress.advance(task)
                first[0] = False
                progress.update(task, description=text)

            def grow(n: int) -> None:
                total = progress.tasks[0].total or 0
                progress.update(task, total=total + n)

            report, rows = run_workloads(args, selected, console.log, step, grow)
            progress.advance(task)
            progress.update(task, description="done")
        _print_rich_table(console, rows)
        log: Callable[[str], None] = console.print
    else:
        report, rows = run_workloads(args, selected, plain.log, plain.log)
        plain.table(rows)
        log = plain.log

    finished = datetime.datetime.now(datetime.UTC)
    document = {
        "schema": 1,
        "started": started.isoformat(timespec="seconds"),
        "finished": finished.isoformat(timespec="seconds"),
        "argv": sys.argv[1:] if argv is None else list(argv),
        "quick": args.quick,
        "runs_per_system": args.runs,
        "commit": source_commit(),
        "machine": machine_info(),
        "versions": {
            "agentwire_side": versions(
                sys.executable, ["agentwire", "trio", "h2", "protobuf", "grpcio"]
            ),
            "autogen_side": versions(
                args.autogen_python, ["autogen-core", "autogen-ext", "grpcio", "protobuf"]
            ),
        },
        "workloads": report,
        "table": [r.to_json() for r in rows],
        "table_markdown": markdown_table(rows),
    }
    out: pathlib.Path = args.output
    out.parent.mkdir(parents=True, exist_ok=True)
    json_path = out.with_suffix(".json")
    json_path.write_text(json.dumps(document, indent=1) + "\n")
    log(f"wrote {json_path}")
    png_path = out.with_suffix(".png")
    title = f"agentwire vs AutoGen 0.7.5 — {started:%Y-%m-%d}, {machine_info()['cpu_count']} CPUs"
    if plot_ratios(rows, png_path, title):
        log(f"wrote {png_path}")
    else:
        log("no chart (matplotlib missing, or no ratio to show)")
    failed = any(r["error"] for w in report.values() for r in w["runs"])
    return 1 if failed else 0
