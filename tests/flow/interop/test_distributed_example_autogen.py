"""examples/flow/distributed_dag.py with an AutoGen 0.7.5 worker serving some of its tasks."""

from __future__ import annotations

import pathlib
import sys

import pytest
import trio

import agentwire as aw

from .test_flow_autogen import WAIT, Lines, autogen_peer

pytestmark = pytest.mark.interop

EXAMPLE = pathlib.Path(__file__).parents[3] / "examples" / "flow" / "distributed_dag.py"
OPTIONS = ["--right", "ag_step", "--topic", "flow-events", "--run-id", "i1"]


async def test_an_autogen_worker_serves_the_right_hand_tasks_of_the_distributed_dag() -> None:
    with trio.fail_after(WAIT):
        async with (
            aw.open_gateway("127.0.0.1:0") as gateway,
            autogen_peer(gateway.address) as peer,
        ):
            assert peer.stdout is not None
            assert peer.stdin is not None
            lines = Lines(peer.stdout)
            assert await lines.next() == "READY"
            example = await trio.run_process(
                [sys.executable, str(EXAMPLE), "--gateway", gateway.address, *OPTIONS],
                capture_stdout=True,
                capture_stderr=True,
                check=False,
            )
            assert example.returncode == 0, example.stderr.decode()
            # the AutoGen worker follows the run's progress too
            followed = await lines.until("TASK report done")
            await peer.stdin.aclose()
    output = example.stdout.decode().splitlines()
    assert "[i1] merge started (attempt 1)" in output
    summary = output[output.index("[i1] report started (attempt 1)") :]
    assert "check: 3 SOURCES (served by autogen ag_step/i1 i1/check/1)" in summary
    assert "merge: ALPHA+BETA+GAMMA (served by autogen ag_step/i1 i1/merge/1)" in summary
    assert "report: REPORT OF ALPHA+BETA+GAMMA (served by left/i1 on worker one)" in summary
    assert "fetch[1]: BETA (served by left/i1 on worker one)" in summary
    assert {"TASK check done", "TASK merge done", "TASK fetch done"} <= set(followed)
