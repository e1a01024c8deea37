"""Durable runs: a run's progress kept as the state of a checkpoint agent.

A durable run writes its progress with ``runtime.agent_load_state(AgentId(store, run_id),
checkpoint)`` before and after every step, and reads it back with
``runtime.agent_save_state(...)``: the runtime's own state save/load, so the checkpoints
live wherever the store's agent type is served -- on another worker (read and written over
the gateway's control channel), or in this runtime, whose ``save_state()`` snapshot then
holds them. Running the flow again with the same run id resumes it: finished steps are not
repeated; the step that was in flight runs again with the next attempt number
(at-least-once: put ``ctx.idempotency_key``, ``run/step/attempt``, in what it sends).

A checkpoint is JSON: step inputs and outputs must be JSON values (None, bool, int, float,
str, and lists and string-keyed dicts of them) or instances of the message classes given to
:class:`Checkpoints` (dataclasses, attrs classes, pydantic models: what has a JSON
serializer), or lists of those.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any, Protocol

import attrs
import trio

from .._agents import AgentRuntime, BaseAgent, MessageContext
from .._errors import CantHandleError
from .._ids import AgentId
from .._serialization import JSON_DATA_CONTENT_TYPE, MessageSerializer, serializers_for_type
from ._errors import FlowError
from ._machine import RunCore
from ._stateflow import Failure, StateFlow, Step

__all__ = [
    "CheckpointStore",
    "Checkpoints",
    "DagCheckpoint",
    "FlowCheckpoint",
    "StateRuntime",
    "state_runtime",
]

_JSON_SCALARS = (type(None), bool, int, float, str)


class StateRuntime(AgentRuntime, Protocol):
    """A runtime that saves and loads agents' state (``open_runtime`` and ``open_worker``)."""

    async def agent_save_state(self, agent: AgentId) -> Mapping[str, Any]: ...

    async def agent_load_state(self, agent: AgentId, state: Mapping[str, Any]) -> None: ...


def state_runtime(runtime: AgentRuntime) -> StateRuntime:
    """*runtime*, checked to save and load agents' state."""
    if not (hasattr(runtime, "agent_save_state") and hasattr(runtime, "agent_load_state")):
        raise FlowError(
            f"a durable run needs a runtime with agent_save_state/agent_load_state "
            f"(open_runtime, open_worker), not {type(runtime).__qualname__}"
        )
    return runtime  # type: ignore[return-value]


class CheckpointStore(BaseAgent):
    """The agent that holds one run's checkpoint as its state (a newer version wins)."""

    def __init__(self) -> None:
        super().__init__("holds a flow run's checkpoint")
        self._state: dict[str, Any] = {}

    async def save_state(self) -> Mapping[str, Any]:
        return self._state

    async def load_state(self, state: Mapping[str, Any]) -> None:
        if state.get("version", 0) >= self._state.get("version", -1):
            self._state = dict(state)

    async def on_message_impl(self, message: Any, ctx: MessageContext) -> Any:
        raise CantHandleError(
            f"{self.id} holds a checkpoint: use agent_save_state/agent_load_state, not messages"
        )


def _json_serializer(cls: type[Any]) -> MessageSerializer[Any]:
    for serializer in serializers_for_type(cls):
        if serializer.data_content_type == JSON_DATA_CONTENT_TYPE:
            return serializer
    raise FlowError(f"{cls.__qualname__} has no JSON serializer: it cannot be checkpointed")


class Checkpoints:
    """Where durable runs keep their progress: agent type *agent_type*'s agents.

    *types* are the message classes that step inputs and outputs may be (see the module
    docstring). Serve the agent type somewhere with :meth:`register_store`.
    """

    def __init__(self, agent_type: str = "flow-checkpoints", types: Iterable[type] = ()) -> None:
        self.agent_type = agent_type
        self._by_class = {cls: _json_serializer(cls) for cls in types}
        self._by_name = {serializer.type_name: serializer for serializer in self._by_class.values()}

    async def register_store(self, runtime: AgentRuntime) -> None:
        """Serve this store's agent type on *runtime* (which should outlive the runs' workers)."""
        await CheckpointStore.register(runtime, self.agent_type, CheckpointStore)

    async def read(self, runtime: StateRuntime, run_id: str) -> Mapping[str, Any]:
        """The run's checkpoint (``{}`` if it has none)."""
        return await runtime.agent_save_state(AgentId(self.agent_type, run_id))

    async def write(self, runtime: StateRuntime, run_id: str, checkpoint: dict[str, Any]) -> None:
        await runtime.agent_load_state(AgentId(self.agent_type, run_id), checkpoint)

    # -- values --------------------------------------------------------------------------------

    def encode(self, value: Any) -> Any:
        """*value* as JSON; FlowError naming its type if it cannot be."""
        if isinstance(value, _JSON_SCALARS):
            if isinstance(value, float) and not math.isfinite(value):
                raise FlowError(f"cannot checkpoint the float {value!r}: JSON has no such number")
            return {"json": value}
        serializer = self._by_class.get(type(value))
        if serializer is not None:
            return {"type": serializer.type_name, "data": serializer.serialize(value).decode()}
        if isinstance(value, list | tuple):
            return {"list": [self.encode(item) for item in value]}
        if isinstance(value, dict) and all(isinstance(key, str) for key in value):
            return {"dict": {key: self.encode(item) for key, item in value.items()}}
        if isinstance(value, Failure):
            return {
                "failure": [value.state, self.encode(value.input), f"{value.error!r}"],
            }
        raise FlowError(
            f"cannot checkpoint a {type(value).__qualname__}: use JSON values, or give its "
            "class to Checkpoints(types=...)"
        )

    def decode(self, data: Any) -> Any:
        if "json" in data:
            return data["json"]
        if "type" in data:
            serializer = self._by_name.get(data["type"])
            if serializer is None:
                raise FlowError(
                    f"the checkpoint holds a {data['type']!r}: give its class to "
                    "Checkpoints(types=...)"
                )
            return serializer.deserialize(data["data"].encode())
        if "list" in data:
            return [self.decode(item) for item in data["list"]]
        if "dict" in data:
            return {key: self.decode(item) for key, item in data["dict"].items()}
        state, value, error = data["failure"]
        return Failure(state, self.decode(value), FlowError(f"before a restart: {error}"))

    def encode_step(self, step: Step) -> dict[str, Any]:
        fields = attrs.asdict(step, recurse=False)
        fields["input"] = self.encode(step.input)
        fields["output"] = self.encode(step.output)
        return fields

    def decode_step(self, data: Mapping[str, Any]) -> Step:
        fields = dict(data)
        fields["input"] = self.decode(fields["input"])
        fields["output"] = self.decode(fields["output"])
        return Step(**fields)


class _RunCheckpoint:
    """One run's checkpoint: read once when the run starts, then written whole, one write
    at a time, each with a newer version."""

    kind = ""  # "flow" or "dag": the field naming what the checkpoint is of

    def __init__(
        self, runtime: AgentRuntime, checkpoints: Checkpoints, name: str, run_id: str
    ) -> None:
        self.runtime = state_runtime(runtime)
        self.checkpoints = checkpoints
        self.name = name
        self.run_id = run_id
        self.version = 0
        self._lock = trio.Lock()

    async def _load(self) -> Mapping[str, Any]:
        saved = await self.checkpoints.read(self.runtime, self.run_id)
        if saved and saved.get(self.kind) != self.name:
            raise FlowError(
                f"run {self.run_id!r} has a checkpoint of {self.kind} "
                f"{saved.get(self.kind)!r}, not of {self.name!r}: use another run id"
            )
        if saved:
            self.version = int(saved["version"])
        return saved

    async def _save(self, fields: dict[str, Any]) -> None:
        async with self._lock:
            self.version += 1
            checkpoint = {"version": self.version, self.kind: self.name, **fields}
            await self.checkpoints.write(self.runtime, self.run_id, checkpoint)


class FlowCheckpoint(_RunCheckpoint):
    """A StateFlow run's checkpoint: written before and after each step."""

    kind = "flow"

    def __init__(
        self, runtime: AgentRuntime, checkpoints: Checkpoints, flow: StateFlow, core: RunCore
    ) -> None:
        super().__init__(runtime, checkpoints, flow.name, core.run_id)
        self.core = core
        self.steps: list[dict[str, Any]] = []  # encoded
        self.value: Any = None
        self.in_flight: dict[str, int] | None = None

    async def resume(self) -> bool:
        """Replay the run's checkpoint into its core, if it has one: True if it had."""
        saved = await self._load()
        if not saved:
            return False
        for data in saved["steps"]:
            self.core.advance(self.checkpoints.decode_step(data))
        self.steps = list(saved["steps"])
        self.value = self.checkpoints.decode(saved["value"])
        self.in_flight = saved.get("in_flight")
        return True

    async def step_starts(self, value: Any) -> int:
        """Record that the next step starts on *value*; its attempt number."""
        step = len(self.core.history)
        attempt = 1
        if self.in_flight is not None and self.in_flight["step"] == step:
            attempt = self.in_flight["attempt"] + 1
        self.in_flight = {"step": step, "attempt": attempt}
        await self._write(value)
        return attempt

    async def step_done(self, step: Step, value: Any) -> None:
        self.steps.append(self.checkpoints.encode_step(step))
        self.in_flight = None
        await self._write(value)

    async def _write(self, value: Any) -> None:
        await self._save(
            {
                "state": self.core.state,
                "finished": self.core.finished,
                "value": self.checkpoints.encode(value),
                "steps": list(self.steps),
                "in_flight": self.in_flight,
            }
        )


class DagCheckpoint(_RunCheckpoint):
    """A DAG run's checkpoint: finished tasks' results and durations, attempts started;
    written when an attempt starts and when a task finishes."""

    kind = "dag"

    def __init__(
        self, runtime: AgentRuntime, checkpoints: Checkpoints, dag: str, run_id: str
    ) -> None:
        super().__init__(runtime, checkpoints, dag, run_id)
        self.results: dict[str, Any] = {}  # encoded
        self.durations: dict[str, float] = {}
        self.attempts: dict[str, int] = {}  # by task, or task/index for a fanned-out one

    async def resume(self) -> dict[str, Any]:
        """The results of the tasks a previous run of this run id finished."""
        saved = await self._load()
        if not saved:
            return {}
        self.results = dict(saved["results"])
        self.durations = dict(saved["durations"])
        self.attempts = dict(saved["attempts"])
        return {name: self.checkpoints.decode(data) for name, data in self.results.items()}

    async def attempt_starts(self, instance: str) -> int:
        """Record that an attempt of *instance* starts; its number over every run so far."""
        number = self.attempts.get(instance, 0) + 1
        self.attempts[instance] = number
        await self._write()
        return number

    async def task_done(self, name: str, result: Any, duration: float) -> None:
        self.results[name] = self.checkpoints.encode(result)
        self.durations[name] = duration
        await self._write()

    async def _write(self) -> None:
        await self._save(
            {
                "results": dict(self.results),
                "durations": dict(self.durations),
                "attempts": dict(self.attempts),
            }
        )
