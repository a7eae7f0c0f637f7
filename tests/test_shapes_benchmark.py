"""Smoke test of benchmarks/shapes.py (its --quick mode) on the real bunny mesh."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "shapes.py"


@pytest.mark.slow
@pytest.mark.shared_data
def test_shapes_benchmark_quick(shared_data: Path, tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("shapes_benchmark", SCRIPT)
    shapes = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(shapes)
    payload = shapes.main(["--quick"])
    assert payload["summary"].startswith("Summary: bunny:")
    runs = payload["runs"]["bunny"]
    assert {r["variant"] for r in runs} == set(shapes.VARIANTS)
    for r in runs:
        assert 0.0 < r["iou_final"] <= 1.0 and r["iou_final_resolution"] == 128
        assert r["train_s"] > 0 and r["chamfer"] is not None
    saved = json.loads((SCRIPT.parent / "results" / "shapes_quick.json").read_text())
    assert saved["summary"] == payload["summary"]
    # --from-json re-makes the tables from the saved runs, without training, into the file it read.
    copy = tmp_path / "shapes_copy.json"
    copy.write_text(json.dumps(saved))
    again = shapes.main(["--from-json", str(copy)])
    assert again["summary"] == saved["summary"] and again["stats"].keys() == saved["stats"].keys()
    assert json.loads(copy.read_text())["resummarized_by"]
