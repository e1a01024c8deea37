"""``agentwire demo`` runs end to end in a subprocess and exits 0."""

from __future__ import annotations

import subprocess
import sys


def test_demo_command_runs() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "agentwire", "demo"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("gateway listening on 127.0.0.1:")
    assert "rpc alpha -> beta  greeter/1: 'hello ada, from greeter/1'" in lines
    assert "rpc beta -> alpha  counter/1: total is 42" in lines
    assert any("failed remotely: ValueError: cannot add a negative amount" in x for x in lines)
    assert sum(x.startswith("publish news -> listener_") for x in lines) == 4
    assert any("(protobuf, from greeter/1)" in x for x in lines)
    assert any(x.startswith("throughput: 2000 RPCs") for x in lines)
    assert lines[-1] == "done"
