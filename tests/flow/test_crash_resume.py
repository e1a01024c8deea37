"""A durable run whose driver process is killed (SIGKILL) mid-run resumes where it was.

The driver (tests/flow/crash_driver.py) runs in a subprocess; the checkpoint store and the
agent serving the steps live in this process's worker, which outlives the driver.
"""

from __future__ import annotations

import pathlib
import subprocess
import sys
from collections import Counter

import pytest
import trio

import agentwire as aw
from agentwire.flow import Checkpoints

from .helpers import Done, Work

ROOT = pathlib.Path(__file__).parents[2]
GUARD = 60  # seconds: a hang guard, never a synchronisation
IN_FLIGHT = "s3"  # the step the first driver is killed in


class Lines:
    """A process's stdout, line by line."""

    def __init__(self, stream: trio.abc.ReceiveStream) -> None:
        self.stream = stream
        self.buffer = b""

    async def until(self, last: str) -> list[str]:
        """Every line up to and including *last*."""
        lines: list[str] = []
        while not lines or lines[-1] != last:
            while b"\n" not in self.buffer:
                chunk = await self.stream.receive_some(65536)
                if not chunk:
                    raise AssertionError(f"the driver exited before printing {last!r}: {lines}")
                self.buffer += chunk
            line, self.buffer = self.buffer.split(b"\n", 1)
            lines.append(line.decode())
        return lines


class Stepper:
    """The serving side: counts each step served, and holds the first attempt of IN_FLIGHT."""

    def __init__(self) -> None:
        self.served: Counter[str] = Counter()
        self.keys: list[str] = []
        self.in_flight = trio.Event()
        self.release = trio.Event()

    async def register(self, runtime: aw.AgentRuntime) -> None:
        stepper = self

        class Step(aw.RoutedAgent):
            @aw.rpc
            async def work(self, message: Work, ctx: aw.MessageContext) -> Done:
                stepper.served[message.payload] += 1
                stepper.keys.append(message.key)
                if message.payload == IN_FLIGHT and not stepper.in_flight.is_set():
                    stepper.in_flight.set()
                    await stepper.release.wait()
                return Done(message.payload.upper(), str(self.id))

        await Step.register(runtime, "stepper", lambda: Step("serves the steps"))


@pytest.mark.parametrize(
    ("kind", "finished"),
    [("flow", "FLOW s2 -> s3"), ("dag", "TASK s2 done")],
)
async def test_a_killed_driver_resumes_its_durable_run_without_repeating_finished_steps(
    kind: str, finished: str
) -> None:
    stepper = Stepper()
    with trio.fail_after(GUARD):
        async with (
            aw.open_gateway("127.0.0.1:0") as gateway,
            aw.open_worker(gateway.address) as services,
        ):
            await Checkpoints("crash-checkpoints").register_store(services)
            await stepper.register(services)
            command = [sys.executable, "-m", "tests.flow.crash_driver", gateway.address, kind, "r1"]
            first = await trio.lowlevel.open_process(command, stdout=subprocess.PIPE, cwd=ROOT)
            try:
                assert first.stdout is not None
                progress = await Lines(first.stdout).until(finished)
                await stepper.in_flight.wait()  # s3 was sent: s0..s2 are checkpointed done
            finally:
                first.kill()  # SIGKILL: no cleanup of any kind in the driver
                with trio.CancelScope(shield=True):
                    await first.wait()
            stepper.release.set()
            assert stepper.served == Counter({"s0": 1, "s1": 1, "s2": 1, "s3": 1})

            second = await trio.run_process(command, capture_stdout=True, check=False, cwd=ROOT)
    assert first.returncode == -9
    assert progress[0] == "READY"
    assert second.returncode == 0
    assert second.stdout.decode().splitlines()[-1] == "RESULT S0 S1 S2 S3 S4"
    # finished steps ran once; the one in flight ran again with the next attempt number
    assert stepper.served == Counter({"s0": 1, "s1": 1, "s2": 1, "s3": 2, "s4": 1})
    if kind == "flow":
        assert stepper.keys == ["r1/0/1", "r1/1/1", "r1/2/1", "r1/3/1", "r1/3/2", "r1/4/1"]
    else:
        assert stepper.keys == ["r1/s0/1", "r1/s1/1", "r1/s2/1", "r1/s3/1", "r1/s3/2", "r1/s4/1"]
