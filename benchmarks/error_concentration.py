"""Where vanilla NeRF's training error sits, per scene: what error-driven ray sampling can buy there (issue 16).

The error map (``int-map-nerf``) ends +0.56 dB over vanilla on mic and level with it on fern (converged comparison,
``nerf_plateau.py``). Drawing rays by their error can only help as much as the error is concentrated: on a scene
whose every pixel is about as wrong as any other, an error-driven draw is a uniform draw. This benchmark trains
vanilla NeRF with the converged comparison's CPU preset (``nerf_plateau.trainer_config``: same data, resolution,
samples and 256 rays per step; constant lr) on each scene and, at fixed steps, renders every pixel of a fixed subset
of the *training* images (no grad) and measures, from each pixel's residual ``r = pred - gt`` (RGB):

- ``top10_share``: the share of the total L1 error held by the 10% of pixels with the largest error (0.1: uniform);
- ``gain_ideal``: ``mean(|r|^2) / mean(|r|)^2``, the factor by which drawing rays with probability ~ ``|r|`` (and
  unbiased weights) shrinks the variance of a batch's gradient against uniform drawing, if each ray's gradient norm
  is proportional to its residual norm: the most any error-driven sampler can buy
  (:func:`nerf_inr_methods.core.int_sampler.importance_sampling_gain`);
- ``gain_map``: the same for the error map's distribution over these pixels: the current mean L1 error of each
  ``--cell``-pixel tile (the map's cells, as if every tile had just been written) mixed with ``--uniform-share``
  (:func:`~nerf_inr_methods.core.int_sampler.drawing_probabilities`, ``int-map-nerf``'s defaults). The pipeline
  also draws from a pool of 4 batches, which caps any pixel at 4x its uniform chance; that cap is not modelled
  here, so both gains are upper bounds on the sampler's;
- ``psnr_train`` over the measured pixels and ``psnr`` over the scene's fixed test views (as ``nerf_plateau.py``).

A gain of g means a batch of 256 rays drawn that way has the gradient variance of 256 g uniform rays (bigger batches
at equal cost: with RAdam at a fixed lr, less noise, a higher plateau and a faster climb). Mechanism evidence
(protocol point 6), not a quality claim: the quality and time numbers are the converged comparison's.

Run from the repository root: ``python -m benchmarks.error_concentration`` (mic and fern, 2000 steps each, about
13 min on 2 cores) or ``--quick`` (the generated synthetic scene, under 2 min).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Dict, List, Sequence

import torch
from torch import Tensor

from benchmarks import common
from benchmarks.common import finish, log, markdown_table
from nerf_inr_methods.cli import check_positive
from nerf_inr_methods.core.int_sampler import drawing_probabilities, grid_cells, importance_sampling_gain

ROOT = Path(__file__).resolve().parents[1]
TOP_SHARE = 0.1
"""``top10_share`` is the L1 error held by this fraction of the pixels with the largest error."""


@dataclass
class ConcentrationConfig(common.BenchmarkOptions):
    """Where vanilla NeRF's training error sits on each scene, and what drawing rays by error can buy from it
    (--quick: the generated synthetic scene at 32 px, 40 steps)."""

    threads: int = 2
    """torch intra-op threads (0: torch's default)."""
    scenes: tuple[str, ...] | None = None
    """Scenes of the converged comparison (mic, fern, synthetic); default mic and fern (quick: synthetic)."""
    measure_at: tuple[int, ...] | None = None
    """Training steps at which the error is measured; the run stops at the last (default 500 1000 2000)."""
    seed: int = 0
    """Training seed."""
    lr: float = 1e-3
    """Constant learning rate (the CPU preset's RAdam lr)."""
    rays: int | None = None
    """Rays per training step (default 256, the converged comparison's; quick 64)."""
    image_every: int | None = None
    """Every n-th training image is measured whole (default 8: 13 of mic's 100, 3 of fern's 17; quick 1)."""
    cell: int = 4
    """Side in pixels of the error map's tiles (``--pipeline.int-error-map-cell``, ``int-map-nerf``: 4)."""
    uniform_share: float = 0.2
    """Share of the error map's drawing probability spread uniformly (``int-map-nerf``: 0.2)."""
    output_dir: Path | None = None
    """Run folders (default outputs/<results stem>)."""
    synthetic_data: Path | None = None
    """Folder of the synthetic scene (default the converged comparison's; made when absent)."""

    def resolved(self) -> ConcentrationConfig:
        from benchmarks.nerf_plateau import SCENES

        config = self.with_run_defaults(
            "error_concentration",
            scenes=(("mic", "fern"), ("synthetic",)),
            measure_at=((500, 1000, 2000), (20, 40)),
            rays=(256, 64),
            image_every=(8, 1),
        )
        unknown = [s for s in config.scenes if s not in SCENES]  # type: ignore[union-attr]
        if unknown:
            raise ValueError(f"--scenes: unknown scene {unknown[0]!r}; expected some of {sorted(SCENES)}")
        steps = list(config.measure_at or ())
        if not steps or steps != sorted(set(steps)) or steps[0] < 1:
            raise ValueError(f"--measure-at: expected increasing steps >= 1, got {steps}")
        for flag, value in (("--rays", config.rays), ("--image-every", config.image_every), ("--cell", config.cell)):
            check_positive(value, flag)
        if not 0.0 <= config.uniform_share <= 1.0:
            raise ValueError(f"--uniform-share must lie in [0, 1], got {config.uniform_share}")
        if not config.lr > 0:
            raise ValueError(f"--lr must be > 0, got {config.lr}")
        return config


@torch.no_grad()
def pixel_residuals(model, views) -> tuple[Tensor, Tensor]:
    """(residuals (N, 3), indices (N, 3) = (view, y, x)) of every pixel of ``views`` (an ``EvalViews``), each view
    rendered whole and compared with its image blended with the model's background (as ns-eval compares them)."""
    from benchmarks.nerf_common import render_view

    residuals, pixels = [], []
    for i in range(len(views.images)):
        prediction, target = render_view(model, views, i)
        height, width = prediction.shape[:2]
        ys, xs = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
        indices = torch.stack([torch.full_like(ys, i), ys, xs], dim=-1).reshape(-1, 3)
        residuals.append((prediction - target[..., :3]).reshape(-1, 3).cpu())
        pixels.append(indices)
    return torch.cat(residuals), torch.cat(pixels)


def concentration(
    residuals: Tensor, indices: Tensor, height: int, width: int, cell: int, uniform_share: float
) -> Dict[str, float]:
    """The measures of the module docstring (and ``pixels``, ``mean_l1``) from the residuals (N, 3) of the pixels
    ``indices`` (N, 3) = (view, y, x) of views of ``height`` x ``width`` px, the map's tiles ``cell`` px wide."""
    norms = residuals.norm(dim=-1).double()
    l1 = residuals.abs().sum(dim=-1).double()
    cells = grid_cells(indices, height, width, cell)
    _, cells = torch.unique(cells, return_inverse=True)
    sums = torch.zeros(int(cells.max()) + 1, dtype=torch.float64).index_add_(0, cells, l1)
    counts = torch.zeros_like(sums).index_add_(0, cells, torch.ones_like(l1))
    map_probabilities = drawing_probabilities((sums / counts)[cells], uniform_share)
    top = max(1, int(round(TOP_SHARE * l1.numel())))
    mse = float((residuals.double() ** 2).mean())
    return {
        "pixels": int(l1.numel()),
        "mean_l1": float(l1.mean()),
        "top10_share": float(torch.topk(l1, top).values.sum() / l1.sum().clamp_min(1e-300)),
        "gain_ideal": importance_sampling_gain(norms, norms / norms.sum().clamp_min(1e-300)),
        "gain_map": importance_sampling_gain(norms, map_probabilities),
        "psnr_train": -10.0 * math.log10(max(mse, 1e-12)),
    }


def measure_scene(scene: str, config: ConcentrationConfig, output_dir: Path) -> Dict[str, Any]:
    """Train vanilla on ``scene`` to the last of ``measure_at`` and measure at each; returns the run's record."""
    from nerfstudio.scripts.train import _set_random_seed

    from benchmarks.nerf_common import evaluate_views, load_eval_views, train_step
    from benchmarks.nerf_plateau import SCENES, RunSpec, run_dir_of, trainer_config
    from nerf_inr_methods.nerfstudio_plugin.runs import own_event_writers

    steps = list(config.measure_at or ())
    data = str(config.synthetic_data) if scene == "synthetic" and config.synthetic_data else ""
    spec = RunSpec(
        scene=scene,
        arm="vanilla",
        seed=config.seed,
        lr=config.lr,
        steps=steps[-1],
        lr_final_ratio=1.0,
        rays=int(config.rays),  # type: ignore[arg-type]
        eval_every=steps[-1],
        data=data,
    )
    run_dir = run_dir_of(spec, output_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    trainer_conf = trainer_config(spec, run_dir)
    curve: List[Dict[str, Any]] = []
    with own_event_writers():
        _set_random_seed(spec.seed)
        trainer = trainer_conf.setup(local_rank=0, world_size=1)
        trainer.setup()
        pipeline = trainer.pipeline
        test_views = load_eval_views(pipeline, split="test", every=SCENES[scene]["view_every"])
        train_views = load_eval_views(pipeline, split="train", every=int(config.image_every))  # type: ignore[arg-type]
        height, width = (int(s) for s in train_views.images[0].shape[:2])
        wall = 0.0
        for step in range(steps[-1]):
            start = time.perf_counter()
            train_step(trainer, step)
            wall += time.perf_counter() - start
            if step + 1 not in steps:
                continue
            pipeline.eval()
            residuals, indices = pixel_residuals(pipeline.model, train_views)
            point = {
                "step": step + 1,
                "train_seconds": wall,
                **concentration(residuals, indices, height, width, config.cell, config.uniform_share),
                "psnr": evaluate_views(pipeline, test_views)["psnr"],
            }
            pipeline.train()
            curve.append(point)
            log(
                f"  [{scene}] step {point['step']}: top 10% of pixels hold {point['top10_share']:.0%} of the L1 error; "
                f"gain ideal {point['gain_ideal']:.2f}, map {point['gain_map']:.2f}; test PSNR {point['psnr']:.2f}"
            )
    return {
        "scene": scene,
        "seed": spec.seed,
        "lr": spec.lr,
        "rays": spec.rays,
        "image_size": [height, width],
        "train_images_measured": train_views.indices,
        "curve": curve,
    }


def main(argv: Sequence[str] | None = None) -> Dict[str, Any]:
    """Parse ``argv`` (default: the command line), train and measure every scene, write the JSON; returns it."""
    from benchmarks.nerf_plateau import SCENES, make_synthetic_scene_if_absent

    config = common.parse(ConcentrationConfig, argv)
    start = time.perf_counter()
    output_dir = (config.output_dir or ROOT / "outputs" / str(config.out)).resolve()
    if "synthetic" in (config.scenes or ()):
        data = Path(config.synthetic_data or SCENES["synthetic"]["data"])
        make_synthetic_scene_if_absent(data)
        config = replace(config, synthetic_data=data)
    runs = [measure_scene(scene, config, output_dir) for scene in config.scenes or ()]
    rows = [
        [
            run["scene"],
            str(p["step"]),
            f"{p['psnr']:.2f}",
            f"{p['psnr_train']:.2f}",
            f"{p['top10_share']:.0%}",
            f"{p['gain_ideal']:.2f}",
            f"{p['gain_map']:.2f}",
        ]
        for run in runs
        for p in run["curve"]
    ]
    headers = ["scene", "step", "test PSNR", "train PSNR", "L1 in top 10% px", "gain ideal", "gain map"]
    table = markdown_table(headers, rows)
    log(table)
    last = {run["scene"]: run["curve"][-1] for run in runs}
    summary_line = (
        "SUMMARY error_concentration (vanilla, CPU preset, lr "
        f"{config.lr:g}, seed {config.seed}): at step {list(config.measure_at or ())[-1]}, "
        + "; ".join(
            f"{scene}: top 10% of pixels hold {p['top10_share']:.0%} of the L1 error, drawing by error "
            f"shrinks gradient variance at most {p['gain_ideal']:.2f}x (the error map {p['gain_map']:.2f}x)"
            for scene, p in last.items()
        )
    )
    return finish("error_concentration", config, {"runs": runs, "table": table}, summary_line, start=start)


if __name__ == "__main__":
    main()
