"""ESGD in nerfstudio: an optimizer config, a run-length exponential lr decay, and a Trainer that keeps the graph.

ESGD (``core.esgd``, methods.md section 3) needs ``loss.backward(create_graph=True)`` on its curvature steps (the
first ``d_warmup`` steps, then every ``update_d_every``-th) and a plain backward otherwise. nerfstudio's Trainer
always calls a plain backward, so :class:`ESGDTrainer` overrides ``train_iteration`` for runs with an ESGD
optimizer; without one it is nerfstudio's Trainer call for call (every method of this package uses it).

Command line (every method's trainer config is :class:`ESGDTrainerConfig`):

- ``--optimizer {configured,esgd,adam}`` picks the optimizer and lr schedule of every parameter group:
  ``configured`` uses ``--optimizers`` as given (the default of every method but gauss-nerf); ``esgd`` and ``adam``
  use ``--optimizer-presets.esgd`` / ``--optimizer-presets.adam`` (ESGD lr 1 -> 0.01, Adam lr 5e-4 -> 1e-4 as in
  BARF/GARF, both decaying exponentially over the run), e.g. ``ns-train gauss-nerf --optimizer adam`` for the
  control, ``--optimizer-presets.esgd.optimizer.lr 0.5`` to change ESGD's lr, and
  ``--optimizer-presets.esgd.optimizer.hvp-source gradient`` for the g^2 ablation.
- ``ESGDOptimizerConfig`` also works in a plain ``optimizers={"fields": {"optimizer": ESGDOptimizerConfig(...)}}``.

With IGA (whose training loss is a stop-gradient surrogate) the Hessian-vector products are taken on the true MSE:
on steps where the model's metrics dict has ``iga_applied`` = 1, the trainer calls
``optimizer.accumulate_curvature(outputs["true_loss"])`` (the graph-carrying true loss InrNeRFModel puts in its
outputs, see ``iga_nerf``) before the surrogate's backward.

Not supported with ESGD (refused with a message): mixed precision / grad scaler (autocast and loss scaling corrupt
the double backward, and the Gaussian field is fp32) and multi-GPU DDP (no double backward through its reducer).
"""

from __future__ import annotations

import copy
import functools
import math
import warnings
from dataclasses import dataclass, field, replace
from typing import Any, Dict, List, Literal, Tuple, Type, cast

import torch
from nerfstudio.engine.optimizers import AdamOptimizerConfig, OptimizerConfig, Optimizers
from nerfstudio.engine.schedulers import Scheduler, SchedulerConfig
from nerfstudio.engine.trainer import TRAIN_INTERATION_OUTPUT, Trainer, TrainerConfig
from nerfstudio.utils import profiler
from nerfstudio.utils.rich_utils import CONSOLE
from torch import Tensor
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

from nerf_inr_methods.core.esgd import ESGD, DBiasCorrection, HvpSource
from nerf_inr_methods.nerfstudio_plugin.iga_nerf import TRUE_LOSS_KEY

SURROGATE_LOSS_FLAG = "iga_applied"
"""Metrics-dict key set to 1 by the model on steps whose training loss is a surrogate (IGA); the curvature is then
taken on the model outputs' ``TRUE_LOSS_KEY`` entry (the graph-carrying true loss)."""
OptimizerChoice = Literal["configured", "esgd", "adam"]
OPTIMIZER_CHOICES: Tuple[str, ...] = ("configured", "esgd", "adam")


@dataclass
class ESGDOptimizerConfig(OptimizerConfig):
    """ESGD (equilibrated SGD with Adam-style momentum) with the official INR code's defaults and NeRF's lr 1."""

    _target: Type = ESGD
    lr: float = 1.0
    """Step size (NeRF: 1 decaying exponentially to 0.01; images and shapes: 0.15)."""
    eps: float = 1e-4
    """Added to sqrt(d_hat) in the denominator."""
    betas: Tuple[float, float] = (0.9, 0.999)
    """EMA factors of the gradient and of the squared Hessian-vector products."""
    weight_decay: float = 0.0
    """Decoupled weight decay."""
    update_d_every: int = 100
    """After the warm-up, estimate the curvature (one double backward) every this many steps."""
    d_warmup: int = 50
    """Number of initial steps that all estimate the curvature."""
    hvp_source: HvpSource = "hessian"
    """hessian: ESGD. gradient: the ablation with (Hv)^2 replaced by g^2 on the same schedule (no double backward)."""
    d_bias_correction: DBiasCorrection = "curvature_steps"
    """Bias correction of d: by the number of curvature steps, or by all steps (official code: implicit warm-up)."""
    rademacher_seed: int | None = None
    """Seed of a private generator for the Rademacher vectors of the HVPs (None: torch's global RNG). With a seed,
    ESGD leaves the global random stream (ray sampling) as an Adam run's; its state is not checkpointed."""

    def setup(self, params: Any) -> ESGD:
        """ESGD on ``params`` (a list of parameters or of parameter-group dicts) with this config."""
        generator = None
        if self.rademacher_seed is not None:
            generator = torch.Generator().manual_seed(int(self.rademacher_seed))
        return ESGD(
            params,
            lr=self.lr,
            betas=tuple(self.betas),  # type: ignore[arg-type]
            eps=self.eps,
            weight_decay=self.weight_decay,
            update_d_every=self.update_d_every,
            d_warmup=self.d_warmup,
            hvp_source=self.hvp_source,
            d_bias_correction=self.d_bias_correction,
            generator=generator,
        )


@dataclass
class ExpDecaySchedulerConfig(SchedulerConfig):
    """Exponential (log-linear) decay of the lr from the optimizer's lr to lr_final, then constant; python floats."""

    _target: Type = field(default_factory=lambda: ExpDecayScheduler)
    lr_final: float = 0.01
    """Learning rate reached at max-steps."""
    max_steps: int | None = None
    """Steps of the decay. None: the run's max-num-iterations (a resumed run keeps the value in its checkpoint)."""


class ExpDecayScheduler(Scheduler):
    """Builds :class:`ExpDecayLR` from an :class:`ExpDecaySchedulerConfig` (whose max_steps must be set)."""

    config: ExpDecaySchedulerConfig

    def get_scheduler(self, optimizer: Optimizer, lr_init: float) -> LRScheduler:
        if self.config.max_steps is None:
            raise ValueError(
                "ExpDecaySchedulerConfig.max_steps is None: train through ESGDTrainer (which sets it to "
                "max-num-iterations) or set --optimizers.<group>.scheduler.max-steps"
            )
        return ExpDecayLR(optimizer, lr_init=lr_init, lr_final=self.config.lr_final, max_steps=self.config.max_steps)


class ExpDecayLR(LRScheduler):
    """``lr(t) = base_lr * (lr_final / lr_init) ** min(t / max_steps, 1)`` at step t (python floats, checkpoint-safe).

    Args:
        optimizer: the optimizer whose groups' lr is set (each group scales from its own initial lr).
        lr_init: the configured lr (> 0) that ``lr_final`` is relative to.
        lr_final: lr reached at ``max_steps`` (> 0).
        max_steps: number of steps of the decay (>= 1).
    """

    def __init__(self, optimizer: Optimizer, lr_init: float, lr_final: float, max_steps: int, last_epoch: int = -1):
        if not (math.isfinite(lr_init) and lr_init > 0 and math.isfinite(lr_final) and lr_final > 0):
            raise ValueError(f"exponential lr decay needs lr > 0 and lr-final > 0, got lr {lr_init!r}, {lr_final!r}")
        if isinstance(max_steps, bool) or int(max_steps) != max_steps or max_steps < 1:
            raise ValueError(f"exponential lr decay: max-steps must be an integer >= 1, got {max_steps!r}")
        self.ratio = float(lr_final) / float(lr_init)
        self.max_steps = int(max_steps)
        super().__init__(optimizer, last_epoch)

    def factor(self, step: int) -> float:
        """Multiplier of the initial lr at ``step`` (1 at step 0, lr_final / lr_init from max_steps on)."""
        return float(self.ratio ** min(max(step, 0) / self.max_steps, 1.0))

    def get_lr(self) -> List[float]:
        return [float(base) * self.factor(self.last_epoch) for base in self.base_lrs]


def esgd_preset() -> Dict[str, Any]:
    """ESGD lr 1 decaying exponentially to 0.01 over the run (methods.md, NeRF)."""
    return {"optimizer": ESGDOptimizerConfig(lr=1.0), "scheduler": ExpDecaySchedulerConfig(lr_final=0.01)}


def adam_preset() -> Dict[str, Any]:
    """Adam lr 5e-4 decaying exponentially to 1e-4 over the run (BARF/GARF's NeRF schedule)."""
    return {"optimizer": AdamOptimizerConfig(lr=5e-4, eps=1e-8), "scheduler": ExpDecaySchedulerConfig(lr_final=1e-4)}


@dataclass
class ESGDTrainerConfig(TrainerConfig):
    """nerfstudio's TrainerConfig plus an optimizer switch; trains with :class:`ESGDTrainer`."""

    _target: Type = field(default_factory=lambda: ESGDTrainer)
    optimizer: OptimizerChoice = "configured"
    """Optimizer and lr schedule of every parameter group: configured = --optimizers as given; esgd / adam = the
    --optimizer-presets entry (ESGD lr 1 -> 0.01, Adam 5e-4 -> 1e-4, exponential decay over the run)."""
    optimizer_presets: Dict[str, Dict[str, Any]] = field(
        default_factory=lambda: {"esgd": esgd_preset(), "adam": adam_preset()}
    )
    """Optimizer and scheduler configs that --optimizer esgd / adam apply to every parameter group."""
    flush_denormal: bool = True
    """On CPU, flush denormal floats to zero while training (torch.set_flush_denormal): trained NeRF fields produce
    many, and x86 arithmetic on them is slow (measured here: a trained iga-nerf step 0.31 -> 0.11 s, vanilla
    0.22 -> 0.12 s). Values below 1e-38 become 0; no effect on CUDA."""

    def selected_optimizers(self, group_names: List[str]) -> Dict[str, Dict[str, Any]]:
        """Per parameter group, a copy of the {"optimizer", "scheduler"} configs the run uses, with every
        :class:`ExpDecaySchedulerConfig` whose max_steps is None set to max-num-iterations.

        Args:
            group_names: the pipeline's parameter groups (used by the esgd / adam presets).
        """
        if self.optimizer not in OPTIMIZER_CHOICES:
            raise ValueError(f"--optimizer must be one of {OPTIMIZER_CHOICES}, got {self.optimizer!r}")
        if self.optimizer == "configured":
            selected = {name: dict(group) for name, group in self.optimizers.items()}
        else:
            if self.optimizer not in self.optimizer_presets:
                raise ValueError(
                    f"--optimizer {self.optimizer}: no such entry in --optimizer-presets "
                    f"(has {sorted(self.optimizer_presets)})"
                )
            preset = self.optimizer_presets[self.optimizer]
            if "optimizer" not in preset:
                raise ValueError(f"--optimizer-presets.{self.optimizer} must have an 'optimizer' entry, got {preset}")
            selected = {name: {"scheduler": None, **preset} for name in group_names}
        selected = {name: copy.deepcopy(group) for name, group in selected.items()}  # no config shared by groups
        for group in selected.values():
            scheduler = group.get("scheduler")
            if isinstance(scheduler, ExpDecaySchedulerConfig) and scheduler.max_steps is None:
                group["scheduler"] = replace(scheduler, max_steps=int(self.max_num_iterations))
        return selected


class ESGDTrainer(Trainer):
    """nerfstudio Trainer whose backward keeps the graph on ESGD's curvature steps (see the module docstring)."""

    config: ESGDTrainerConfig

    def setup(self, test_mode: Literal["test", "val", "inference"] = "val") -> None:
        """nerfstudio's set-up, after flushing denormals on CPU if ``flush_denormal`` (process-wide setting)."""
        if self.config.flush_denormal and torch.device(self.device).type == "cpu":
            torch.set_flush_denormal(True)
        super().setup(test_mode=test_mode)

    def setup_optimizers(self) -> Optimizers:
        """Optimizers of the selected configs (``ESGDTrainerConfig.optimizer``); refuses unsupported ESGD set-ups."""
        param_groups = self.pipeline.get_param_groups()
        selected = self.config.selected_optimizers(list(param_groups))
        optimizers = Optimizers(selected, param_groups)
        esgd = [name for name, opt in optimizers.optimizers.items() if isinstance(opt, ESGD)]
        if esgd:
            if self.config.mixed_precision or self.config.use_grad_scaler:
                raise ValueError(
                    "ESGD cannot train with --mixed-precision True or --use-grad-scaler True: its Hessian-vector "
                    "products differentiate the fp32 gradient a second time, which autocast and loss scaling corrupt "
                    "(and Gaussian activations underflow in half precision). Use --mixed-precision False "
                    "--use-grad-scaler False, or --optimizer adam."
                )
            if self.world_size > 1:
                raise ValueError(
                    "ESGD's double backward is not supported with multi-GPU (DDP) training; use one device or "
                    "--optimizer adam."
                )
        if self.config.optimizer != "configured":
            for name, group in selected.items():
                scheduler = group.get("scheduler")
                decay = f", lr -> {scheduler.lr_final:g} over {scheduler.max_steps} steps" if scheduler else ""
                opt = group["optimizer"]
                CONSOLE.print(
                    f"--optimizer {self.config.optimizer}: group {name!r} trains with "
                    f"{type(optimizers.optimizers[name]).__name__} lr {opt.lr:g}{decay}"
                )
        return optimizers

    def esgd_optimizers(self) -> Dict[str, ESGD]:
        """The parameter groups whose optimizer is ESGD."""
        return {name: opt for name, opt in self.optimizers.optimizers.items() if isinstance(opt, ESGD)}

    @profiler.time_function
    def train_iteration(self, step: int) -> TRAIN_INTERATION_OUTPUT:
        """nerfstudio's ``train_iteration``; with ESGD, the backward keeps the graph on curvature steps.

        Adds the metric ``esgd_curvature_step`` (1 on steps where some ESGD optimizer updates its curvature).
        """
        esgd = self.esgd_optimizers()
        if not esgd:
            return super().train_iteration(step)
        accumulation = self.gradient_accumulation_steps
        groups = list(self.optimizers.parameters.keys())
        self.optimizers.zero_grad_some([g for g in groups if step % accumulation[g] == 0])

        model_outputs, loss_dict, metrics_dict = self.pipeline.get_train_loss_dict(step=step)
        loss = functools.reduce(torch.add, loss_dict.values())
        curvature_step = any(opt.is_curvature_step() for opt in esgd.values())
        objective = curvature_objective(model_outputs, metrics_dict)
        if objective is not None:  # surrogate loss (IGA): curvature of the true loss, before the surrogate backward
            for opt in esgd.values():
                opt.accumulate_curvature(objective)
        create_graph = any(opt.should_create_graph() for opt in esgd.values())
        with warnings.catch_warnings():
            # ESGD.step() detaches p.grad after the HVP, which breaks the param <-> grad cycle this warns about.
            warnings.filterwarnings("ignore", message=r"Using backward\(\) with create_graph=True")
            loss.backward(create_graph=create_graph)  # type: ignore[no-untyped-call]
        needs_step = [g for g in groups if step % accumulation[g] == accumulation[g] - 1]
        self.optimizers.optimizer_scaler_step_some(self.grad_scaler, needs_step)
        if create_graph:
            release_grad_graphs(p for params in self.optimizers.parameters.values() for p in params)

        if self.config.log_gradients:
            total_grad = 0
            for tag, value in self.pipeline.model.named_parameters():
                assert tag != "Total"
                if value.grad is not None:
                    grad = value.grad.norm()
                    metrics_dict[f"Gradients/{tag}"] = grad  # type: ignore
                    total_grad += grad
            metrics_dict["Gradients/Total"] = cast(torch.Tensor, total_grad)  # type: ignore

        # No grad scaler with ESGD (refused in setup_optimizers): every step is a real optimizer step.
        self.optimizers.scheduler_step_all(step)
        metrics_dict["esgd_curvature_step"] = torch.tensor(float(curvature_step))
        return loss, loss_dict, metrics_dict  # type: ignore


def curvature_objective(outputs: Any, metrics_dict: Dict[str, Any]) -> Tensor | None:
    """The true loss ESGD must take its curvature on when this step's training loss is a surrogate, else None.

    Args:
        outputs: the model outputs of the step (``pipeline.get_train_loss_dict``'s first value); on surrogate steps
            ``outputs[TRUE_LOSS_KEY]`` is the graph-carrying true loss (scalar).
        metrics_dict: the step's training metrics; ``SURROGATE_LOSS_FLAG`` is 1 on surrogate (IGA-adjusted) steps.
    """
    flag = metrics_dict.get(SURROGATE_LOSS_FLAG)
    if flag is None or not float(flag):
        return None
    objective = outputs.get(TRUE_LOSS_KEY) if isinstance(outputs, dict) else None
    if not isinstance(objective, Tensor) or objective.numel() != 1 or not objective.requires_grad:
        raise ValueError(
            f"the training loss is a surrogate ({SURROGATE_LOSS_FLAG}=1) but the model outputs hold no graph-carrying "
            f"scalar {TRUE_LOSS_KEY!r}: ESGD needs the true loss for its Hessian-vector products"
        )
    return objective


def release_grad_graphs(params: Any) -> None:
    """Detach every ``p.grad`` that still carries a double-backward graph (values unchanged)."""
    for p in params:
        if p.grad is not None and p.grad.grad_fn is not None:
            p.grad = p.grad.detach()
