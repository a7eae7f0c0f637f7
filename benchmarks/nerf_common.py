"""NeRF benchmark machinery shared by int_nerf.py, iga_nerf.py, gauss_esgd.py and nerf_all.py.

:func:`train_arm` trains one nerfstudio TrainerConfig step by step through nerfstudio's own Trainer (its
callbacks and ``train_iteration``, so custom pipelines, models and trainers behave as under ``ns-train``), with
an honest clock: every cost of a training step counts (selection passes, eNTK, double backward), evaluation does
not. Every ``eval_every`` steps it renders a fixed subset of views of one split and records PSNR on the full
image, background blended as the model trains with.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List

import torch
from nerfstudio.cameras.cameras import Cameras
from nerfstudio.data.datasets.base_dataset import InputDataset
from nerfstudio.engine.callbacks import TrainingCallbackLocation
from nerfstudio.engine.trainer import TrainerConfig

MIC = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "blender" / "mic"
MIC_100PX = {"pipeline.datamanager.camera_res_scale_factor": 0.5}
"""Override for ``runs.prepare_config``: mic's 200 px images loaded at 100 px (images and intrinsics)."""


def check_scene_folder(data: Path) -> None:
    """Refuse a ``--data`` that is not a folder (a Blender scene such as mic is expected)."""
    if not Path(data).is_dir():
        raise FileNotFoundError(f"--data {data} is not a folder (expected a Blender scene, e.g. {MIC})")


@dataclass
class EvalViews:
    """A fixed subset of one split's views: cameras (n_views,) and images, each (H, W, 3 or 4) in [0, 1]."""

    split: str
    indices: List[int]
    cameras: Cameras
    images: List[torch.Tensor]


def load_eval_views(pipeline, split: str = "test", every: int = 10) -> EvalViews:
    """Every ``every``-th view of ``split``, loaded with the training datamanager's dataparser and resolution."""
    datamanager = pipeline.datamanager
    outputs = datamanager.dataparser.get_dataparser_outputs(split=split)
    dataset = InputDataset(outputs, scale_factor=datamanager.config.camera_res_scale_factor)
    indices = list(range(0, len(dataset), every))
    if not indices:
        raise ValueError(f"split {split!r} has no views to evaluate")
    images = [dataset.get_image_float32(i) for i in indices]
    cameras = dataset.cameras[torch.tensor(indices)]
    return EvalViews(split=split, indices=indices, cameras=cameras, images=images)


def train_step(trainer, step: int) -> Dict[str, torch.Tensor]:
    """One training step as nerfstudio's ``Trainer.train`` runs it (callbacks before and after), synchronised on
    CUDA so that a clock around it measures the step; returns the step's metrics dict."""
    pipeline = trainer.pipeline
    pipeline.train()
    for callback in trainer.callbacks:
        callback.run_callback_at_location(step, location=TrainingCallbackLocation.BEFORE_TRAIN_ITERATION)
    _, _, metrics = trainer.train_iteration(step)
    for callback in trainer.callbacks:
        callback.run_callback_at_location(step, location=TrainingCallbackLocation.AFTER_TRAIN_ITERATION)
    if pipeline.model.device.type == "cuda":
        torch.cuda.synchronize()
    return metrics


@torch.no_grad()
def render_view(model, views: EvalViews, index: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(prediction, target), each (H, W, 3): the model's (fine) render of view ``index`` and its image blended with
    the model's background, as ns-eval compares them."""
    outputs = model.get_outputs_for_camera(views.cameras[index : index + 1].to(model.device))
    prediction = outputs["rgb_fine"] if "rgb_fine" in outputs else outputs["rgb"]
    return prediction, model.renderer_rgb.blend_background(views.images[index].to(model.device))


def psnr_db(prediction: torch.Tensor, target: torch.Tensor) -> float:
    """PSNR in dB of images in [0, 1] (MSE floored at 1e-12)."""
    mse = torch.mean((prediction - target) ** 2).item()
    return -10.0 * math.log10(max(mse, 1e-12))


@torch.no_grad()
def evaluate_views(pipeline, views: EvalViews) -> Dict[str, float]:
    """Mean PSNR (dB) over the views, on the full image with the model's background blending."""
    model = pipeline.model
    was_training = model.training
    pipeline.eval()
    psnrs = [psnr_db(*render_view(model, views, i)) for i in range(len(views.images))]
    if was_training:
        pipeline.train()
    return {"psnr": sum(psnrs) / len(psnrs), "psnr_per_view": psnrs}


def train_arm(
    config: TrainerConfig,
    *,
    eval_every: int,
    split: str = "test",
    view_every: int = 10,
    progress: Callable[[str], None] | None = None,
) -> Dict[str, list]:
    """Train ``config`` for ``config.max_num_iterations`` steps and evaluate every ``eval_every`` steps and at the end.

    Returns a history with, per evaluation: ``step`` (steps done), ``train_seconds`` (cumulative training
    wall-clock, evaluation excluded), ``rays`` (cumulative rays trained: the pipeline's ``rays_trained`` metric when
    it reports one, e.g. INT, else the datamanager's batch size), ``psnr`` (mean over the fixed views); plus the
    per-step ``step_seconds`` list. Seeds as ``ns-train`` does (``config.machine.seed``).
    """
    from nerf_inr_methods.nerfstudio_plugin.runs import own_event_writers

    with own_event_writers():  # nerfstudio's writers are process-wide: close this run's when it ends
        return _train_arm(config, eval_every=eval_every, split=split, view_every=view_every, progress=progress)


def _train_arm(
    config: TrainerConfig,
    *,
    eval_every: int,
    split: str,
    view_every: int,
    progress: Callable[[str], None] | None,
) -> Dict[str, list]:
    from nerfstudio.scripts.train import _set_random_seed

    _set_random_seed(config.machine.seed)
    config.set_timestamp()
    trainer = config.setup(local_rank=0, world_size=1)
    trainer.setup()
    pipeline = trainer.pipeline
    views = load_eval_views(pipeline, split=split, every=view_every)
    history: Dict[str, list] = {"step": [], "train_seconds": [], "rays": [], "psnr": [], "step_seconds": []}
    elapsed, rays = 0.0, 0
    steps = config.max_num_iterations
    for step in range(steps):
        start = time.perf_counter()
        metrics = train_step(trainer, step)
        seconds = time.perf_counter() - start
        elapsed += seconds
        history["step_seconds"].append(seconds)
        rays += int(metrics.get("rays_trained", pipeline.datamanager.get_train_rays_per_batch()))
        done = step + 1
        if done % eval_every == 0 or done == steps:
            result = evaluate_views(pipeline, views)
            history["step"].append(done)
            history["train_seconds"].append(elapsed)
            history["rays"].append(rays)
            history["psnr"].append(result["psnr"])
            if progress is not None:
                progress(f"step {done}/{steps}  {elapsed:7.1f} s  PSNR {result['psnr']:.2f} dB")
    return history
