"""What a run publishes and what a router agent exchanges: dataclasses, so JSON on the wire.

Any agent subscribed to the run's topic (``TopicId(topic, run_id)``), in any process and
AutoGen's included, can follow a run: a JSON serializer for these classes decodes them.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from typing import Any

from .._ids import TopicId
from .._serialization import MessageSerializer, serializers_for_type

__all__ = [
    "FlowTransition",
    "RouteDecision",
    "RouteRequest",
    "TaskEvent",
    "describe_value",
    "publish_event",
    "register_flow_messages",
]


@dataclasses.dataclass
class FlowTransition:
    """A StateFlow run left ``source`` for ``target`` after step ``step``.

    ``reason`` is ``"start"`` (the run entered its initial state, ``source`` is empty),
    ``"resume"`` (a durable run resumed in ``target`` after ``step`` steps),
    ``"rule"``, ``"router"``, ``"error"`` (the step failed: ``detail`` says how) or
    ``"final"`` (``target`` is the final state reached; ``source`` equals it).
    ``at`` is wall-clock time (seconds since the epoch); ``detail`` a short text of the
    step's output or error.
    """

    flow: str
    run_id: str
    step: int
    source: str
    target: str
    reason: str
    at: float
    detail: str = ""


@dataclasses.dataclass
class TaskEvent:
    """Progress of one task of a DAG run.

    ``kind`` is ``"started"``, ``"retried"`` (attempt ``attempt`` failed, another follows
    after ``delay`` seconds), ``"done"``, ``"failed"`` or ``"skipped"`` (a dependency
    failed). ``duration`` is the attempt's (or the task's, for done/failed) time in seconds.
    ``item`` is the fan-out index (-1 for a task that is not fanned out).
    """

    dag: str
    run_id: str
    task: str
    kind: str
    attempt: int
    at: float
    duration: float = 0.0
    delay: float = 0.0
    item: int = -1
    error: str = ""


@dataclasses.dataclass
class RouteRequest:
    """What a router agent is asked: pick one of ``allowed`` after ``state`` produced ``output``."""

    flow: str
    run_id: str
    state: str
    allowed: list[str]
    output: str
    history: list[str]


@dataclasses.dataclass
class RouteDecision:
    """A router agent's answer: the state to go to (a plain ``str`` answer works in-process)."""

    target: str


def describe_value(value: object, limit: int = 200) -> str:
    """A short text for an output or an error, for events and messages."""
    text = repr(value) if isinstance(value, BaseException) else str(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


@functools.cache
def _flow_serializers() -> tuple[MessageSerializer[Any], ...]:
    """The serializers of the flow's message types, built once (each build compiles codecs)."""
    classes = (FlowTransition, TaskEvent, RouteRequest, RouteDecision)
    return tuple(serializer for cls in classes for serializer in serializers_for_type(cls))


def register_flow_messages(runtime: Any) -> None:
    """Teach *runtime* the flow's own message types (so a worker decodes them from peers)."""
    runtime.add_message_serializer(list(_flow_serializers()))


async def publish_event(runtime: Any, topic: str | None, run_id: str, event: object) -> None:
    """Publish *event* on ``TopicId(topic, run_id)``; nothing when *topic* is None."""
    if topic is not None:
        await runtime.publish_message(event, TopicId(topic, run_id))


def now() -> float:
    return time.time()
