"""Short CPU training of vanilla NeRF (inr-nerf, every switch off) on LLFF fern through the ``llff-data`` parser.

A check that the LLFF path (poses_bounds.npy, images_8, recentering, bd_factor, llffhold 8, near/far from the
bounds, Euclidean rays: no NDC) reconstructs a forward-facing scene: it trains ``--steps`` steps with the CPU preset
on fern's images_8 scaled by ``--scale`` (default 0.5: 252 x 189 px), then evaluates the held-out views (every 8th
image: 0, 8, 16) and writes the rendering of one of them next to its ground truth to
``benchmarks/results/llff_fern_view.png``. The background is ``last_sample`` (the last sample's colour: LLFF has no
transparent background).

Scene scale: ``llff-data`` keeps NeRF's units (nearest bound 1 / bd_factor: fern spans depths 1.2 to 7.9), but
nerfstudio's positional encoding is ``sin(2 pi 2^k x)`` where NeRF's is ``sin(2^k x)``: the same scene looks 2 pi times
more detailed to it. ``--scene-scale 0.25`` (the parser's ``--scale-factor``) brings fern to Blender-like extents
and measured +2.4 dB at 3000 steps (17.19 -> 19.55 dB, one seed; ``llff_fern.json`` vs ``llff_fern_scene025.json``).

Run from the repository root: ``python -m benchmarks.llff_fern`` (about 6 min on 2 cores) or ``--quick``.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Sequence

from benchmarks import common
from benchmarks.common import RESULTS_DIR, finish

FERN = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "llff" / "fern"


@dataclass
class LlffFernConfig(common.BenchmarkOptions):
    """Short CPU training of vanilla NeRF (inr-nerf, every switch off) on LLFF fern through the llff-data parser
    (--quick: 10 steps)."""

    threads: int = 2
    """torch intra-op threads (0: torch's default)."""
    data: Path = FERN
    """LLFF scene folder (poses_bounds.npy, images_8/)."""
    steps: int | None = None
    """Training steps (default 2000; quick 10)."""
    scale: float = 0.5
    """Image scale on top of images_8."""
    scene_scale: float = 0.25
    """llff-data --scale-factor (see the module docstring)."""
    seed: int = 0
    """Training seed."""
    output_dir: Path | None = None
    """Run folder (default outputs/<out>)."""


def main(argv: Sequence[str] | None = None) -> Dict[str, Any]:
    """Parse ``argv`` (default: the command line), train and evaluate fern, write the JSON; returns its payload."""
    import numpy as np
    from PIL import Image

    from nerf_inr_methods.nerfstudio_plugin.compare import evaluate_run
    from nerf_inr_methods.nerfstudio_plugin.llff_dataparser import LLFFDataParserConfig
    from nerf_inr_methods.nerfstudio_plugin.runs import prepare_config, train

    args = common.parse(LlffFernConfig, argv)
    args.steps = args.steps or (10 if args.quick else 2000)
    name = args.results_stem("llff_fern")
    root = Path(__file__).resolve().parents[1]
    output_dir = (args.output_dir or root / "outputs" / name).resolve()
    if not (args.data / "poses_bounds.npy").is_file():
        raise FileNotFoundError(f"--data {args.data}: expected an LLFF scene with poses_bounds.npy (e.g. fern)")
    config = prepare_config(
        "inr-nerf",
        args.data,
        output_dir,
        steps=args.steps,
        seed=args.seed,
        timestamp=f"seed{args.seed}",
        overrides={
            "pipeline.datamanager.dataparser": LLFFDataParserConfig(data=args.data, scale_factor=args.scene_scale),
            "pipeline.datamanager.camera_res_scale_factor": args.scale,
            "pipeline.model.background_color": "last_sample",
        },
    )
    shutil.rmtree(config.get_base_dir(), ignore_errors=True)  # a rerun replaces its run (a used folder is refused)
    start = time.perf_counter()
    config_path = train(config)
    train_wall = time.perf_counter() - start
    evaluation, indices = evaluate_run(config_path, "all", None)
    assert evaluation.image is not None and evaluation.ground_truth is not None
    panel = np.concatenate([evaluation.ground_truth, evaluation.image], axis=1)
    image_path = (args.results_dir or RESULTS_DIR) / f"{name}_view.png"
    Image.fromarray((np.clip(panel, 0, 1) * 255).round().astype(np.uint8)).save(image_path)
    psnr = evaluation.metrics["psnr"]
    per_view = ", ".join(f"{v['psnr']:.2f}" for v in evaluation.per_view)
    summary_line = (
        f"SUMMARY llff_fern (inr-nerf = vanilla NeRF, CPU preset, fern images_8 x {args.scale:g}, scene scale "
        f"{args.scene_scale:g}, T={args.steps}, "
        f"seed {args.seed}): held-out views {indices}: PSNR {psnr:.2f} dB "
        f"(per view {per_view}), SSIM "
        f"{evaluation.metrics.get('ssim', float('nan')):.3f}; training {train_wall:.0f} s wall; "
        f"ground truth | rendering of view {indices[0]}: {image_path.name}"
    )
    results = {
        "run": str(config_path),
        "views": indices,
        "metrics": evaluation.metrics,
        "per_view": evaluation.per_view,
        "train_wall_seconds": train_wall,
        "image": str(image_path),
    }
    return finish("llff_fern", args, results, summary_line)


if __name__ == "__main__":
    main()
