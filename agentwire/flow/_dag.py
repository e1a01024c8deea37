"""Task DAG definitions: tasks, their dependencies, retries, timeouts and estimates.

Tasks are declared with the :meth:`Dag.task` decorator, added as :class:`Task` objects, or
built from plain records (:meth:`Dag.from_records`, e.g. loaded from JSON). Every
dependency must name a task of the DAG and the dependencies must not form a cycle: both
are checked by :meth:`Dag.check`, which :func:`~agentwire.flow.run_dag` calls before
anything runs.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, overload

import attrs

from .._agents import AgentRuntime
from .._ids import AgentId
from .._retry import RetryPolicy
from ._errors import FlowDefinitionError
from ._schedule import critical_path, refuse_cycles

__all__ = ["Dag", "Task", "TaskContext", "TaskFn"]


@attrs.frozen
class TaskContext:
    """What a task's function gets: the run, its dependencies' results, its attempt.

    ``inputs`` maps each dependency's name to its result. A fanned-out task also gets its
    ``item`` and that item's ``index`` (-1 otherwise). ``idempotency_key`` is
    ``run_id/task[/index]/attempt``: put it in the messages a task sends so a receiver can
    recognise a repeat.
    """

    runtime: AgentRuntime
    dag: str
    run_id: str
    task: str
    inputs: Mapping[str, Any]
    attempt: int = 1
    item: Any = None
    index: int = -1

    @property
    def idempotency_key(self) -> str:
        instance = self.task if self.index < 0 else f"{self.task}/{self.index}"
        return f"{self.run_id}/{instance}/{self.attempt}"

    async def send(self, agent_type: str, message: Any, *, key: str | None = None) -> Any:
        """Send *message* to ``AgentId(agent_type, key)`` (default key: the run id)."""
        recipient = AgentId(agent_type, self.run_id if key is None else key)
        return await self.runtime.send_message(message, recipient)


TaskFn = Callable[[TaskContext], Awaitable[Any]]


def _check_estimate(_: object, attribute: attrs.Attribute[float], value: float) -> None:
    if not value >= 0:
        raise FlowDefinitionError(f"a task's estimate must be >= 0 seconds, got {value!r}")


def _names(names: Iterable[str]) -> tuple[str, ...]:
    return tuple(names)


@attrs.frozen
class Task:
    """One task: ``await fn(ctx)`` once its dependencies (``after``) are done.

    ``retry`` retries an attempt's retriable errors (see :class:`agentwire.RetryPolicy`; its
    ``retry_on`` decides which), ``timeout`` bounds each attempt (then
    :class:`~agentwire.flow.TaskTimeoutError`), ``estimate`` (seconds) feeds the critical
    path before the run. With ``fan_out="dep"`` the task runs once per item of dependency
    ``dep``'s result (concurrently) and its result is the list of their results.
    """

    name: str
    fn: TaskFn
    after: tuple[str, ...] = attrs.field(default=(), converter=_names)
    retry: RetryPolicy | None = None
    timeout: float | None = None
    estimate: float = attrs.field(default=1.0, validator=_check_estimate)
    fan_out: str | None = None


class Dag:
    """A named set of tasks with dependencies; run it with :func:`~agentwire.flow.run_dag`."""

    def __init__(self, name: str, tasks: Iterable[Task] = ()) -> None:
        self.name = name
        self.tasks: dict[str, Task] = {}
        for task in tasks:
            self.add(task)

    def __repr__(self) -> str:
        return f"Dag({self.name!r}, {len(self.tasks)} tasks)"

    def add(self, task: Task) -> Task:
        """Add *task* (its dependencies may be added later); returns it."""
        if not task.name:
            raise FlowDefinitionError(f"DAG {self.name!r}: a task has an empty name")
        if task.name in self.tasks:
            raise FlowDefinitionError(f"DAG {self.name!r}: task {task.name!r} is defined twice")
        if task.fan_out is not None and task.fan_out not in task.after:
            raise FlowDefinitionError(
                f"DAG {self.name!r}: task {task.name!r} fans out over {task.fan_out!r}, "
                "which is not one of its dependencies; add it to `after`"
            )
        if task.timeout is not None and not task.timeout > 0:
            raise FlowDefinitionError(
                f"DAG {self.name!r}: task {task.name!r} timeout must be positive, "
                f"got {task.timeout!r}"
            )
        self.tasks[task.name] = task
        return task

    @overload
    def task(self, fn: TaskFn) -> Task: ...

    @overload
    def task(
        self,
        *,
        name: str | None = None,
        after: Iterable[str | Task] = (),
        retry: RetryPolicy | None = None,
        timeout: float | None = None,
        estimate: float = 1.0,
        fan_out: str | Task | None = None,
    ) -> Callable[[TaskFn], Task]: ...

    def task(
        self,
        fn: TaskFn | None = None,
        *,
        name: str | None = None,
        after: Iterable[str | Task] = (),
        retry: RetryPolicy | None = None,
        timeout: float | None = None,
        estimate: float = 1.0,
        fan_out: str | Task | None = None,
    ) -> Task | Callable[[TaskFn], Task]:
        """Decorator: ``@dag.task`` or ``@dag.task(after=[other], retry=...)``.

        The decorated name becomes the :class:`Task`; dependencies are tasks or names.
        """

        def declare(fn: TaskFn) -> Task:
            return self.add(
                Task(
                    name or fn.__name__,
                    fn,
                    tuple(_name_of(dep) for dep in after),
                    retry,
                    timeout,
                    estimate,
                    None if fan_out is None else _name_of(fan_out),
                )
            )

        return declare if fn is None else declare(fn)

    @classmethod
    def from_records(
        cls,
        name: str,
        records: Iterable[Mapping[str, Any]],
        *,
        message: Callable[[TaskContext], Any],
    ) -> Dag:
        """A DAG of agent tasks from plain records (e.g. parsed JSON).

        Each record has ``name`` and ``agent`` (the agent type the task sends
        ``message(ctx)`` to, key: the run id), and optionally ``after`` (names),
        ``timeout``, ``estimate``, ``max_attempts`` (retries with the default
        :class:`agentwire.RetryPolicy` delays) and ``fan_out``.
        """
        dag = cls(name)
        for record in records:
            unknown = set(record) - {
                "name",
                "agent",
                "after",
                "timeout",
                "estimate",
                "max_attempts",
                "fan_out",
            }
            if unknown:
                raise FlowDefinitionError(
                    f"DAG {name!r}: record {record.get('name')!r} has unknown field(s) "
                    f"{', '.join(sorted(unknown))}"
                )
            attempts = record.get("max_attempts")
            dag.add(
                Task(
                    str(record["name"]),
                    _sender(str(record["agent"]), message),
                    tuple(record.get("after", ())),
                    None if attempts is None else RetryPolicy(max_attempts=int(attempts)),
                    record.get("timeout"),
                    float(record.get("estimate", 1.0)),
                    record.get("fan_out"),
                )
            )
        dag.check()
        return dag

    @property
    def dependencies(self) -> dict[str, tuple[str, ...]]:
        """Each task's name and the names of its dependencies."""
        return {name: task.after for name, task in self.tasks.items()}

    def check(self) -> None:
        """Refuse unknown dependencies and cycles (:class:`~agentwire.flow.DagCycleError`)."""
        for task in self.tasks.values():
            for dep in task.after:
                if dep not in self.tasks:
                    raise FlowDefinitionError(
                        f"DAG {self.name!r}: task {task.name!r} depends on {dep!r}, which is "
                        f"not a task of the DAG (tasks: {', '.join(map(repr, self.tasks))})"
                    )
        refuse_cycles(self.name, self.dependencies)

    def critical_path(self) -> tuple[float, tuple[str, ...]]:
        """The longest chain by estimates: ``(seconds, tasks in run order)``."""
        self.check()
        estimates = {name: task.estimate for name, task in self.tasks.items()}
        return critical_path(self.dependencies, estimates)


def _name_of(dep: str | Task) -> str:
    return dep if isinstance(dep, str) else dep.name


def _sender(agent_type: str, message: Callable[[TaskContext], Any]) -> TaskFn:
    async def send(ctx: TaskContext) -> Any:
        return await ctx.send(agent_type, message(ctx))

    return send
