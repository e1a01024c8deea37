"""Properties of real runs (in-process runtime, autojump clock) on random DAGs and flows."""

from __future__ import annotations

from typing import Any

import hypothesis.strategies as st
import pytest
import trio
import trio.testing
from hypothesis import HealthCheck, given, reject, settings

import agentwire as aw
from agentwire.flow import (
    Call,
    Dag,
    DagFailedError,
    DagResult,
    FlowDefinitionError,
    FlowTransition,
    InvalidTransitionError,
    Route,
    State,
    StateFlow,
    StepContext,
    StepLimitError,
    Task,
    TaskContext,
    run_dag,
    run_flow,
)

from .helpers import register_events_recorder
from .test_schedule import brute_force_longest, dags

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def run_with_autojump(main: Any) -> Any:
    return trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


@st.composite
def dag_plans(draw: st.DrawFn) -> dict[str, Any]:
    deps = draw(dags())
    return {
        "deps": deps,
        "seconds": {name: draw(st.integers(0, 6)) / 2 for name in deps},
        "failures": {name: draw(st.integers(0, 3)) for name in deps},  # failing attempts
        "budget": {name: draw(st.integers(1, 3)) for name in deps},  # max_attempts
        "fail_fast": draw(st.booleans()),
        "limit": draw(st.integers(1, 4)),
    }


@SETTINGS
@given(dag_plans())
def test_random_dags_respect_dependencies_budgets_and_fail_fast(plan: dict[str, Any]) -> None:
    deps, failures, budget = plan["deps"], plan["failures"], plan["budget"]
    log: list[tuple[str, str, int]] = []  # (kind, task, attempt), in the order it happened

    async def work(ctx: TaskContext) -> str:
        log.append(("start", ctx.task, ctx.attempt))
        assert set(ctx.inputs) == set(deps[ctx.task])
        await trio.sleep(plan["seconds"][ctx.task])
        if ctx.attempt <= failures[ctx.task]:
            log.append(("fail", ctx.task, ctx.attempt))
            raise OSError(f"{ctx.task} attempt {ctx.attempt}")
        log.append(("end", ctx.task, ctx.attempt))
        return ctx.task

    dag = Dag(
        "random",
        [
            Task(
                name,
                work,
                after,
                retry=aw.RetryPolicy(initial_delay=0.5, max_attempts=budget[name]),
                estimate=plan["seconds"][name],
            )
            for name, after in deps.items()
        ],
    )

    async def main() -> DagResult | DagFailedError:
        async with aw.open_runtime() as runtime:
            try:
                return await run_dag(
                    runtime, dag, max_concurrency=plan["limit"], fail_fast=plan["fail_fast"]
                )
            except DagFailedError as error:
                return error

    outcome = run_with_autojump(main)
    result = outcome.result if isinstance(outcome, DagFailedError) else outcome
    assert isinstance(result, DagResult)
    doomed = {name for name in deps if failures[name] >= budget[name]}

    # No task starts before all its dependencies finished.
    finished: set[str] = set()
    for kind, task, _ in log:
        if kind == "start":
            assert finished >= set(deps[task]), (task, deps[task], finished)
        elif kind == "end":
            finished.add(task)
    # Each task runs once unless retried, and never more than its retry budget.
    for name in deps:
        attempts = [attempt for kind, task, attempt in log if kind == "start" and task == name]
        assert attempts == list(range(1, len(attempts) + 1))
        assert len(attempts) <= budget[name]
        if failures[name] == 0:
            assert len(attempts) <= 1
        assert result.attempts.get(name, 0) == len(attempts)
    # Failures are reported; successes return their results.
    if isinstance(outcome, DagFailedError):
        assert set(outcome.errors) <= doomed
        assert outcome.errors
    else:
        assert not doomed
        assert set(result.results) == set(deps)
    assert set(result.results) == {task for kind, task, _ in log if kind == "end"}
    # With fail-fast, nothing starts after the first failure that used up its budget.
    if plan["fail_fast"]:
        final_failures = [
            i
            for i, (kind, task, attempt) in enumerate(log)
            if kind == "fail" and attempt == budget[task]
        ]
        if final_failures:
            assert all(kind != "start" for kind, _, _ in log[final_failures[0] :])
    else:
        # Finishing independent branches: a task is skipped only below a failed one.
        for name in result.skipped:
            assert any(_depends_on(deps, name, failed) for failed in outcome.errors)
    # The reported critical path is the longest path by measured durations.
    weights = {name: result.durations.get(name, 0.0) for name in deps}
    assert result.critical_path[0] == pytest.approx(brute_force_longest(deps, weights))


def _depends_on(deps: dict[str, tuple[str, ...]], task: str, on: str) -> bool:
    return any(dep == on or _depends_on(deps, dep, on) for dep in deps[task])


@st.composite
def flows(draw: st.DrawFn) -> StateFlow:
    count = draw(st.integers(1, 5))
    states = [f"s{i}" for i in range(count)]
    finals = [f"f{i}" for i in range(draw(st.integers(1, 2)))]
    error = draw(st.sampled_from([None, "error"]))
    every = states + finals
    definitions = [
        State(
            name,
            Call(_identity),
            Route("router", draw(st.lists(st.sampled_from(every), min_size=1, unique=True))),
        )
        for name in states
    ]
    definitions += [State(name) for name in finals]
    if error is not None:
        targets = draw(st.lists(st.sampled_from(every), min_size=1, unique=True))
        definitions.append(State(error, None, Route("router", targets)))
    try:
        return StateFlow("random", definitions, initial="s0", final=finals, error=error)
    except FlowDefinitionError:
        reject()


async def _identity(ctx: StepContext) -> Any:
    return ctx.input


@SETTINGS
@given(flows(), st.integers(1, 12), st.data())
def test_random_flows_take_only_transitions_of_their_table(
    flow: StateFlow, max_steps: int, data: st.DataObject
) -> None:
    everything = [*flow.states, "nowhere"]

    async def router(_: aw.ClosureContext, request: Any, ctx: aw.MessageContext) -> str:
        # mostly allowed answers, sometimes anything at all
        choices = request.allowed if data.draw(st.integers(0, 4)) else everything
        return str(data.draw(st.sampled_from(choices)))

    async def main() -> tuple[list[Any], Any]:
        async with aw.open_runtime() as runtime:
            await aw.ClosureAgent.register_closure(runtime, "router", router)
            seen = await register_events_recorder(runtime, "t")
            try:
                outcome: Any = await run_flow(runtime, flow, 0, topic="t", max_steps=max_steps)
            except (InvalidTransitionError, StepLimitError) as error:
                outcome = error
            await runtime.wait_idle()
            return seen, outcome

    seen, outcome = run_with_autojump(main)
    steps = [
        e for e in seen if isinstance(e, FlowTransition) and e.reason in ("rule", "router", "error")
    ]
    assert len(steps) <= max_steps
    for event in steps:
        if event.reason == "error":
            assert event.target == flow.error
            assert event.source != flow.error
        else:
            assert event.target in flow.allowed(event.source)
    if isinstance(outcome, StepLimitError):
        assert len(steps) == max_steps
    elif isinstance(outcome, InvalidTransitionError):
        assert flow.error is None or outcome.state == flow.error
        assert outcome.target not in outcome.allowed
    else:
        assert outcome.state in flow.final
        assert [(s.state, s.target) for s in outcome.history] == [
            (e.source, e.target) for e in steps
        ]
