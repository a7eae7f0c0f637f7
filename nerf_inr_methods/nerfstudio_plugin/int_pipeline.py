"""INT for NeRF: the pipeline trains each step on the rays an INT-family sampler picks from a candidate pool.

INT (methods.md section 1) lives at the pipeline level: rays are chosen before the model's forward, so it composes
with every model switch (IGA, Gaussian field), with custom trainers (ESGD) and with any ray-based nerfstudio model
(our vanilla NeRF ``InrNeRFModel``, nerfacto's ``InrNerfactoModel``). With ``int_enabled`` off, the pipeline is
nerfstudio's ``VanillaPipeline`` call for call (same batches, same random numbers).

What a model needs: a forward on a flat ray bundle with ``rgb`` (n, 3) and ``accumulation`` (n, 1) outputs (or
``rgb_fine`` / ``accumulation_fine``, preferred when present) and nerfstudio's ``renderer_rgb``, whose
``blend_background_for_loss_computation`` gives the scores the loss's background blending; for the samplers that
weight rays (``soft``, ``error-map`` with ``int_alpha`` > 0), a ``get_loss_dict`` that weights its RGB term by
``batch["ray_loss_weights"]`` (n,) (``core.int_sampler.weighted_mse``) and the class attribute
``takes_ray_loss_weights = True`` (the pipeline refuses, naming the flag, a model without it: its weights would be
dropped silently). :func:`error_map_pipeline` turns any ``VanillaPipelineConfig`` into this pipeline with the error
map on. Methods that do not train on ray batches (splatfacto renders whole images) are out of scope.

The policy (candidate pool, scores, selection, no-starvation guard, schedules, samplers, state) is the framework-free
:class:`nerf_inr_methods.core.int_sampler.IntSampler`; this module only translates: a "point" is a ray, i.e. a pixel
``(camera, y, x)`` with flat id ``(camera * H + y) * W + x``; a pool is ``int_pool_batches`` datamanager batches of
``B = train_num_rays_per_batch`` rays (``P = int_pool_batches * B`` candidates) whose batch rows the pipeline keeps
aligned with the sampler's pool (with nerfstudio's ``VanillaDataManager`` the pixels only: the rays of the rows a
step trains or scores are generated then, by the datamanager's ray generator; other datamanagers' rays are kept with
the pool); a score is the L1 error of the rendered (fine) colour summed over channels, from a no-grad forward; each
step trains ``k = ceil(ratio(t) * B)`` rays.

Samplers (``--pipeline.int-sampler``):

- ``int`` (default, the paper's INT): the pool is replaced and scored on the re-selection steps of the interval
  schedule; every step trains the ``k`` largest scores of the current pool, and the training forward's errors of
  those rays are written back into the pool's scores (free: "errors from the previous iteration"), so between
  re-selections the subset follows the errors. A subset never crosses to another batch (the public code's bug).
  ``--pipeline.int-random-subset True`` (= ``--pipeline.int-sampler random``) is its control: same pool, sizes and
  schedule, a uniformly random subset and no scoring pass.
- ``soft``: soft mining: the scored pool of ``int``, rays drawn with probability ~ error (plus a uniform share),
  each ray's loss weighted by the importance correction ``^ alpha`` (warmed up). The weights reach the model as
  ``batch["ray_loss_weights"]`` (``InrNeRFModel.get_loss_dict``).
- ``error-map``: a persistent per-image error map of ``int_error_map_cell``-pixel tiles, written by every training
  forward; every step a fresh pool is drawn (no forward) and rays are drawn from it by their tile's error (plus a
  uniform share; unseen or stale tiles count as the map's maximum), weighted as ``soft``. No scoring pass.
- ``two-forward``: every step a fresh pool, ``ceil(int_score_factor * k)`` of its rays scored by a no-grad forward,
  the ``k`` hardest trained.

**No pixel starves** (every sampler): a per-pixel uint8 counter (a twelfth of the float32 image cache the
datamanager already holds) counts consecutive pools in which a pixel was a candidate but was not trained; a pixel at
``int_max_skips`` is forced: trained first in its next pool. The pixel sampler draws every pixel with positive
probability, so every pixel is trained at least once every ``int_max_skips + 1`` times it is drawn.

Cost model (``f`` = one no-grad forward of one ray; a training step on ``n`` rays ~ ``3 f n``; vanilla ``3 f B``).
INT per step: ``3 f k + f P / I`` with ``I`` the current interval, relative to vanilla ``r + int_pool_batches /
(3 I)``: with the defaults (ratio "step" from 0.2, interval "incremental" up to 10, one batch per pool) 0.68 of a
vanilla step on average before any gain from the selection. ``two-forward``: ``r + int_score_factor * r / 3``.
``error-map``: ``r`` (no scoring). The price of ``int_pool_batches = 1`` for ``int`` is diversity: the pool gives
``B / I`` fresh rays per step, each trained up to ``I`` times.

Resume: the sampler's state (pool ids and scores, the pool's rays and batch, skip counters, error map, generator,
T) and the torch random state are in the checkpoint (``get_extra_state``); a resumed run continues the saved
schedule exactly and refuses a different T. T is ``--pipeline.int-total-steps`` or, when unset, the step at which
the trainer stops (resumed step + ``--max-num-iterations``, as nerfstudio counts).

Metrics (logged by the nerfstudio writer with the other train metrics): ``int_ratio``, ``int_interval``,
``int_reselected`` (1 when a new pool was drawn), ``int_pool_age``, ``int_forced_rays``, ``int_alpha``,
``rays_trained`` (``k``) and ``rays_scored`` (rays in this step's no-grad forwards).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, NamedTuple, Tuple, Type

import torch
from nerfstudio.cameras.rays import RayBundle
from nerfstudio.data.datamanagers.base_datamanager import VanillaDataManager
from nerfstudio.engine.callbacks import TrainingCallback, TrainingCallbackAttributes
from nerfstudio.pipelines.base_pipeline import VanillaPipeline, VanillaPipelineConfig
from nerfstudio.utils import profiler
from torch import Tensor

from nerf_inr_methods.config_fields import mirrored_fields
from nerf_inr_methods.core.int_sampler import (
    LOSS_WEIGHTS_KEY,
    MAX_SKIP_COUNT,
    IntSampler,
    IntSamplerConfig,
    PoolCandidates,
    SamplerName,
    SamplerOptionError,
    SamplerParameters,
    Selection,
    grid_cells,
)
from nerf_inr_methods.core.int_selection import IntSchedule, int_scores

EXTRA_STATE_FORMAT = "inr-pipeline-int-v1"
MIRRORED_SAMPLER_OPTIONS = (
    "ratio_kind",
    "r0",
    "interval_kind",
    "max_interval",
    "max_skips",
    *(f.name for f in dataclasses.fields(SamplerParameters)),
)
"""Fields of :class:`IntSamplerConfig` that :class:`InrPipelineConfig` mirrors as ``int_<field>``
(``--pipeline.int-<field>``, type and help from the core, defaults from it but for :data:`NERF_SAMPLER_DEFAULTS`):
the schedules, the guard and every :class:`SamplerParameters` field; the sampler (with --pipeline.int-random-subset),
reuse and seed are set otherwise."""
NERF_SAMPLER_DEFAULTS = {"max_interval": 10, "max_skips": 4}
"""NeRF's defaults where they differ from the core's (made for 5k-step image fits): re-scoring the pool at least every
10 steps, and the no-starvation guard on."""

InrSamplerFlags = dataclasses.make_dataclass(
    "InrSamplerFlags",
    mirrored_fields(IntSamplerConfig, MIRRORED_SAMPLER_OPTIONS, prefix="int_", defaults=NERF_SAMPLER_DEFAULTS),
    bases=(VanillaPipelineConfig,),
)
"""nerfstudio's vanilla pipeline config plus the mirrored INT sampler flags (the base of :class:`InrPipelineConfig`)."""
InrSamplerFlags.__module__ = __name__


@dataclass
class InrPipelineConfig(InrSamplerFlags):
    """nerfstudio's vanilla pipeline plus INT-family ray selection (off by default)."""

    _target: Type = field(default_factory=lambda: InrPipeline)
    int_enabled: bool = False
    """Train each step on the rays the INT sampler picks from a candidate pool (see --pipeline.int-sampler)."""
    int_sampler: SamplerName = "int"
    """int (paper: top-k of a scored pool), random (its control), soft (soft mining), error-map, two-forward."""
    int_random_subset: bool = False
    """INT's control (same as --pipeline.int-sampler random): same pool, sizes and schedule, random rays, no scoring."""
    int_pool_batches: int = 1
    """Candidate pool size, in datamanager batches of train-num-rays-per-batch rays each."""
    int_total_steps: int | None = None
    """Steps T of the schedules (10 stages of T/10 steps); None: the step at which the trainer stops."""
    int_error_map_cell: int = 4
    """error-map: side of an error-map tile in pixels (the map has ceil(H / cell) x ceil(W / cell) tiles per image)."""
    training_eval_image_stride: int = 1
    """Evaluations during training (--steps-per-eval-all-images) use every n-th eval image only (a fixed subset, for
    PSNR-vs-time curves on CPU); ns-eval always evaluates every image."""

    def __post_init__(self) -> None:
        self.int_sampler_config()  # validates the INT options (also checked when the pipeline is built)
        if int(self.int_pool_batches) < 1:
            raise ValueError(f"--pipeline.int-pool-batches must be >= 1, got {self.int_pool_batches!r}")
        if int(self.int_error_map_cell) < 1:
            raise ValueError(f"--pipeline.int-error-map-cell must be >= 1, got {self.int_error_map_cell!r}")
        if int(self.training_eval_image_stride) < 1:
            raise ValueError(
                f"--pipeline.training-eval-image-stride must be >= 1, got {self.training_eval_image_stride!r}"
            )
        if self.int_total_steps is not None and int(self.int_total_steps) < 1:
            raise ValueError(f"--pipeline.int-total-steps must be >= 1 or None, got {self.int_total_steps!r}")

    def int_sampler_config(self) -> IntSamplerConfig:
        """The core sampler options of these flags (ValueError naming the flag if one is bad)."""
        sampler = self.int_sampler
        if self.int_random_subset:
            if sampler not in ("int", "random"):
                raise ValueError(
                    "--pipeline.int-random-subset True is INT's control: it needs --pipeline.int-sampler int "
                    f"(or use --pipeline.int-sampler random), got --pipeline.int-sampler {sampler}"
                )
            sampler = "random"
        try:
            mirrored = {name: getattr(self, f"int_{name}") for name in MIRRORED_SAMPLER_OPTIONS}
            return IntSamplerConfig(sampler=sampler, reuse="rerank", **mirrored)
        except SamplerOptionError as exc:
            raise ValueError(f"--pipeline.int-{exc.field.replace('_', '-')} {exc.problem}") from None


ERROR_MAP_SETTINGS: Dict[str, Any] = {
    "int_enabled": True,
    "int_sampler": "error-map",
    "int_ratio_kind": "constant",
    "int_r0": 1.0,
    "int_pool_batches": 4,
}
"""The int-map-* methods' pipeline flags: every step trains a full batch of B rays drawn by the error map from a fresh
pool of 4 B candidates, each ray's loss importance-weighted."""


def error_map_pipeline(pipeline: VanillaPipelineConfig, **flags: Any) -> InrPipelineConfig:
    """``pipeline`` (a nerfstudio ``VanillaPipelineConfig``: its datamanager, model and the rest) as an
    :class:`InrPipelineConfig` that draws every training batch by the error map (:data:`ERROR_MAP_SETTINGS`).

    The model must take per-ray loss weights (``takes_ray_loss_weights``; see the module docstring) and the
    datamanager must give ray batches with ``indices`` (nerfstudio's VanillaDataManager does).

    Args:
        pipeline: the method's pipeline config (not modified).
        flags: further ``int_*`` fields, e.g. ``int_error_map_cell=8``; they override the error-map settings.
    """
    copied = {
        f.name: getattr(pipeline, f.name)
        for f in dataclasses.fields(VanillaPipelineConfig)
        if f.init and f.name != "_target"
    }
    return InrPipelineConfig(**copied, **{**ERROR_MAP_SETTINGS, **flags})


class TrainLosses(NamedTuple):
    """One training step of :class:`InrPipeline` for trainers: nerfstudio's three values and the curvature loss."""

    model_outputs: Dict[str, Any]
    loss_dict: Dict[str, Tensor]
    metrics_dict: Dict[str, Any]
    curvature_loss: Tensor | None
    """The loss whose curvature ESGD takes (the true loss when the training loss is IGA's surrogate); None: the
    training loss itself."""


class InrPipeline(VanillaPipeline):
    """VanillaPipeline whose training step optionally trains on INT-sampled rays (see the module docstring)."""

    config: InrPipelineConfig

    def __init__(self, config: InrPipelineConfig, *args: Any, **kwargs: Any) -> None:
        super().__init__(config, *args, **kwargs)
        self._sampler_config = config.int_sampler_config()
        if config.int_enabled and self._sampler_config.weights_loss:
            if getattr(config.model, "iga", False):
                raise ValueError(
                    f"--pipeline.int-sampler {self._sampler_config.sampler} weights each ray's loss, which IGA's "
                    "surrogate loss does not take: set --pipeline.int-alpha 0 or --pipeline.model.iga False"
                )
            if not getattr(self.model, "takes_ray_loss_weights", False):
                raise ValueError(
                    f"--pipeline.int-sampler {self._sampler_config.sampler} weights each ray's loss "
                    f"(batch[{LOSS_WEIGHTS_KEY!r}]), which {type(self.model).__name__} does not declare it takes "
                    "(takes_ray_loss_weights): set --pipeline.int-alpha 0, or use a model whose get_loss_dict weights "
                    "its RGB term (see int_pipeline's module docstring)"
                )
        self._total_steps: int | None = config.int_total_steps
        self._total_steps_origin = "--pipeline.int-total-steps" if config.int_total_steps is not None else ""
        self.int_sampler: IntSampler | None = None
        """The INT sampler (created once T is known: first training step or trainer set-up)."""
        self._pool_rays: RayBundle | None = None
        """The rays of the sampler's current pool (P,), aligned with its positions; None when the pool holds pixels
        only and the rays of the rows a step uses are generated then (:meth:`_pool_rays_at`)."""
        self._pool_batch: Dict[str, Tensor] | None = None
        """The batch rows of the current pool (each first dim P)."""
        self._image_hw: Tuple[int, int] | None = None
        self._pending_state: Dict[str, Any] | None = None
        """INT state read from a checkpoint, applied when the sampler is created (T known)."""
        self._pending_rng: Dict[str, Tensor] | None = None
        """Random state read from a checkpoint, restored at the first training step."""

    # ------------------------------------------------------------------------------------------- set-up
    def get_training_callbacks(
        self, training_callback_attributes: TrainingCallbackAttributes
    ) -> List[TrainingCallback]:
        """The datamanager's and model's callbacks; also takes T from the trainer when int_total_steps is None (the
        step at which it stops: resumed step + max-num-iterations) and checks a resumed INT state against it."""
        trainer = training_callback_attributes.trainer
        if self._total_steps is None and trainer is not None:
            start = int(getattr(trainer, "_start_step", 0))
            iterations = int(trainer.config.max_num_iterations)
            self._total_steps = start + iterations
            self._total_steps_origin = (
                f"resumed step {start} + --max-num-iterations {iterations}" if start else "--max-num-iterations"
            )
        if self.config.int_enabled and self._total_steps is not None:
            self._ensure_sampler()
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
    def int_schedule(self) -> IntSchedule | None:
        """The ratio/interval schedule over T, or None while T is unknown (safe to read at any time: the viewer
        reads every property of the pipeline)."""
        if self._total_steps is None:
            return None
        return self._sampler_config.schedule(int(self._total_steps))

    def _ensure_sampler(self) -> IntSampler:
        """Create the sampler once T is known and apply a checkpoint's INT state (refusing another schedule)."""
        if self.int_sampler is not None:
            return self.int_sampler
        if self._total_steps is None:
            raise ValueError(
                "INT needs the number of training steps: set --pipeline.int-total-steps, or train through "
                "nerfstudio's Trainer (which provides max-num-iterations)"
            )
        height, width = self._image_size()
        num_images = len(self.datamanager.train_dataset)
        cell = int(self.config.int_error_map_cell)
        sampler = IntSampler(
            self._sampler_config,
            int(self._total_steps),
            num_points=num_images * height * width,
            num_cells=num_images * (-(-height // cell)) * (-(-width // cell)),
            generator=torch.Generator().manual_seed(torch.initial_seed()),
        )
        pending = self._pending_state
        if pending is not None:
            try:
                sampler.load_state_dict(pending["sampler"], device=self.device)
            except ValueError as exc:
                saved_steps = pending["sampler"].get("total_steps")
                raise ValueError(
                    f"cannot resume INT from this checkpoint: {exc}. This run's T = {self._total_steps} comes from "
                    f"{self._total_steps_origin}; resume with the saved schedule, e.g. --pipeline.int-total-steps "
                    f"{saved_steps} (and the same INT flags)"
                ) from None
            if pending["pool_batch"] is not None:
                self._pool_batch = _to_device(pending["pool_batch"], self.device)
            if pending["pool_rays"] is not None:
                self._pool_rays = RayBundle(**_to_device(pending["pool_rays"], self.device))
            self._pending_state = None
        self.int_sampler = sampler
        return sampler

    def _image_size(self) -> Tuple[int, int]:
        """(H, W) of the largest training image."""
        if self._image_hw is None:
            cameras = self.datamanager.train_dataset.cameras
            self._image_hw = (int(cameras.height.max()), int(cameras.width.max()))
        return self._image_hw

    # ------------------------------------------------------------------------------------------- state
    def get_extra_state(self) -> Dict[str, Any]:
        """INT's state for nerfstudio's checkpoint (key ``_extra_state`` of the pipeline's state dict): the sampler's
        state, its pool's rays and batch rows, and the torch random state; empty when INT is off or has not run."""
        if not self.config.int_enabled:
            return {}
        if self.int_sampler is None:
            return {} if self._pending_state is None else dict(self._pending_state)
        rng = {"cpu": torch.get_rng_state()}
        if self.device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(self.device)
        return {
            "format": EXTRA_STATE_FORMAT,
            "sampler": self.int_sampler.state_dict(),
            "pool_rays": None if self._pool_rays is None else _bundle_fields(self._pool_rays),
            "pool_batch": self._pool_batch,
            "rng": rng,
        }

    def set_extra_state(self, state: Any) -> None:
        """Read :meth:`get_extra_state`'s dict; applied (and checked against this run's schedule) when the trainer
        sets up its callbacks or at the first training step, the random state at the first training step; ns-eval
        and ns-render never use it."""
        if not state:
            return
        if not isinstance(state, dict) or state.get("format") != EXTRA_STATE_FORMAT:
            raise ValueError(f"the checkpoint's INT state is not in the expected format {EXTRA_STATE_FORMAT!r}")
        if not self.config.int_enabled:
            return
        self._pending_state = {k: state[k] for k in ("format", "sampler", "pool_rays", "pool_batch", "rng")}
        self._pending_rng = state["rng"]
        self.int_sampler = None
        self._pool_rays = self._pool_batch = None

    # ------------------------------------------------------------------------------------------- training
    def rays_per_step(self, step: int) -> Tuple[int, int]:
        """(rays trained, rays scored) at ``step`` for a run from step 0 without forced rays. Vanilla: ``(B, 0)``."""
        batch_rays = self.datamanager.get_train_rays_per_batch()
        if not self.config.int_enabled:
            return batch_rays, 0
        sampler = self.int_sampler
        if sampler is None:
            if self._total_steps is None:
                self._ensure_sampler()  # raises the clear "INT needs the number of training steps" error
            sampler = IntSampler(self._sampler_config, int(self._total_steps), num_cells=1)  # type: ignore[arg-type]
        return sampler.planned_counts(step, batch_rays, self.config.int_pool_batches * batch_rays)

    @profiler.time_function
    def get_train_loss_dict(self, step: int) -> Tuple[Dict[str, Any], Dict[str, Tensor], Dict[str, Any]]:
        """nerfstudio's training step (:meth:`train_step` without the batch)."""
        model_outputs, _, loss_dict, metrics_dict = self.train_step(step)
        return model_outputs, loss_dict, metrics_dict

    @profiler.time_function
    def get_train_losses(self, step: int) -> TrainLosses:
        """The training step with the loss an optimizer needing curvature takes it on (``ESGDTrainer``): the model's
        ``curvature_loss(outputs, batch)`` (None for models without one: their training loss is the true loss)."""
        model_outputs, batch, loss_dict, metrics_dict = self.train_step(step)
        curvature_loss = getattr(self.model, "curvature_loss", None)
        curvature = curvature_loss(model_outputs, batch) if curvature_loss is not None else None
        return TrainLosses(model_outputs, loss_dict, metrics_dict, curvature)

    def train_step(self, step: int) -> Tuple[Dict[str, Any], Dict[str, Tensor], Dict[str, Tensor], Dict[str, Any]]:
        """(model outputs, batch, loss dict, metrics dict) of vanilla's training step on all rays of a batch, or (INT)
        of the step on the rays the sampler picks from its pool."""
        if not self.config.int_enabled:  # VanillaPipeline.get_train_loss_dict, keeping the batch
            ray_bundle, batch = self.datamanager.next_train(step)
            model_outputs = self._model(ray_bundle)
            metrics_dict = self.model.get_metrics_dict(model_outputs, batch)
            return model_outputs, batch, self.model.get_loss_dict(model_outputs, batch, metrics_dict), metrics_dict
        sampler = self._ensure_sampler()
        if self._pending_rng is not None:  # resumed: continue the random stream where the checkpoint left it
            torch.set_rng_state(self._pending_rng["cpu"])
            if "cuda" in self._pending_rng and self.device.type == "cuda":
                torch.cuda.set_rng_state(self._pending_rng["cuda"], self.device)
            self._pending_rng = None
        batch_rays = self.datamanager.get_train_rays_per_batch()
        selection = sampler.select(step, lambda: self._draw_pool(step), self._score_pool, batch_size=batch_rays)
        assert self._pool_batch is not None
        indices = selection.indices
        ray_bundle = self._pool_rays_at(indices)
        batch = {name: value[indices.to(value.device)] for name, value in self._pool_batch.items()}
        if selection.weights is not None:
            batch[LOSS_WEIGHTS_KEY] = selection.weights.to(self.device)
        model_outputs = self._model(ray_bundle)
        metrics_dict = self.model.get_metrics_dict(model_outputs, batch)
        loss_dict = self.model.get_loss_dict(model_outputs, batch, metrics_dict)
        if sampler.needs_errors:  # free refresh: the training forward's (pre-update) errors of the trained rays
            sampler.record(selection, self._ray_errors(model_outputs, batch))
        metrics_dict.update(self._int_metrics(selection, sampler))
        return model_outputs, batch, loss_dict, metrics_dict

    def _int_metrics(self, selection: Selection, sampler: IntSampler) -> Dict[str, float]:
        pool = sampler.pool
        metrics = {
            "int_ratio": float(selection.ratio),
            "int_interval": float(selection.interval),
            "int_reselected": float(selection.new_pool),
            "int_pool_age": float(selection.step - pool.step) if pool is not None else 0.0,
            "int_forced_rays": float(selection.num_forced),
            "rays_trained": float(selection.num_trained),
            "rays_scored": float(selection.num_scored),
        }
        if self._sampler_config.sampler in ("soft", "error-map"):
            metrics["int_alpha"] = float(selection.alpha)
        return metrics

    def _draw_pool(self, step: int) -> PoolCandidates:
        """Draw ``int_pool_batches`` fresh datamanager batches as the sampler's new pool.

        With nerfstudio's ``VanillaDataManager.next_train`` (image batch -> pixel sampler -> ray generator) the pool
        keeps the pixels' batch rows only (same pixels, same random numbers as ``next_train``), and the rays of the
        rows a step trains or scores are generated then (:meth:`_pool_rays_at`): the error map draws B of 4 B
        candidates, whose other rays were generated for nothing. Other datamanagers' batches are kept with their rays.
        """
        datamanager = self.datamanager
        pixels_only = _next_train_splits(datamanager)
        bundles, batches = [], []
        for _ in range(self.config.int_pool_batches):
            if pixels_only:  # VanillaDataManager.next_train without its ray generator
                datamanager.train_count += 1
                batch = datamanager.train_pixel_sampler.sample(next(datamanager.iter_train_image_dataloader))
            else:
                ray_bundle, batch = datamanager.next_train(step)
                bundles.append(ray_bundle)
            if "indices" not in batch:
                raise ValueError(
                    "INT needs ray batches with per-ray 'indices' (camera, y, x); "
                    f"{type(self.datamanager).__name__} returned keys {sorted(batch)}"
                )
            batches.append(batch)
        self._pool_rays = cat_ray_bundles(bundles) if bundles else None
        self._pool_batch = {name: _cat_batch_values(name, [b[name] for b in batches]) for name in batches[0]}
        indices = self._pool_batch["indices"]
        if indices.dim() != 2 or indices.shape[1] != 3:
            raise ValueError(f"batch['indices'] must have shape (n, 3) = (camera, y, x), got {tuple(indices.shape)}")
        height, width = self._image_size()
        indices = indices.long().to(self.device)
        ids = (indices[:, 0] * height + indices[:, 1]) * width + indices[:, 2]
        cells = grid_cells(indices, height, width, int(self.config.int_error_map_cell))
        return PoolCandidates(size=int(ids.shape[0]), ids=ids, cells=cells)

    def _score_pool(self, positions: Tensor) -> Tensor:
        """(m,) INT scores of the pool rays at ``positions`` from a no-grad forward."""
        assert self._pool_batch is not None
        rays = self._pool_rays_at(positions)
        whole = positions.numel() == self._pool_batch["indices"].shape[0]
        batch = self._pool_batch if whole else {k: v[positions.to(v.device)] for k, v in self._pool_batch.items()}
        with torch.no_grad():
            return self._ray_errors(self.model(rays), batch).to(self.device)

    def _pool_rays_at(self, positions: Tensor) -> RayBundle:
        """The rays (m,) of the pool's rows at ``positions`` (m,) long: the pool's stored rays, or the datamanager's
        ray generator run on those rows' pixel indices. Always a new bundle: a model may move a forward's rays in
        place (nerfacto's camera optimizer), which must not touch the rays the pool uses later."""
        if self._pool_rays is not None:
            return self._pool_rays[positions]
        assert self._pool_batch is not None
        pixels = self._pool_batch["indices"]
        return self.datamanager.train_ray_generator(pixels[positions.to(pixels.device)])

    def _ray_errors(self, outputs: Dict[str, Any], batch: Dict[str, Tensor]) -> Tensor:
        """(n,) INT scores: L1 error of the rendered colour (fine if present) against the ground truth, the background
        blended as the model's RGB loss blends it (its ``renderer_rgb``)."""
        suffix = "_fine" if "rgb_fine" in outputs else ""
        renderer = getattr(self.model, "renderer_rgb", None)
        if renderer is None or f"rgb{suffix}" not in outputs or f"accumulation{suffix}" not in outputs:
            raise ValueError(
                f"INT scores rays by the rendered colour: {type(self.model).__name__} needs a renderer_rgb "
                f"(nerfstudio's RGBRenderer) and 'rgb' / 'accumulation' outputs, got outputs {sorted(outputs)}"
            )
        pred, target = renderer.blend_background_for_loss_computation(
            pred_image=outputs[f"rgb{suffix}"],
            pred_accumulation=outputs[f"accumulation{suffix}"],
            gt_image=batch["image"].to(outputs[f"rgb{suffix}"].device),
        )
        return int_scores(pred, target[..., : pred.shape[-1]])


def _next_train_splits(datamanager: Any) -> bool:
    """Whether ``datamanager.next_train`` is ``VanillaDataManager``'s own (image batch -> ``train_pixel_sampler`` ->
    ``train_ray_generator``), so that a pool can take its pixels and generate the rays of some rows later."""
    parts = ("iter_train_image_dataloader", "train_pixel_sampler", "train_ray_generator", "train_count")
    return type(datamanager).next_train is VanillaDataManager.next_train and all(
        getattr(datamanager, name, None) is not None for name in parts
    )


def _bundle_fields(bundle: RayBundle) -> Dict[str, Any]:
    """A RayBundle as a dict of its fields (tensors, dicts of tensors or None), for checkpoints."""
    return {f.name: getattr(bundle, f.name) for f in dataclasses.fields(RayBundle)}


def _to_device(values: Dict[str, Any], device: torch.device) -> Dict[str, Any]:
    def move(value: Any) -> Any:
        if isinstance(value, Tensor):
            return value.to(device)
        if isinstance(value, dict):
            return {k: move(v) for k, v in value.items()}
        return value

    return {k: move(v) for k, v in values.items()}


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


__all__ = [
    "ERROR_MAP_SETTINGS",
    "InrPipeline",
    "InrPipelineConfig",
    "LOSS_WEIGHTS_KEY",
    "MAX_SKIP_COUNT",
    "cat_ray_bundles",
    "error_map_pipeline",
]
