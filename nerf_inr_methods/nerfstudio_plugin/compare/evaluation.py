"""Evaluating a run from its checkpoint on chosen test views, as ``ns-eval`` does per image."""

from __future__ import annotations

import gc
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np
import torch

from nerf_inr_methods.nerfstudio_plugin.offline import drop_unavailable_metrics, load_run


def parse_views(spec: str, n_views: int) -> List[int]:
    """Indices into a split of ``n_views`` views: "all", "every-K" (0, K, 2K, ...) or "i,j,k"."""
    spec = spec.strip().lower()
    if n_views < 1:
        raise ValueError("the test split has no views")
    if spec == "all":
        return list(range(n_views))
    match = re.fullmatch(r"every-(\d+)", spec)
    if match:
        step = int(match.group(1))
        if step < 1:
            raise ValueError(f"--views {spec}: K must be >= 1")
        return list(range(0, n_views, step))
    try:
        indices = [int(part) for part in spec.split(",") if part.strip()]
    except ValueError:
        indices = []
    if not indices:
        raise ValueError(f"--views {spec!r}: expected 'all', 'every-K' or comma-separated indices like '0,5,9'")
    bad = [i for i in indices if not 0 <= i < n_views]
    if bad:
        raise ValueError(f"--views {spec!r}: indices {bad} are outside the test split's 0..{n_views - 1}")
    return indices


def _standard_metrics(metrics: Dict[str, float]) -> Dict[str, float]:
    """nerfstudio models' metric names -> psnr / ssim / lpips (vanilla NeRF reports the fine field's)."""
    out: Dict[str, float] = {}
    for name in ("psnr", "ssim", "lpips"):
        keys = (name, f"fine_{name}")
        for key in keys:
            if key in metrics and math.isfinite(float(metrics[key])):
                out[name] = float(metrics[key])
                break
    return out


@dataclass
class RunEvaluation:
    """A run evaluated on the chosen test views."""

    step: int
    """Checkpoint step loaded."""
    metrics: Dict[str, float]
    """Mean over the views of psnr / ssim / lpips (lpips absent when unavailable)."""
    per_view: List[Dict[str, float]]
    """Per view: index and the metrics."""
    view_files: List[str]
    """Image file of each evaluated view (checks that every run saw the same views)."""
    image: np.ndarray | None
    """(H, W, 3) float prediction on the image view."""
    ground_truth: np.ndarray | None
    """(H, W, 3) float ground truth (background blended as the model renders) on the image view."""
    image_metrics: Dict[str, float]
    """Metrics of the image view."""


def view_progress(description: str):
    """A rich progress bar with elapsed time and ETA, as nerfstudio's evaluation shows; silent when stderr is not a
    terminal (logs, pipes, pytest)."""
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    console = Console(stderr=True)
    return Progress(
        TextColumn(f"{description} [progress.description]{{task.description}}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=console,
        transient=True,
        disable=not console.is_terminal,
    )


def evaluate_run(
    config_path: Path, views: str, image_view: int | None, description: str = "evaluating"
) -> Tuple[RunEvaluation, List[int]]:
    """Load a run (checkpoint, test split) and evaluate the chosen views as ``ns-eval`` does per image.

    Args:
        config_path: the run's config.yml.
        views: test views, see :func:`parse_views`.
        image_view: test view whose rendering is kept (default: the first evaluated view).
        description: label of the progress bar (shown on a terminal only).
    """
    from nerfstudio.data.utils.dataloaders import FixedIndicesEvalDataloader

    # the package's eval_setup: the checkpoint is loaded (and a truncated or refused one named) before the dataset
    loaded = load_run(Path(config_path), test_mode="test")
    pipeline, step = loaded.pipeline, loaded.step
    del loaded  # the pipeline is freed below
    try:
        model = pipeline.model
        dataset = pipeline.datamanager.eval_dataset
        indices = parse_views(views, len(dataset))
        if image_view is not None and not 0 <= image_view < len(dataset):
            raise ValueError(f"--image-view {image_view} is outside the test split's 0..{len(dataset) - 1}")
        shown = indices[0] if image_view is None else image_view
        render = indices if shown in indices else [*indices, shown]
        loader = FixedIndicesEvalDataloader(dataset, image_indices=tuple(render), device=model.device)
        per_view: List[Dict[str, float]] = []
        image = ground_truth = None
        image_metrics: Dict[str, float] = {}
        with torch.no_grad(), view_progress(description) as progress:
            task = progress.add_task("test views", total=len(render))
            for index, (camera, batch) in zip(render, loader, strict=True):
                outputs = model.get_outputs_for_camera(camera=camera)
                raw, _ = model.get_image_metrics_and_images(outputs, batch)
                metrics = _standard_metrics(drop_unavailable_metrics(dict(raw)))
                if index == shown:
                    image_metrics = metrics
                    rgb = outputs["rgb_fine"] if "rgb_fine" in outputs else outputs["rgb"]
                    target = batch["image"].to(rgb.device)
                    renderer = getattr(model, "renderer_rgb", None)
                    target = renderer.blend_background(target) if renderer is not None else target[..., :3]
                    image = rgb[..., :3].clamp(0, 1).float().cpu().numpy()
                    ground_truth = target[..., :3].clamp(0, 1).float().cpu().numpy()
                if len(per_view) < len(indices):
                    per_view.append({"view": index, **metrics})
                progress.advance(task)
        names = sorted({k for v in per_view for k in v if k != "view"})
        mean = {k: float(np.mean([v[k] for v in per_view])) for k in names if all(k in v for v in per_view)}
        files = [str(Path(dataset.image_filenames[i]).resolve()) for i in indices]
        result = RunEvaluation(step, mean, per_view, files, image, ground_truth, image_metrics)
        return result, indices
    finally:
        del pipeline
        gc.collect()
