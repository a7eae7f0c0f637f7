"""benchmarks/map_step_cost.py: its --quick smoke writes the rows, ratios and phase breakdown of both arms."""

from __future__ import annotations

import json
from pathlib import Path

import pytest


@pytest.mark.slow
def test_map_step_cost_quick(tmp_path: Path) -> None:
    from benchmarks.common import parse
    from benchmarks.map_step_cost import MapStepCostConfig, main

    config = parse(
        MapStepCostConfig,
        ["--quick", "--thread-counts", "1", "--results-dir", str(tmp_path), "--output-dir", str(tmp_path / "runs")],
    )
    main(config)
    payload = json.loads((tmp_path / "map_step_cost_quick.json").read_text())
    rows = {(r["threads"], r["arm"]): r for r in payload["rows"]}
    assert set(rows) == {(1, "vanilla"), (1, "error-map")}
    assert all(r["cpu_ms_per_step"] > 0 and r["ms_per_step"] > 0 for r in rows.values())
    assert payload["ratios"]["1"]["cpu_ratio"] > 0 and payload["summary_line"].startswith("SUMMARY map_step_cost")
    phases = payload["breakdown"]["1"]["error-map"]["cpu_ms_per_step"]
    assert {"step", "pipeline", "select", "draw_pool", "ray_generator", "forward", "map_write", "rest"} <= set(phases)
    assert "select" not in payload["breakdown"]["1"]["vanilla"]["cpu_ms_per_step"]
