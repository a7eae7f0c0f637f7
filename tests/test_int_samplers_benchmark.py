"""The 2D sampler benchmark (benchmarks/int_samplers.py): its quick smoke run and the JSON layout the issue asks for."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_int_samplers_quick(tmp_path: Path) -> None:
    from benchmarks.int_samplers import ARMS, SamplersConfig, main

    payload = main(SamplersConfig(quick=True, results_dir=tmp_path))
    saved = json.loads((tmp_path / "int_samplers_quick.json").read_text())
    assert saved["summary_line"] == payload["summary_line"] and payload["summary_line"].startswith("SUMMARY")
    runs = saved["runs"]
    assert {(r["sampler"], r["seed"]) for r in runs} == {(a, s) for a in ARMS for s in (0, 1)}
    by = {(r["sampler"], r["seed"]): r for r in runs}
    for r in runs:
        assert all(set(p) >= {"step", "train_seconds", "psnr"} for p in r["curve"])
        steps = [p["step"] for p in r["curve"]]
        assert steps[0] == 0 and steps[-1] == 120 and steps == sorted(steps)
        assert r["curve"][-1]["psnr"] > r["curve"][0]["psnr"] + 3.0  # every arm learns the image
        uniform = by["uniform", r["seed"]]
        if r["sampler"] != "uniform":
            assert r["points_trained"] < uniform["points_trained"]  # subsets of INT's sizes
        assert (r["points_scored"] > 0) == (r["sampler"] in ("int", "soft", "two-forward"))


def test_int_samplers_cli_help() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.int_samplers", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    for flag in ("--quick", "--arms", "--seeds", "--results-dir", "--alpha"):
        assert flag in result.stdout


def test_the_best_sampler_is_one_that_meets_the_target_when_a_faster_one_does_not() -> None:
    from benchmarks.int_samplers import SamplersConfig, verdict_line

    def arm(ratio: float | None, vs_random: tuple[float, float]) -> dict:
        entry = {"reached": 3, "psnr_minus_random": {"mean": vs_random[0], "std": vs_random[1], "n": 3}}
        if ratio is not None:
            entry.update(time_ratio_mean=ratio, time_ratio_std=0.05)
        return entry

    per = {
        "uniform": arm(1.0, (0.04, 0.01)),
        "random": arm(None, (0.0, 0.0)),
        "soft": arm(0.54, (0.09, 0.01)),  # meets both parts
        "error-map": arm(0.41, (0.10, 0.07)),  # faster, but its margin over random is not resolvable
    }
    config = SamplersConfig(arms=("uniform", "random", "soft", "error-map"))
    text, best, met = verdict_line({"per_arm": per}, config)
    assert (best, met) == ("soft", True) and text.startswith("best soft: target")
    per["soft"]["psnr_minus_random"]["std"] = 0.07
    assert verdict_line({"per_arm": per}, config)[1:] == ("error-map", False)
