"""INT for NeRF: the pipeline trains each step on the rays of a scored candidate pool with the largest error.

INT (methods.md section 1) lives at the pipeline level: rays are chosen before the model's forward, so it composes
with every model switch (IGA, Gaussian field) and with custom trainers (ESGD). With ``int_enabled`` off, the
pipeline is nerfstudio's ``VanillaPipeline`` call for call (same batches, same random numbers).

Design (a "point" is a ray, i.e. a pixel ``(camera, y, x)``):

- **Candidate pool.** At an INT re-selection step (the interval schedule of ``core.int_selection``), the pool is
  replaced by ``int_pool_batches`` fresh datamanager batches of ``B = train_num_rays_per_batch`` rays
  (``P = int_pool_batches * B`` candidates) and every candidate is scored by one no-grad forward: the L1 error of
  the rendered (fine) colour summed over channels (``int_scores``).
- **Selection, every step, from the current pool only.** Each step trains ``k = ceil(ratio(t) * B)`` rays: the
  ``k`` largest scores of the pool (``select_topk``). The training forward's errors of those ``k`` rays are written
  back into the pool's scores (free: "errors from the previous iteration"), so between re-selections the subset
  follows the errors instead of being frozen. Selection indexes the pool it was computed on and nothing else: a
  subset never crosses to another batch (the public code's bug), and a new pool is always freshly scored.
- **No pixel starves.** A per-pixel counter (1 byte per training pixel, a twelfth of the float32 image cache the
  datamanager already holds) counts consecutive pools in which a pixel was a candidate but never trained. A pixel
  at ``int_max_skips`` is *forced*: it outranks every score in its next pool and is trained there (if more than
  ``k`` rays are forced they go first in the following steps and stay forced until trained). The pixel sampler
  draws every pixel with positive probability, so every pixel is trained at least once every
  ``int_max_skips + 1`` times it is drawn.
- **Control.** ``int_random_subset`` trains ``k`` uniformly random rays of the same pool (forced rays first) with
  the same ratio/interval schedule and no scoring pass.

Cost model (``f`` = one no-grad forward of one ray; a training step on ``n`` rays = forward + backward ~ ``3 f n``;
vanilla trains ``B`` rays per step, ``3 f B``). INT per step: ``3 f k + f P / I`` with ``I`` the current interval,
i.e. relative to vanilla ``r + int_pool_batches / (3 I)``. With the defaults (ratio "step" from 0.2, interval
"incremental" up to 10, one batch per pool) the stages cost 0.53, 0.61, 0.53, 0.55, 0.60, 0.66, 0.73, 0.80, 0.88,
0.95 of a vanilla step, 0.68 on average, before any gain from the selection itself. Alternatives: a fresh scoring
pass every step ("dense", the paper's slower-than-baseline row) costs ``r + 1/3`` = 0.89 on average; a pool of
``I`` batches (vanilla's ray diversity, ``int_pool_batches = I``) also ``r + 1/3``. A global per-pixel error cache
refreshed only by training forwards is free but nearly empty: mic at 100 px has 10^6 training pixels and 256 rays
per step see each pixel once per ~3900 steps, so in a run of a few thousand steps most candidates would have no
error yet. The pool's own cache keeps that free refresh where it has data. The price of ``int_pool_batches = 1``
is diversity: the pool gives ``B / I`` fresh rays per step, each trained up to ``I`` times.

Metrics (logged by the nerfstudio writer with the other train metrics): ``int_ratio``, ``int_interval``,
``int_reselected`` (1 on pool refresh steps), ``int_pool_age``, ``int_forced_rays``, ``rays_trained`` (``k``) and
``rays_scored`` (``P`` on refresh steps with scoring, else 0).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Tuple, Type

import torch
from nerfstudio.cameras.rays import RayBundle
from nerfstudio.engine.callbacks import TrainingCallback, TrainingCallbackAttributes
from nerfstudio.pipelines.base_pipeline import VanillaPipeline, VanillaPipelineConfig
from nerfstudio.utils import profiler
from torch import Tensor

from nerf_inr_methods.core.int_selection import (
    INTERVAL_KINDS,
    RATIO_KINDS,
    IntervalKind,
    IntSchedule,
    RatioKind,
    int_scores,
    num_selected,
    select_topk,
)

MAX_SKIP_COUNT = 255
"""The per-pixel skip counters are uint8 and saturate here."""


@dataclass
class InrPipelineConfig(VanillaPipelineConfig):
    """nerfstudio's vanilla pipeline plus INT ray selection (off by default)."""

    _target: Type = field(default_factory=lambda: InrPipeline)
    int_enabled: bool = False
    """Train each step on the INT-selected rays (largest current error) of a scored candidate pool."""
    int_random_subset: bool = False
    """INT's control: same pool, sizes and schedule, but a uniformly random subset and no scoring pass."""
    int_ratio_kind: RatioKind = "step"
    """Ratio schedule: constant, step (paper default: r0 -> 0.92 in 10 stages), cosine, or r-cosine."""
    int_r0: float = 0.2
    """Starting fraction r0: rays trained per step = ceil(ratio * train-num-rays-per-batch)."""
    int_interval_kind: IntervalKind = "incremental"
    """Interval schedule for replacing and re-scoring the candidate pool: dense, incremental, or decremental."""
    int_max_interval: int = 10
    """Largest re-selection interval in steps (the paper's 90 is for 5k-step image fits)."""
    int_pool_batches: int = 1
    """Candidate pool size, in datamanager batches of train-num-rays-per-batch rays each."""
    int_max_skips: int = 4
    """A pixel that was a candidate in this many consecutive pools without being trained is forced in its next."""
    int_total_steps: int | None = None
    """Steps T of the schedules (10 stages of T/10 steps); None: the trainer's max-num-iterations."""
    training_eval_image_stride: int = 1
    """Evaluations during training (--steps-per-eval-all-images) use every n-th eval image only (a fixed subset, for
    PSNR-vs-time curves on CPU); ns-eval always evaluates every image."""

    def __post_init__(self) -> None:
        if self.int_ratio_kind not in RATIO_KINDS:
            raise ValueError(f"--pipeline.int-ratio-kind must be one of {RATIO_KINDS}, got {self.int_ratio_kind!r}")
        if self.int_interval_kind not in INTERVAL_KINDS:
            raise ValueError(
                f"--pipeline.int-interval-kind must be one of {INTERVAL_KINDS}, got {self.int_interval_kind!r}"
            )
        if not 0.0 < float(self.int_r0) <= 1.0:
            raise ValueError(f"--pipeline.int-r0 must be in (0, 1], got {self.int_r0!r}")
        for name in ("int_max_interval", "int_pool_batches"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"--pipeline.{name.replace('_', '-')} must be >= 1, got {getattr(self, name)!r}")
        if not 1 <= int(self.int_max_skips) <= MAX_SKIP_COUNT:
            raise ValueError(f"--pipeline.int-max-skips must be in [1, {MAX_SKIP_COUNT}], got {self.int_max_skips!r}")
        if int(self.training_eval_image_stride) < 1:
            raise ValueError(
                f"--pipeline.training-eval-image-stride must be >= 1, got {self.training_eval_image_stride!r}"
            )
        if self.int_total_steps is not None and int(self.int_total_steps) < 1:
            raise ValueError(f"--pipeline.int-total-steps must be >= 1 or None, got {self.int_total_steps!r}")


@dataclass
class CandidatePool:
    """The current INT candidates: ``P`` rays, their batch rows, scores and bookkeeping (all first dim ``P``)."""

    ray_bundle: RayBundle
    batch: Dict[str, Tensor]
    scores: Tensor
    """(P,) L1 error summed over colour channels; trained rays are refreshed by their training forward."""
    pixel_ids: Tensor
    """(P,) long flat pixel ids ``(camera * H + y) * W + x``, on the model's device (as scores, forced, trained)."""
    forced: Tensor
    """(P,) bool: candidates that reached the skip limit and are still untrained in this pool."""
    trained: Tensor
    """(P,) bool: candidates trained at least once in this pool."""
    step: int
    """Step at which the pool was drawn (and scored)."""


class InrPipeline(VanillaPipeline):
    """VanillaPipeline whose training step optionally runs INT ray selection (see the module docstring)."""

    config: InrPipelineConfig

    def __init__(self, config: InrPipelineConfig, *args: Any, **kwargs: Any) -> None:
        super().__init__(config, *args, **kwargs)
        self._total_steps: int | None = config.int_total_steps
        self._pool: CandidatePool | None = None
        self._skips: Tensor | None = None
        self._image_hw: Tuple[int, int] | None = None

    def get_training_callbacks(
        self, training_callback_attributes: TrainingCallbackAttributes
    ) -> List[TrainingCallback]:
        """The datamanager's and model's callbacks; also reads T from the trainer when int_total_steps is None."""
        trainer = training_callback_attributes.trainer
        if self._total_steps is None and trainer is not None:
            self._total_steps = int(trainer.config.max_num_iterations)
        return super().get_training_callbacks(training_callback_attributes)

    def get_average_eval_image_metrics(
        self, step: int | None = None, output_path: Path | None = None, get_std: bool = False
    ) -> Dict[str, float]:
        """nerfstudio's average over the eval images; during training (``step`` given) over every
        ``training_eval_image_stride``-th image only."""
        stride = int(self.config.training_eval_image_stride)
        datamanager = self.datamanager
        if step is None or stride <= 1 or not hasattr(datamanager, "fixed_indices_eval_dataloader"):
            return super().get_average_eval_image_metrics(step=step, output_path=output_path, get_std=get_std)
        from nerfstudio.data.utils.dataloaders import FixedIndicesEvalDataloader

        full = datamanager.fixed_indices_eval_dataloader
        indices = tuple(range(0, len(datamanager.eval_dataset), stride))
        datamanager.fixed_indices_eval_dataloader = FixedIndicesEvalDataloader(
            input_dataset=datamanager.eval_dataset, image_indices=indices, device=datamanager.device
        )
        try:
            return super().get_average_eval_image_metrics(step=step, output_path=output_path, get_std=get_std)
        finally:
            datamanager.fixed_indices_eval_dataloader = full

    @property
    def int_schedule(self) -> IntSchedule:
        """The ratio/interval schedule over ``int_total_steps`` (or the trainer's max-num-iterations)."""
        if self._total_steps is None:
            raise ValueError(
                "INT needs the number of training steps: set --pipeline.int-total-steps, or train through "
                "nerfstudio's Trainer (which provides max-num-iterations)"
            )
        c = self.config
        return IntSchedule(
            total_steps=self._total_steps,
            ratio_kind=c.int_ratio_kind,
            r0=float(c.int_r0),
            interval_kind=c.int_interval_kind,
            max_interval=int(c.int_max_interval),
        )

    def rays_per_step(self, step: int) -> Tuple[int, int]:
        """(rays trained, rays scored) at ``step`` for a run from step 0: ``k = ceil(ratio * B)``, and ``P`` on
        scored pool refreshes (``int_random_subset`` scores nothing). Vanilla: ``(B, 0)``."""
        batch_rays = self.datamanager.get_train_rays_per_batch()
        if not self.config.int_enabled:
            return batch_rays, 0
        schedule = self.int_schedule
        scored = 0
        if schedule.is_selection_step(step) and not self.config.int_random_subset:
            scored = self.config.int_pool_batches * batch_rays
        return num_selected(batch_rays, schedule.ratio(step)), scored

    @profiler.time_function
    def get_train_loss_dict(self, step: int) -> Tuple[Dict[str, Any], Dict[str, Tensor], Dict[str, Any]]:
        """Vanilla's training step on all rays of a batch, or (INT) on the ``k`` selected rays of the pool."""
        if not self.config.int_enabled:
            return super().get_train_loss_dict(step)
        schedule = self.int_schedule
        interval = schedule.interval(step)
        pool = self._pool
        # Same rule as core.int_selection.selection_steps (t - last >= interval(t)), also valid past T and on resume.
        reselect = pool is None or step < pool.step or step - pool.step >= interval
        if reselect:
            pool = self._pool = self._new_pool(step)
        assert pool is not None
        batch_rays = self.datamanager.get_train_rays_per_batch()
        ratio = schedule.ratio(step)
        k = num_selected(batch_rays, ratio)
        selected = self._select(pool, k)

        ray_bundle = pool.ray_bundle[selected]
        batch = {name: value[selected.to(value.device)] for name, value in pool.batch.items()}
        model_outputs = self._model(ray_bundle)
        metrics_dict = self.model.get_metrics_dict(model_outputs, batch)
        loss_dict = self.model.get_loss_dict(model_outputs, batch, metrics_dict)

        # Free refresh: the training forward's (pre-update) errors of the trained rays.
        if not self.config.int_random_subset:
            pool.scores[selected] = self._ray_errors(model_outputs, batch).to(pool.scores.device)
        n_forced = int(pool.forced[selected].sum())
        pool.trained[selected] = True
        pool.forced[selected] = False
        assert self._skips is not None
        self._skips[pool.pixel_ids[selected]] = 0

        metrics_dict.update(
            {
                "int_ratio": float(ratio),
                "int_interval": float(interval),
                "int_reselected": float(reselect),
                "int_pool_age": float(step - pool.step),
                "int_forced_rays": float(n_forced),
                "rays_trained": float(k),
                "rays_scored": float(pool.scores.shape[0] if reselect and not self.config.int_random_subset else 0),
            }
        )
        return model_outputs, loss_dict, metrics_dict

    def _select(self, pool: CandidatePool, k: int) -> Tensor:
        """(k,) indices into the pool: forced rays first, then the largest scores (or uniform keys for the control)."""
        n = pool.scores.shape[0]
        if self.config.int_random_subset:
            # Top-k of i.i.d. uniform keys is a uniformly random k-subset; forced rays get keys above 1.
            keys = torch.rand(n, device=pool.scores.device)
        else:
            keys = pool.scores.clone()
        keys[pool.forced] = float("inf")
        return select_topk(keys, k / n)

    def _new_pool(self, step: int) -> CandidatePool:
        """Retire the current pool (update skip counters), draw ``int_pool_batches`` fresh batches and score them."""
        self._retire_pool()
        bundles, batches = [], []
        for _ in range(self.config.int_pool_batches):
            ray_bundle, batch = self.datamanager.next_train(step)
            if "indices" not in batch:
                raise ValueError(
                    "INT needs ray batches with per-ray 'indices' (camera, y, x); "
                    f"{type(self.datamanager).__name__} returned keys {sorted(batch)}"
                )
            bundles.append(ray_bundle)
            batches.append(batch)
        ray_bundle = cat_ray_bundles(bundles)
        batch = {name: _cat_batch_values(name, [b[name] for b in batches]) for name in batches[0]}
        pixel_ids = self._pixel_ids(batch["indices"])
        if self.config.int_random_subset:
            scores = torch.zeros(pixel_ids.shape[0], device=self.device)
        else:
            with torch.no_grad():
                scores = self._ray_errors(self.model(ray_bundle), batch).to(self.device)
        assert self._skips is not None
        forced = self._skips[pixel_ids] >= self.config.int_max_skips
        trained = torch.zeros_like(forced)
        return CandidatePool(ray_bundle, batch, scores, pixel_ids, forced, trained, step)

    def _retire_pool(self) -> None:
        """Count one more skip for every candidate of the current pool that was never trained in it (a pixel drawn
        twice into the pool counts as trained if either copy was)."""
        pool = self._pool
        if pool is None or self._skips is None:
            return
        untrained = pool.pixel_ids[~pool.trained]
        counts = self._skips[untrained].to(torch.int32) + 1
        self._skips[untrained] = counts.clamp_(max=MAX_SKIP_COUNT).to(torch.uint8)
        self._skips[pool.pixel_ids[pool.trained]] = 0
        self._pool = None

    def _pixel_ids(self, indices: Tensor) -> Tensor:
        """(n,) flat pixel ids from (n, 3) ``(camera, y, x)`` indices; allocates the skip counters on first use."""
        if indices.dim() != 2 or indices.shape[1] != 3:
            raise ValueError(f"batch['indices'] must have shape (n, 3) = (camera, y, x), got {tuple(indices.shape)}")
        if self._image_hw is None:
            cameras = self.datamanager.train_dataset.cameras
            self._image_hw = (int(cameras.height.max()), int(cameras.width.max()))
            num_pixels = len(self.datamanager.train_dataset) * self._image_hw[0] * self._image_hw[1]
            self._skips = torch.zeros(num_pixels, dtype=torch.uint8, device=self.device)
        height, width = self._image_hw
        indices = indices.long().to(self.device)
        assert self._skips is not None
        ids = (indices[:, 0] * height + indices[:, 1]) * width + indices[:, 2]
        if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= self._skips.shape[0]):
            raise ValueError(
                f"batch['indices'] out of range for {len(self.datamanager.train_dataset)} train images of "
                f"at most {height}x{width} pixels"
            )
        return ids

    def _ray_errors(self, outputs: Dict[str, Any], batch: Dict[str, Tensor]) -> Tensor:
        """(n,) INT scores: L1 error of the rendered colour (fine if present) against the blended ground truth."""
        suffix = "_fine" if "rgb_fine" in outputs else ""
        pred, target = self.model.renderer_rgb.blend_background_for_loss_computation(
            pred_image=outputs[f"rgb{suffix}"],
            pred_accumulation=outputs[f"accumulation{suffix}"],
            gt_image=batch["image"].to(outputs[f"rgb{suffix}"].device),
        )
        return int_scores(pred, target[..., : pred.shape[-1]])


def cat_ray_bundles(bundles: List[RayBundle]) -> RayBundle:
    """Concatenate flat ray bundles, each (n_i,), into one (sum n_i,) bundle (fields that are None stay None)."""
    if len(bundles) == 1:
        return bundles[0]
    values: Dict[str, Any] = {}
    for f in dataclasses.fields(RayBundle):
        parts = [getattr(b, f.name) for b in bundles]
        if all(p is None for p in parts):
            values[f.name] = None
        elif isinstance(parts[0], dict):
            values[f.name] = {key: torch.cat([p[key] for p in parts], dim=0) for key in parts[0]}
        elif any(p is None for p in parts):
            raise ValueError(f"cannot concatenate ray bundles: field {f.name!r} is None in some of them")
        else:
            values[f.name] = torch.cat(parts, dim=0)
    return RayBundle(**values)


def _cat_batch_values(name: str, values: List[Any]) -> Tensor:
    if not all(isinstance(v, Tensor) for v in values):
        raise ValueError(f"INT pools concatenate per-ray batch tensors; batch[{name!r}] is {type(values[0]).__name__}")
    return values[0] if len(values) == 1 else torch.cat(values, dim=0)
