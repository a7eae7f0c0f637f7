"""The error-concentration benchmark (benchmarks/error_concentration.py): its measures and its quick run's layout."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch


def _pixels(views: int, size: int) -> torch.Tensor:
    ys, xs = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    return torch.cat([torch.stack([torch.full_like(ys, v), ys, xs], -1).reshape(-1, 3) for v in range(views)])


def test_flat_error_gains_nothing_and_error_in_one_tile_gains_what_the_map_sees() -> None:
    from benchmarks.error_concentration import concentration

    indices = _pixels(2, 8)  # two 8 x 8 views: 8 tiles of 4 x 4 px
    flat = concentration(torch.full((128, 3), 0.1), indices, 8, 8, cell=4, uniform_share=0.2)
    assert flat["gain_ideal"] == pytest.approx(1.0) and flat["gain_map"] == pytest.approx(1.0)
    assert flat["top10_share"] == pytest.approx(13 / 128)  # round(0.1 * 128) pixels of equal error
    assert flat["psnr_train"] == pytest.approx(20.0)

    one_tile = torch.zeros(128, 3)
    one_tile[(indices[:, 0] == 1) & (indices[:, 1] < 4) & (indices[:, 2] < 4)] = 0.5  # 16 px, one tile
    focused = concentration(one_tile, indices, 8, 8, cell=4, uniform_share=0.0)
    assert focused["gain_ideal"] == pytest.approx(8.0)  # 1/8 of the pixels hold every error
    assert focused["gain_map"] == pytest.approx(8.0)  # the tile is the map's cell: it sees it all
    assert focused["top10_share"] == pytest.approx(13 / 16)  # the 13 largest errors are 13 of the tile's 16
    shared = concentration(one_tile, indices, 8, 8, cell=4, uniform_share=0.2)
    assert 1.0 < shared["gain_map"] < focused["gain_map"]
    coarse = concentration(one_tile, indices, 8, 8, cell=8, uniform_share=0.0)
    assert coarse["gain_map"] == pytest.approx(2.0)  # an 8 px tile dilutes the 16 px over 64: a quarter of its gain


@pytest.mark.slow
def test_quick_run_writes_a_curve_per_scene(tmp_path: Path, tiny_scene: Path) -> None:
    from benchmarks.error_concentration import main

    threads = torch.get_num_threads()
    try:
        args = ["--quick", "--synthetic-data", str(tiny_scene), "--output-dir", str(tmp_path / "runs")]
        payload = main([*args, "--results-dir", str(tmp_path), "--threads", "1"])
    finally:
        torch.set_num_threads(threads)
    written = json.loads((tmp_path / "error_concentration_quick.json").read_text())
    assert written["summary_line"] == payload["summary_line"]
    assert payload["summary_line"].startswith("SUMMARY error_concentration")
    (run,) = written["runs"]
    assert run["scene"] == "synthetic" and run["image_size"] == [32, 32] and len(run["train_images_measured"]) == 12
    assert [p["step"] for p in run["curve"]] == [20, 40]
    for point in run["curve"]:
        assert point["pixels"] == 12 * 32 * 32
        assert point["gain_ideal"] >= point["gain_map"] >= 1.0 - 1e-9
        assert 0.1 <= point["top10_share"] <= 1.0
        assert point["train_seconds"] > 0 and point["psnr"] > 5


def test_bad_options_name_the_flag() -> None:
    from benchmarks.error_concentration import ConcentrationConfig

    with pytest.raises(ValueError, match="--measure-at"):
        ConcentrationConfig(measure_at=(100, 50)).resolved()
    with pytest.raises(ValueError, match="--scenes"):
        ConcentrationConfig(scenes=("lego",)).resolved()
    with pytest.raises(ValueError, match="--uniform-share"):
        ConcentrationConfig(uniform_share=1.5).resolved()
