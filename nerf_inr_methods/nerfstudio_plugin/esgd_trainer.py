"""ESGD in nerfstudio: an optimizer config, a run-length exponential lr decay, and a Trainer that keeps the graph.

ESGD (``core.esgd``, methods.md section 3) needs ``loss.backward(create_graph=True)`` on its curvature steps (the
first ``d_warmup`` steps, then every ``update_d_every``-th) and a plain backward otherwise. nerfstudio's Trainer
always calls a plain backward, so :class:`ESGDTrainer` overrides ``train_iteration`` for runs with an ESGD
optimizer; without one it is nerfstudio's Trainer call for call (every method of this package uses it).

Command line (every method's trainer config is :class:`ESGDTrainerConfig`):

- ``--optimizer {configured,esgd,adam}`` picks the optimizer and lr schedule of every parameter group:
  ``configured`` uses ``--optimizers`` as given (the default of every method but gauss-nerf); ``esgd`` and ``adam``
  use ``--optimizer-presets.esgd`` / ``--optimizer-presets.adam`` (ESGD lr 10 -> 0.1 with the robust recipe, Adam lr
  5e-4 -> 1e-4 as in BARF/GARF, both decaying exponentially over the run), e.g. ``ns-train gauss-nerf --optimizer
  adam`` for the control, ``--optimizer-presets.esgd.optimizer.lr 5`` to change ESGD's lr, and
  ``--optimizer-presets.esgd.optimizer.hvp-source gradient`` for the g^2 ablation.
- ``--optimizer-presets.esgd.optimizer.recipe official`` trains with the official INR code's recipe instead of the
  robust default (``core.esgd.ESGDConfig``; every field of it is a flag of ``--optimizer-presets.esgd.optimizer``),
  at the paper's NeRF lr 1 -> 0.01 (the lr left unset is the recipe's, ``core.esgd.default_lr``).
- ``ESGDOptimizerConfig`` also works in a plain ``optimizers={"fields": {"optimizer": ESGDOptimizerConfig(...)}}``.
- The lr schedules are nerfstudio's ``ExponentialDecayScheduler`` (no warm-up), whose ``max_steps`` defaults to the
  run's ``max-num-iterations`` here (:class:`RunLengthExponentialDecaySchedulerConfig`).

With IGA (whose training loss is a stop-gradient surrogate) the Hessian-vector products are taken on the true MSE:
the trainer asks the pipeline for the step's curvature loss (``InrPipeline.get_train_losses``, which calls the
model's ``InrNeRFModel.curvature_loss``: the graph-carrying true loss on IGA-adjusted steps, else None), and the
backward (``core.esgd.esgd_backward``) first takes its curvature, then backpropagates the surrogate.

Not supported with ESGD (refused with a message): mixed precision / grad scaler (autocast and loss scaling corrupt
the double backward, and the Gaussian field is fp32) and multi-GPU DDP (no double backward through its reducer).
"""

from __future__ import annotations

import copy
import functools
from dataclasses import dataclass, field, replace
from typing import Any, Dict, List, Literal, Tuple, Type, cast

import torch
from nerfstudio.engine.optimizers import AdamOptimizerConfig, OptimizerConfig, Optimizers
from nerfstudio.engine.schedulers import ExponentialDecayScheduler, ExponentialDecaySchedulerConfig
from nerfstudio.engine.trainer import TRAIN_INTERATION_OUTPUT, Trainer, TrainerConfig
from nerfstudio.utils import profiler
from nerfstudio.utils.decorators import check_main_thread
from nerfstudio.utils.rich_utils import CONSOLE
from torch import Tensor
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

from nerf_inr_methods.core.esgd import ESGD, ESGDConfig, default_lr, esgd_backward
from nerf_inr_methods.nerfstudio_plugin.checkpoints import restore_trainer, save_trainer_checkpoint
from nerf_inr_methods.nerfstudio_plugin.preflight import preflight

OptimizerChoice = Literal["configured", "esgd", "adam"]
OPTIMIZER_CHOICES: Tuple[str, ...] = ("configured", "esgd", "adam")


@dataclass
class ESGDOptimizerConfig(ESGDConfig, OptimizerConfig):
    """ESGD as a nerfstudio optimizer config: the core's ESGDConfig (recipe, curvature schedule, robustness options)
    plus nerfstudio's lr and gradient clipping; the lr defaults to the recipe's NeRF lr."""

    _target: Type = ESGD
    lr: float | None = None  # type: ignore[assignment]
    """Step size (None: the recipe's NeRF lr, core.esgd.default_lr: robust 10, official 1 as in the paper)."""

    def resolved_lr(self) -> float:
        """``lr``, or the recipe's NeRF default when it is None."""
        return default_lr(self.recipe, "nerf") if self.lr is None else float(self.lr)

    def setup(self, params: Any) -> ESGD:
        """ESGD on ``params`` (a list of parameters or of parameter-group dicts) with this config."""
        return self.build(params, lr=self.resolved_lr())


@dataclass
class RunLengthExponentialDecaySchedulerConfig(ExponentialDecaySchedulerConfig):
    """nerfstudio's exponential decay from the optimizer's lr to lr_final (no warm-up by default), over the run's
    length unless max_steps is given."""

    _target: Type = field(default_factory=lambda: RunLengthExponentialDecayScheduler)
    max_steps: int | None = None
    """Steps of the decay. None: the run's max-num-iterations (set by ESGDTrainerConfig.selected_optimizers)."""
    lr_final_ratio: float | None = None
    """With lr_final None: decay to the optimizer's lr times this (e.g. 0.01, two decades); None: lr_final rules."""

    def resolved(self, lr: float) -> RunLengthExponentialDecaySchedulerConfig:
        """A copy with lr_final set from lr_final_ratio for an optimizer of step size ``lr`` (if lr_final is None)."""
        if self.lr_final is None and self.lr_final_ratio is not None:
            return replace(self, lr_final=float(lr) * float(self.lr_final_ratio), lr_final_ratio=None)
        return self


class RunLengthExponentialDecayScheduler(ExponentialDecayScheduler):
    """nerfstudio's ExponentialDecayScheduler, refusing a max_steps left at None (the trainer fills it)."""

    config: RunLengthExponentialDecaySchedulerConfig

    def get_scheduler(self, optimizer: Optimizer, lr_init: float) -> LRScheduler:
        self.config = self.config.resolved(lr_init)
        if self.config.max_steps is None and self.config.lr_final is None:  # constant lr: no length needed
            self.config = replace(self.config, max_steps=1)
        if self.config.max_steps is None:
            raise ValueError(
                "RunLengthExponentialDecaySchedulerConfig.max_steps is None: train through ESGDTrainer (which sets it "
                "to max-num-iterations) or set --optimizers.<group>.scheduler.max-steps"
            )
        scheduler = super().get_scheduler(optimizer, lr_init)
        # nerfstudio's factor is a numpy float: keep lrs (and checkpointed scheduler states) plain Python floats
        scheduler.lr_lambdas = [lambda step, f=f: float(f(step)) for f in scheduler.lr_lambdas]
        for group in scheduler.optimizer.param_groups:
            group["lr"] = float(group["lr"])
        return scheduler


def esgd_preset() -> Dict[str, Any]:
    """ESGD at its recipe's NeRF lr decaying exponentially 100x over the run: robust 10 -> 0.1, official 1 -> 0.01 (the
    paper's NeRF schedule; ``--optimizer-presets.esgd.optimizer.recipe official`` alone gives it). The lr per recipe
    is the core's (:data:`nerf_inr_methods.core.esgd.DEFAULT_LRS`)."""
    return {
        "optimizer": ESGDOptimizerConfig(),
        "scheduler": RunLengthExponentialDecaySchedulerConfig(lr_final_ratio=0.01),
    }


def adam_preset() -> Dict[str, Any]:
    """Adam lr 5e-4 decaying exponentially to 1e-4 over the run (BARF/GARF's NeRF schedule)."""
    scheduler = RunLengthExponentialDecaySchedulerConfig(lr_final=1e-4)
    return {"optimizer": AdamOptimizerConfig(lr=5e-4, eps=1e-8), "scheduler": scheduler}


@dataclass
class ESGDTrainerConfig(TrainerConfig):
    """nerfstudio's TrainerConfig plus an optimizer switch; trains with :class:`ESGDTrainer`."""

    _target: Type = field(default_factory=lambda: ESGDTrainer)
    optimizer: OptimizerChoice = "configured"
    """Optimizer and lr schedule of every parameter group: configured = --optimizers as given; esgd / adam = the
    --optimizer-presets entry (ESGD robust lr 10 -> 0.1 or official 1 -> 0.01, Adam 5e-4 -> 1e-4, exponential decay
    over the run)."""
    optimizer_presets: Dict[str, Dict[str, Any]] = field(
        default_factory=lambda: {"esgd": esgd_preset(), "adam": adam_preset()}
    )
    """Optimizer and scheduler configs that --optimizer esgd / adam apply to every parameter group."""
    flush_denormal: bool = True
    """On CPU, flush denormal floats to zero while training (torch.set_flush_denormal): trained NeRF fields produce
    many, and x86 arithmetic on them is slow (measured here: a trained iga-nerf step 0.31 -> 0.11 s, vanilla
    0.22 -> 0.12 s). Values below 1e-38 become 0; no effect on CUDA."""

    def print_to_terminal(self) -> None:
        """Check the flags and data and settle the near/far planes (:func:`preflight.preflight`), then print the config:
        ns-train calls this first after parsing, so bad input fails in one line before any long work."""
        preflight(self)
        super().print_to_terminal()

    def selected_optimizers(self, group_names: List[str]) -> Dict[str, Dict[str, Any]]:
        """Per parameter group, a copy of the {"optimizer", "scheduler"} configs the run uses, with every
        :class:`RunLengthExponentialDecaySchedulerConfig` whose max_steps is None set to max-num-iterations.

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
        return {name: resolved_group(group, int(self.max_num_iterations)) for name, group in selected.items()}


def resolved_group(group: Dict[str, Any], max_steps: int | None = None) -> Dict[str, Any]:
    """A deep copy of an ``{"optimizer", "scheduler"}`` group with what its configs leave open filled in: ESGD's lr
    None -> its recipe's NeRF lr, a run-length scheduler's lr_final from its lr_final_ratio, and its max_steps None ->
    ``max_steps`` (the run's max-num-iterations)."""
    group = copy.deepcopy(group)  # no config shared by groups
    optimizer, scheduler = group.get("optimizer"), group.get("scheduler")
    if isinstance(optimizer, ESGDOptimizerConfig) and optimizer.lr is None:
        group["optimizer"] = optimizer = replace(optimizer, lr=optimizer.resolved_lr())
    if isinstance(scheduler, RunLengthExponentialDecaySchedulerConfig):
        if optimizer is not None:
            scheduler = scheduler.resolved(optimizer.lr)
        if scheduler.max_steps is None and max_steps is not None:
            scheduler = replace(scheduler, max_steps=int(max_steps))
        group["scheduler"] = scheduler
    return group


class ESGDTrainer(Trainer):
    """nerfstudio Trainer whose backward keeps the graph on ESGD's curvature steps (see the module docstring)."""

    config: ESGDTrainerConfig

    def setup(self, test_mode: Literal["test", "val", "inference"] = "val") -> None:
        """nerfstudio's set-up, after flushing denormals on CPU if ``flush_denormal`` (process-wide setting)."""
        if self.config.flush_denormal and torch.device(self.device).type == "cpu":
            torch.set_flush_denormal(True)
        super().setup(test_mode=test_mode)

    def _load_checkpoint(self) -> None:
        """nerfstudio's resume with weights_only=True loads, past a truncated newest checkpoint of --load-dir."""
        restore_trainer(self)

    @check_main_thread
    def save_checkpoint(self, step: int) -> None:
        """nerfstudio's checkpoint, written atomically (temporary file + os.replace)."""
        save_trainer_checkpoint(self, step)

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

        _, loss_dict, metrics_dict, objective = train_losses(self.pipeline, step)
        loss = functools.reduce(torch.add, loss_dict.values())
        curvature_step = any(opt.is_curvature_step() for opt in esgd.values())
        # with a surrogate loss (IGA) the curvature is taken on the true loss, before the surrogate's backward
        create_graph = esgd_backward(loss, esgd.values(), true_loss=objective)
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


def train_losses(pipeline: Any, step: int) -> Tuple[Dict[str, Any], Dict[str, Tensor], Dict[str, Any], Tensor | None]:
    """The pipeline's training step and the loss ESGD takes its curvature on (None: the training loss itself).

    Pipelines with ``get_train_losses`` (``InrPipeline``) name that loss: their model's ``curvature_loss`` (the true
    loss on steps whose training loss is IGA's surrogate). Other pipelines train on their true loss; a model with a
    ``curvature_loss`` in such a pipeline is refused (its surrogate's curvature would be the wrong one).

    Returns:
        (model outputs, loss dict, metrics dict, curvature loss: a graph-carrying scalar or None).
    """
    get_train_losses = getattr(pipeline, "get_train_losses", None)
    if get_train_losses is None:
        if hasattr(getattr(pipeline, "model", None), "curvature_loss"):
            raise ValueError(
                f"ESGD: {type(pipeline).__name__} has no get_train_losses(step), so its model's curvature_loss cannot "
                "be used; train this model with InrPipeline"
            )
        outputs, loss_dict, metrics_dict = pipeline.get_train_loss_dict(step=step)
        return outputs, loss_dict, metrics_dict, None
    outputs, loss_dict, metrics_dict, curvature = get_train_losses(step)
    if curvature is not None and (
        not isinstance(curvature, Tensor) or curvature.numel() != 1 or not curvature.requires_grad
    ):
        raise ValueError(
            f"ESGD: the curvature loss of {type(pipeline).__name__}.get_train_losses must be a graph-carrying scalar "
            "(the true loss, differentiated twice for the Hessian-vector products)"
        )
    return outputs, loss_dict, metrics_dict, curvature


def release_grad_graphs(params: Any) -> None:
    """Detach every ``p.grad`` that still carries a double-backward graph (values unchanged)."""
    for p in params:
        if p.grad is not None and p.grad.grad_fn is not None:
            p.grad = p.grad.detach()
