"""The options every benchmark shares (benchmarks.common.BenchmarkOptions): flat flags, run defaults, results stem."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch


def test_shared_flags_stay_flat_and_fill_the_run_defaults(tmp_path: Path) -> None:
    from benchmarks.common import parse
    from benchmarks.int_samplers import SamplersConfig, sampler_config

    threads = torch.get_num_threads()
    try:
        argv = ["--quick", "--threads", "1", "--out", "x", "--results-dir", str(tmp_path), "--alpha", "0.3"]
        config = parse(SamplersConfig, [*argv, "--error-power", "2"])
    finally:
        torch.set_num_threads(threads)
    assert (config.quick, config.out, config.results_dir) == (True, "x", tmp_path)
    assert (config.size, config.width, config.steps, config.seeds) == (64, 32, 120, [0, 1])  # quick run's defaults
    soft = sampler_config("soft", config)
    assert soft is not None and (soft.alpha, soft.error_power, soft.uniform_share) == (0.3, 2.0, 0.2)


def test_results_stem_and_threads() -> None:
    from benchmarks.int_image import IntImageConfig

    assert IntImageConfig().resolved().out == "int_image"
    assert IntImageConfig(quick=True).resolved().out == "int_image_quick"
    assert IntImageConfig(quick=True, out="mine").resolved().out == "mine"
    assert IntImageConfig(steps=50).resolved().steps == 50  # a given value is kept
    with pytest.raises(ValueError, match="--threads"):
        IntImageConfig(threads=-1).use_threads()


def test_a_grid_whose_best_lr_is_on_an_edge_is_extended_beyond_it() -> None:
    from benchmarks.common import lr_beyond_edge

    assert math.isclose(lr_beyond_edge({5e-4: 25.0, 1.5e-3: 28.0}), 4.5e-3)
    assert math.isclose(lr_beyond_edge({0.1: 5.0, 0.3: 4.0, 0.9: float("nan")}), 0.1 / 3)  # a NaN is the worst
    assert lr_beyond_edge({1e-3: 1.0, 3e-3: 2.0, 9e-3: 1.5}) is None
    assert lr_beyond_edge({1e-3: 1.0}) is None  # one lr: no direction


def test_lr_search_extends_its_grid_while_the_best_is_on_an_edge() -> None:
    from benchmarks.common import search_lr

    tried: list[float] = []

    def score(lr: float) -> float:
        tried.append(lr)
        return -abs(math.log(lr))  # best at lr 1

    scores = search_lr(score, (0.01, 0.03, 0.1), max_extensions=2)
    assert [round(lr, 6) for lr in tried] == [0.01, 0.03, 0.1, 0.3, 0.9]
    assert list(scores) == sorted(scores) and len(scores) == 5
    assert list(search_lr(score, (0.3, 1.0, 3.0), max_extensions=2)) == [0.3, 1.0, 3.0]  # inside: done


def test_a_benchmark_json_names_the_commit_it_started_at(monkeypatch: pytest.MonkeyPatch) -> None:
    """A commit made while a long benchmark runs is not the one its results name (read once, when it starts)."""
    from benchmarks import common
    from nerf_inr_methods import reporting

    monkeypatch.setattr(reporting, "git_commit", lambda *args, **kwargs: "made-later")
    assert common.environment_info()["commit"] == common.COMMIT_AT_START != "made-later"
