"""examples/flow/distributed_dag.py: a DAG served by two workers, its progress followed."""

from __future__ import annotations

import pathlib
import re
import subprocess
import sys

EXAMPLE = pathlib.Path(__file__).parents[2] / "examples" / "flow" / "distributed_dag.py"
TASKS = ["plan", "fetch[0]", "fetch[1]", "fetch[2]", "check", "merge", "report"]


def run_example(*args: str) -> list[str]:
    """The example's output lines; it must exit 0."""
    result = subprocess.run(
        [sys.executable, str(EXAMPLE), *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()


def test_the_distributed_dag_example_is_served_by_both_workers_and_prints_progress() -> None:
    lines = run_example("--run-id", "b7")
    assert re.fullmatch(r"gateway on 127\.0\.0\.1:\d+", lines[0])
    for task in TASKS:
        assert f"[b7] {task} started (attempt 1)" in lines
    for task, attempts in (("plan", 1), ("fetch", 3), ("check", 1), ("merge", 1), ("report", 1)):
        done = rf"\[b7\] {task} done in [\d.]+ ms, {attempts} attempt\(s\)"
        assert any(re.fullmatch(done, line) for line in lines), task
    # every progress line is printed before the run's summary
    summary = lines.index("check: 3 SOURCES (served by right/b7 on worker two)")
    assert all(line.startswith("[b7] ") for line in lines[1:summary])
    assert lines[summary:-1] == [
        "check: 3 SOURCES (served by right/b7 on worker two)",
        "merge: ALPHA+BETA+GAMMA (served by right/b7 on worker two)",
        "report: REPORT OF ALPHA+BETA+GAMMA (served by left/b7 on worker one)",
        "fetch[0]: ALPHA (served by left/b7 on worker one)",
        "fetch[1]: BETA (served by left/b7 on worker one)",
        "fetch[2]: GAMMA (served by left/b7 on worker one)",
    ]
    path = r"critical path: plan -> (fetch|check) -> merge -> report \([\d.]+ ms\)"
    assert re.fullmatch(path, lines[-1])
