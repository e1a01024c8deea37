"""What is measured: the workloads, their figures, and the targets (agentwire / AutoGen).

Pure data and pure functions (medians, ratios, verdicts, table rows), so the harness's
arithmetic can be tested on fabricated runs without running anything.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

SYSTEMS = ("autogen", "agentwire")
MIN_RUNS = 3


@dataclass(frozen=True)
class Metric:
    """One figure a workload reports, keyed as in the workload's JSON result line."""

    key: str
    label: str
    unit: str
    higher_is_better: bool
    #: Target for agentwire / AutoGen: ``ratio >= target`` if higher is better, else ``<=``.
    target_ratio: float | None = None
    #: Bound on agentwire's own figure, in the metric's unit, same direction as above.
    target_abs: float | None = None
    #: Shown in the ratio chart (the headline figures).
    plot: bool = False


@dataclass(frozen=True)
class Workload:
    name: str
    title: str
    metrics: tuple[Metric, ...]
    #: Seconds after which one run of one system is abandoned.
    timeout: float = 180.0
    #: Pass the harness's spawn time to the script (start-up is measured from spawn).
    needs_spawn_time: bool = False
    #: Runs per system: start-up runs are cheap and noisier, so they get more.
    extra_runs: int = 0


def _lat(prefix: str, what: str, qs: Sequence[int] = (50, 95, 99)) -> tuple[Metric, ...]:
    return tuple(Metric(f"{prefix}_p{q}_us", f"{what} p{q}", "µs", False) for q in qs)


def _informational(metrics: Iterable[Metric]) -> tuple[Metric, ...]:
    """These figures with no targets and no place in the ratio chart."""
    return tuple(replace(m, target_ratio=None, target_abs=None, plot=False) for m in metrics)


#: Three processes over gRPC; ``grpc_tls`` reports its RPC figures over mutual TLS.
_GRPC = Workload(
    "grpc",
    "gRPC, 3 processes",
    (
        Metric("seq_msgs_per_s", "sequential RPC", "rt/s", True, 2.0, plot=True),
        Metric("seq_p50_us", "sequential p50", "µs", False),
        Metric("seq_p99_us", "sequential p99", "µs", False, target_abs=1000.0),
        Metric("conc_msgs_per_s", "100 concurrent RPC", "rt/s", True, 6.0, plot=True),
        Metric("conc_p99_us", "100 concurrent p99", "µs", False),
        Metric("pub_delivered_per_s", "publish B->A", "deliv/s", True, 10.0, plot=True),
    ),
    timeout=240.0,
)


#: Reference rows, no agentwire or AutoGen code: plain grpcio and sockets (``_ceiling``), run by
#: each side's interpreter in turn, so the two columns are the same measurement twice.
_CEILING = Workload(
    "ceiling",
    "Ceilings: plain grpcio (C-core, asyncio API) and sockets, 100 B, run by each side",
    (
        Metric("direct_seq_rt_per_s", "grpcio direct, sequential", "rt/s", True),
        Metric("direct_seq_p50_us", "grpcio direct, sequential p50", "µs", False),
        Metric("direct_conc_rt_per_s", "grpcio direct, 100 in flight", "rt/s", True),
        Metric("relay_seq_rt_per_s", "grpcio relayed, sequential", "rt/s", True),
        Metric("relay_seq_p50_us", "grpcio relayed, sequential p50", "µs", False),
        Metric("relay_seq_p99_us", "grpcio relayed, sequential p99", "µs", False),
        Metric("relay_conc_rt_per_s", "grpcio relayed, 100 in flight", "rt/s", True),
        Metric("socket_rt_per_s", "socket ping-pong", "rt/s", True),
        Metric("socket_p50_us", "socket ping-pong p50", "µs", False),
    ),
)

#: The ``grpc`` figures as a share of a ceiling measured in the same interpreter's run:
#: (label, ``grpc`` figure, ``ceiling`` figure).
CEILING_SHARES = (
    ("sequential RPC / grpcio relayed", "seq_msgs_per_s", "relay_seq_rt_per_s"),
    ("sequential RPC / grpcio direct", "seq_msgs_per_s", "direct_seq_rt_per_s"),
    ("100 concurrent RPC / grpcio relayed", "conc_msgs_per_s", "relay_conc_rt_per_s"),
    ("sequential RPC / socket ping-pong", "seq_msgs_per_s", "socket_rt_per_s"),
)
CEILING_SHARES_TITLE = "gRPC, 3 processes, as a share of the ceilings"


WORKLOADS: tuple[Workload, ...] = (
    Workload(
        "inproc_rpc",
        "In-process RPC",
        (
            Metric("seq_msgs_per_s", "sequential", "msg/s", True, 60.0, plot=True),
            *_lat("seq", "sequential"),
            Metric("conc_msgs_per_s", "100 concurrent", "msg/s", True, 60.0, plot=True),
            *_lat("conc", "100 concurrent"),
        ),
    ),
    Workload(
        "inproc_publish",
        "In-process publish",
        (
            Metric("pub1_delivered_per_s", "1 subscriber", "deliv/s", True, 40.0, plot=True),
            Metric(
                "pub10_delivered_per_s", "10 subscriber types", "deliv/s", True, 40.0, plot=True
            ),
        ),
    ),
    Workload(
        "activation",
        "Activation (10,000 keys)",
        (
            Metric("activations_per_s", "activations", "act/s", True, 25.0, plot=True),
            Metric(
                "bytes_per_agent",
                "memory per agent (tracemalloc)",
                "B",
                False,
                1.0,
                target_abs=400.0,
                plot=True,
            ),
            Metric("rss_bytes_per_agent", "memory per agent (RSS delta)", "B", False),
        ),
    ),
    _GRPC,
    _CEILING,
    Workload(
        "grpc_tls",
        "gRPC over mutual TLS, 3 processes (AutoGen: plaintext)",
        _informational(m for m in _GRPC.metrics if m.key.startswith(("seq_", "conc_"))),
        timeout=_GRPC.timeout,
    ),
    Workload(
        "grpc_flood",
        "gRPC RPC under a publish flood",
        (
            Metric("flood_rpc_p50_us", "RPC p50 while the caller floods", "µs", False),
            Metric(
                "flood_rpc_p99_us",
                "RPC p99 while the caller floods",
                "µs",
                False,
                target_abs=50_000.0,
            ),
            Metric("flood_rpc_per_s", "RPCs answered", "rt/s", True),
            Metric("flood_published_per_s", "events published", "msg/s", True),
        ),
        timeout=240.0,
    ),
    Workload(
        "transport",
        "gRPC transport, one bidi stream",
        (
            Metric("pingpong_rt_per_s", "ping-pong (100 B)", "rt/s", True),
            Metric("pipelined_rt_per_s", "64 in flight", "rt/s", True),
            Metric("oneway_msgs_per_s", "one-way to a sink", "msg/s", True),
        ),
    ),
    Workload(
        "grpc_shared",
        "One agent type on many workers (agentwire only: AutoGen's host allows one owner)",
        (
            Metric("single_owner_rpc_per_s", "1 worker, no placement", "rt/s", True),
            Metric("shared1_rpc_per_s", "1 worker, placement on", "rt/s", True),
            Metric("shared2_rpc_per_s", "2 workers", "rt/s", True),
            Metric("shared4_rpc_per_s", "4 workers", "rt/s", True),
        ),
        timeout=240.0,
    ),
    Workload(
        "payload",
        "Protobuf payload, serialize + parse per message",
        (
            Metric("google_small_us", "google class, 32-char message", "µs", False),
            Metric("google_rich_us", "google class, every field kind", "µs", False),
            # AutoGen has no betterproto2: agentwire only, the cost of the dataclasses.
            Metric("bp2_small_us", "betterproto2, 32-char message", "µs", False),
            Metric("bp2_rich_us", "betterproto2, every field kind", "µs", False),
        ),
        timeout=120.0,
    ),
    Workload(
        "flow",
        "Flows, in-process (AutoGen: hand-written baseline only)",
        (
            Metric("flow_step_us", "StateFlow step", "µs", False),
            Metric("flow_baseline_step_us", "hand-written send, per step", "µs", False),
            Metric("flow_step_overhead_us", "StateFlow overhead per step", "µs", False),
            Metric("dag_task_us", "DAG task (1,000, width 100)", "µs", False),
            Metric("dag_baseline_task_us", "hand-written nursery, per task", "µs", False),
            Metric("dag_task_overhead_us", "DAG overhead per task", "µs", False),
        ),
    ),
    Workload(
        "startup",
        "Start-up",
        (
            Metric("startup_ms", "spawn -> first RPC answered", "ms", False, 0.6, plot=True),
            Metric("imports_ms", "of which interpreter + imports", "ms", False),
            Metric("to_first_rpc_ms", "of which gateway+workers+RPC", "ms", False),
        ),
        timeout=60.0,
        needs_spawn_time=True,
        extra_runs=2,
    ),
    Workload(
        "inproc_startup",
        "In-process start-up",
        (
            Metric("inproc_startup_ms", "spawn -> first RPC answered", "ms", False, 0.4, plot=True),
            Metric("inproc_imports_ms", "of which interpreter + imports", "ms", False),
            Metric("inproc_to_first_rpc_ms", "of which runtime+agent+RPC", "ms", False),
        ),
        timeout=60.0,
        needs_spawn_time=True,
        extra_runs=2,
    ),
    Workload(
        "stateful",
        "Stateful agents, in-process RPC (agentwire only: AutoGen keeps no versioned state)",
        (
            Metric("stateless_us", "plain agent, count in an attribute", "µs", False),
            Metric("memory_us", "StatefulAgent, memory store", "µs", False),
            Metric("sqlite_us", "StatefulAgent, SQLite store", "µs", False),
            Metric("redis_us", "StatefulAgent, Redis store (local server)", "µs", False),
            Metric("list1000_us", "1,000-item list state, +1 item, memory store", "µs", False),
            Metric("list1000_state_bytes", "that state's JSON", "B", False),
            Metric("list1000_delta_bytes", "bytes of a delta (one item appended)", "B", False),
            Metric(
                "list1000_written_bytes", "bytes written per commit (snapshot every 16)", "B", False
            ),
        ),
        timeout=240.0,
    ),
    Workload(
        "cluster",
        "A cluster of gateways on Redis (agentwire only: AutoGen's host is one process)",
        (
            Metric("one_sequential_rpc_per_s", "1 gateway, sequential", "rt/s", True),
            Metric("one_sequential_p50_us", "1 gateway, sequential p50", "µs", False),
            Metric("one_concurrent_rpc_per_s", "1 gateway, 100 in flight", "rt/s", True),
            Metric("one_published_per_s", "1 gateway, events delivered", "ev/s", True),
            Metric("one_cpu_a_us_per_rpc", "1 gateway, gateway CPU per RPC", "µs", False),
            Metric("one_cpu_a_us_per_event", "1 gateway, gateway CPU per event", "µs", False),
            Metric("two_sequential_rpc_per_s", "2 gateways, sequential", "rt/s", True),
            Metric("two_sequential_p50_us", "2 gateways, sequential p50", "µs", False),
            Metric("two_concurrent_rpc_per_s", "2 gateways, 100 in flight", "rt/s", True),
            Metric("two_published_per_s", "2 gateways, events delivered", "ev/s", True),
            Metric("two_cpu_a_us_per_rpc", "2 gateways, caller's gateway CPU per RPC", "µs", False),
            Metric("two_cpu_b_us_per_rpc", "2 gateways, callee's gateway CPU per RPC", "µs", False),
            Metric("two_cpu_redis_us_per_rpc", "2 gateways, redis-server CPU per RPC", "µs", False),
            Metric(
                "two_cpu_a_us_per_event",
                "2 gateways, publisher's gateway CPU per event",
                "µs",
                False,
            ),
            Metric(
                "two_cpu_b_us_per_event",
                "2 gateways, subscriber's gateway CPU per event",
                "µs",
                False,
            ),
            Metric(
                "two_cpu_redis_us_per_event", "2 gateways, redis-server CPU per event", "µs", False
            ),
        ),
        timeout=240.0,
    ),
)

WORKLOAD_NAMES = tuple(w.name for w in WORKLOADS)


def workload(name: str) -> Workload:
    for w in WORKLOADS:
        if w.name == name:
            return w
    raise KeyError(f"no workload {name!r}; choose from {', '.join(WORKLOAD_NAMES)}")


@dataclass
class Run:
    """One run of one workload by one system, as recorded in the JSON report."""

    system: str
    index: int
    wall_s: float
    result: dict[str, float] = field(default_factory=dict)
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def median_figures(runs: Iterable[Run], system: str) -> dict[str, float]:
    """Per figure, the median over this system's successful runs."""
    values: dict[str, list[float]] = {}
    for run in runs:
        if run.system != system or run.error is not None:
            continue
        for key, value in run.result.items():
            if isinstance(value, int | float):
                values.setdefault(key, []).append(float(value))
    return {key: float(statistics.median(vals)) for key, vals in values.items()}


def spread(calibration: Sequence[float]) -> float:
    """How much the calibration loop's time varied: (max - min) / min (0 for one value)."""
    low = min(calibration)
    return (max(calibration) - low) / low if low > 0 else 0.0


def ratio(autogen: float | None, agentwire: float | None) -> float | None:
    """agentwire / AutoGen, or None where either side is missing or AutoGen's is zero."""
    if autogen is None or agentwire is None or autogen == 0:
        return None
    return agentwire / autogen


def verdict(metric: Metric, agentwire: float | None, rat: float | None) -> bool | None:
    """Whether the metric's targets are met; None if it has none or figures are missing."""
    checks: list[bool] = []
    if metric.target_ratio is not None:
        if rat is None:
            return None
        checks.append(
            rat >= metric.target_ratio if metric.higher_is_better else rat <= metric.target_ratio
        )
    if metric.target_abs is not None:
        if agentwire is None:
            return None
        checks.append(
            agentwire >= metric.target_abs
            if metric.higher_is_better
            else agentwire <= metric.target_abs
        )
    if not checks:
        return None
    return all(checks)


def target_text(metric: Metric) -> str:
    parts = []
    sign = ">=" if metric.higher_is_better else "<="
    if metric.target_ratio is not None:
        parts.append(f"{sign} {metric.target_ratio:g}x")
    if metric.target_abs is not None:
        parts.append(f"{sign} {metric.target_abs:g} {metric.unit}")
    return ", ".join(parts)


@dataclass(frozen=True)
class Row:
    workload: str
    title: str
    metric: str
    label: str
    unit: str
    autogen: float | None
    agentwire: float | None
    ratio: float | None
    target: str
    met: bool | None
    higher_is_better: bool
    plot: bool
    target_ratio: float | None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def rows_for(wl: Workload, medians: Mapping[str, Mapping[str, float]]) -> list[Row]:
    """Table rows of one workload from the per-system medians."""
    rows = []
    for metric in wl.metrics:
        ag = medians.get("autogen", {}).get(metric.key)
        aw = medians.get("agentwire", {}).get(metric.key)
        rat = ratio(ag, aw)
        rows.append(
            Row(
                workload=wl.name,
                title=wl.title,
                metric=metric.key,
                label=metric.label,
                unit=metric.unit,
                autogen=ag,
                agentwire=aw,
                ratio=rat,
                target=target_text(metric),
                met=verdict(metric, aw, rat),
                higher_is_better=metric.higher_is_better,
                plot=metric.plot,
                target_ratio=metric.target_ratio,
            )
        )
    return rows


def ceiling_rows(medians: Mapping[str, Mapping[str, Mapping[str, float]]]) -> list[Row]:
    """The ``grpc`` workload's rates as percentages of the ceilings (``CEILING_SHARES``).

    ``medians`` maps workload name -> system -> figure; each system's share is of the
    ceiling measured by its own interpreter. Empty unless both workloads were run.
    """
    grpc, ceiling = medians.get("grpc"), medians.get("ceiling")
    if not grpc or not ceiling:
        return []
    rows = []
    for label, figure, limit in CEILING_SHARES:
        shares: dict[str, float | None] = {}
        for system in SYSTEMS:
            value = grpc.get(system, {}).get(figure)
            top = ceiling.get(system, {}).get(limit)
            shares[system] = None if value is None or not top else 100.0 * value / top
        rows.append(
            Row(
                workload="ceiling_shares",
                title=CEILING_SHARES_TITLE,
                metric=f"{figure}/{limit}",
                label=label,
                unit="%",
                autogen=shares["autogen"],
                agentwire=shares["agentwire"],
                ratio=ratio(shares["autogen"], shares["agentwire"]),
                target="",
                met=None,
                higher_is_better=True,
                plot=False,
                target_ratio=None,
            )
        )
    return rows


def fmt_figure(value: float | None, unit: str) -> str:
    if value is None:
        return "n/a"
    if abs(value) >= 100:
        text = f"{value:,.0f}"
    elif abs(value) >= 10:
        text = f"{value:.1f}"
    else:
        text = f"{value:.2f}"
    return f"{text} {unit}"


def fmt_ratio(value: float | None) -> str:
    if value is None:
        return "n/a"
    if value >= 10:
        return f"{value:.1f}x"
    if value >= 0.1:
        return f"{value:.2f}x"
    return f"{value:.2g}x"


def fmt_met(met: bool | None) -> str:
    return {True: "met", False: "MISSED", None: ""}[met]


def table_lines(rows: Sequence[Row]) -> list[list[str]]:
    """The report table as cells: workload, figure, AutoGen, agentwire, ratio, target, verdict."""
    lines = []
    last = None
    for row in rows:
        title = row.title if row.workload != last else ""
        last = row.workload
        lines.append(
            [
                title,
                row.label,
                fmt_figure(row.autogen, row.unit),
                fmt_figure(row.agentwire, row.unit),
                fmt_ratio(row.ratio),
                row.target,
                fmt_met(row.met),
            ]
        )
    return lines


HEADERS = ["workload", "figure", "AutoGen 0.7.5", "agentwire", "agentwire/AutoGen", "target", ""]


def markdown_table(rows: Sequence[Row]) -> str:
    out = ["| " + " | ".join(h or "verdict" for h in HEADERS) + " |"]
    out.append("|" + "---|" * len(HEADERS))
    for cells in table_lines(rows):
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)
