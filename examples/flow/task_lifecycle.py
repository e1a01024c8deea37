"""A task's lifecycle as a StateFlow, its states served by agents.

    received -> analysing -> planning -> executing <-> monitoring -> reviewing -> completed
    and, from any step that fails: error -> recovery -> planning or executing

The executor fails once (its deploy target is busy): the run goes to ``error``, then
``recovery`` sends it back to ``executing``. The ``monitor`` agent is a router: it answers
which state comes next. A ``follower`` agent subscribed to the run's topic prints every
transition, as any agent of any process (AutoGen's included) could.

Run it: ``python examples/flow/task_lifecycle.py``. The same flow runs from a worker
(``open_worker``) with the agents on other workers: see tests/flow/test_example.py.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import trio

import agentwire as aw
from agentwire.flow import (
    Call,
    Failure,
    FlowResult,
    FlowTransition,
    Route,
    RouteDecision,
    Rule,
    Send,
    State,
    StateFlow,
    Step,
    StepContext,
    run_flow,
)

TOPIC = "task-lifecycle"


@dataclasses.dataclass
class Ticket:
    description: str


@dataclasses.dataclass
class Analysis:
    description: str
    risks: list[str]


@dataclasses.dataclass
class Progress:
    steps: list[str]
    done: int = 0


@dataclasses.dataclass
class Review:
    approved: bool
    summary: str


class Analyst(aw.RoutedAgent):
    @aw.rpc
    async def analyse(self, ticket: Ticket, ctx: aw.MessageContext) -> Analysis:
        return Analysis(ticket.description, risks=["downtime"])


class Planner(aw.RoutedAgent):
    @aw.rpc
    async def plan(self, analysis: Analysis, ctx: aw.MessageContext) -> Progress:
        return Progress(["build", "test", "deploy"])


class Executor(aw.RoutedAgent):
    """Runs the next step of the plan; the first deploy fails."""

    def __init__(self, description: str) -> None:
        super().__init__(description)
        self.deploys = 0

    @aw.rpc
    async def execute(self, progress: Progress, ctx: aw.MessageContext) -> Progress:
        step = progress.steps[progress.done]
        if step == "deploy":
            self.deploys += 1
            if self.deploys == 1:
                raise RuntimeError("deploy target busy")
        return Progress(progress.steps, progress.done + 1)


class Monitor(aw.RoutedAgent):
    """The router of ``monitoring``: more steps to run, or time for a review."""

    @aw.rpc
    async def route(self, progress: Progress, ctx: aw.MessageContext) -> RouteDecision:
        finished = progress.done == len(progress.steps)
        return RouteDecision("reviewing" if finished else "executing")


class Reviewer(aw.RoutedAgent):
    @aw.rpc
    async def review(self, progress: Progress, ctx: aw.MessageContext) -> Review:
        return Review(True, f"{progress.done} steps done: {', '.join(progress.steps)}")


@aw.type_subscription(TOPIC)
class Follower(aw.RoutedAgent):
    """Prints the run's transitions as they are published."""

    @aw.event
    async def on_transition(self, event: FlowTransition, ctx: aw.MessageContext) -> None:
        if event.reason == "start":
            print(f"[{event.run_id}] start in {event.target}")
        elif event.reason == "final":
            print(f"[{event.run_id}] finished in {event.target} after {event.step} steps")
        elif event.reason == "error":
            print(f"[{event.run_id}] {event.source} -> {event.target}: {event.detail}")
        else:
            print(f"[{event.run_id}] {event.source} -> {event.target} ({event.reason})")


async def receive(ctx: StepContext) -> Ticket:
    return Ticket(str(ctx.input).strip())


async def recover(ctx: StepContext) -> object:
    """Retry the step that failed with what it was given."""
    failure: Failure = ctx.input
    return failure.input


def failed_while_executing(output: object, history: Sequence[Step]) -> bool:
    """Whether the last failure of the run happened while executing (a rule over the history)."""
    failed = next(step.state for step in reversed(history) if step.reason == "error")
    return failed in ("executing", "monitoring")


LIFECYCLE = StateFlow(
    "task-lifecycle",
    [
        State("received", Call(receive), "analysing"),
        State("analysing", Send("analyst"), "planning", timeout=30),
        State("planning", Send("planner"), "executing", timeout=30),
        State("executing", Send("executor"), "monitoring", timeout=60),
        State(
            "monitoring",
            None,
            Route("monitor", ["executing", "reviewing"], message=lambda _, progress: progress),
        ),
        State("reviewing", Send("reviewer"), [Rule("completed", lambda r, _: r.approved)]),
        State("completed"),
        State("error", None, "recovery"),
        State(
            "recovery",
            Call(recover),
            [Rule("executing", failed_while_executing), Rule("planning")],
        ),
    ],
    initial="received",
    final=["completed"],
    error="error",
)


async def register_agents(runtime: aw.AgentRuntime) -> None:
    """Register the lifecycle's agents (and the follower) on *runtime*."""
    for agent_type, cls in (
        ("analyst", Analyst),
        ("planner", Planner),
        ("executor", Executor),
        ("monitor", Monitor),
        ("reviewer", Reviewer),
    ):
        await cls.register(runtime, agent_type, lambda cls=cls, t=agent_type: cls(t))
    await Follower.register(runtime, "follower", lambda: Follower("prints transitions"))


async def run_ticket(runtime: aw.AgentRuntime, run_id: str = "ticket-1") -> FlowResult:
    """Run one ticket through its lifecycle, from *runtime* (which may host no agent).

    A worker decodes the answers of remote agents by their type: it learns the types of
    the agents it hosts, and the driver here hosts none, so it is told them.
    """
    for cls in (Ticket, Analysis, Progress, Review):
        runtime.add_message_serializer(aw.serializers_for_type(cls))
    return await run_flow(runtime, LIFECYCLE, "  ship the release  ", run_id=run_id, topic=TOPIC)


async def main() -> None:
    async with aw.open_runtime() as runtime:
        await register_agents(runtime)
        result = await run_ticket(runtime)
        await runtime.stop_when_idle()
    print("path:", " -> ".join([*(step.state for step in result.history), result.state]))
    print("review:", result.output.summary)


if __name__ == "__main__":
    trio.run(main)
