"""Running a task DAG on a runtime: ``await run_dag(runtime, dag)``.

The tasks run in a nursery of the caller's task, at most ``max_concurrency`` attempts at a
time. Cancelling the caller cancels every task and every RPC it has in flight (through a
gateway the worker sends the deadline along); in fail-fast mode the first failure does the
same to the run's other tasks.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping
from typing import Any

import attrs
import trio

from .._agents import AgentRuntime
from .._nursery import open_unwrapping_nursery
from ._dag import Dag, Task, TaskContext
from ._durable import Checkpoints, DagCheckpoint
from ._errors import DagFailedError, TaskTimeoutError
from ._events import TaskEvent, describe_value, now, publish_event, register_flow_messages
from ._flowrun import run_flow
from ._schedule import Schedule, critical_path
from ._stateflow import StateFlow

__all__ = ["DagResult", "flow_task", "run_dag"]

logger = logging.getLogger("agentwire.flow")


@attrs.frozen
class DagResult:
    """What a DAG run produced: each finished task's result and its measured duration.

    ``skipped`` are the tasks that never started (a dependency failed, or fail-fast stopped
    the run), ``cancelled`` those fail-fast cancelled while they ran. ``critical_path`` is
    ``(seconds, tasks)``, the longest chain by measured durations (a task that did not finish
    weighs 0).
    """

    run_id: str
    results: Mapping[str, Any]
    durations: Mapping[str, float]
    attempts: Mapping[str, int]
    skipped: frozenset[str]
    cancelled: frozenset[str]
    critical_path: tuple[float, tuple[str, ...]]


async def run_dag(
    runtime: AgentRuntime,
    dag: Dag,
    *,
    run_id: str | None = None,
    topic: str | None = None,
    max_concurrency: int = 16,
    fail_fast: bool = True,
    checkpoints: Checkpoints | None = None,
) -> DagResult:
    """Run every task of *dag* once its dependencies are done; return the results.

    Raises :class:`~agentwire.flow.DagCycleError` (or another
    :class:`~agentwire.flow.FlowDefinitionError`) before anything runs, and
    :class:`~agentwire.flow.DagFailedError` if a task failed: with *fail_fast* (the default)
    the first failure cancels the tasks running and starts nothing new; without it, the
    branches that do not depend on a failed task run to the end. Progress is published as
    :class:`~agentwire.flow.TaskEvent` on ``TopicId(topic, run_id)`` when *topic* is given.

    With *checkpoints* the run is durable: each attempt's start and each task's result are
    checkpointed, and running the DAG again with the same *run_id* skips the tasks that
    finished and runs the others, those in flight with the next attempt number (in
    ``ctx.attempt`` and ``ctx.idempotency_key``).
    """
    if max_concurrency < 1:
        raise ValueError(f"max_concurrency must be >= 1, got {max_concurrency!r}")
    dag.check()
    run_id = uuid.uuid4().hex if run_id is None else run_id
    register_flow_messages(runtime)
    schedule = Schedule(dag.name, dag.dependencies, fail_fast=fail_fast)
    run = _DagRun(runtime, dag, run_id, topic, schedule, max_concurrency)
    if checkpoints is not None:
        run.durable = DagCheckpoint(runtime, checkpoints, dag.name, run_id)
        run.restored = await run.durable.resume()
        run.results.update(run.restored)
        run.durations.update(run.durable.durations)
    return await run.run()


class _DagRun:
    def __init__(
        self,
        runtime: AgentRuntime,
        dag: Dag,
        run_id: str,
        topic: str | None,
        schedule: Schedule,
        max_concurrency: int,
    ) -> None:
        self.runtime = runtime
        self.schedule = schedule
        self.limiter = trio.CapacityLimiter(max_concurrency)
        self.dag = dag
        self.run_id = run_id
        self.topic = topic
        self.results: dict[str, Any] = {}
        self.errors: dict[str, BaseException] = {}
        self.durations: dict[str, float] = {}
        self.attempts: dict[str, int] = {}
        self._changed = trio.Event()
        self.durable: DagCheckpoint | None = None
        self.restored: dict[str, Any] = {}  # results of a durable run's finished tasks

    async def run(self) -> DagResult:
        schedule = self.schedule
        async with open_unwrapping_nursery() as nursery:
            while True:
                restored = False
                for name in schedule.take():
                    if name in self.restored:
                        schedule.finish(name)  # finished before a restart
                        restored = True
                    else:
                        nursery.start_soon(self._run_task, nursery, name)
                if restored:
                    continue
                if schedule.finished:
                    break
                await self._changed.wait()
                self._changed = trio.Event()
        for name in sorted(schedule.skipped):
            await self._publish(self._make_event(name, "skipped"))
        result = DagResult(
            self.run_id,
            dict(self.results),
            dict(self.durations),
            dict(self.attempts),
            frozenset(schedule.skipped),
            frozenset(schedule.running),
            critical_path(schedule.deps, self.durations),
        )
        if self.errors:
            raise DagFailedError(self.dag.name, dict(self.errors), result)
        return result

    async def _run_task(self, nursery: trio.Nursery, name: str) -> None:
        schedule = self.schedule
        task = self.dag.tasks[name]
        inputs = {dep: self.results[dep] for dep in task.after}
        start = trio.current_time()
        try:
            if task.fan_out is None:
                result = await self._attempts(task, inputs, -1, None)
            else:
                result = await self._fan_out(task, inputs, list(inputs[task.fan_out]))
            if self.durable is not None:
                await self.durable.task_done(name, result, trio.current_time() - start)
        except Exception as error:
            self.durations[name] = trio.current_time() - start
            self.errors[name] = error
            schedule.fail(name)
            logger.debug(
                "DAG %s run %s: task %s failed: %r", self.dag.name, self.run_id, name, error
            )
            duration = self.durations[name]
            await self._publish(self._make_event(name, "failed", duration=duration, error=error))
            if schedule.stopped:
                nursery.cancel_scope.cancel()
        else:
            self.durations[name] = trio.current_time() - start
            self.results[name] = result
            schedule.finish(name)
            if self.topic is not None:
                duration = self.durations[name]
                await self._publish(self._make_event(name, "done", duration=duration))
        self._changed.set()

    async def _fan_out(self, task: Task, inputs: dict[str, Any], items: list[Any]) -> list[Any]:
        results: list[Any] = [None] * len(items)

        async def one(index: int) -> None:
            results[index] = await self._attempts(task, inputs, index, items[index])

        async with open_unwrapping_nursery() as nursery:
            for index in range(len(items)):
                nursery.start_soon(one, index)
        return results

    async def _attempts(self, task: Task, inputs: dict[str, Any], index: int, item: Any) -> Any:
        attempt = 0
        retried: list[TaskEvent] = []

        async def once() -> Any:
            nonlocal attempt
            async with self.limiter:
                while retried:
                    await self._publish(retried.pop(0))
                attempt += 1
                if self.durable is not None:
                    instance = task.name if index < 0 else f"{task.name}/{index}"
                    attempt = await self.durable.attempt_starts(instance)
                if self.topic is not None:
                    await self._publish(
                        self._make_event(task.name, "started", attempt=attempt, item=index)
                    )
                if self.schedule.stopped:
                    # Fail fast: another task failed, this run is being cancelled.
                    await trio.sleep_forever()
                self.attempts[task.name] = self.attempts.get(task.name, 0) + 1
                ctx = TaskContext(
                    self.runtime,
                    self.dag.name,
                    self.run_id,
                    task.name,
                    inputs,
                    attempt,
                    item,
                    index,
                )
                start = trio.current_time()
                try:
                    return await self._attempt(task, ctx)
                finally:
                    elapsed[0] = trio.current_time() - start

        elapsed = [0.0]

        def on_retry(attempt: int, error: Exception, delay: float) -> None:
            retried.append(
                self._make_event(
                    task.name,
                    "retried",
                    attempt=attempt,
                    duration=elapsed[0],
                    delay=delay,
                    item=index,
                    error=error,
                )
            )

        if task.retry is None:
            return await once()
        return await task.retry.run(once, on_retry=on_retry)

    @staticmethod
    async def _attempt(task: Task, ctx: TaskContext) -> Any:
        if task.timeout is None:
            return await task.fn(ctx)
        with trio.move_on_after(task.timeout):
            return await task.fn(ctx)
        raise TaskTimeoutError(task.name, task.timeout)

    def _make_event(
        self,
        task: str,
        kind: str,
        *,
        attempt: int | None = None,
        duration: float = 0.0,
        delay: float = 0.0,
        item: int = -1,
        error: BaseException | None = None,
    ) -> TaskEvent:
        """A progress event (``attempt`` defaults to the task's attempts so far)."""
        return TaskEvent(
            self.dag.name,
            self.run_id,
            task,
            kind,
            self.attempts.get(task, 0) if attempt is None else attempt,
            now(),
            duration,
            delay,
            item,
            "" if error is None else describe_value(error),
        )

    async def _publish(self, event: TaskEvent) -> None:
        await publish_event(self.runtime, self.topic, self.run_id, event)


def flow_task(
    name: str,
    flow: StateFlow,
    *,
    after: tuple[str, ...] = (),
    input: Any = None,
    topic: str | None = None,
    max_steps: int = 100,
    estimate: float = 1.0,
    timeout: float | None = None,
) -> Task:
    """A DAG task that runs *flow* (run id ``<dag run id>.<name>``) and gives its final output.

    The flow's input is ``input(ctx)`` if *input* is callable, else *input* itself, or (when
    *input* is None) the dependencies' results as a dict.
    """

    async def run(ctx: TaskContext) -> Any:
        value = dict(ctx.inputs) if input is None else input
        if callable(value):
            value = value(ctx)
        result = await run_flow(
            ctx.runtime,
            flow,
            value,
            run_id=f"{ctx.run_id}.{name}",
            topic=topic,
            max_steps=max_steps,
        )
        return result.output

    return Task(name, run, after, None, timeout, estimate)
