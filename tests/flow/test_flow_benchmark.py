"""The ``flow`` benchmark workload: flow overheads against hand-written sends."""

from __future__ import annotations

import pytest

from benchmarks import _agentwire_side, _common
from benchmarks._spec import rows_for, workload

FIGURES = {
    "flow_step_us",
    "flow_baseline_step_us",
    "flow_step_overhead_us",
    "dag_task_us",
    "dag_baseline_task_us",
    "dag_task_overhead_us",
}


async def test_the_flow_workload_reports_each_figure_and_the_overheads() -> None:
    figures = await _agentwire_side.flow(0.0)
    assert set(figures) == FIGURES
    assert all(figures[key] > 0 for key in ("flow_step_us", "dag_task_us"))
    assert figures["flow_step_overhead_us"] == pytest.approx(
        figures["flow_step_us"] - figures["flow_baseline_step_us"], abs=0.02
    )
    assert figures["dag_task_overhead_us"] == pytest.approx(
        figures["dag_task_us"] - figures["dag_baseline_task_us"], abs=0.02
    )


def test_autogen_reports_only_the_baselines_of_the_flow_workload() -> None:
    agentwire = _common.flow_figures(50.0, 4.0, 30.0, 5.0)
    autogen = {"flow_baseline_step_us": 140.0, "dag_baseline_task_us": 150.0}
    rows = {
        row.metric: row
        for row in rows_for(workload("flow"), {"autogen": autogen, "agentwire": agentwire})
    }
    assert set(rows) == FIGURES
    assert rows["flow_step_overhead_us"].agentwire == 46.0
    assert rows["flow_step_us"].autogen is None
    assert rows["flow_step_us"].ratio is None
    assert rows["flow_baseline_step_us"].ratio == pytest.approx(4.0 / 140.0)
    assert all(row.met is None for row in rows.values())  # no targets: nothing to compare
