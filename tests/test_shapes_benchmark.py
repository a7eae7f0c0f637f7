"""Smoke test of benchmarks/shapes.py (its --quick mode) on the real bunny mesh."""

from __future__ import annotations

import json
from pathlib import Path

import pytest


@pytest.mark.slow
@pytest.mark.shared_data
def test_shapes_benchmark_quick(shared_data: Path, tmp_path: Path) -> None:
    from benchmarks import shapes

    payload = shapes.main(["--quick", "--results-dir", str(tmp_path)])  # never the tracked results file
    assert payload["summary"].startswith("Summary: bunny:")
    runs = payload["runs"]["bunny"]
    assert {r["variant"] for r in runs} == set(shapes.VARIANTS)
    for r in runs:
        assert 0.0 < r["iou_final"] <= 1.0 and r["iou_final_resolution"] == 128
        assert r["train_s"] > 0 and r["chamfer"] is not None
    saved = json.loads((tmp_path / "shapes_quick.json").read_text())
    assert saved["summary"] == payload["summary"]
    # --from-json re-makes the tables from the saved runs, without training, into the file it read.
    copy = tmp_path / "shapes_copy.json"
    copy.write_text(json.dumps(saved))
    again = shapes.main(["--from-json", str(copy)])
    assert again["summary"] == saved["summary"] and again["stats"].keys() == saved["stats"].keys()
    assert json.loads(copy.read_text())["resummarized_by"]


@pytest.mark.slow
@pytest.mark.shared_data
def test_shapes_benchmark_variants_against_another_baseline(shared_data: Path, tmp_path: Path) -> None:
    """--variants runs a subset; --baseline is what the differences and time ratios are taken against."""
    from benchmarks import shapes

    argv = ["--quick", "--results-dir", str(tmp_path), "--variants", "adam-gaussian", "esgd", "esgd-official"]
    payload = shapes.main([*argv, "--baseline", "adam-gaussian"])
    stats = payload["stats"]["bunny"]
    assert set(stats) == {"adam-gaussian", "esgd", "esgd-official"}
    assert stats["adam-gaussian"]["verdict_iou"] == "baseline" and "iou_diff_vs_adam-gaussian" in stats["esgd"]
    assert "esgd IoU@64 at equal time" in payload["summary"]
    esgd = {r["variant"]: r for r in payload["runs"]["bunny"]}
    assert (
        esgd["esgd"]["lr"] in shapes.LR_GRIDS["esgd"]
        and esgd["esgd-official"]["lr"] in shapes.LR_GRIDS["esgd-official"]
    )


def test_shapes_benchmark_rejects_unknown_variants() -> None:
    from benchmarks import shapes

    with pytest.raises(ValueError, match="--variants / --baseline: unknown"):
        shapes.main(["--variants", "adam", "sgd"])
    with pytest.raises(ValueError, match="must include the baseline"):
        shapes.main(["--variants", "esgd"])


def test_shapes_benchmark_sampler_variants_are_int_with_the_cores_samplers() -> None:
    from benchmarks import shapes
    from nerf_inr_methods.shapes.config import ShapeFitConfig

    plain = shapes.variant_config(ShapeFitConfig(mesh=Path("bunny.obj")), "int")
    for variant in shapes.SAMPLERS:
        config = shapes.variant_config(ShapeFitConfig(mesh=Path("bunny.obj")), variant)
        selection = config.int_selection
        assert selection.enabled and selection.sampler == variant.removeprefix("int-")
        assert (config.activation, config.optimizer, selection.ratio) == (
            plain.activation,
            plain.optimizer,
            plain.int_selection.ratio,
        )
