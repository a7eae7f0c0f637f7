"""int-nerf: INT ray selection in InrPipeline (candidate pool, no cross-batch subsets, no starvation) and smoke runs."""

from __future__ import annotations

import itertools
import math
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List

import pytest
import torch
from nerf_helpers import SMALL_PIPELINE

from nerf_inr_methods.core.int_selection import IntSchedule, num_selected

BIN = Path(sys.executable).parent


def make_pipeline(tiny_scene: Path, tmp_path: Path, steps: int = 20, **int_options: Any):
    """An InrPipeline on the tiny scene with small fields; INT options as ``int_*`` keyword arguments."""
    from nerf_inr_methods.nerfstudio_plugin.runs import prepare_config

    config = prepare_config("int-nerf", tiny_scene, tmp_path, steps=steps, overrides=SMALL_PIPELINE)
    config.pipeline.int_total_steps = steps
    for name, value in int_options.items():
        setattr(config.pipeline, name, value)
    torch.manual_seed(0)
    return config.pipeline.setup(device="cpu", test_mode="val")


def record_trained_indices(pipeline) -> List[torch.Tensor]:
    """Make the model record the (camera, y, x) indices of every batch it computes a training loss on."""
    seen: List[torch.Tensor] = []
    original = pipeline.model.get_metrics_dict

    def get_metrics_dict(outputs: Dict[str, Any], batch: Dict[str, torch.Tensor]) -> Dict[str, Any]:
        seen.append(batch["indices"].clone())
        return original(outputs, batch)

    pipeline.model.get_metrics_dict = get_metrics_dict
    return seen


def as_set(indices: torch.Tensor) -> set:
    return {tuple(row) for row in indices.tolist()}


def test_int_off_is_nerfstudios_vanilla_pipeline(tiny_scene: Path, tmp_path: Path) -> None:
    from nerfstudio.pipelines.base_pipeline import VanillaPipelineConfig

    ours = make_pipeline(tiny_scene, tmp_path, int_enabled=False)
    config = ours.config
    vanilla_config = VanillaPipelineConfig(datamanager=config.datamanager, model=config.model)
    torch.manual_seed(0)
    vanilla = vanilla_config.setup(device="cpu", test_mode="val")
    vanilla.load_state_dict(ours.state_dict())
    for step in range(2):
        # Same batch for both (each datamanager's loader shuffles images with its own generator).
        ray_bundle, batch = ours.datamanager.next_train(step)
        losses = []
        for pipeline in (ours, vanilla):
            pipeline.datamanager.next_train = lambda step, rb=ray_bundle, b=batch: (rb, b)
            torch.manual_seed(step)
            _, loss_dict, metrics = pipeline.get_train_loss_dict(step)
            losses.append(sum(loss_dict.values()).item())
        assert losses[0] == losses[1]
        assert "rays_trained" not in metrics
    assert ours.rays_per_step(0) == (64, 0)


def test_int_trains_topk_of_the_current_pool_only(tiny_scene: Path, tmp_path: Path) -> None:
    steps = 20
    pipeline = make_pipeline(tiny_scene, tmp_path, steps=steps, int_enabled=True, int_max_interval=4)
    schedule = IntSchedule(total_steps=steps, max_interval=4)
    trained = record_trained_indices(pipeline)
    choices = []
    sampler = pipeline._ensure_sampler()
    original_choose = sampler._choose

    def choose(pool, k, alpha, score):  # the keys the selection saw, before the training forward refreshes them
        chosen = original_choose(pool, k, alpha, score)
        choices.append((pool.scores.clone(), chosen[0]))
        return chosen

    sampler._choose = choose
    refreshes, pool_ids = [], None
    for step in range(steps):
        _, loss_dict, metrics = pipeline.get_train_loss_dict(step)
        assert torch.isfinite(sum(loss_dict.values()))
        pool = sampler.pool
        if metrics["int_reselected"]:
            refreshes.append(step)
            assert metrics["rays_scored"] == 64 and id(pool) != pool_ids
            pool_ids = id(pool)
        else:
            assert metrics["rays_scored"] == 0 and id(pool) == pool_ids
        k = num_selected(64, schedule.ratio(step))
        assert metrics["rays_trained"] == k and trained[-1].shape == (k, 3)
        assert metrics["int_ratio"] == schedule.ratio(step) and metrics["int_interval"] == schedule.interval(step)
        assert pipeline.rays_per_step(step) == (k, 64 if step in schedule.selection_steps() else 0)
        # Never a subset from another batch: every trained ray belongs to the pool of this step.
        assert as_set(trained[-1]) <= as_set(pipeline._pool_batch["indices"])
        keys, chosen = choices[-1]
        others = torch.ones_like(keys, dtype=torch.bool)
        others[chosen] = False
        assert keys[chosen].min() >= keys[others].max()  # exactly the k largest (no ray forced here)
    assert tuple(refreshes) == schedule.selection_steps()


def test_pool_scores_are_the_fresh_no_grad_errors(tiny_scene: Path, tmp_path: Path) -> None:
    pipeline = make_pipeline(tiny_scene, tmp_path, int_enabled=True)
    pipeline.get_train_loss_dict(0)
    pool = pipeline.int_sampler.pool
    assert not pool.scores.requires_grad and pool.scores.shape == (64,)
    assert torch.all(pool.scores >= 0) and torch.all(pool.scores <= 3.0)  # L1 over 3 channels in [0, 1]


def test_skipped_pixels_are_counted_and_forced(tiny_scene: Path, tmp_path: Path) -> None:
    pipeline = make_pipeline(tiny_scene, tmp_path, steps=100, int_enabled=True, int_max_skips=2)
    pipeline.get_train_loss_dict(0)  # stage 0: dense interval, a new pool every step
    sampler = pipeline.int_sampler
    pool = sampler.pool
    trained = pool.ids[pool.trained]
    untrained = pool.ids[~pool.trained]
    assert untrained.numel() == 64 - num_selected(64, 0.2)
    untrained = untrained[~torch.isin(untrained, trained)]  # a pixel drawn twice counts as trained
    sampler.skips[untrained] = 1
    sampler._retire_pool()  # what the next refresh does first: untrained pixels now have 2 = int_max_skips
    assert torch.all(sampler.skips[untrained] == 2) and torch.all(sampler.skips[trained] == 0)
    pipeline.get_train_loss_dict(1)  # new pool: any of those pixels drawn again are forced and trained
    pool = sampler.pool
    assert not pool.forced.any()
    # A pool holding pixels at the limit trains them first, whatever their scores.
    candidates = torch.nonzero(~pool.trained).squeeze(1)
    low = candidates[torch.argsort(pool.scores[candidates])[:5]]
    sampler.skips[pool.ids[low]] = 2
    pool.forced[low] = True
    trained_batches = record_trained_indices(pipeline)
    pool.step = 2  # keep this pool for step 2 (interval 1 would otherwise replace it)
    _, _, metrics = pipeline.get_train_loss_dict(2)
    assert sampler.pool is pool and metrics["int_forced_rays"] == 5
    assert as_set(pipeline._pool_batch["indices"][low]) <= as_set(trained_batches[-1])
    assert torch.all(sampler.skips[pool.ids[low]] == 0) and not pool.forced.any()


def test_random_subset_control_scores_nothing(tiny_scene: Path, tmp_path: Path) -> None:
    pipeline = make_pipeline(tiny_scene, tmp_path, int_enabled=True, int_random_subset=True)
    trained = record_trained_indices(pipeline)
    _, _, metrics = pipeline.get_train_loss_dict(0)
    assert metrics["rays_scored"] == 0 and metrics["rays_trained"] == num_selected(64, 0.2)
    assert as_set(trained[-1]) <= as_set(pipeline._pool_batch["indices"])
    assert pipeline.rays_per_step(0) == (num_selected(64, 0.2), 0)


def test_pool_of_several_batches(tiny_scene: Path, tmp_path: Path) -> None:
    pipeline = make_pipeline(tiny_scene, tmp_path, int_enabled=True, int_pool_batches=3)
    _, _, metrics = pipeline.get_train_loss_dict(0)
    assert pipeline.int_sampler.pool.scores.shape == (192,) and len(pipeline._pool_batch["indices"]) == 192
    assert metrics["rays_scored"] == 192 and metrics["rays_trained"] == num_selected(64, 0.2)


def test_bad_int_options_name_the_flag() -> None:
    from nerf_inr_methods.nerfstudio_plugin.int_pipeline import InrPipelineConfig

    with pytest.raises(ValueError, match="int-r0"):
        InrPipelineConfig(int_r0=0.0)
    with pytest.raises(ValueError, match="int-interval-kind"):
        InrPipelineConfig(int_interval_kind="sometimes")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="int-pool-batches"):
        InrPipelineConfig(int_pool_batches=0)


def test_pipeline_flags_are_the_core_sampler_options() -> None:
    """--pipeline.int-<field> is the core's IntSamplerConfig field: its type, default (but NeRF's own) and help."""
    import typing

    from nerf_inr_methods.config_fields import attribute_docstrings
    from nerf_inr_methods.core.int_sampler import IntSamplerConfig
    from nerf_inr_methods.nerfstudio_plugin.int_pipeline import (
        MIRRORED_SAMPLER_OPTIONS,
        NERF_SAMPLER_DEFAULTS,
        InrPipelineConfig,
    )

    config, core, docs = InrPipelineConfig(), IntSamplerConfig(), attribute_docstrings(IntSamplerConfig)
    hints = typing.get_type_hints(InrPipelineConfig, include_extras=True)
    core_hints = typing.get_type_hints(IntSamplerConfig)
    assert NERF_SAMPLER_DEFAULTS == {"max_interval": 10, "max_skips": 4}
    for name in MIRRORED_SAMPLER_OPTIONS:
        assert getattr(config, f"int_{name}") == NERF_SAMPLER_DEFAULTS.get(name, getattr(core, name)), name
        assert hints[f"int_{name}"].__origin__ == core_hints[name], name
        assert docs[name] and hints[f"int_{name}"].__metadata__[0].help == docs[name], name
    assert docs["alpha"].startswith("soft / error-map: exponent of the importance correction")


@pytest.mark.slow
def test_int_nerf_trains_and_evaluates_in_process(tiny_scene: Path, tmp_path: Path) -> None:
    from nerf_inr_methods.nerfstudio_plugin.runs import evaluate, prepare_config, train

    config = prepare_config("int-nerf", tiny_scene, tmp_path, steps=6, overrides=SMALL_PIPELINE)
    assert config.pipeline.int_enabled and config.pipeline.int_total_steps is None  # T from the trainer
    config_path = train(config)
    metrics = evaluate(config_path)
    assert math.isfinite(metrics["psnr"]) and "fine_ssim" in metrics


@pytest.mark.slow
def test_ns_train_int_nerf_help() -> None:
    result = subprocess.run(
        [str(BIN / "ns-train"), "int-nerf", "--help"], capture_output=True, text=True, timeout=300, check=False
    )
    assert result.returncode == 0, result.stderr[-2000:]
    for flag in (
        "--pipeline.int-enabled",
        "--pipeline.int-random-subset",
        "--pipeline.int-max-skips",
        "--pipeline.int-sampler",
    ):
        assert flag in result.stdout


@pytest.mark.slow
@pytest.mark.shared_data
def test_int_nerf_benchmark_quick(shared_data: Path, tmp_path: Path) -> None:
    import json

    from benchmarks import int_nerf as bench

    mic = shared_data / "blender" / "mic"
    payload = bench.main(
        ["--quick", "--data", str(mic), "--steps", "20", "--arms", "vanilla", "int", "random"]
        + ["--results-dir", str(tmp_path)]
    )
    assert payload["summary_line"].startswith("SUMMARY int_nerf")
    runs = {arm: payload["runs"][arm][0] for arm in ("vanilla", "int", "random")}
    schedule = IntSchedule(total_steps=20, max_interval=10)
    k_total = sum(num_selected(256, schedule.ratio(t)) for t in range(20))
    assert runs["vanilla"]["rays"][-1] == 256 * 20 and runs["vanilla"]["scored"][-1] == 0
    assert runs["int"]["rays"][-1] == k_total == runs["random"]["rays"][-1]
    assert runs["int"]["scored"][-1] == 256 * len(schedule.selection_steps()) and runs["random"]["scored"][-1] == 0
    assert all(math.isfinite(p) for r in runs.values() for p in r["psnr"])
    saved = json.loads((tmp_path / "int_nerf_quick.json").read_text())
    assert saved["summary_line"] == payload["summary_line"]


def test_training_evaluations_use_every_nth_eval_image(tiny_scene: Path, tmp_path: Path) -> None:
    """--pipeline.training-eval-image-stride: training-time all-image evaluations on a fixed subset; ns-eval (no
    step) on every image; the datamanager's own loader is left as it was."""
    pipeline = make_pipeline(tiny_scene, tmp_path, int_enabled=False)
    n_images = len(pipeline.datamanager.eval_dataset)
    assert n_images == 2  # the tiny scene's val split
    seen: List[int] = []
    original = pipeline.model.get_image_metrics_and_images

    def spy(outputs: Dict[str, Any], batch: Dict[str, torch.Tensor]):
        seen.append(1)
        return original(outputs, batch)

    pipeline.model.get_image_metrics_and_images = spy
    full_loader = pipeline.datamanager.fixed_indices_eval_dataloader
    pipeline.config.training_eval_image_stride = 2
    metrics = pipeline.get_average_eval_image_metrics(step=5)
    assert len(seen) == 1 and math.isfinite(metrics["psnr"])
    assert pipeline.datamanager.fixed_indices_eval_dataloader is full_loader
    seen.clear()
    pipeline.get_average_eval_image_metrics()
    assert len(seen) == n_images
    from nerf_inr_methods.nerfstudio_plugin.int_pipeline import InrPipelineConfig

    with pytest.raises(ValueError, match="training-eval-image-stride"):
        InrPipelineConfig(training_eval_image_stride=0)


@pytest.mark.parametrize("name", ["soft", "error-map", "two-forward"])
def test_new_samplers_on_rays(tiny_scene: Path, tmp_path: Path, name: str) -> None:
    """Each sampler trains k = ceil(ratio * B) rays of its pool, scores what it says, and (soft, error-map) hands
    its importance weights to the model's loss."""
    from nerf_inr_methods.core.int_sampler import LOSS_WEIGHTS_KEY, weighted_mse

    steps = 10
    pipeline = make_pipeline(
        tiny_scene, tmp_path, steps=steps, int_enabled=True, int_sampler=name, int_alpha_warmup=0.0, int_pool_batches=2
    )
    seen: List[Any] = []
    original = pipeline.model.get_loss_dict

    def get_loss_dict(outputs, batch, metrics_dict=None):
        losses = original(outputs, batch, metrics_dict)
        seen.append((outputs, batch, losses))
        return losses

    pipeline.model.get_loss_dict = get_loss_dict
    schedule = IntSchedule(total_steps=steps, max_interval=10)
    for step in range(steps):
        _, _, metrics = pipeline.get_train_loss_dict(step)
        k = num_selected(64, schedule.ratio(step))
        new_pool = name != "soft" or schedule.is_selection_step(step)  # error-map, two-forward: a pool every step
        assert metrics["rays_trained"] == k and metrics["int_reselected"] == float(new_pool)
        expected_scored = {"soft": 128 * new_pool, "error-map": 0, "two-forward": min(128, math.ceil(2 * k))}[name]
        assert metrics["rays_scored"] == expected_scored
        outputs, batch, losses = seen[-1]
        weights = batch.get(LOSS_WEIGHTS_KEY)
        if name == "two-forward":
            assert weights is None
            continue
        assert metrics["int_alpha"] == pytest.approx(0.6) and weights is not None and weights.shape == (k,)
        assert float(weights.mean()) == pytest.approx(1.0, rel=1e-5)
        fine_pred, fine_image = pipeline.model.blended_rgb(outputs, batch)["fine"]
        assert torch.allclose(losses["rgb_loss_fine"], weighted_mse(fine_pred, fine_image, weights))
    if name == "error-map":
        assert bool((pipeline.int_sampler.error_map_step >= 0).any())


def test_sampler_options_name_their_flags(tiny_scene: Path, tmp_path: Path) -> None:
    from nerf_inr_methods.nerfstudio_plugin.int_pipeline import InrPipelineConfig

    with pytest.raises(ValueError, match="--pipeline.int-alpha must be in"):
        InrPipelineConfig(int_alpha=2.0)
    with pytest.raises(ValueError, match="--pipeline.int-score-factor"):
        InrPipelineConfig(int_score_factor=0.5)
    with pytest.raises(ValueError, match="int-random-subset True is INT's control"):
        InrPipelineConfig(int_random_subset=True, int_sampler="soft")
    with pytest.raises(ValueError, match="IGA's surrogate"):
        make_pipeline(tiny_scene, tmp_path, int_enabled=True, int_sampler="soft", model=_iga_model())


def _iga_model():
    from nerf_inr_methods.nerfstudio_plugin.inr_nerf import InrNeRFModelConfig

    return InrNeRFModelConfig(iga=True)


def test_int_schedule_is_safe_before_t_is_known(tiny_scene: Path, tmp_path: Path) -> None:
    pipeline = make_pipeline(tiny_scene, tmp_path, int_enabled=True)
    pipeline._total_steps = None  # as when nerfstudio's viewer reads the pipeline before the trainer's callbacks
    assert pipeline.int_schedule is None
    pipeline._total_steps = 20
    assert pipeline.int_schedule == IntSchedule(total_steps=20, max_interval=10)


def record_selections(monkeypatch: pytest.MonkeyPatch) -> List[Any]:
    """Log (step, pixel ids, ratio, weights) of every INT selection in this process."""
    from nerf_inr_methods.core.int_sampler import IntSampler

    log: List[Any] = []
    original = IntSampler.select

    def select(self, step, draw, score, batch_size=None):
        sel = original(self, step, draw, score, batch_size)
        weights = None if sel.weights is None else sel.weights.clone()
        log.append((step, self.pool.ids[sel.indices].clone(), sel.ratio, weights))
        return sel

    monkeypatch.setattr(IntSampler, "select", select)
    return log


@pytest.mark.slow
@pytest.mark.parametrize("name", ["soft", "error-map"])  # soft: pool scores and loss weights; error-map: the map
def test_resume_continues_int_exactly(tiny_scene: Path, tmp_path: Path, monkeypatch, name: str) -> None:
    """N steps straight and N/2 + resume (nerfstudio's --load-dir) + N/2 give the same selections, ratios and
    weights; resuming into another schedule length is refused with a clear message."""
    from nerf_inr_methods.nerfstudio_plugin.runs import prepare_config, train

    log = record_selections(monkeypatch)
    n = 12

    def run(folder: str, steps: int, total: int | None, load_dir: Path | None = None):
        overrides = {**SMALL_PIPELINE, "pipeline.int_sampler": name, "pipeline.int_total_steps": total}
        overrides.update({"pipeline.int_max_interval": 3, "pipeline.int_alpha_warmup": 0.2})
        config = prepare_config("int-nerf", tiny_scene, tmp_path / folder, steps=steps, overrides=overrides)
        config.load_dir = load_dir
        log.clear()
        train(config)
        return list(log), config

    straight, _ = run("straight", n, n)
    head, first = run("first", n // 2, n)
    tail, _ = run("resumed", n // 2, None, load_dir=first.get_checkpoint_dir())  # T = resumed step 6 + 6
    assert [s for s, *_ in head + tail] == list(range(n))
    for (s1, ids1, r1, w1), (_, ids2, r2, w2) in zip(straight, head + tail, strict=True):
        assert torch.equal(ids1, ids2) and r1 == r2, s1
        assert (w1 is None) == (w2 is None) and (w1 is None or torch.allclose(w1, w2, atol=1e-6)), s1
    assert (name in ("soft", "error-map")) == any(w is not None for *_, w in straight)
    with pytest.raises(ValueError, match=r"cannot resume INT.*total_steps 12 \(now 13\).*int-total-steps 12"):
        run("mismatch", n // 2 + 1, None, load_dir=first.get_checkpoint_dir())


def test_error_map_pool_of_pixels_draws_as_the_pool_of_rays(tiny_scene: Path, tmp_path: Path, monkeypatch) -> None:
    """Issue 44: the error map's pool of pixels (rays generated for the drawn rows only) draws with the same
    probabilities and trains the same rays with the same weights as the pool of next_train's rays it replaced."""
    from nerf_inr_methods.core import int_sampler as core
    from nerf_inr_methods.nerfstudio_plugin import int_pipeline
    from nerf_inr_methods.nerfstudio_plugin.int_pipeline import ERROR_MAP_SETTINGS, LOSS_WEIGHTS_KEY

    splits = int_pipeline._next_train_splits
    drawing_probabilities = core.drawing_probabilities
    steps = 8
    images: Dict[str, Dict[str, torch.Tensor]] = {}

    def run(pixels_only: bool) -> Dict[str, List[Any]]:
        monkeypatch.setattr(int_pipeline, "_next_train_splits", lambda dm: pixels_only and splits(dm))
        log: Dict[str, List[Any]] = {"q": [], "rays": [], "indices": [], "weights": [], "loss": [], "pool_rays": []}

        def recording(errors, *args, **kwargs):
            log["q"].append(drawing_probabilities(errors, *args, **kwargs))
            return log["q"][-1]

        monkeypatch.setattr(core, "drawing_probabilities", recording)
        options = {k: v for k, v in ERROR_MAP_SETTINGS.items() if k != "int_enabled"}
        pipeline = make_pipeline(tiny_scene, tmp_path, steps=steps, int_enabled=True, int_alpha_warmup=0.0, **options)
        original = pipeline.model.get_metrics_dict

        def get_metrics_dict(outputs: Dict[str, Any], batch: Dict[str, torch.Tensor]) -> Dict[str, Any]:
            log["indices"].append(batch["indices"].clone())
            log["weights"].append(batch[LOSS_WEIGHTS_KEY].clone())
            return original(outputs, batch)

        pipeline.model.get_metrics_dict = get_metrics_dict
        # one image batch for both runs (each datamanager's cache loader orders the images with its own generator)
        images.setdefault("batch", next(pipeline.datamanager.iter_train_image_dataloader))
        pipeline.datamanager.iter_train_image_dataloader = itertools.repeat(images["batch"])
        forward = pipeline.model.forward

        def recording_forward(ray_bundle):
            log["rays"].append(torch.cat([ray_bundle.origins, ray_bundle.directions], dim=-1).clone())
            return forward(ray_bundle)

        pipeline.model.forward = recording_forward
        for step in range(steps):
            _, loss_dict, _ = pipeline.get_train_loss_dict(step)
            log["loss"].append(float(sum(loss_dict.values()).detach()))
            log["pool_rays"].append(pipeline._pool_rays is not None)
        return log

    rays_pool, pixels_pool = run(pixels_only=False), run(pixels_only=True)
    assert all(rays_pool["pool_rays"]) and not any(pixels_pool["pool_rays"])  # the old path and the new one ran
    assert len(pixels_pool["q"]) == len(rays_pool["q"]) == steps
    for step in range(steps):  # step by step: the first difference is the one reported
        assert torch.equal(rays_pool["indices"][step], pixels_pool["indices"][step]), step  # the same pixels, in order
        for name in ("q", "rays", "weights"):
            before, after = rays_pool[name][step], pixels_pool[name][step]
            assert before.shape == after.shape, (name, step)
            assert torch.allclose(before, after, rtol=1e-5, atol=1e-7), (
                name,
                step,
                float((before - after).abs().max()),
            )
    assert pixels_pool["loss"] == pytest.approx(rays_pool["loss"], rel=1e-5)
    assert len({float(q.max()) for q in pixels_pool["q"][1:]}) > 1  # the map did move the draw (not all uniform)
