"""ESGD: equilibrated SGD with Adam-style momentum (methods.md section 3), official and robust recipes.

Per parameter entry ``i`` the update is ``p_i -= lr * m_hat_i / (sqrt(d_hat_i) + eps)`` where

- ``m`` is Adam's first moment of the gradient, bias-corrected by the number of steps;
- ``d`` is an EMA of squared Hessian-vector products, ``d = b2 * d + (1 - b2) * (H v)^2`` with Rademacher
  ``v`` (``E[(Hv)_i^2] = (H^2)_ii``, so ``sqrt(d)`` estimates the equilibration preconditioner
  ``sqrt(diag(H^2))``), updated on curvature ("HVP") steps only and bias-corrected.

Curvature schedule: steps ``0 .. d_warmup-1`` are all curvature steps, then every ``update_d_every``-th
step after the last one (defaults 50 and 100: steps 0..49, 149, 249, ...). ``d`` is undefined before
the first curvature estimate, so the first ``step()`` is always a curvature step, even with
``d_warmup=0``. Only curvature steps pay the double backward.

Recipes (:class:`ESGDConfig`, ``recipe=``):

- ``"official"``: the official INR code (sfchng/preconditioner_neural_fields) exactly: one Rademacher draw per
  curvature step, ``d`` bias-corrected by the number of *all* steps (``d_bias_correction="all_steps"``; with sparse
  curvature steps this under-estimates ``d``, an implicit lr warm-up of about x3.3 at step 1000), no lr warm-up,
  no step bound. The constructor's defaults are this recipe.
- ``"robust"`` (the default of :class:`ESGDConfig`, chosen by ``benchmarks/esgd_robust.py``): 4 draws at step 0,
  lr warm-up 0.99, the decayed maximum of ``(Hv)^2`` and a step bound of 0.01 (:data:`RECIPES`). At step 0 the
  official ``d`` comes from a single draw, so weights whose ``|Hv|`` happens to be tiny take huge steps, and later a
  ``d`` that is only refreshed every 100 steps lets a weight whose curvature was low at the last estimate jump; the
  maximum never under-estimates a weight's curvature, so for a given lr its steps are smaller than the official
  recipe's: its lr is larger (images: about 4 where the official recipe uses 0.15). Without the bound, one seed in
  five of the image control still moved a weight by 3.8x its layer's init range in one step; with it, none moved by
  more than the init range (and the final PSNR is the same). The options, each one remedy:

  - ``init_draws``: the first curvature estimate averages ``(Hv)^2`` over this many Rademacher draws (each one
    more double backward through the same graph, at step 0 only);
  - ``lr_warmup``: lr multiplied by ``1 - lr_warmup^k`` at a parameter's k-th update (crowsonkb/esgd, which counts
    curvature steps instead of updates; 0: off);
  - ``d_statistic="max"``: ``d = max(b2 * d, (Hv)^2)``, a decayed maximum instead of the mean (crowsonkb/esgd; no
    bias correction);
  - ``update_bound``: each entry of the preconditioned step ``m_hat / (sqrt(d_hat) + eps)`` is clipped to
    ``[-update_bound, update_bound]``, so no weight moves by more than ``lr * update_bound`` in one step (0: off).

Two ways of feeding curvature:

1. Standard: ``loss.backward(create_graph=opt.should_create_graph()); opt.step()``. ``step()`` takes
   the HVP from the graph carried by ``p.grad`` and then detaches ``p.grad`` so no graph stays alive.
2. Split (e.g. IGA, whose ``p.grad`` comes from a stop-gradient surrogate): call
   ``opt.accumulate_curvature(true_loss)`` *before* the surrogate's backward (it retains the forward
   graph), then ``surrogate.backward(); opt.step()``. ``step()`` then does not re-estimate curvature.

:func:`esgd_backward` does either, for one or several ESGD optimizers; training loops call it instead of
``loss.backward()``.

``hvp_source="gradient"`` is the Adam-like ablation: ``(H v)^2`` is replaced by ``g^2`` on the
identical schedule (no double backward; ``should_create_graph()`` is always False).

Example:
    >>> import torch
    >>> net = torch.nn.Linear(2, 1)
    >>> opt = ESGDConfig(recipe="robust").build(net.parameters(), lr=0.01)
    >>> x, y = torch.randn(16, 2), torch.randn(16, 1)
    >>> for _ in range(3):
    ...     opt.zero_grad()
    ...     _ = esgd_backward(((net(x) - y) ** 2).mean(), opt)
    ...     _ = opt.step()
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor

HvpSource = Literal["hessian", "gradient"]
HVP_SOURCES: tuple[str, ...] = ("hessian", "gradient")
DBiasCorrection = Literal["curvature_steps", "all_steps"]
D_BIAS_CORRECTIONS: tuple[str, ...] = ("curvature_steps", "all_steps")
DStatistic = Literal["mean", "max"]
D_STATISTICS: tuple[str, ...] = ("mean", "max")
Recipe = Literal["official", "robust"]

RECIPES: dict[str, dict[str, Any]] = {
    "official": dict(d_bias_correction="all_steps", init_draws=1, lr_warmup=0.0, d_statistic="mean", update_bound=0.0),
    "robust": dict(d_bias_correction="all_steps", init_draws=4, lr_warmup=0.99, d_statistic="max", update_bound=0.01),
}
"""Values of the :class:`ESGDConfig` fields left at None, per recipe (robust: measured, benchmarks/esgd_robust.py)."""
RECIPE_FIELDS: tuple[str, ...] = ("d_bias_correction", "init_draws", "lr_warmup", "d_statistic", "update_bound")
Problem = Literal["field", "nerf"]
DEFAULT_LRS: dict[str, dict[str, float]] = {
    "field": {"official": 0.15, "robust": 4.0},
    "nerf": {"official": 1.0, "robust": 10.0},
}
"""Step size per problem and recipe when none is given. field (a coordinate MLP fit to images or shapes): the official
code's 0.15, robust 4 (tuned on the image control, benchmarks/esgd_robust.py; shapes: 4 to 12 in
benchmarks/shapes.py). nerf (a radiance field, lr decaying 100x over the run): the paper's 1 -> 0.01, robust 10 -> 0.1
(mic, val PSNR after 2000 steps of the converged comparison's schedule: 19.18 dB at 10, 18.61 at 3, 17.77 at 30).
The robust recipe's decayed maximum of (Hv)^2 and step bound take smaller steps for a given lr, hence its larger lr."""


def default_lr(recipe: str, problem: Problem = "field") -> float:
    """ESGD's step size for ``recipe`` ("official", "robust") on ``problem`` ("field", "nerf"): :data:`DEFAULT_LRS`.

    Example: ``default_lr("official", "nerf") == 1.0``.
    """
    if problem not in DEFAULT_LRS:
        raise ValueError(f"ESGD problem must be one of {tuple(DEFAULT_LRS)}, got {problem!r}")
    if recipe not in DEFAULT_LRS[problem]:
        raise ValueError(f"ESGD recipe must be one of {tuple(RECIPES)}, got {recipe!r}")
    return DEFAULT_LRS[problem][recipe]


def _check_group_hparams(lr: Any, betas: Any, eps: Any, weight_decay: Any) -> None:
    """Raise ValueError naming the first invalid per-group hyperparameter."""
    if not isinstance(lr, (int, float)) or not math.isfinite(lr) or lr < 0:
        raise ValueError(f"ESGD: lr must be a finite number >= 0, got {lr!r}")
    if not isinstance(betas, (tuple, list)) or len(betas) != 2:
        raise ValueError(f"ESGD: betas must be a pair (beta1, beta2), got {betas!r}")
    for i, b in enumerate(betas):
        if not isinstance(b, (int, float)) or not 0.0 <= b < 1.0:
            raise ValueError(f"ESGD: betas[{i}] must be in [0, 1), got {b!r}")
    if not isinstance(eps, (int, float)) or not math.isfinite(eps) or eps <= 0:
        raise ValueError(f"ESGD: eps must be a finite number > 0, got {eps!r}")
    if not isinstance(weight_decay, (int, float)) or not math.isfinite(weight_decay) or weight_decay < 0:
        raise ValueError(f"ESGD: weight_decay must be a finite number >= 0, got {weight_decay!r}")


@dataclass
class ESGDConfig:
    """ESGD's hyperparameters except the lr (one declaration for images, shapes and nerfstudio's optimizer config)."""

    recipe: Recipe = "robust"
    """official: the official INR code exactly (for reproduction); robust: plus the measured remedies for its
    unstable first steps (see the fields below left at None, and RECIPES in core/esgd.py)."""
    betas: tuple[float, float] = (0.9, 0.999)
    """EMA factors of the gradient and of the squared Hessian-vector products."""
    eps: float = 1e-4
    """Added to sqrt(d_hat) in the denominator."""
    weight_decay: float = 0.0
    """Decoupled (AdamW-style) weight decay."""
    update_d_every: int = 100
    """After the warm-up, estimate the curvature (one double backward) every this many steps."""
    d_warmup: int = 50
    """Number of initial steps that all estimate the curvature."""
    hvp_source: HvpSource = "hessian"
    """hessian: ESGD. gradient: the ablation with (Hv)^2 replaced by g^2 on the same schedule (no double backward)."""
    d_bias_correction: DBiasCorrection | None = None
    """Bias correction of d: by the number of curvature steps, or of all steps (official; None: the recipe's)."""
    init_draws: int | None = None
    """Rademacher draws averaged in the first curvature estimate (official 1; None: the recipe's)."""
    lr_warmup: float | None = None
    """lr times 1 - lr_warmup^k at a parameter's k-th update, in [0, 1) (0: off, official; None: the recipe's)."""
    d_statistic: DStatistic | None = None
    """mean: EMA of (Hv)^2 (official); max: decayed maximum max(b2 d, (Hv)^2) (None: the recipe's)."""
    update_bound: float | None = None
    """Clip each entry of m_hat / (sqrt(d_hat) + eps) to +-this (0: off, official; None: the recipe's)."""
    rademacher_seed: int | None = None
    """Seed of a private generator for the Rademacher vectors (None: torch's global RNG). With a seed, ESGD leaves the
    global random stream (e.g. ray or point sampling) as an Adam run's; its state is not checkpointed."""

    def resolved(self) -> dict[str, Any]:
        """The robustness options after filling the None fields from :data:`RECIPES` ``[recipe]``."""
        if self.recipe not in RECIPES:
            raise ValueError(f"ESGD recipe must be one of {tuple(RECIPES)}, got {self.recipe!r}")
        defaults = RECIPES[self.recipe]
        return {name: defaults[name] if getattr(self, name) is None else getattr(self, name) for name in RECIPE_FIELDS}

    def build(self, params: Iterable[Tensor] | Iterable[dict[str, Any]], lr: float) -> ESGD:
        """An :class:`ESGD` optimizer on ``params`` with this configuration and step size ``lr``."""
        generator = None if self.rademacher_seed is None else torch.Generator().manual_seed(int(self.rademacher_seed))
        return ESGD(
            params,
            lr=lr,
            betas=tuple(self.betas),  # type: ignore[arg-type]
            eps=self.eps,
            weight_decay=self.weight_decay,
            update_d_every=self.update_d_every,
            d_warmup=self.d_warmup,
            hvp_source=self.hvp_source,
            generator=generator,
            **self.resolved(),
        )


class ESGD(torch.optim.Optimizer):
    """Equilibrated SGD with Adam-style first moment; the defaults are the official INR code's recipe.

    Args:
        params: parameters or parameter-group dicts (groups may override lr, betas, eps, weight_decay).
        lr: step size (0.15 for images/shapes; NeRF: 1 decaying exponentially to 0.01). Read from the
            group at every step, so LR schedulers work.
        betas: (beta1 for the gradient EMA, beta2 for the squared-HVP EMA), each in [0, 1).
        eps: added to ``sqrt(d_hat)`` in the denominator (> 0).
        weight_decay: decoupled (AdamW-style) decay, ``p *= 1 - lr_t * weight_decay`` each step.
        update_d_every: after the warm-up, estimate curvature every this many steps (>= 1).
        d_warmup: number of initial steps that all estimate curvature (>= 0; step 0 always does).
        hvp_source: "hessian" (ESGD) or "gradient" (ablation: ``g^2`` instead of ``(Hv)^2``).
        d_bias_correction: "all_steps" (official INR code: ``d_hat = d / (1 - b2^t)``, t = all steps of the
            parameter) or "curvature_steps" (t = curvature steps so far). Not used with ``d_statistic="max"``.
        init_draws: Rademacher draws averaged in the first curvature estimate (>= 1; official 1).
        lr_warmup: the step size at a parameter's k-th update is ``lr * (1 - lr_warmup^k)`` (in [0, 1); 0: off).
        d_statistic: "mean" (EMA of ``(Hv)^2``, official) or "max" (``d = max(b2 d, (Hv)^2)``, no bias correction).
        update_bound: clip each entry of ``m_hat / (sqrt(d_hat) + eps)`` to ``[-update_bound, update_bound]``
            (>= 0; 0: off).
        generator: optional ``torch.Generator`` for the Rademacher vectors (reproducibility). Vectors
            are drawn on the generator's device and moved to each parameter's device. Its state is not
            part of ``state_dict()``.

    """

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        lr: float = 0.15,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-4,
        weight_decay: float = 0.0,
        update_d_every: int = 100,
        d_warmup: int = 50,
        hvp_source: HvpSource = "hessian",
        d_bias_correction: DBiasCorrection = "all_steps",
        init_draws: int = 1,
        lr_warmup: float = 0.0,
        d_statistic: DStatistic = "mean",
        update_bound: float = 0.0,
        generator: torch.Generator | None = None,
    ) -> None:
        _check_group_hparams(lr, betas, eps, weight_decay)
        if isinstance(update_d_every, bool) or not isinstance(update_d_every, int) or update_d_every < 1:
            raise ValueError(f"ESGD: update_d_every must be an integer >= 1, got {update_d_every!r}")
        if isinstance(d_warmup, bool) or not isinstance(d_warmup, int) or d_warmup < 0:
            raise ValueError(f"ESGD: d_warmup must be an integer >= 0, got {d_warmup!r}")
        if hvp_source not in HVP_SOURCES:
            raise ValueError(f"ESGD: hvp_source must be one of {HVP_SOURCES}, got {hvp_source!r}")
        if d_bias_correction not in D_BIAS_CORRECTIONS:
            raise ValueError(f"ESGD: d_bias_correction must be one of {D_BIAS_CORRECTIONS}, got {d_bias_correction!r}")
        if isinstance(init_draws, bool) or not isinstance(init_draws, int) or init_draws < 1:
            raise ValueError(f"ESGD: init_draws must be an integer >= 1, got {init_draws!r}")
        if not isinstance(lr_warmup, (int, float)) or not 0.0 <= lr_warmup < 1.0:
            raise ValueError(f"ESGD: lr_warmup must be in [0, 1) (0: no warm-up), got {lr_warmup!r}")
        if d_statistic not in D_STATISTICS:
            raise ValueError(f"ESGD: d_statistic must be one of {D_STATISTICS}, got {d_statistic!r}")
        if not isinstance(update_bound, (int, float)) or not math.isfinite(update_bound) or update_bound < 0:
            raise ValueError(f"ESGD: update_bound must be a finite number >= 0 (0: no bound), got {update_bound!r}")
        if generator is not None and not isinstance(generator, torch.Generator):
            raise ValueError(f"ESGD: generator must be a torch.Generator or None, got {type(generator).__name__}")
        defaults = dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay)
        self.update_d_every = update_d_every
        self.d_warmup = d_warmup
        self.hvp_source: HvpSource = hvp_source
        self.d_bias_correction: DBiasCorrection = d_bias_correction
        self.init_draws = init_draws
        self.lr_warmup = float(lr_warmup)
        self.d_statistic: DStatistic = d_statistic
        self.update_bound = float(update_bound)
        self.generator = generator
        self.num_steps = 0  # completed step() calls
        self.num_curvature_steps = 0  # curvature (HVP or g^2) estimates taken so far
        self._steps_since_d = 0
        self._curvature_ready = False  # accumulate_curvature() already ran for the coming step
        super().__init__(params, defaults)

    # ------------------------------------------------------------------ configuration
    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a parameter group (validates its hyperparameters)."""
        super().add_param_group(param_group)
        g = self.param_groups[-1]
        g["betas"] = tuple(g["betas"]) if isinstance(g["betas"], list) else g["betas"]
        _check_group_hparams(g["lr"], g["betas"], g["eps"], g["weight_decay"])

    def state_dict(self) -> dict[str, Any]:
        """Torch optimizer state plus the global schedule counters and options under key ``"esgd"``."""
        sd = super().state_dict()
        sd["esgd"] = {
            "update_d_every": self.update_d_every,
            "d_warmup": self.d_warmup,
            "hvp_source": self.hvp_source,
            "d_bias_correction": self.d_bias_correction,
            "init_draws": self.init_draws,
            "lr_warmup": self.lr_warmup,
            "d_statistic": self.d_statistic,
            "update_bound": self.update_bound,
            "num_steps": self.num_steps,
            "num_curvature_steps": self.num_curvature_steps,
            "steps_since_d": self._steps_since_d,
            "curvature_ready": self._curvature_ready,
        }
        return sd

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Inverse of :meth:`state_dict` (per-parameter moments, counters, schedule and options)."""
        if "esgd" not in state_dict:
            raise ValueError("ESGD.load_state_dict: state_dict has no 'esgd' entry (not saved from ESGD?)")
        g = state_dict["esgd"]
        state_dict = {k: v for k, v in state_dict.items() if k != "esgd"}
        super().load_state_dict(state_dict)
        self.update_d_every = int(g["update_d_every"])
        self.d_warmup = int(g["d_warmup"])
        self.hvp_source = g["hvp_source"]
        # checkpoints written before these options existed used curvature-step bias correction and none of them
        self.d_bias_correction = g.get("d_bias_correction", "curvature_steps")
        self.init_draws = int(g.get("init_draws", 1))
        self.lr_warmup = float(g.get("lr_warmup", 0.0))
        self.d_statistic = g.get("d_statistic", "mean")
        self.update_bound = float(g.get("update_bound", 0.0))
        self.num_steps = int(g["num_steps"])
        self.num_curvature_steps = int(g["num_curvature_steps"])
        self._steps_since_d = int(g["steps_since_d"])
        self._curvature_ready = bool(g["curvature_ready"])

    # ------------------------------------------------------------------ schedule
    def is_curvature_step(self) -> bool:
        """True when the next ``step()`` updates ``d`` (in either ``hvp_source`` mode).

        Stays True after :meth:`accumulate_curvature` until ``step()`` runs.
        """
        return (
            self._curvature_ready
            or self.num_curvature_steps == 0
            or self.num_steps < self.d_warmup
            or self._steps_since_d >= self.update_d_every
        )

    def should_create_graph(self) -> bool:
        """True when the next ``step()`` will estimate curvature from ``p.grad``'s graph.

        Use as ``loss.backward(create_graph=opt.should_create_graph())``. False in "gradient" mode and
        after :meth:`accumulate_curvature` already estimated this step's curvature.
        """
        return self.hvp_source == "hessian" and not self._curvature_ready and self.is_curvature_step()

    # ------------------------------------------------------------------ curvature
    def _params_with_grad_required(self) -> list[Tensor]:
        return [p for group in self.param_groups for p in group["params"] if p.requires_grad]

    def _rademacher(self, like: Tensor) -> Tensor:
        """+-1 entries shaped like ``like``, on its device and dtype."""
        gen = self.generator
        if gen is None:
            v = torch.randint(0, 2, like.shape, device=like.device, dtype=like.dtype)
        else:
            v = torch.randint(0, 2, like.shape, device=gen.device, dtype=like.dtype, generator=gen)
            v = v.to(like.device)
        return v.mul_(2).sub_(1)

    def _hvp_squares(
        self, params: list[Tensor], grads: list[Tensor | None], retain_graph: bool
    ) -> dict[Tensor, Tensor]:
        """(H v)^2 for each param whose grad is not None, averaged over ``init_draws`` draws on the first estimate;
        grads without a graph give zeros.

        ``grads[i]`` is d loss / d params[i] carrying a graph (create_graph=True). ``retain_graph`` keeps
        the forward graph's buffers (the caller may still backpropagate a surrogate through it).
        """
        sel_p, sel_g = [], []
        for p, g in zip(params, grads, strict=True):
            if g is not None and g.requires_grad:
                sel_p.append(p)
                sel_g.append(g)
        if not sel_p:
            raise RuntimeError(
                "ESGD: no gradient carries a graph on a curvature step; call "
                "loss.backward(create_graph=optimizer.should_create_graph()) (or accumulate_curvature(loss))."
            )
        out = {p: torch.zeros_like(p) for p, g in zip(params, grads, strict=True) if g is not None}
        draws = self.init_draws if self.num_curvature_steps == 0 else 1
        for draw in range(draws):
            vs = [self._rademacher(p) for p in sel_p]
            with torch.enable_grad():
                hvps = torch.autograd.grad(
                    sel_g, sel_p, grad_outputs=vs, retain_graph=retain_graph or draw < draws - 1, allow_unused=True
                )
            for p, hv in zip(sel_p, hvps, strict=True):
                if hv is not None:
                    out[p].add_(hv.detach().square(), alpha=1.0 / draws)
        return out

    def _update_d(self, squares: dict[Tensor, Tensor]) -> None:
        """Fold ``squares`` into d (EMA or decayed maximum) for each param in ``squares``; advance the schedule."""
        for group in self.param_groups:
            beta2 = group["betas"][1]
            for p in group["params"]:
                sq = squares.get(p)
                if sq is None:
                    continue
                state = self._init_state(p)
                if self.d_statistic == "max":
                    torch.maximum(state["exp_avg_d"].mul_(beta2), sq, out=state["exp_avg_d"])
                else:
                    state["exp_avg_d"].mul_(beta2).add_(sq, alpha=1.0 - beta2)
                state["d_step"] += 1
        self.num_curvature_steps += 1
        self._steps_since_d = 0

    def _init_state(self, p: Tensor) -> dict[str, Any]:
        state = self.state[p]
        if len(state) == 0:
            state["step"] = 0  # first-moment updates of this param
            state["d_step"] = 0  # curvature updates of this param
            state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            state["exp_avg_d"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        return state

    def accumulate_curvature(self, loss: Tensor) -> bool:
        """Estimate this step's curvature from ``loss`` instead of from ``p.grad`` (IGA + ESGD).

        If the next ``step()`` is a curvature step, computes ``g = d loss / d params`` (with a graph in
        "hessian" mode) and the HVP from it, updates ``d``, and makes the next ``step()`` skip its own
        estimate. Does not touch ``p.grad``; retains ``loss``'s graph, so a surrogate sharing the same
        forward can still be backpropagated afterwards. Otherwise does nothing (no backward at all).

        Args:
            loss: scalar tensor, the true objective (e.g. the MSE), differentiable w.r.t. the params.

        Returns:
            True if curvature was estimated, False if this step is not a curvature step.
        """
        if self._curvature_ready or not self.is_curvature_step():
            return False
        if not isinstance(loss, Tensor) or loss.numel() != 1:
            raise ValueError("ESGD.accumulate_curvature: loss must be a scalar tensor")
        if not loss.requires_grad:
            raise ValueError("ESGD.accumulate_curvature: loss does not require grad (computed under no_grad?)")
        params = self._params_with_grad_required()
        hessian = self.hvp_source == "hessian"
        with torch.enable_grad():
            grads = torch.autograd.grad(loss, params, create_graph=hessian, retain_graph=True, allow_unused=True)
        if hessian:
            squares = self._hvp_squares(params, list(grads), retain_graph=True)
        else:
            squares = {p: g.detach().square() for p, g in zip(params, grads, strict=True) if g is not None}
        self._update_d(squares)
        self._curvature_ready = True
        return True

    # ------------------------------------------------------------------ step
    @torch.no_grad()
    def step(self, closure: Callable[[], Tensor] | None = None) -> Tensor | None:  # type: ignore[override]
        """One update from ``p.grad`` (estimating curvature first if this is a curvature step).

        Args:
            closure: optional callable that zeroes grads, recomputes the loss, calls
                ``loss.backward(create_graph=opt.should_create_graph())`` and returns the loss.

        Returns:
            The closure's loss, or None.
        """
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()

        params, grads = [], []
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise RuntimeError("ESGD does not support sparse gradients")
                params.append(p)
                grads.append(p.grad)

        if self.is_curvature_step() and not self._curvature_ready:
            if self.hvp_source == "hessian":
                squares = self._hvp_squares(params, grads, retain_graph=False)
            else:
                squares = {p: g.detach().square() for p, g in zip(params, grads, strict=True)}
            self._update_d(squares)

        for group in self.param_groups:
            lr = group["lr"]
            beta1, beta2 = group["betas"]
            eps, wd = group["eps"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad.detach()
                state = self._init_state(p)
                if state["d_step"] == 0:
                    # No curvature estimate for this param yet (it had no grad on earlier curvature
                    # steps): d_hat is undefined, so it is left unchanged until its first estimate.
                    continue
                state["step"] += 1
                exp_avg = state["exp_avg"]
                exp_avg.mul_(beta1).add_(grad, alpha=1.0 - beta1)
                m_corr = 1.0 - beta1 ** state["step"]
                if self.d_statistic == "max":
                    denom = state["exp_avg_d"].sqrt().add_(eps)
                else:
                    k = state["d_step"] if self.d_bias_correction == "curvature_steps" else state["step"]
                    denom = (state["exp_avg_d"] / (1.0 - beta2**k)).sqrt_().add_(eps)
                step_size = lr * (1.0 - self.lr_warmup ** state["step"]) if self.lr_warmup > 0 else lr
                if wd != 0:
                    p.mul_(1.0 - step_size * wd)
                if self.update_bound > 0:
                    direction = (exp_avg / m_corr).div_(denom).clamp_(-self.update_bound, self.update_bound)
                    p.add_(direction, alpha=-step_size)
                else:
                    p.addcdiv_(exp_avg, denom, value=-step_size / m_corr)

        # Free the double-backward graph (and the param <-> grad reference cycle it creates).
        for p in params:
            if p.grad is not None and p.grad.grad_fn is not None:
                p.grad = p.grad.detach()

        self._curvature_ready = False
        self.num_steps += 1
        self._steps_since_d += 1
        return loss


def esgd_backward(
    loss: Tensor, optimizers: ESGD | Sequence[ESGD] | Iterable[ESGD], true_loss: Tensor | None = None
) -> bool:
    """``loss.backward()`` for ESGD: keeps the graph on curvature steps and takes the curvature on the true loss.

    1. When ``true_loss`` is given (``loss`` is a surrogate, e.g. IGA's stop-gradient loss, whose Hessian is not the
       objective's), every optimizer due for a curvature step estimates it from ``true_loss`` first
       (:meth:`ESGD.accumulate_curvature`, which retains the forward graph).
    2. ``loss.backward(create_graph=True)`` if some optimizer still takes its curvature from ``p.grad`` in its
       coming ``step()``, else a plain backward.

    Call the optimizers' ``step()`` next; each detaches its ``p.grad`` afterwards. Works with any object with
    ESGD's ``should_create_graph()`` (and ``accumulate_curvature()`` when ``true_loss`` is given).

    Args:
        loss: scalar tensor to backpropagate (the training loss).
        optimizers: one ESGD optimizer or several (e.g. one per nerfstudio parameter group).
        true_loss: scalar tensor sharing ``loss``'s forward graph, or None when ``loss`` is the objective itself.

    Returns:
        Whether the backward kept the graph (``p.grad`` then carries a double-backward graph until ``step()``).
    """
    opts = [optimizers] if hasattr(optimizers, "should_create_graph") else list(optimizers)  # type: ignore[arg-type]
    if true_loss is not None:
        for opt in opts:
            if not hasattr(opt, "accumulate_curvature"):
                raise ValueError(
                    f"{type(opt).__name__} has should_create_graph() but no accumulate_curvature(loss): it cannot "
                    "take its curvature from the true loss while the training loss is a surrogate"
                )
            opt.accumulate_curvature(true_loss)
    create_graph = any(opt.should_create_graph() for opt in opts)
    with warnings.catch_warnings():
        # ESGD.step() detaches p.grad after the HVP, which breaks the param <-> grad cycle this warns about.
        warnings.filterwarnings("ignore", message=r"Using backward\(\) with create_graph=True")
        loss.backward(create_graph=create_graph)
    return create_graph
