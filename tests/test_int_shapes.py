"""INT-family samplers in the shape trainer (inr-shape fit --int-selection.sampler ...): one core sampler object."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_shapes_train import check_run, tiny, torus_path  # noqa: F401  (torus_path is a fixture)

from nerf_inr_methods.shapes import train
from nerf_inr_methods.shapes.config import DerivativeOptions, IntOptions, resolve_config

CASES = {
    "soft-full": dict(points="full", int_selection=IntOptions(enabled=True, sampler="soft", max_interval=2)),
    "error-map-fresh": dict(int_selection=IntOptions(enabled=True, sampler="error-map", error_map_resolution=8)),
    "two-forward-pool": dict(
        points="pool", int_selection=IntOptions(enabled=True, sampler="two-forward", max_skips=2, r0=0.3)
    ),
    "int-pool-guard": dict(points="pool", int_selection=IntOptions(enabled=True, max_skips=1)),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_samplers_train_shapes(torus_path: Path, tmp_path: Path, name: str) -> None:  # noqa: F811
    cfg = tiny(torus_path, tmp_path, **CASES[name])
    result = train.train_shape(cfg)
    check_run(result.metrics, result.run_dir)
    scored = result.metrics["points_scored"]
    assert (scored == 0) == name.startswith("error-map")
    batch = 1024 if name.endswith("full") else 512
    assert result.metrics["points_trained"] < 6 * batch


def test_sampler_flags_are_checked(torus_path: Path, tmp_path: Path) -> None:  # noqa: F811
    with pytest.raises(ValueError, match="--int-selection.alpha must be in"):
        resolve_config(tiny(torus_path, tmp_path, int_selection=IntOptions(enabled=True, alpha=3.0)))
    with pytest.raises(ValueError, match="random-subset is INT's control"):
        resolve_config(
            tiny(torus_path, tmp_path, int_selection=IntOptions(enabled=True, random_subset=True, sampler="soft"))
        )
    with pytest.raises(ValueError, match="weights each point's loss"):
        resolve_config(
            tiny(
                torus_path,
                tmp_path,
                int_selection=IntOptions(enabled=True, sampler="soft"),
                derivative=DerivativeOptions(kind="eikonal", num_points=64),
            )
        )
