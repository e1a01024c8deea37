"""examples/flow/task_lifecycle.py: run as a program, and on workers through a gateway."""

from __future__ import annotations

import importlib.util
import pathlib
import subprocess
import sys
from types import ModuleType

import trio

import agentwire as aw

EXAMPLE = pathlib.Path(__file__).parents[2] / "examples" / "flow" / "task_lifecycle.py"
PATH = (
    "received -> analysing -> planning -> executing -> monitoring -> executing -> monitoring"
    " -> executing -> error -> recovery -> executing -> monitoring -> reviewing -> completed"
)


def load_example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("task_lifecycle", EXAMPLE)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_the_task_lifecycle_example_runs_and_recovers_from_its_failure() -> None:
    result = subprocess.run(
        [sys.executable, str(EXAMPLE)], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "[ticket-1] start in received"
    assert "[ticket-1] executing -> error: RuntimeError('deploy target busy')" in lines
    assert "[ticket-1] monitoring -> reviewing (router)" in lines
    assert "[ticket-1] finished in completed after 13 steps" in lines
    assert f"path: {PATH}" in lines
    assert lines[-1] == "review: 3 steps done: build, test, deploy"


async def test_the_task_lifecycle_runs_alike_on_workers_through_a_gateway() -> None:
    example = load_example()
    with trio.fail_after(20):
        async with (
            aw.open_gateway("127.0.0.1:0") as gateway,
            aw.open_worker(gateway.address) as agents,
            aw.open_worker(gateway.address) as driver,
        ):
            await example.register_agents(agents)
            result = await example.run_ticket(driver, "ticket-2")
    assert " -> ".join([*(step.state for step in result.history), result.state]) == PATH
    # through a worker, the executor's failure arrives as a RemoteError naming its type
    failure = result.history[7].output
    assert isinstance(failure.error, aw.RemoteError)
    assert failure.error.type_name == "RuntimeError"
