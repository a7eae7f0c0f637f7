"""inr-compare: nerfstudio's logged timings read back exactly, grouping and noise rules, two tiny runs end to end."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import imageio.v2 as imageio
import numpy as np
import pytest

from nerf_inr_methods import reporting
from nerf_inr_methods.nerfstudio_plugin import compare as cmp
from nerf_inr_methods.nerfstudio_plugin.compare import discover, evaluation, logs

TINY = {
    "pipeline.model.num_coarse_samples": 8,
    "pipeline.model.num_importance_samples": 8,
    "pipeline.datamanager.train_num_rays_per_batch": 64,
    "pipeline.model.eval_num_rays_per_chunk": 1024,
}


@pytest.mark.parametrize("buffer_size", [1, 3, 20])
def test_unroll_running_mean_recovers_per_step_values(buffer_size: int) -> None:
    values = np.random.default_rng(buffer_size).uniform(0.01, 2.0, size=57)
    averages = [np.float32(np.mean(values[max(0, i - buffer_size + 1) : i + 1])) for i in range(len(values))]
    np.testing.assert_allclose(logs.unroll_running_mean(averages, buffer_size), values, rtol=0, atol=1e-5)


def _log_like_nerfstudio(
    log_dir: Path, durations, rays, eval_steps, buffer_size: int, first_step: int = 0, each_step=None
) -> None:
    """Write a tensorboard file through nerfstudio's own writer exactly as Trainer.train logs (``each_step(step)``:
    what the training callbacks log during an iteration)."""
    from nerfstudio.configs.base_config import LoggingConfig
    from nerfstudio.utils import writer
    from nerfstudio.utils.writer import EventName

    saved = list(writer.EVENT_WRITERS)
    writer.EVENT_WRITERS.clear()
    try:
        writer.setup_event_writer(False, True, False, log_dir=log_dir, experiment_name="t")
        logging = LoggingConfig(max_buffer_size=buffer_size)
        logging.local_writer.enable = False
        writer.setup_local_writer(logging, max_iter=len(durations))
        for i, duration in enumerate(durations):
            step = first_step + i
            if each_step is not None:
                each_step(step)
            writer.put_time(EventName.ITER_TRAIN_TIME, duration, step=step, avg_over_steps=True, update_eta=True)
            if step > 1:
                writer.put_time(EventName.TRAIN_RAYS_PER_SEC, rays / max(0.001, duration), step=step)
            if step in eval_steps:
                writer.put_dict("Eval Images Metrics", {"psnr": 10.0 + step}, step=step)
            writer.write_out_storage()
        writer.put_time(EventName.TOTAL_TRAIN_TIME, 1.5 * sum(durations), step=len(durations), avg_over_steps=False)
        writer.write_out_storage()
        for event_writer in writer.EVENT_WRITERS:
            event_writer.tb_writer.close()
    finally:
        writer.EVENT_WRITERS[:] = saved


def test_training_log_matches_what_nerfstudio_logged(tmp_path: Path) -> None:
    durations = list(np.random.default_rng(0).uniform(0.05, 0.5, size=30))
    _log_like_nerfstudio(tmp_path, durations, rays=256, eval_steps={4, 19}, buffer_size=7)
    log = cmp.read_training_log(tmp_path, buffer_size=7)
    assert log.timing == "exact" and log.steps_logged == 30
    assert log.train_seconds == pytest.approx(sum(durations), rel=1e-5)
    assert log.wall_total_seconds == pytest.approx(1.5 * sum(durations), rel=1e-5)
    assert log.rays_per_sec == pytest.approx(256 * 28 / sum(durations[2:]), rel=1e-4)
    assert log.curve_source == "one eval image" and log.curve_step == [5, 20]
    assert log.curve_psnr == pytest.approx([14.0, 29.0])
    assert log.curve_seconds == pytest.approx([sum(durations[:5]), sum(durations[:20])], rel=1e-5)


def test_logged_step_times_win_over_the_running_mean(tmp_path: Path) -> None:
    """Runs of this package log every step's duration (StepTimer): compare sums those, not the unrolled mean."""
    from nerfstudio.engine.callbacks import TrainingCallbackLocation

    from nerf_inr_methods.nerfstudio_plugin.step_times import StepTimer

    rng = np.random.default_rng(1)
    nerfstudio_durations = list(rng.uniform(0.05, 0.5, size=12))  # nerfstudio's timer: the whole iteration
    step_durations = [0.9 * d for d in nerfstudio_durations]  # ours: forward, backward, optimizer step
    clock = iter(np.cumsum([x for d in step_durations for x in (1.0, d)]))
    timer = StepTimer(clock=lambda: float(next(clock)))
    start, stop = timer.callbacks()

    def each_step(step: int) -> None:
        start.run_callback_at_location(step, TrainingCallbackLocation.BEFORE_TRAIN_ITERATION)
        stop.run_callback_at_location(step, TrainingCallbackLocation.AFTER_TRAIN_ITERATION)

    _log_like_nerfstudio(tmp_path, nerfstudio_durations, rays=256, eval_steps={9}, buffer_size=5, each_step=each_step)
    log = cmp.read_training_log(tmp_path, buffer_size=5)
    assert log.timing == "exact" and log.step_time_source == "logged per step"
    assert log.train_seconds == pytest.approx(sum(step_durations), rel=1e-5)
    assert log.curve_seconds == pytest.approx([sum(step_durations[:10])], rel=1e-5)
    assert log.rays_per_sec == pytest.approx(256 * 10 / sum(step_durations[2:]), rel=1e-4)


def test_strict_json_files(tmp_path: Path) -> None:
    """NaN/inf of every kind become null, paths strings, arrays lists; the file is parsed by a strict reader."""
    import torch

    payload = {"nan": math.nan, "inf32": np.float32("inf"), "arr": np.array([1.5, np.nan]), "t": torch.tensor(2.0)}
    payload.update({"path": tmp_path, "tuple": (1, None), 3: True})
    path = reporting.write_json(payload, tmp_path / "sub" / "out.json")

    def refuse(constant: str) -> None:
        raise AssertionError(f"non-strict JSON constant {constant}")

    loaded = json.loads(path.read_text(), parse_constant=refuse)
    assert loaded == {"nan": None, "inf32": None, "arr": [1.5, None], "t": 2.0, "path": str(tmp_path),
                      "tuple": [1, None], "3": True}  # fmt: skip
    assert [p.name for p in path.parent.iterdir()] == ["out.json"]  # no temporary file left
    with pytest.raises(TypeError, match="not JSON serialisable"):
        reporting.to_strict_json({"x": object()})


def test_every_benchmark_result_names_the_commit_it_ran_at() -> None:
    """environment_info carries the checkout's commit (short hash, ``+dirty`` with uncommitted package changes)."""
    import re

    commit = reporting.environment_info()["commit"]
    assert commit == "unknown" or re.fullmatch(r"[0-9a-f]{10}(\+dirty)?", commit), commit
    assert reporting.git_commit(paths=("no-such-folder",)) in (commit.removesuffix("+dirty"), "unknown")


def test_events_of_a_later_in_process_training_are_ignored(tmp_path: Path) -> None:
    """nerfstudio's writers are process-wide: a second training in the process also writes to the first's file."""
    from torch.utils.tensorboard import SummaryWriter

    tb = SummaryWriter(log_dir=str(tmp_path))
    for run, steps in (("own", 6), ("later", 3)):
        for step in range(steps):
            tb.add_scalar(logs.ITER_TIME, 1.0 if run == "own" else 100.0, step)
            tb.add_scalar("Eval Images Metrics/psnr", 20.0 if run == "own" else 5.0, step)
    tb.close()
    log = cmp.read_training_log(tmp_path, buffer_size=20)
    assert log.steps_logged == 6 and log.train_seconds == pytest.approx(6.0)
    assert set(log.curve_psnr) == {20.0} and any("another training" in n for n in log.notes)
    empty = cmp.read_training_log(tmp_path / "nothing", buffer_size=20)
    assert empty.train_seconds is None and "no tensorboard event file" in empty.notes[0]


def test_parse_views() -> None:
    assert evaluation.parse_views("all", 4) == [0, 1, 2, 3]
    assert evaluation.parse_views("every-10", 25) == [0, 10, 20]
    assert evaluation.parse_views("1,3", 4) == [1, 3]
    for bad in ("every-0", "some", "7"):
        with pytest.raises(ValueError, match="--views"):
            evaluation.parse_views(bad, 4)


def test_noise_rules() -> None:
    # paired over shared seeds: consistent +1 dB with small spread is resolvable
    paired = reporting.compare_groups({1: 20.0, 2: 21.0, 3: 19.5}, {1: 21.0, 2: 22.1, 3: 20.4}, higher_is_better=True)
    assert paired["pairing"] == "paired over 3 seeds" and paired["verdict"] == "better"
    assert paired["difference"] == pytest.approx(1.0)
    # the same means unpaired are drowned by the seed-to-seed spread
    unpaired = reporting.compare_groups([20.0, 21.0, 19.5], [21.0, 22.1, 20.4], higher_is_better=True)
    assert unpaired["pairing"] == "unpaired" and unpaired["verdict"] == reporting.NOT_RESOLVABLE
    assert reporting.compare_groups({1: 10.0, 2: 10.2}, {3: 5.0}, higher_is_better=False)["verdict"] == "better"
    single = reporting.compare_groups({1: 10.0}, {1: 12.0}, higher_is_better=True)
    assert single["verdict"] == "single seed: no noise" and math.isnan(single["noise_std"])
    report = json.dumps(reporting.to_strict_json({"x": single}), allow_nan=False)
    assert '"noise_std": null' in report


def test_groups_ignore_seeds_and_paths_but_not_method_settings() -> None:
    from nerf_inr_methods.nerfstudio_plugin.method_configs import inr_nerf

    base = copy.deepcopy(inr_nerf.config)
    other_seed = copy.deepcopy(base)
    other_seed.machine.seed, other_seed.timestamp, other_seed.output_dir = 7, "b", Path("elsewhere")
    other_seed.optimizer_presets["esgd"]["optimizer"].rademacher_seed = 7  # any *_seed option is a seed
    wider = copy.deepcopy(base)
    wider.pipeline.model.base_mlp_layer_width = 64
    labels = cmp.group_labels([base, other_seed, wider])
    assert labels[0] == labels[1] and labels[0] != labels[2]
    assert "(base_mlp_layer_width=64)" in labels[2] and labels[0].startswith("inr-nerf")
    assert cmp.group_labels([base, wider], ignore=["pipeline.model.base_mlp"]) == ["inr-nerf", "inr-nerf"]


def test_find_run_configs_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="--runs"):
        discover.find_run_configs([tmp_path / "missing"])
    with pytest.raises(FileNotFoundError, match="no config.yml"):
        discover.find_run_configs([tmp_path])
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "b" / "config.yml").write_text("x")
    assert discover.find_run_configs([tmp_path]) == [(tmp_path / "a" / "b" / "config.yml").resolve()]


@pytest.mark.slow
def test_compare_two_tiny_runs(tiny_scene: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Ours (with logged evaluations) against nerfstudio's vanilla-nerf (none), trained one after the other in
    this process: tables, plots, the baseline, and the run-to-run noise verdicts."""
    from nerf_inr_methods.nerfstudio_plugin.runs import evaluate, prepare_config, train

    monkeypatch.setenv("NIM_LPIPS", "off")
    ours = prepare_config(
        "inr-nerf", tiny_scene, tmp_path / "out", steps=4, overrides={**TINY, "steps_per_eval_image": 2}
    )
    ours_path = train(ours)
    vanilla_path = train(
        prepare_config("vanilla-nerf", tiny_scene, tmp_path / "out", steps=4, preset=None, overrides=TINY)
    )
    out = tmp_path / "cmp"
    report = cmp.Compare(runs=(ours_path.parent, vanilla_path), output_dir=out, views="every-2").main()

    assert report["baseline"] == "vanilla-nerf" and report["views"]["indices"] == [0, 2]
    assert report["metrics"] == ["psnr", "ssim", "train_seconds", "rays_per_sec"]  # LPIPS omitted, not faked
    runs = {r["method"]: r for r in report["runs"]}
    for run in runs.values():
        per_view_psnr = [v["psnr"] for v in run["per_view"]]
        assert run["metrics"]["psnr"] == pytest.approx(float(np.mean(per_view_psnr)), rel=1e-6)
        assert 0.0 < run["metrics"]["ssim"] <= 1.0
        assert run["training_log"]["steps_logged"] == 4 and run["training_log"]["timing"] == "exact"
        assert 0.0 < run["train_seconds"] < run["training_log"]["wall_total_seconds"] + 1e-6
        assert run["rays_per_sec"] > 0 and len(run["per_view"]) == 2
    assert runs["inr-nerf"]["training_log"]["curve_step"] == [3]  # logged at step index 2
    assert runs["inr-nerf"]["training_log"]["step_time_source"] == "logged per step"  # our StepTimer callback
    assert runs["vanilla-nerf"]["training_log"]["step_time_source"] == "unrolled running mean"  # nerfstudio's method
    assert runs["vanilla-nerf"]["training_log"]["curve_source"] is None
    verdicts = {d["metric"]: d["verdict"] for d in report["differences"]}
    assert set(verdicts) == {"psnr", "ssim", "train_seconds", "rays_per_sec"}
    assert set(verdicts.values()) == {"single seed: no noise"}

    markdown = (out / "comparison.md").read_text()
    assert "| run | group | seed | steps | PSNR (dB) | SSIM |" in markdown and "none logged" in markdown
    assert "LPIPS omitted" in markdown
    saved = json.loads((out / "comparison.json").read_text())
    assert len(saved["runs"]) == 2 and saved["files"]["psnr_vs_time"].endswith("psnr_vs_time.png")
    plot = imageio.imread(out / "psnr_vs_time.png")
    views = imageio.imread(out / "test_view.png")
    assert plot.ndim == 3 and plot.shape[0] > 200 and views.shape[1] > views.shape[0]  # GT + 2 runs side by side

    # the per-view evaluation is ns-eval's: all views agree with runs.evaluate, and the kept rendering is the one
    # the image view's PSNR was measured on
    everything, indices = cmp.evaluate_run(vanilla_path, "all", None)
    assert indices == [0, 1, 2]
    assert everything.metrics["psnr"] == pytest.approx(evaluate(vanilla_path)["psnr"], abs=1e-4)
    mse = float(np.mean((everything.image - everything.ground_truth) ** 2))
    assert everything.image_metrics["psnr"] == pytest.approx(-10.0 * math.log10(mse), abs=1e-3)
