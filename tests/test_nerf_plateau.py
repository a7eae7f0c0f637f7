"""The converged-comparison harness (benchmarks/nerf_plateau.py): results layout, resume, reuse of finished runs."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def test_quick_run_writes_every_curve_and_reuses_finished_runs(tmp_path: Path, tiny_scene: Path) -> None:
    from benchmarks.nerf_plateau import ARMS, PlateauConfig, main

    config = PlateauConfig(quick=True, output_dir=tmp_path / "out", synthetic_data=tiny_scene, jobs=1)
    payload = main(config)
    results = json.loads((tmp_path / "out" / "nerf_plateau_quick.json").read_text())
    assert {r["arm"] for r in results["runs"]} == {"vanilla", "iga"}
    for run in results["runs"]:
        assert run["scene"] == "synthetic" and run["seed"] == 0 and run["commit"] and run["lr"] > 0
        curve = run["curve"]
        assert [p["step"] for p in curve] == [0, 100, 200]
        assert all({"step", "train_seconds", "psnr"} <= set(p) for p in curve)
        assert curve[0]["train_seconds"] == 0.0 and curve[-1]["train_seconds"] > 0.0
        assert curve[-1]["psnr"] > curve[0]["psnr"] + 0.5, "200 steps must improve on the initial render"
        assert (Path(run["config"]).parent / "nerfstudio_models").is_dir()
    assert set(results["tuning"]) == {"vanilla", "iga"}
    assert all(len(t["grid"]) == len(ARMS[arm].lr_grid) for arm, t in results["tuning"].items())
    assert "### synthetic" in payload["table"] and payload["summary_line"].startswith("SUMMARY nerf_plateau")

    again = main(config)  # every run finished: nothing is retrained, the same curves come back
    assert [r["curve"] for r in again["runs"]] == [r["curve"] for r in payload["runs"]]

    # A fresh checkout has the results file but not the run folders: its runs and lr grids stand in for them
    # (reported, not trained again), and so do the pictures and texture bands made from the folders.
    bands = payload["analysis"]["synthetic"]["iga"]["per_seed"][0]["psnr_by_texture"]
    assert bands and len(bands) == 5
    results_path = tmp_path / "out" / "nerf_plateau_quick.json"
    full = results_path.read_text()
    shutil.rmtree(tmp_path / "out" / "runs")
    picture = tmp_path / "out" / "nerf_plateau_quick_synthetic_test_views.png"
    drawn = picture.read_bytes()

    # a run stopped halfway (--until) whose folder is gone: the report keeps its partial curve
    iga = next(r for r in results["runs"] if r["arm"] == "iga")
    partial = {**iga, "finished": False, "curve": iga["curve"][:2]}
    finished = [r for r in results["runs"] if r is not iga]
    results_path.write_text(json.dumps({**results, "runs": finished, "unfinished_runs": [partial]}))
    main(dataclasses.replace(config, stage="report"))
    kept = json.loads(results_path.read_text())
    assert [r["curve"] for r in kept["unfinished_runs"]] == [partial["curve"]]
    assert kept["unfinished_runs"][0]["restored_from"] == "nerf_plateau_quick.json"

    results_path.write_text(full)
    restored = main(config)
    assert not (tmp_path / "out" / "runs").exists(), "nothing was trained"
    assert [r["curve"] for r in restored["runs"]] == [r["curve"] for r in payload["runs"]]
    assert all(r["restored_from"] == "nerf_plateau_quick.json" for r in restored["runs"])
    assert {arm: t["lr"] for arm, t in restored["tuning"].items()} == {a: t["lr"] for a, t in payload["tuning"].items()}
    assert picture.read_bytes() == drawn
    assert restored["analysis"]["synthetic"]["iga"]["per_seed"][0]["psnr_by_texture"] == bands


def _tiny_spec(tiny_scene: Path, arm: str, steps: int, eval_every: int):
    """A plateau run of ``steps`` on the tiny scene (lr 1e-3 decaying to a tenth, 64 rays)."""
    from benchmarks.nerf_plateau import RunSpec

    return RunSpec(
        scene="synthetic",
        arm=arm,
        seed=0,
        lr=1e-3,
        steps=steps,
        lr_final_ratio=0.1,
        rays=64,
        eval_every=eval_every,
        data=str(tiny_scene),
    )


def test_interrupted_run_continues_from_its_checkpoint(tmp_path: Path, tiny_scene: Path) -> None:
    from benchmarks.nerf_plateau import train_run

    spec = _tiny_spec(tiny_scene, "vanilla", steps=20, eval_every=5)
    partial = train_run(spec, tmp_path, until=10)
    assert not partial["finished"] and [p["step"] for p in partial["curve"]] == [0, 5, 10]
    assert train_run(spec, tmp_path, until=10)["curve"] == partial["curve"]  # already there: nothing trained
    record = train_run(spec, tmp_path)
    assert record["finished"]
    assert [p["step"] for p in record["curve"]] == [0, 5, 10, 15, 20]
    assert [s["start_step"] for s in record["segments"]] == [0, 10]
    clocks = [p["train_seconds"] for p in record["curve"]]
    assert clocks == sorted(clocks), "the training clock continues across the interruption"

    # A schedule whose decay ends at 80% of its steps starts from the finished run of its first 80% (same lr on
    # every one of those steps) and trains only the flat tail.
    import dataclasses

    from benchmarks.nerf_plateau import prefix_spec, trainer_config

    longer = dataclasses.replace(spec, steps=25, decay_end=0.8)
    assert prefix_spec(longer) == spec
    scheduler = trainer_config(longer, tmp_path / "runs" / "synthetic" / "inr-nerf" / longer.name).optimizers["fields"][
        "scheduler"
    ]
    assert scheduler.max_steps == 20 and scheduler.lr_final == pytest.approx(1e-4)
    extended = train_run(longer, tmp_path)
    assert extended["finished"] and extended["adopted_from"] == spec.name
    assert [p["step"] for p in extended["curve"]] == [0, 5, 10, 15, 20, 25]
    assert extended["curve"][:5] == record["curve"]
    assert [s["start_step"] for s in extended["segments"]] == [0, 10, 20]


def test_interrupted_int_run_continues_its_schedule(tmp_path: Path, tiny_scene: Path) -> None:
    """A sampler arm's checkpoint holds INT's state for the run's T steps: the continued run must see the same T."""
    from benchmarks.nerf_plateau import train_run

    spec = _tiny_spec(tiny_scene, "int-soft-every4", steps=12, eval_every=4)
    assert not train_run(spec, tmp_path, until=4)["finished"]
    record = train_run(spec, tmp_path)
    assert record["finished"] and [p["step"] for p in record["curve"]] == [0, 4, 8, 12]
    assert [s["start_step"] for s in record["segments"]] == [0, 4]


def test_ablation_arms_train_at_their_source_arms_tuned_lr(tmp_path: Path) -> None:
    from benchmarks.nerf_plateau import ARMS, PlateauConfig, tune_specs, tuned_lrs

    config = PlateauConfig(arms=("vanilla", "gauss-esgd-robust-no-bound"), output_dir=tmp_path)
    assert {s.arm for s in tune_specs(config)} == {"vanilla", "gauss-esgd-robust"}  # no grid of its own
    lrs = tuned_lrs(config)
    assert (
        lrs["gauss-esgd-robust-no-bound"]["lr"]
        == lrs["gauss-esgd-robust"]["lr"]
        == ARMS["gauss-esgd-robust"].default_lr
    )
    overrides = ARMS["gauss-esgd-robust-no-bound"].overrides
    assert overrides["optimizer_presets.esgd.optimizer.update_bound"] == 0.0
    third = tuned_lrs(PlateauConfig(arms=("gauss-adam-lr-third",), output_dir=tmp_path))["gauss-adam-lr-third"]
    assert third["lr"] == pytest.approx(ARMS["gauss-adam"].default_lr / 3) and third["lr_from"] == "gauss-adam"


def test_lrs_flag_sets_an_arms_lr(tmp_path: Path) -> None:
    from benchmarks.nerf_plateau import PlateauConfig, main, plateau_specs

    config = PlateauConfig(arms=("vanilla", "iga"), seeds=(0,), lrs={"vanilla": 2e-3}, output_dir=tmp_path)
    assert {s.arm: s.lr for s in plateau_specs(config)} == {"vanilla": 2e-3, "iga": 1e-3}  # iga: its default
    with pytest.raises(ValueError, match="--lrs"):
        main(PlateauConfig(arms=("vanilla",), lrs={"iga": 1e-3}, output_dir=tmp_path))


def test_samples_flag_sets_every_arms_samples_per_ray_and_keeps_default_runs_keys(
    tmp_path: Path, tiny_scene: Path
) -> None:
    """--samples 16 16 reaches the model config; runs at the default 32 + 32 keep the keys and folder names they had
    before the flag existed (finished runs stay reusable), and a record read back from JSON is the same spec."""
    from benchmarks.nerf_plateau import PlateauConfig, RunSpec, plateau_specs, run_dir_of, trainer_config

    default = RunSpec(
        scene="mic", arm="vanilla", seed=0, lr=1e-3, steps=100, lr_final_ratio=0.1, rays=256, eval_every=50
    )
    assert default.key() == "1519379bd1bc" and default.name == "vanilla-lr0.001-seed0-T100-decay0.1-rays256"
    config = PlateauConfig(
        scenes=("synthetic",),
        arms=("vanilla",),
        seeds=(0,),
        samples=(16, 16),
        output_dir=tmp_path,
        synthetic_data=tiny_scene,
    )
    (spec,) = plateau_specs(config)
    assert spec.samples == (16, 16) and spec.name.endswith("-samples16+16") and spec.key() != default.key()
    record = json.loads(json.dumps(dataclasses.asdict(spec)))  # samples come back as a list
    assert RunSpec(**record) == spec and RunSpec(**record).key() == spec.key()
    model = trainer_config(spec, run_dir_of(spec, tmp_path)).pipeline.model
    assert (model.num_coarse_samples, model.num_importance_samples) == (16, 16)


def test_paired_scenes_train_every_seed_and_the_others_the_first(tmp_path: Path) -> None:
    from benchmarks.nerf_plateau import PlateauConfig, main, plateau_specs

    def seeds(**kwargs) -> dict:
        config = PlateauConfig(scenes=("mic", "fern"), arms=("vanilla",), seeds=(0, 1), output_dir=tmp_path, **kwargs)
        specs = plateau_specs(config)
        return {scene: sorted(s.seed for s in specs if s.scene == scene) for scene in ("mic", "fern")}

    assert seeds() == {"mic": [0, 1], "fern": [0]}
    assert seeds(paired_scenes=("mic", "fern")) == {"mic": [0, 1], "fern": [0, 1]}
    with pytest.raises(ValueError, match="--paired-scenes"):
        main(PlateauConfig(arms=("vanilla",), paired_scenes=("lego",), output_dir=tmp_path))


def test_shorter_schedule_arms_keep_the_schedules_shape(tmp_path: Path) -> None:
    """int-error-map-0.7T trains 70% of the steps, with the hold, decay end and final lr at the same fractions."""
    from benchmarks.nerf_plateau import ARMS, PlateauConfig, lr_breaks, plateau_specs

    config = PlateauConfig(arms=("vanilla", "int-error-map-0.7T", "vanilla-0.7T"), seeds=(0,), output_dir=tmp_path)
    specs = {s.arm: s for s in plateau_specs(config)}
    full, short = specs["vanilla"], specs["int-error-map-0.7T"]
    assert short.steps == round(0.7 * full.steps) and specs["vanilla-0.7T"].steps == short.steps
    assert (short.hold, short.decay_end, short.lr_final_ratio, short.lr) == (
        full.hold,
        full.decay_end,
        full.lr_final_ratio,
        full.lr,
    )
    assert lr_breaks(short) == tuple(round(0.7 * b) for b in lr_breaks(full))
    assert ARMS["int-error-map-0.7T"].overrides == ARMS["int-error-map"].overrides
    assert short.name != specs["vanilla-0.7T"].name != full.name


def test_int_map_nerf_is_the_studys_error_map_arm() -> None:
    """The named method trains what the converged comparison measured as int-error-map."""
    from benchmarks.nerf_plateau import ARMS
    from nerf_inr_methods.nerfstudio_plugin.method_configs import inr_nerf, int_map_nerf

    arm = ARMS["int-error-map"]
    assert arm.method == "inr-nerf"
    pipeline = int_map_nerf.config.pipeline
    for key, value in arm.overrides.items():
        assert getattr(pipeline, key.removeprefix("pipeline.")) == value, key
    assert pipeline.model == inr_nerf.config.pipeline.model


def test_arms_are_compared_with_vanillas_plateau_runs_of_a_reference_file(tmp_path: Path) -> None:
    from benchmarks.nerf_plateau import PlateauConfig, analyse, report_table

    def run(arm: str, seed: int, steps: int, psnrs: list, lr: float = 1e-3) -> dict:
        every = steps // (len(psnrs) - 1)
        zeros = {"train_seconds": 0.0, "cpu_seconds": 0.0, "rays_trained": 0, "rays_scored": 0}
        curve = [{**zeros, "step": i * every, "psnr": p} for i, p in enumerate(psnrs)]
        settings = {"scene": "mic", "arm": arm, "seed": seed, "steps": steps, "lr": lr, "rays": 256}
        return {**settings, "finished": True, "final_psnr": psnrs[-1], "final_ssim": 0.9, "curve": curve}

    records = [run("vanilla", s, 100, [10, 20, 30]) for s in (0, 1)] + [
        run("int-x", s, 100, [10, 30, 32]) for s in (0, 1)
    ]
    records[0]["final_psnr"] += 1e-12  # a final and its curve's last point can differ in the last digit
    reference = tmp_path / "long.json"
    long_runs = [run("vanilla", 0, 200, [10, 20, 30, 31, 31]), run("vanilla", 1, 200, [10, 20, 30, 31, 31], lr=2e-3)]
    long_runs[0]["final_psnr"] += 1e-12
    reference.write_text(json.dumps({"runs": long_runs + [run("vanilla", 0, 100, [10, 20, 30])]}))
    config = PlateauConfig(
        arms=("vanilla", "int-x"), steps=100, plateau_reference=reference, results=tmp_path / "r.json"
    )

    analysis = analyse(records, config)["mic"]
    seed0, seed1 = analysis["int-x"]["per_seed"]
    # seed 0: the 200-step run reaches 31 dB at step 150; int-x at step 75 (interpolated between 30 and 32 dB)
    assert seed0["plateau_vanilla_final_psnr"] == pytest.approx(31) and seed0["plateau_vanilla_steps"] == 200
    assert seed0["final_minus_plateau_vanilla"] == pytest.approx(1)
    assert seed0["steps_ratio_to_plateau_vanilla_final"] == pytest.approx(0.5)
    assert analysis["vanilla"]["per_seed"][0]["steps_ratio_to_vanilla_final"] == 1.0, "a run reaches its own final"
    assert "plateau_vanilla_final_psnr" not in seed1, "a reference at another lr is no reference"
    assert analysis["vanilla"]["per_seed"][0]["steps_ratio_to_plateau_vanilla_final"] is None
    assert analysis["int-x"]["final_psnr_minus_plateau_vanilla"]["verdict"] == "one seed: no verdict"
    assert "against vanilla trained to its plateau" in report_table({"mic": analysis})
    assert (
        "plateau_vanilla_final_psnr"
        not in analyse(records, PlateauConfig(plateau_reference=None))["mic"]["vanilla"]["per_seed"][0]
    )


def test_psnr_by_texture_locates_a_gain_in_the_textured_half(tmp_path: Path) -> None:
    """A run that is better than vanilla on the striped half of a view gains in the textured bands only."""
    import imageio.v3 as iio
    import numpy as np

    from benchmarks.nerf_plateau import TEXTURE_BANDS, psnr_by_texture

    truth = np.full((40, 40, 3), 128, np.uint8)
    truth[:, 20:] = np.where((np.arange(20) // 2 % 2 == 0)[None, :, None], 40, 220)  # stripes on the right half
    rng = np.random.default_rng(0)
    noise = rng.integers(-6, 7, truth.shape)
    records = {}
    for name, right_noise in (("vanilla", 6), ("run", 2)):
        run_dir = tmp_path / name
        (run_dir / "renders").mkdir(parents=True)
        (run_dir / "config.yml").write_text("")
        render = truth.astype(int) + np.sign(noise) * 3
        render[:, 20:] = truth[:, 20:].astype(int) + np.sign(noise[:, 20:]) * right_noise
        iio.imwrite(run_dir / "renders" / "test_000.png", np.clip(render, 0, 255).astype(np.uint8))
        iio.imwrite(run_dir / "renders" / "test_000_gt.png", truth)
        records[name] = {"config": str(run_dir / "config.yml")}
    bands = psnr_by_texture(records["run"], records["vanilla"])
    assert bands is not None and len(bands) == TEXTURE_BANDS
    assert [b["texture"] for b in bands] == sorted(b["texture"] for b in bands)
    assert abs(bands[0]["gain_db"]) < 1e-9 and bands[-1]["gain_db"] > 5.0
    assert psnr_by_texture({"config": str(tmp_path / "missing" / "config.yml")}, records["vanilla"]) is None


def test_report_names_the_steps_and_the_floor_lr_the_plateau_rule_is_checked_on() -> None:
    from benchmarks.nerf_plateau import RunSpec, plateau_check_note
    from nerf_inr_methods.reporting import plateau_gain, plateau_start

    steps = [0, 4000, 8000, 12000, 16000, 20000]
    assert plateau_start(steps) == 4 and plateau_gain(steps, [0, 1, 2, 3, 31.32, 31.40]) == pytest.approx(0.08)
    assert plateau_start([0, 1000, 2000, 2500]) == 2, "the first evaluation at or after 80% of an uneven grid"

    def spec(steps: int, decay_end: float, lr_final_ratio: float) -> RunSpec:
        return RunSpec(
            scene="mic", arm="vanilla", seed=0, lr=2e-3, steps=steps, lr_final_ratio=lr_final_ratio, rays=256,
            eval_every=1000, hold=0.3, decay_end=decay_end,
        )  # fmt: skip

    note = plateau_check_note(spec(20000, 0.6, 0.01))
    assert "step 20000 minus at step 16000" in note and "lr x 0.01 from step 12000" in note and "point 4" in note
    assert "step 18750 minus at step 15000" in plateau_check_note(spec(18750, 0.8, 0.1))
    constant = plateau_check_note(spec(14000, 0.7, 1.0))
    assert constant.endswith("at a constant lr.") and "point 4" not in constant
