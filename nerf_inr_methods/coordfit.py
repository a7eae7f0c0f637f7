"""Framework-free training loop for coordinate networks (2D images, SDF/occupancy points).

One implementation shared by the image positive controls of INT, IGA and ESGD and by the shape trainer:

- :func:`optimization_step`: one optimiser update on given points, for any torch optimizer, L-BFGS
  (closure) and ESGD (``should_create_graph()`` / ``accumulate_curvature()``), with an optional
  ``adjust`` hook returning the loss to backpropagate (IGA's surrogate) while the true loss is logged,
  and optional per-point loss weights (importance sampling).
- :func:`fit_step`: the same on the points an INT-family sampler picks
  (:class:`nerf_inr_methods.core.int_sampler.IntSampler`: INT, its random control, soft mining, error map,
  two forwards; methods.md section 1).
- :func:`fit_iter`: ``total_steps`` steps with evaluation at fixed steps, an honest training clock (includes
  scoring passes and batch sampling, excludes evaluation) and counts of points processed, as a generator, to
  advance several runs in lockstep on a shared machine; :func:`fit` runs it to its end. Their options are the
  fields of :class:`FitOptions` (given as an object, keywords, or both).

No nerfstudio import here. Example::

    >>> import torch
    >>> from nerf_inr_methods.coordfit import fit
    >>> from nerf_inr_methods.core.int_selection import IntSchedule
    >>> net = torch.nn.Sequential(torch.nn.Linear(2, 32), torch.nn.Tanh(), torch.nn.Linear(32, 1))
    >>> coords, targets = torch.rand(256, 2), torch.rand(256, 1)
    >>> opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    >>> hist = fit(net, opt, 20, coords, targets, int_schedule=IntSchedule(20, max_interval=2))
    >>> len(hist.loss)
    20
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, ParamSpec

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nerf_inr_methods.core.esgd import esgd_backward
from nerf_inr_methods.core.int_sampler import IntSampler, IntSamplerConfig, PoolCandidates, Selection
from nerf_inr_methods.core.int_selection import IntSchedule, int_scores

LossKind = Literal["mse", "bce"]
"""``mse``: mean squared error (regression: images, SDF); ``bce``: binary cross-entropy on logits (occupancy)."""
LOSS_KINDS: tuple[str, ...] = ("mse", "bce")

P = ParamSpec("P")

AdjustFn = Callable[[Tensor, Tensor, Tensor], Tensor]
"""``adjust(coords_sel (n, d), preds_sel (n, C), targets_sel (n, C)) -> scalar loss to backpropagate``."""


# ----------------------------------------------------------------------------------------------- losses
def _check_points(coords: Tensor, targets: Tensor) -> None:
    if not isinstance(coords, Tensor) or coords.dim() != 2:
        raise ValueError(f"coords must be a tensor of shape (n, d), got {getattr(coords, 'shape', type(coords))}")
    if not isinstance(targets, Tensor) or targets.dim() != 2:
        raise ValueError(f"targets must be a tensor of shape (n, C), got {getattr(targets, 'shape', type(targets))}")
    if coords.shape[0] != targets.shape[0]:
        raise ValueError(f"coords and targets must have the same n, got {coords.shape[0]} and {targets.shape[0]}")
    if coords.shape[0] == 0:
        raise ValueError("coords is empty: need at least one point")


def coord_loss(pred: Tensor, target: Tensor, kind: LossKind = "mse", weights: Tensor | None = None) -> Tensor:
    """Mean loss over points and channels (weighted over points when ``weights`` is given).

    Args:
        pred: network outputs, shape (n, C) (logits for ``bce``).
        target: targets, shape (n, C) (occupancy in {0, 1} for ``bce``).
        kind: ``mse`` or ``bce`` (binary cross-entropy with logits).
        weights: optional per-point loss weights, shape (n,): ``mean_i(w_i * mean_c loss_ic)``.

    Returns:
        Scalar tensor.
    """
    if pred.shape != target.shape:
        raise ValueError(f"model output shape {tuple(pred.shape)} does not match targets shape {tuple(target.shape)}")
    if kind not in LOSS_KINDS:
        raise ValueError(f"loss must be one of {LOSS_KINDS}, got {kind!r}")
    if weights is None:
        if kind == "mse":
            return F.mse_loss(pred, target)
        return F.binary_cross_entropy_with_logits(pred, target)
    if kind == "mse":
        per_point = (pred - target) ** 2
    else:
        per_point = F.binary_cross_entropy_with_logits(pred, target, reduction="none")
    return (per_point.reshape(pred.shape[0], -1).mean(dim=1) * weights.reshape(-1).to(per_point)).mean()


def psnr_from_mse(mse: float, data_range: float = 1.0) -> float:
    """PSNR in dB, 10 log10(data_range^2 / mse) (inf when mse == 0)."""
    if mse < 0 or math.isnan(mse):
        raise ValueError(f"mse must be >= 0, got {mse}")
    return math.inf if mse == 0 else 10.0 * math.log10(data_range**2 / mse)


@torch.no_grad()
def predict(model: nn.Module, coords: Tensor, chunk_size: int = 65536) -> Tensor:
    """Chunked forward pass without gradient.

    Args:
        model: maps (m, d) -> (m, C).
        coords: shape (n, d).
        chunk_size: points per forward (bounds memory).

    Returns:
        Outputs, shape (n, C).
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    return torch.cat([model(chunk) for chunk in coords.split(chunk_size)], dim=0)


@torch.no_grad()
def score_points(
    model: nn.Module, coords: Tensor, targets: Tensor, loss: LossKind = "mse", chunk_size: int = 65536
) -> Tensor:
    """INT scores of candidate points from a fresh no-grad forward.

    For ``bce`` the error is taken on probabilities, |sigmoid(logit) - y| (the functional gradient of BCE).

    Args:
        coords: shape (n, d).  targets: shape (n, C).

    Returns:
        Scores, shape (n,).
    """
    return point_errors(predict(model, coords, chunk_size), targets, loss)


def point_errors(pred: Tensor, targets: Tensor, loss: LossKind = "mse") -> Tensor:
    """INT scores of given predictions: L1 over channels (on probabilities for ``bce``), no gradient.

    Args:
        pred: (n, C) outputs (logits for ``bce``).  targets: (n, C).

    Returns:
        Scores, shape (n,).
    """
    if pred.shape != targets.shape:
        raise ValueError(f"model output shape {tuple(pred.shape)} does not match targets shape {tuple(targets.shape)}")
    pred = pred.detach()
    if loss == "bce":
        pred = torch.sigmoid(pred)
    return int_scores(pred, targets)


# ------------------------------------------------------------------------------------------ one step
def optimization_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    coords: Tensor,
    targets: Tensor,
    *,
    loss: LossKind = "mse",
    adjust: AdjustFn | None = None,
    weights: Tensor | None = None,
) -> float:
    """One optimiser update on exactly these points; returns the true loss before the update.

    - Generic optimizers: ``loss.backward(); optimizer.step()``.
    - ``torch.optim.LBFGS``: a closure re-evaluating the loss (``adjust`` is refused: its line search
      needs the true objective).
    - ESGD-like (duck-typed on ``should_create_graph``): :func:`~nerf_inr_methods.core.esgd.esgd_backward`, which
      keeps the graph on curvature steps and, with ``adjust``, takes the curvature from the true loss before the
      surrogate's backward.

    Args:
        coords: shape (n, d).  targets: shape (n, C).
        loss: ``mse`` or ``bce``.
        adjust: optional hook ``(coords, preds, targets) -> scalar`` whose gradient replaces the loss's.
        weights: optional per-point loss weights, shape (n,) (importance sampling): the backpropagated loss is
            the weighted mean; not combinable with ``adjust``.

    Returns:
        The true (unadjusted, unweighted) mean loss on these points, as a float.
    """
    return _train_on(model, optimizer, coords, targets, loss, adjust, weights)[0]


def _train_on(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    coords: Tensor,
    targets: Tensor,
    loss: LossKind,
    adjust: AdjustFn | None,
    weights: Tensor | None,
) -> tuple[float, Tensor]:
    """:func:`optimization_step` that also returns the (pre-update) predictions, detached, shape (n, C)."""
    _check_points(coords, targets)
    if weights is not None:
        if adjust is not None:
            raise ValueError("per-point loss weights cannot be combined with an adjust hook (it returns its own loss)")
        if weights.shape != (coords.shape[0],):
            raise ValueError(f"weights must have shape ({coords.shape[0]},), got {tuple(weights.shape)}")
    if isinstance(optimizer, torch.optim.LBFGS):
        if adjust is not None:
            raise ValueError(
                "adjust hooks are not supported with torch.optim.LBFGS (its line search needs the true loss)"
            )
        first: list[Tensor] = []

        def closure() -> Tensor:
            optimizer.zero_grad(set_to_none=True)
            pred = model(coords)
            if not first:
                first.append(pred.detach())
            value = coord_loss(pred, targets, loss, weights)
            value.backward()
            return value

        optimizer.step(closure)
        # The first evaluation is before the update; its unweighted loss is the true loss.
        return float(coord_loss(first[0], targets, loss)), first[0]

    optimizer.zero_grad(set_to_none=True)
    pred = model(coords)
    true_loss = coord_loss(pred, targets, loss)
    if adjust is None:
        trained = true_loss if weights is None else coord_loss(pred, targets, loss, weights)
    else:
        trained = adjust(coords, pred, targets)
        if not isinstance(trained, Tensor) or trained.numel() != 1:
            raise ValueError(f"adjust must return a scalar tensor, got {getattr(trained, 'shape', type(trained))}")
    if hasattr(optimizer, "should_create_graph"):  # ESGD-like: double backward on curvature steps
        esgd_backward(trained, optimizer, true_loss=None if adjust is None else true_loss)  # type: ignore[arg-type]
    else:
        trained.backward()
    optimizer.step()
    return true_loss.item(), pred.detach()


@dataclass
class StepResult:
    """Outcome of one :func:`fit_step`."""

    loss: float
    """True mean loss on the trained points, before the update."""
    psnr: float | None
    """PSNR (dB) of ``loss`` for ``mse`` (on the trained points only: INT's subset is biased to hard points)."""
    num_trained: int
    """Points in the forward + backward pass."""
    num_scored: int
    """Points in the sampler's no-grad scoring passes (0 when no scoring happened)."""
    selected: bool
    """Whether the sampler drew a new pool (INT: re-selected its subset) at this step."""
    indices: Tensor | None
    """Indices of the trained points into the candidate set, shape (k,), or None for all points."""
    selection: Selection | None = None
    """The sampler's full answer (weights, forced points, ratio, alpha), or None without a sampler."""


def fit_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    coords: Tensor,
    targets: Tensor,
    *,
    step: int = 0,
    sampler: IntSampler | None = None,
    ids: Tensor | None = None,
    cells: Tensor | None = None,
    loss: LossKind = "mse",
    adjust: AdjustFn | None = None,
    data_range: float = 1.0,
    score_chunk_size: int = 65536,
) -> StepResult:
    """One training step on a candidate set, on all its points or on those an INT-family sampler picks.

    With ``sampler`` the candidates are handed to it as a new pool whenever it asks (every step for a sampler
    made with ``fresh_candidates=True``, i.e. a new batch each step; on its re-selection steps for a fixed set
    such as all pixels of an image); scoring passes run :func:`score_points` on the pool points it names, and
    the training forward's errors go back to it (:meth:`IntSampler.record`).

    Args:
        coords: candidates, shape (n, d).  targets: shape (n, C).
        step: index of this step in [0, sampler.total_steps).
        ids: (n,) long ids of the candidates (for the sampler's no-starvation guard); default arange(n) when the
            sampler has ``num_points`` and the candidates are a fixed set.
        cells: (n,) long error-map cells of the candidates (``error-map`` sampler).
        data_range: signal range for the logged PSNR (1 for [0, 1] signals).
        score_chunk_size: points per forward in the scoring pass.

    Returns:
        :class:`StepResult`.
    """
    _check_points(coords, targets)
    n = coords.shape[0]
    selection: Selection | None = None
    idx: Tensor | None = None
    weights: Tensor | None = None
    if sampler is not None:
        if step >= sampler.total_steps:
            raise ValueError(f"step {step} is outside the INT schedule of {sampler.total_steps} steps")
        if ids is None and sampler.num_points is not None and not sampler.fresh_candidates:
            ids = torch.arange(n, device=coords.device)

        def score(positions: Tensor) -> Tensor:
            whole = positions.numel() == n
            x_, y_ = (coords, targets) if whole else (coords[positions], targets[positions])
            return score_points(model, x_, y_, loss, score_chunk_size)

        selection = sampler.select(step, lambda: PoolCandidates(n, ids=ids, cells=cells), score)
        idx, weights = selection.indices, selection.weights
    x, y = (coords, targets) if idx is None else (coords[idx], targets[idx])
    value, pred = _train_on(model, optimizer, x, y, loss, adjust, weights)
    if selection is not None and sampler is not None and sampler.needs_errors:
        sampler.record(selection, point_errors(pred, y, loss))
    psnr = psnr_from_mse(value, data_range) if loss == "mse" and math.isfinite(value) else None
    if selection is None:
        return StepResult(value, psnr, x.shape[0], 0, False, None)
    return StepResult(value, psnr, x.shape[0], selection.num_scored, selection.new_pool, idx, selection)


# ----------------------------------------------------------------------------------------------- fit
@dataclass
class FitHistory:
    """Per-step training log and evaluations of one :func:`fit` run (lists, JSON-serialisable via to_dict)."""

    loss: list[float] = field(default_factory=list)
    """True loss on the trained points at each step (before that step's update)."""
    psnr: list[float | None] = field(default_factory=list)
    """PSNR (dB) of ``loss`` (mse only)."""
    time: list[float] = field(default_factory=list)
    """Cumulative training seconds after each step (scoring and batch sampling included, evaluation excluded)."""
    points_trained: list[int] = field(default_factory=list)
    """Cumulative points in forward + backward passes after each step."""
    points_scored: list[int] = field(default_factory=list)
    """Cumulative points in no-grad scoring passes after each step."""
    selected: list[bool] = field(default_factory=list)
    """Whether the sampler drew a new pool (INT: re-selected its subset) at each step."""
    eval_steps: list[int] = field(default_factory=list)
    """Number of completed steps at each evaluation."""
    eval_time: list[float] = field(default_factory=list)
    """Cumulative training seconds at each evaluation."""
    eval_points_trained: list[int] = field(default_factory=list)
    """Cumulative points trained at each evaluation."""
    eval_points_scored: list[int] = field(default_factory=list)
    """Cumulative points scored at each evaluation."""
    eval_metrics: list[dict[str, float]] = field(default_factory=list)
    """What ``eval_fn`` returned at each evaluation."""

    def eval_series(self, key: str) -> list[float]:
        """Values of one evaluation metric, aligned with ``eval_steps``."""
        return [m[key] for m in self.eval_metrics]

    def to_dict(self) -> dict[str, Any]:
        """Plain dict of all lists."""
        return asdict(self)


@dataclass
class FitOptions:
    """Everything of a :func:`fit` run besides the model, optimizer, step count and fixed data."""

    batch_fn: Callable[[int], tuple[Tensor, ...]] | None = None
    """``batch_fn(step) -> (coords (b, d), targets (b, C)[, ids (b,)])``: a fresh batch each step (instead of a
    fixed candidate set); the optional ids feed the sampler's no-starvation guard."""
    sampler: IntSampler | None = None
    """INT-family sampler choosing the trained points (its total_steps must equal T; made with
    ``fresh_candidates=True`` exactly when ``batch_fn`` is given)."""
    int_schedule: IntSchedule | None = None
    """Shorthand for the paper's INT sampler (``keep`` the subset between re-selections) on this schedule."""
    random_subset: bool = False
    """With ``int_schedule``: INT's random-subset control instead of INT."""
    generator: torch.Generator | None = None
    """CPU generator of the shorthand sampler's random draws."""
    cells_fn: Callable[[Tensor], Tensor] | None = None
    """``cells_fn(coords (n, d)) -> (n,)`` error-map cells of candidates (``error-map`` sampler)."""
    loss: LossKind = "mse"
    """``mse`` or ``bce``."""
    adjust: AdjustFn | None = None
    """Optional surrogate-loss hook (see :func:`optimization_step`)."""
    lr_scheduler: Any | None = None
    """Optional object whose ``step()`` is called after every optimisation step."""
    eval_fn: Callable[[nn.Module, int], dict[str, float]] | None = None
    """``eval_fn(model, steps_done) -> metrics`` called at ``eval_steps``; its time is excluded from the clock."""
    eval_steps: Sequence[int] = ()
    """Numbers of completed steps in [0, T] at which to evaluate (0 = before training)."""
    progress: Callable[[int, StepResult], None] | None = None
    """Optional ``progress(step, result)`` after every step (its time is excluded)."""
    data_range: float = 1.0
    """Signal range for the logged PSNR."""
    score_chunk_size: int = 65536
    """Points per forward in scoring passes."""
    start_step: int = 0
    """Resume: index of the first step to run (steps before it were run earlier; restore the model, optimizer and
    sampler states first)."""
    history: FitHistory | None = None
    """Resume: the earlier steps' history (``start_step`` entries), continued in place (clock and counts carry on)."""


def _options(options: FitOptions | None, overrides: dict[str, Any]) -> FitOptions:
    names = {f.name for f in dataclasses.fields(FitOptions)}
    unknown = sorted(set(overrides) - names)
    if unknown:
        raise TypeError(f"unknown fit option(s) {unknown}; expected FitOptions fields {sorted(names)}")
    return dataclasses.replace(options or FitOptions(), **overrides)


def _synchronize(device: torch.device) -> None:
    """Wait for queued kernels so the wall clock is honest on asynchronous devices."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def fit_iter(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    total_steps: int,
    coords: Tensor | None = None,
    targets: Tensor | None = None,
    options: FitOptions | None = None,
    **overrides: Any,
) -> Iterator[FitHistory]:
    """Train a coordinate network for ``total_steps`` steps, yielding the (growing) history after every step.

    :func:`fit` runs it to its end. Several runs can be advanced in lockstep (``for _ in range(T): for run in
    runs: next(run)``), so load changes on a shared machine hit every run's clock alike. The arguments are checked
    when it is called, before the first step.

    Data: either a fixed candidate set ``coords`` (n, d) / ``targets`` (n, C) trained every step (a sampler
    selects within it), or ``batch_fn(step)`` giving a fresh batch each step (a sampler selects on each batch).
    Give exactly one of the two.

    Args:
        model: maps (m, d) -> (m, C).
        optimizer: any torch optimizer, ``torch.optim.LBFGS`` or ESGD.
        total_steps: number of optimisation steps T.
        options: :class:`FitOptions` (sampler, loss, hooks, evaluation, ...).
        overrides: :class:`FitOptions` fields as keywords (applied on top of ``options``), e.g.
            ``int_schedule=IntSchedule(T)``, ``eval_fn=..., eval_steps=[0, T]``.

    Yields:
        The run's :class:`FitHistory` (the same object, one step longer each time).
    """
    opts = _options(options, overrides)
    if not isinstance(total_steps, int) or total_steps < 1:
        raise ValueError(f"total_steps must be a positive int, got {total_steps!r}")
    if (opts.batch_fn is None) == (coords is None or targets is None) or (coords is None) != (targets is None):
        raise ValueError("give either coords and targets (fixed candidate set) or batch_fn (fresh batch per step)")
    if opts.batch_fn is None:
        _check_points(coords, targets)
    sampler = _make_sampler(opts, total_steps)
    evals = sorted(set(int(s) for s in opts.eval_steps))
    if evals and (evals[0] < 0 or evals[-1] > total_steps):
        raise ValueError(f"eval_steps must lie in [0, {total_steps}], got {evals[0]}..{evals[-1]}")
    if evals and opts.eval_fn is None:
        raise ValueError("eval_steps given without eval_fn")
    if (
        isinstance(opts.start_step, bool)
        or not isinstance(opts.start_step, int)
        or not 0 <= opts.start_step <= total_steps
    ):
        raise ValueError(f"start_step must be an int in [0, {total_steps}], got {opts.start_step!r}")
    done_before = len(opts.history.loss) if opts.history is not None else 0
    if done_before != opts.start_step:
        raise ValueError(f"history holds {done_before} steps but start_step is {opts.start_step}")
    return _fit_steps(model, optimizer, total_steps, coords, targets, opts, sampler, evals)


def _make_sampler(opts: FitOptions, total_steps: int) -> IntSampler | None:
    """The run's sampler: the given one (checked) or the paper's INT / its control from ``int_schedule``."""
    fresh = opts.batch_fn is not None
    if opts.sampler is not None:
        if opts.int_schedule is not None or opts.random_subset:
            raise ValueError("give either sampler or int_schedule/random_subset, not both")
        if opts.sampler.total_steps != total_steps:
            raise ValueError(f"sampler.total_steps ({opts.sampler.total_steps}) must equal total_steps ({total_steps})")
        if opts.sampler.fresh_candidates != fresh:
            raise ValueError(
                f"the sampler was made with fresh_candidates={opts.sampler.fresh_candidates}, but this run has "
                + ("a fresh batch each step (batch_fn)" if fresh else "a fixed candidate set (coords, targets)")
            )
        return opts.sampler
    if opts.int_schedule is None:
        if opts.random_subset:
            raise ValueError("random_subset=True needs an int_schedule (the control shares INT's sizes and schedule)")
        return None
    schedule = opts.int_schedule
    if schedule.total_steps != total_steps:
        raise ValueError(f"int_schedule.total_steps ({schedule.total_steps}) must equal total_steps ({total_steps})")
    config = IntSamplerConfig(
        sampler="random" if opts.random_subset else "int",
        ratio_kind=schedule.ratio_kind,
        r0=schedule.r0,
        interval_kind=schedule.interval_kind,
        max_interval=schedule.max_interval,
        reuse="keep",
    )
    return IntSampler(config, total_steps, fresh_candidates=fresh, generator=opts.generator)


def _fit_steps(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    total_steps: int,
    coords: Tensor | None,
    targets: Tensor | None,
    opts: FitOptions,
    sampler: IntSampler | None,
    evals: list[int],
) -> Iterator[FitHistory]:
    """The training loop behind :func:`fit_iter` (arguments already validated)."""
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    hist = opts.history if opts.history is not None else FitHistory()
    clock = hist.time[-1] if hist.time else 0.0
    trained = hist.points_trained[-1] if hist.points_trained else 0
    scored = hist.points_scored[-1] if hist.points_scored else 0
    fixed_cells: Tensor | None = None
    eval_fn = opts.eval_fn

    def evaluate(done: int) -> None:
        assert eval_fn is not None
        hist.eval_steps.append(done)
        hist.eval_time.append(clock)
        hist.eval_points_trained.append(trained)
        hist.eval_points_scored.append(scored)
        hist.eval_metrics.append(dict(eval_fn(model, done)))

    pending = [e for e in evals if e > opts.start_step or (e == 0 and opts.start_step == 0)]
    if pending and pending[0] == 0:
        evaluate(pending.pop(0))
    for step in range(opts.start_step, total_steps):
        _synchronize(device)
        start = time.perf_counter()
        ids: Tensor | None = None
        if opts.batch_fn is not None:
            batch = opts.batch_fn(step)
            x, y = batch[0], batch[1]
            ids = batch[2] if len(batch) > 2 else None
            cells = opts.cells_fn(x) if opts.cells_fn is not None and sampler is not None else None
        else:
            assert coords is not None and targets is not None
            x, y = coords, targets
            if fixed_cells is None and opts.cells_fn is not None and sampler is not None:
                fixed_cells = opts.cells_fn(coords)
            cells = fixed_cells
        result = fit_step(
            model,
            optimizer,
            x,
            y,
            step=step,
            sampler=sampler,
            ids=ids,
            cells=cells,
            loss=opts.loss,
            adjust=opts.adjust,
            data_range=opts.data_range,
            score_chunk_size=opts.score_chunk_size,
        )
        if opts.lr_scheduler is not None:
            opts.lr_scheduler.step()
        _synchronize(device)
        clock += time.perf_counter() - start
        trained += result.num_trained
        scored += result.num_scored
        hist.loss.append(result.loss)
        hist.psnr.append(result.psnr)
        hist.time.append(clock)
        hist.points_trained.append(trained)
        hist.points_scored.append(scored)
        hist.selected.append(result.selected)
        if opts.progress is not None:
            opts.progress(step, result)
        if pending and pending[0] == step + 1:
            evaluate(pending.pop(0))
        yield hist


def _run_to_the_end(steps: Callable[P, Iterator[FitHistory]]) -> Callable[P, FitHistory]:
    """The function that runs the generator function ``steps`` to its end and returns the history it yielded last."""

    def fit(*args: P.args, **kwargs: P.kwargs) -> FitHistory:
        """Train a coordinate network for ``total_steps`` steps: :func:`fit_iter` (same arguments) run to its end.

        Returns:
            The run's :class:`FitHistory`.
        """
        return deque(steps(*args, **kwargs), maxlen=1)[0]  # the generator yields the same, growing history

    return fit


fit = _run_to_the_end(fit_iter)
