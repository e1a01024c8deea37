"""StateFlow task state machines and task DAGs, run on any agentwire runtime.

Both run in the caller's task on the public runtime API (``send_message``,
``publish_message``), so they work the same on ``open_runtime()`` and ``open_worker()``,
with agents (agentwire or AutoGen) anywhere on the network.

* :class:`StateFlow`: named :class:`State` s, each with an action (:class:`Send` a message
  to an agent, or :class:`Call` a coroutine) and transitions (:class:`Rule` s over the
  output and the history, first match wins, or a router agent: :class:`Route`); an initial
  state, final states, an optional error state whose transitions are the recovery ones.
  ``await run_flow(runtime, flow, input)`` runs it and returns a :class:`FlowResult`.
* :class:`Dag`: :class:`Task` s with dependencies, retries (:class:`agentwire.RetryPolicy`),
  timeouts, estimates and fan-out. ``await run_dag(runtime, dag)`` runs it and returns a
  :class:`DagResult`; :func:`flow_task` makes a StateFlow a task of a DAG.

Transitions (:class:`FlowTransition`) and task progress (:class:`TaskEvent`) are published
as JSON dataclasses on ``TopicId(topic, run_id)`` for the ``topic`` you pass.

* A state can wait for an answer sent to its run (:class:`Inbox`, :class:`Wait`).
* With :class:`Checkpoints`, runs are durable: their progress is kept as agents' state
  and running them again with the same run id resumes them.
"""

from __future__ import annotations

from ._dag import Dag, Task, TaskContext, TaskFn
from ._dagrun import DagResult, flow_task, run_dag
from ._durable import Checkpoints, CheckpointStore
from ._errors import (
    DagCycleError,
    DagFailedError,
    FlowDefinitionError,
    FlowError,
    InvalidTransitionError,
    NoTransitionError,
    StateTimeoutError,
    StepLimitError,
    TaskTimeoutError,
)
from ._events import FlowTransition, RouteDecision, RouteRequest, TaskEvent
from ._flowrun import FlowResult, run_flow
from ._inbox import Answer, Inbox, Wait
from ._schedule import critical_path
from ._stateflow import (
    Call,
    Failure,
    History,
    Route,
    Rule,
    Send,
    State,
    StateFlow,
    Step,
    StepContext,
)

__all__ = [
    "Answer",
    "Call",
    "CheckpointStore",
    "Checkpoints",
    "Dag",
    "DagCycleError",
    "DagFailedError",
    "DagResult",
    "Failure",
    "FlowDefinitionError",
    "FlowError",
    "FlowResult",
    "FlowTransition",
    "History",
    "Inbox",
    "InvalidTransitionError",
    "NoTransitionError",
    "Route",
    "RouteDecision",
    "RouteRequest",
    "Rule",
    "Send",
    "State",
    "StateFlow",
    "StateTimeoutError",
    "Step",
    "StepContext",
    "StepLimitError",
    "Task",
    "TaskContext",
    "TaskEvent",
    "TaskFn",
    "TaskTimeoutError",
    "Wait",
    "critical_path",
    "flow_task",
    "run_dag",
    "run_flow",
]
