"""Task DAGs: dependencies, concurrency, retries, timeouts, fan-out, failure policies."""

from __future__ import annotations

from typing import Any

import pytest
import trio
import trio.testing

import agentwire as aw
from agentwire.flow import (
    Call,
    Dag,
    DagCycleError,
    DagFailedError,
    FlowDefinitionError,
    Rule,
    State,
    StateFlow,
    StepContext,
    Task,
    TaskContext,
    TaskEvent,
    TaskTimeoutError,
    flow_task,
    run_dag,
)

from .helpers import Done, Work, Worker, register_events_recorder


def diamond() -> Dag:
    dag = Dag("diamond")

    @dag.task(estimate=1)
    async def fetch(ctx: TaskContext) -> int:
        return 10

    @dag.task(after=[fetch], estimate=5)
    async def double(ctx: TaskContext) -> int:
        return ctx.inputs["fetch"] * 2

    @dag.task(after=["fetch"], estimate=2)
    async def square(ctx: TaskContext) -> int:
        return ctx.inputs["fetch"] ** 2

    @dag.task(after=[double, square], estimate=1)
    async def total(ctx: TaskContext) -> int:
        return ctx.inputs["double"] + ctx.inputs["square"]

    return dag


async def test_dependencies_results_are_passed_to_dependents(runtime: aw.Runtime) -> None:
    result = await run_dag(runtime, diamond(), run_id="d1")
    assert result.results == {"fetch": 10, "double": 20, "square": 100, "total": 120}
    assert result.attempts == {"fetch": 1, "double": 1, "square": 1, "total": 1}
    assert result.skipped == frozenset()


def test_the_critical_path_from_estimates() -> None:
    assert diamond().critical_path() == (7.0, ("fetch", "double", "total"))


async def test_the_critical_path_from_measured_durations(
    runtime: aw.Runtime, autojump_clock: trio.testing.MockClock
) -> None:
    dag = Dag("timed")
    for name, seconds, after in (("a", 1, ()), ("b", 2, ("a",)), ("c", 7, ("a",)), ("d", 1, "bc")):
        dag.add(Task(name, sleeper(seconds), tuple(after)))
    result = await run_dag(runtime, dag)
    assert result.durations == pytest.approx({"a": 1, "b": 2, "c": 7, "d": 1})
    assert result.critical_path[1] == ("a", "c", "d")
    assert result.critical_path[0] == pytest.approx(9)


def sleeper(seconds: float) -> Any:
    async def sleep(ctx: TaskContext) -> float:
        await trio.sleep(seconds)
        return seconds

    return sleep


def test_a_cycle_is_refused_naming_it() -> None:
    dag = Dag("loop")
    for name, after in (("a", "c"), ("b", "a"), ("c", "b"), ("d", "")):
        dag.add(Task(name, sleeper(0), tuple(after)))
    with pytest.raises(DagCycleError, match=r"DAG 'loop' has a dependency cycle") as caught:
        dag.check()
    cycle = caught.value.cycle
    assert cycle[0] == cycle[-1]
    assert set(cycle) == {"a", "b", "c"}


async def test_a_cycle_is_refused_before_anything_runs(runtime: aw.Runtime) -> None:
    ran: list[str] = []

    async def record(ctx: TaskContext) -> None:
        ran.append(ctx.task)

    dag = Dag("loop", [Task("a", record), Task("b", record, ["c"]), Task("c", record, ["b"])])
    with pytest.raises(DagCycleError):
        await run_dag(runtime, dag)
    assert ran == []


def test_an_unknown_dependency_is_refused_by_name() -> None:
    dag = Dag("d", [Task("a", sleeper(0), ["ghost"])])
    with pytest.raises(FlowDefinitionError, match=r"task 'a' depends on 'ghost'"):
        dag.check()


def test_a_fan_out_over_a_task_that_is_not_a_dependency_is_refused() -> None:
    with pytest.raises(FlowDefinitionError, match=r"fans out over 'x'"):
        Dag("d", [Task("a", sleeper(0), fan_out="x")])


async def test_independent_tasks_run_concurrently_under_the_limit(runtime: aw.Runtime) -> None:
    running = 0
    peak = 0
    gate = trio.Event()

    async def hold(ctx: TaskContext) -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await gate.wait()
        running -= 1

    dag = Dag("wide", [Task(f"t{i}", hold) for i in range(10)])
    async with trio.open_nursery() as nursery:
        nursery.start_soon(lambda: run_dag(runtime, dag, max_concurrency=3))
        await trio.testing.wait_all_tasks_blocked()
        assert running == 3
        gate.set()
    assert peak == 3


async def test_a_task_is_retried_under_its_retry_policy(
    runtime: aw.Runtime, autojump_clock: trio.testing.MockClock
) -> None:
    calls: list[int] = []

    async def flaky(ctx: TaskContext) -> str:
        calls.append(ctx.attempt)
        if ctx.attempt < 3:
            raise ConnectionError("peer away")
        return ctx.idempotency_key

    seen = await register_events_recorder(runtime, "progress")
    policy = aw.RetryPolicy(initial_delay=1, max_attempts=4)
    dag = Dag("r", [Task("flaky", flaky, retry=policy)])
    result = await run_dag(runtime, dag, run_id="run", topic="progress")
    await runtime.wait_idle()
    assert calls == [1, 2, 3]
    assert result.results == {"flaky": "run/flaky/3"}
    assert result.attempts == {"flaky": 3}
    kinds = [(e.kind, e.attempt) for e in seen if isinstance(e, TaskEvent)]
    assert kinds == [
        ("started", 1),
        ("retried", 1),
        ("started", 2),
        ("retried", 2),
        ("started", 3),
        ("done", 3),
    ]
    assert [e.delay for e in seen if e.kind == "retried"] == [1.0, 2.0]


async def test_retries_stop_at_the_budget(
    runtime: aw.Runtime, autojump_clock: trio.testing.MockClock
) -> None:
    calls = 0

    async def always_fails(ctx: TaskContext) -> None:
        nonlocal calls
        calls += 1
        raise OSError("down")

    dag = Dag("r", [Task("t", always_fails, retry=aw.RetryPolicy(max_attempts=3))])
    with pytest.raises(DagFailedError, match=r"1 task\(s\) failed: t: OSError\('down'\)") as caught:
        await run_dag(runtime, dag)
    assert calls == 3
    assert isinstance(caught.value.errors["t"], OSError)


async def test_a_task_timeout_bounds_each_attempt(
    runtime: aw.Runtime, autojump_clock: trio.testing.MockClock
) -> None:
    dag = Dag("t", [Task("slow", sleeper(60), timeout=5)])
    start = trio.current_time()
    with pytest.raises(DagFailedError) as caught:
        await run_dag(runtime, dag)
    error = caught.value.errors["slow"]
    assert isinstance(error, TaskTimeoutError)
    assert str(error) == "task 'slow' took longer than its 5 s timeout"
    assert trio.current_time() - start == pytest.approx(5)


async def test_fan_out_runs_one_task_per_item_and_gathers_in_order(
    runtime: aw.Runtime, autojump_clock: trio.testing.MockClock
) -> None:
    dag = Dag("fan")

    @dag.task
    async def items(ctx: TaskContext) -> list[int]:
        return [3, 1, 2]

    @dag.task(after=[items], fan_out=items)
    async def each(ctx: TaskContext) -> str:
        await trio.sleep(ctx.item)  # the last item finishes first
        return f"{ctx.index}:{ctx.item}:{ctx.idempotency_key}"

    @dag.task(after=[each])
    async def joined(ctx: TaskContext) -> str:
        return ",".join(ctx.inputs["each"])

    result = await run_dag(runtime, dag, run_id="r")
    assert result.results["each"] == ["0:3:r/each/0/1", "1:1:r/each/1/1", "2:2:r/each/2/1"]
    assert result.results["joined"].count(":") == 6
    assert result.durations["each"] == pytest.approx(3)


async def test_fail_fast_cancels_what_runs_and_starts_nothing_new(runtime: aw.Runtime) -> None:
    started: list[str] = []
    cancelled: list[str] = []

    async def fails(ctx: TaskContext) -> None:
        started.append(ctx.task)
        await trio.testing.wait_all_tasks_blocked()
        raise ValueError("bad input")

    async def waits(ctx: TaskContext) -> None:
        started.append(ctx.task)
        try:
            await trio.sleep_forever()
        finally:
            cancelled.append(ctx.task)

    dag = Dag(
        "ff",
        [Task("bad", fails), Task("slow", waits), Task("next", waits, ["bad"]), Task("x", waits)],
    )
    with pytest.raises(DagFailedError) as caught:
        await run_dag(runtime, dag, max_concurrency=3)
    assert sorted(started) == ["bad", "slow", "x"]
    assert sorted(cancelled) == ["slow", "x"]
    partial = caught.value.result
    assert partial.skipped == {"next"}
    assert partial.cancelled == {"slow", "x"}


async def test_finishing_independent_branches_skips_only_the_failed_ones_dependents(
    runtime: aw.Runtime,
) -> None:
    async def fails(ctx: TaskContext) -> None:
        raise ValueError("bad input")

    async def ok(ctx: TaskContext) -> str:
        return ctx.task

    dag = Dag(
        "fi",
        [
            Task("bad", fails),
            Task("after_bad", ok, ["bad"]),
            Task("after_after", ok, ["after_bad"]),
            Task("good", ok),
            Task("after_good", ok, ["good"]),
        ],
    )
    with pytest.raises(DagFailedError) as caught:
        await run_dag(runtime, dag, fail_fast=False)
    assert list(caught.value.errors) == ["bad"]
    assert caught.value.result.results == {"good": "good", "after_good": "after_good"}
    assert caught.value.result.skipped == {"after_bad", "after_after"}


async def test_progress_events_are_published_with_timings(
    runtime: aw.Runtime, autojump_clock: trio.testing.MockClock
) -> None:
    seen = await register_events_recorder(runtime, "progress")

    async def fails(ctx: TaskContext) -> None:
        raise ValueError("bad")

    dag = Dag("p", [Task("a", sleeper(2)), Task("b", fails, ["a"]), Task("c", sleeper(1), ["b"])])
    with pytest.raises(DagFailedError):
        await run_dag(runtime, dag, run_id="r", topic="progress")
    await runtime.wait_idle()
    assert [(e.task, e.kind) for e in seen] == [
        ("a", "started"),
        ("a", "done"),
        ("b", "started"),
        ("b", "failed"),
        ("c", "skipped"),
    ]
    assert seen[1].duration == pytest.approx(2)
    assert seen[3].error == "ValueError('bad')"
    assert all(e.dag == "p" and e.run_id == "r" for e in seen)


async def test_a_dag_built_from_records_sends_to_agents(runtime: aw.Runtime) -> None:
    await Worker.register(runtime, "worker", lambda: Worker("upper-cases"))
    records = [
        {"name": "a", "agent": "worker"},
        {"name": "b", "agent": "worker", "after": ["a"], "estimate": 3, "max_attempts": 2},
    ]

    def message(ctx: TaskContext) -> Work:
        before = "+".join(done.payload for done in ctx.inputs.values())
        return Work(f"{ctx.task}{before}", ctx.idempotency_key)

    dag = Dag.from_records("records", records, message=message)
    assert dag.tasks["b"].retry == aw.RetryPolicy(max_attempts=2)
    result = await run_dag(runtime, dag, run_id="k")
    assert result.results == {"a": Done("A", "worker/k"), "b": Done("BA", "worker/k")}


def test_a_record_with_an_unknown_field_is_refused() -> None:
    with pytest.raises(FlowDefinitionError, match=r"record 'a' has unknown field\(s\) colour"):
        Dag.from_records("r", [{"name": "a", "agent": "w", "colour": "red"}], message=str)


async def test_a_stateflow_can_be_a_task_of_a_dag(runtime: aw.Runtime) -> None:
    async def add_one(ctx: StepContext) -> int:
        return int(ctx.input) + 1

    counter = StateFlow(
        "counter",
        [
            State("count", Call(add_one), [Rule("count", lambda n, _: n < 5), Rule("done")]),
            State("done"),
        ],
        initial="count",
        final=["done"],
    )
    dag = Dag("with-flow")

    @dag.task
    async def start(ctx: TaskContext) -> int:
        return 2

    dag.add(flow_task("count", counter, after=("start",), input=lambda ctx: ctx.inputs["start"]))
    result = await run_dag(runtime, dag)
    assert result.results["count"] == 5


async def test_cancelling_the_run_cancels_every_task(
    runtime: aw.Runtime, autojump_clock: trio.testing.MockClock
) -> None:
    cancelled: list[str] = []

    async def waits(ctx: TaskContext) -> None:
        try:
            await trio.sleep_forever()
        finally:
            cancelled.append(ctx.task)

    dag = Dag("c", [Task(name, waits) for name in "abc"])
    with trio.move_on_after(1) as scope:
        await run_dag(runtime, dag)
    assert scope.cancelled_caught
    assert sorted(cancelled) == ["a", "b", "c"]
