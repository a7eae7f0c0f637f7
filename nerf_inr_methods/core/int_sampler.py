"""INT and its error-driven relatives as one object: candidate pool, scores, selection, no-starvation guard, state.

:class:`IntSampler` owns the whole policy of "which points does this step train on" for NeRF rays, image pixels
and shape points; adapters only turn their data into candidates and call it (methods.md section 1 and "Beyond
the seeds: error-driven samplers"). Samplers (``IntSamplerConfig.sampler``):

- ``int``: the paper's INT. A candidate pool is (re)drawn and scored by a fresh no-grad forward on the re-selection
  steps of the interval schedule; the step trains the ``k = ceil(ratio(t) * batch)`` largest scores.
- ``random``: INT's control: same pool, sizes and schedule, a uniformly random subset, no scoring.
- ``soft``: soft mining (Kheradmand et al., CVPR 2024): the scored pool of ``int``, but the ``k`` points are drawn
  without replacement with probability proportional to ``score ** error_power`` mixed with a ``uniform_share`` of
  uniform probability, and each trained point's loss is weighted by the importance correction
  ``(k / (n pi_i)) ** alpha_t`` (``pi_i`` its inclusion probability; ``alpha_t`` warms up from 0 to ``alpha``;
  weights normalised to mean 1). ``alpha = 0`` is pure (soft) mining, ``alpha = 1`` self-normalised importance
  sampling of the full-batch loss.
- ``error-map``: instant-ngp style: a persistent per-cell error map (cells: e.g. 4x4-pixel tiles of each image) is
  written by every training forward and the ``k`` points are drawn from a fresh pool, every step, with probability
  proportional to their cell's error (same mixing and weights as ``soft``) with **no** scoring pass. Cells never
  written, or not written for more than ``error_map_max_age`` steps, count as the map's current maximum (explore).
- ``two-forward``: hard mining with two forwards and one backward (Korhonen et al. 2024): every step a fresh pool,
  ``m = ceil(score_factor * k)`` of its points scored by a no-grad forward, the ``k`` largest trained.

Between the re-selection steps of ``int``, ``random`` and ``soft``, ``reuse`` says what a step trains: ``keep``
the subset drawn at the last re-selection (the paper's image code), or ``rerank``: draw again from the pool, whose
scores of trained points are refreshed by their training forward (free, "errors from the previous iteration";
the NeRF pipeline's choice). ``error-map`` and ``two-forward`` draw a new pool every step.

**No pixel starves** (``max_skips``, points with ids): a per-point uint8 counter counts consecutive pools in which
the point was a candidate (in the pool) but was not trained; at ``max_skips`` it is *forced*: trained
first in its next pool (weight 1 before normalisation), before the sampler fills the rest of the ``k`` slots; when
more than ``k`` points are forced, those that waited longest go first.

Every scoring pass is counted (``Selection.num_scored``) so callers can keep an honest clock. The whole state
(pool ids and scores, skip counters, error map, generator, schedule length T) is in :meth:`IntSampler.state_dict`;
:meth:`IntSampler.load_state_dict` refuses a state of another schedule or sampler.

Example (an image of 4096 pixels, all pixels the candidates)::

    >>> import torch
    >>> from nerf_inr_methods.core.int_sampler import IntSampler, IntSamplerConfig, PoolCandidates
    >>> target = torch.rand(4096, 1)
    >>> pred = torch.zeros(4096, 1)
    >>> sampler = IntSampler(IntSamplerConfig(sampler="soft", max_interval=5), total_steps=100)
    >>> errors = lambda idx: (pred[idx] - target[idx]).abs().sum(-1)  # a no-grad forward in real use
    >>> sel = sampler.select(0, draw=lambda: PoolCandidates(4096), score=errors)
    >>> sel.indices.shape, sel.num_scored, sel.weights is None  # alpha warms up from 0: no weights at step 0
    (torch.Size([820]), 4096, True)
    >>> sampler.record(sel, (pred[sel.indices] - target[sel.indices]).abs().sum(-1))
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor

from nerf_inr_methods.core.int_selection import (
    INTERVAL_KINDS,
    RATIO_KINDS,
    IntervalKind,
    IntSchedule,
    RatioKind,
    num_selected,
)

SamplerName = Literal["int", "random", "soft", "error-map", "two-forward"]
"""Which points a step trains: INT's top-k, its random control, soft mining, an error map, two forwards."""
SAMPLERS: tuple[str, ...] = ("int", "random", "soft", "error-map", "two-forward")
ReuseKind = Literal["keep", "rerank"]
"""Between re-selections: keep the drawn subset, or re-draw from the pool with refreshed scores."""
REUSE_KINDS: tuple[str, ...] = ("keep", "rerank")
MAX_SKIP_COUNT = 255
"""Skip counters are uint8 and saturate here."""
STATE_FORMAT = "int-sampler-v1"
LOSS_WEIGHTS_KEY = "ray_loss_weights"
"""Batch key under which adapters hand :attr:`Selection.weights` to a model's loss (InrNeRFModel reads it)."""

_SCHEDULED = ("int", "random", "soft")
"""Samplers whose pool follows the interval schedule (the others draw a new pool every step)."""
_PROPORTIONAL = ("soft", "error-map")
"""Samplers that draw proportionally to an error and weight the loss by the importance correction."""


class SamplerOptionError(ValueError):
    """A bad sampler option; ``field`` names the :class:`IntSamplerConfig` field so adapters can name their flag."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field} {problem}")
        self.field = field
        self.problem = problem


@dataclass
class SamplerParameters:
    """Parameters of the soft, error-map and two-forward samplers (``int`` and ``random`` ignore them).

    Declared once: :class:`IntSamplerConfig` derives from this class, and so do the options of the shape trainer
    (``--int-selection.<name>``) and of the 2D sampler benchmark (``--<name>``); the NeRF pipeline's flags
    ``--pipeline.int-<name>`` are made from these declarations (type, default, help: ``config_fields.py``). Values
    are checked by :class:`IntSamplerConfig`."""

    alpha: float = 0.6
    """soft / error-map: exponent of the importance correction of each point's loss (0: pure mining, 1: unbiased)."""
    alpha_warmup: float = 0.1
    """soft / error-map: alpha grows linearly from 0 over this fraction of the T steps."""
    uniform_share: float = 0.2
    """soft / error-map: share of the drawing probability spread uniformly over the candidates."""
    error_power: float = 1.0
    """soft / error-map: draw with probability proportional to error ** error_power."""
    error_map_ema: float = 0.5
    """error-map: weight of a cell's previous value when a training forward writes it (0: overwrite)."""
    error_map_max_age: int | None = None
    """error-map: a cell not written for more than this many steps counts as never seen (None: never stale)."""
    score_factor: float = 2.0
    """two-forward: points scored by the no-grad forward per trained point (m = ceil(score_factor * k))."""

    def sampler_parameters(self) -> dict[str, Any]:
        """These parameters by name (keyword arguments of :class:`IntSamplerConfig`)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(SamplerParameters)}


@dataclass
class IntSamplerConfig(SamplerParameters):
    """Options of :class:`IntSampler`: the sampler, INT's schedules, the guard and the samplers' parameters."""

    sampler: SamplerName = "int"
    """int (paper), random (its control), soft (soft mining), error-map (instant-ngp), two-forward (hard mining)."""
    ratio_kind: RatioKind = "step"
    """Schedule of the trained fraction k / batch: constant, step (paper: r0 -> 0.92 in 10 stages), cosine, r-cosine."""
    r0: float = 0.2
    """Starting (constant: fixed) trained fraction."""
    interval_kind: IntervalKind = "incremental"
    """Schedule of pool re-selection (int, random, soft): dense, incremental (paper), decremental or constant."""
    max_interval: int = 90
    """Largest re-selection interval in steps (the paper's 90 is for 5k-step image fits)."""
    reuse: ReuseKind = "keep"
    """Between re-selections (int, random, soft): keep the drawn subset, or rerank/re-draw from the pool."""
    max_skips: int | None = None
    """No-starvation guard: a point left untrained in this many consecutive pools is forced (None: off)."""
    seed: int = 0
    """Seed of the sampler's own generator (random draws)."""

    def __post_init__(self) -> None:
        def number(value: Any) -> bool:
            return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)

        if self.sampler not in SAMPLERS:
            raise SamplerOptionError("sampler", f"must be one of {SAMPLERS}, got {self.sampler!r}")
        if self.ratio_kind not in RATIO_KINDS:
            raise SamplerOptionError("ratio_kind", f"must be one of {RATIO_KINDS}, got {self.ratio_kind!r}")
        if self.interval_kind not in INTERVAL_KINDS:
            raise SamplerOptionError("interval_kind", f"must be one of {INTERVAL_KINDS}, got {self.interval_kind!r}")
        if self.reuse not in REUSE_KINDS:
            raise SamplerOptionError("reuse", f"must be one of {REUSE_KINDS}, got {self.reuse!r}")
        if not number(self.r0) or not 0.0 < self.r0 <= 1.0:
            raise SamplerOptionError("r0", f"must be in (0, 1], got {self.r0!r}")
        if isinstance(self.max_interval, bool) or not isinstance(self.max_interval, int) or self.max_interval < 1:
            raise SamplerOptionError("max_interval", f"must be an int >= 1, got {self.max_interval!r}")
        if self.max_skips is not None and (
            isinstance(self.max_skips, bool)
            or not isinstance(self.max_skips, int)
            or not 1 <= self.max_skips <= MAX_SKIP_COUNT
        ):
            raise SamplerOptionError(
                "max_skips", f"must be an int in [1, {MAX_SKIP_COUNT}] or None, got {self.max_skips!r}"
            )
        for name in ("alpha", "alpha_warmup", "uniform_share", "error_map_ema"):
            value = getattr(self, name)
            if not number(value) or not 0.0 <= value <= 1.0:
                raise SamplerOptionError(name, f"must be in [0, 1], got {value!r}")
        if not number(self.error_power) or self.error_power <= 0.0:
            raise SamplerOptionError("error_power", f"must be > 0, got {self.error_power!r}")
        if self.error_map_max_age is not None and (
            isinstance(self.error_map_max_age, bool)
            or not isinstance(self.error_map_max_age, int)
            or self.error_map_max_age < 1
        ):
            raise SamplerOptionError(
                "error_map_max_age", f"must be an int >= 1 or None, got {self.error_map_max_age!r}"
            )
        if not number(self.score_factor) or self.score_factor < 1.0:
            raise SamplerOptionError("score_factor", f"must be >= 1, got {self.score_factor!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise SamplerOptionError("seed", f"must be an int, got {self.seed!r}")

    def schedule(self, total_steps: int) -> IntSchedule:
        """The ratio / interval schedule over ``total_steps`` steps."""
        return IntSchedule(total_steps, self.ratio_kind, float(self.r0), self.interval_kind, int(self.max_interval))

    @property
    def scores_pool(self) -> bool:
        """Whether the sampler runs no-grad scoring passes (int, soft, two-forward)."""
        return self.sampler in ("int", "soft", "two-forward")

    @property
    def weights_loss(self) -> bool:
        """Whether the sampler can return per-point loss weights (soft and error-map with alpha > 0)."""
        return self.sampler in _PROPORTIONAL and self.alpha > 0.0


@dataclass
class PoolCandidates:
    """What an adapter hands over when the sampler asks for a new pool (all first dim ``P``, one device)."""

    size: int
    """Number of candidates P."""
    ids: Tensor | None = None
    """(P,) long ids of the candidates in [0, num_points) (e.g. flat pixel ids), for the no-starvation guard."""
    cells: Tensor | None = None
    """(P,) long error-map cells in [0, num_cells) (needed by ``error-map``)."""


@dataclass
class Selection:
    """The points one step trains: positions in the current pool, loss weights and what it cost."""

    step: int
    """The training step."""
    indices: Tensor
    """(k,) long positions in the current pool (forced points first)."""
    weights: Tensor | None
    """(k,) float loss weights with mean 1 (importance correction), or None for plain means."""
    new_pool: bool
    """Whether a new pool was drawn at this step."""
    num_scored: int
    """Points in this step's no-grad scoring passes."""
    num_forced: int
    """Trained points that the no-starvation guard forced."""
    ratio: float
    """Trained fraction of the schedule at this step."""
    interval: int
    """Re-selection interval of the schedule at this step."""
    alpha: float
    """Importance-correction exponent at this step (0 for samplers without weights)."""

    @property
    def num_trained(self) -> int:
        """Points in the forward + backward pass."""
        return int(self.indices.shape[0])


@dataclass
class _Pool:
    """The current candidates (all tensors first dim ``P``, on the candidates' device)."""

    step: int
    size: int
    ids: Tensor | None
    cells: Tensor | None
    forced: Tensor
    trained: Tensor
    scores: Tensor | None = None
    """(P,) errors of the last scoring (refreshed by training forwards with ``rerank``); None before scoring."""


def _indices_below(indices: Tensor, limit: int, what: str) -> Tensor:
    """``indices`` as int64, refusing any outside [0, limit) (ValueError naming ``what`` and the range found)."""
    indices = indices.long()
    if indices.numel() and (int(indices.min()) < 0 or int(indices.max()) >= limit):
        raise ValueError(f"{what} must lie in [0, {limit}), got {int(indices.min())}..{int(indices.max())}")
    return indices


def inclusion_probabilities(probabilities: Tensor, k: int, iterations: int = 30) -> Tensor:
    """Approximate inclusion probabilities of drawing ``k`` points without replacement (successive sampling).

    Uses Hajek's approximation ``pi_i = 1 - exp(-lam q_i)`` with ``lam`` solving ``sum pi_i = k`` (Newton from the
    left on a concave increasing function: monotone, no overshoot). Exact for uniform ``q`` (``pi = k / n``).

    Args:
        probabilities: (n,) drawing probabilities ``q`` (non-negative, summing to 1).
        k: number of draws, 0 <= k <= number of positive entries.

    Returns:
        (n,) float64 inclusion probabilities in [0, 1] summing to k (to ~1e-9 relative).
    """
    q = probabilities.detach().to(torch.float64)
    if k <= 0:
        return torch.zeros_like(q)
    lam = torch.tensor(float(k), dtype=torch.float64, device=q.device)
    for _ in range(iterations):
        e = torch.exp(-lam * q)
        f = (1.0 - e).sum() - k
        if float(f) >= -1e-9 * k:
            break
        lam = lam - f / (q * e).sum().clamp_min(1e-300)
    return (1.0 - torch.exp(-lam * q)).clamp_(0.0, 1.0)


def drawing_probabilities(errors: Tensor, uniform_share: float = 0.2, error_power: float = 1.0) -> Tensor:
    """The ``soft`` / ``error-map`` samplers' drawing probabilities: ``(1 - u) e^p / sum(e^p) + u / n``.

    Args:
        errors: (n,) non-negative errors of the candidates (negatives count as 0).
        uniform_share: ``u``, the share of probability spread uniformly.
        error_power: ``p``.

    Returns:
        (n,) float64 probabilities summing to 1 (uniform when every error is 0 or not finite).

    Example::

        >>> [round(q, 3) for q in drawing_probabilities(torch.tensor([0.0, 1.0, 3.0]), uniform_share=0.3).tolist()]
        [0.1, 0.275, 0.625]
    """
    mass = errors.detach().to(torch.float64).clamp_min(0.0) ** error_power
    total = float(mass.sum())
    n = mass.numel()
    if total <= 0.0 or not math.isfinite(total):
        return torch.full_like(mass, 1.0 / n)
    return (1.0 - uniform_share) * mass / total + uniform_share / n


def importance_sampling_gain(magnitudes: Tensor, probabilities: Tensor) -> float:
    """How much drawing points with ``probabilities`` (unbiased weights ``1 / (n p_i)``) shrinks the second moment of a
    one-point estimate of a mean gradient whose per-point norms are ``magnitudes``, against uniform drawing.

    ``gain = (sum_i m_i^2 / n) / (sum_i m_i^2 / (n^2 p_i))``: 1 for uniform ``p``; at most ``mean(m^2) / mean(m)^2``,
    reached by ``p ~ m`` (the best any error-driven sampler can do when each point's gradient norm is ``m_i``).
    A sampler's batch of ``k`` points has the variance of ``gain * k`` uniform points (up to the mean's own square).

    Args:
        magnitudes: (n,) non-negative per-point gradient norms (e.g. residual norms of rays).
        probabilities: (n,) drawing probabilities summing to 1 (zeros only where ``magnitudes`` are 0).

    Example::

        >>> m = torch.tensor([0.0, 0.0, 0.0, 4.0])
        >>> importance_sampling_gain(m, m / m.sum()), importance_sampling_gain(m, torch.full((4,), 0.25))
        (4.0, 1.0)
    """
    m2 = magnitudes.detach().to(torch.float64) ** 2
    p = probabilities.detach().to(torch.float64)
    n = m2.numel()
    weighted = torch.where(m2 > 0, m2 / p.clamp_min(1e-300), torch.zeros_like(m2)).sum()
    return float(m2.sum() * n / weighted) if float(weighted) > 0 else 1.0


def weighted_mse(pred: Tensor, target: Tensor, weights: Tensor | None = None) -> Tensor:
    """Mean squared error with per-point weights: ``mean_i(w_i * mean_c (pred - target)^2)``.

    Args:
        pred: (n, C) predictions.  target: (n, C) targets.
        weights: (n,) or (n, 1) loss weights (e.g. :attr:`Selection.weights`, mean 1); None: plain MSE.

    Returns:
        Scalar tensor.
    """
    if weights is None:
        return torch.nn.functional.mse_loss(pred, target)
    per_point = ((pred - target) ** 2).reshape(pred.shape[0], -1).mean(dim=1)
    return (per_point * weights.reshape(-1).to(per_point)).mean()


def grid_cells(indices: Tensor, height: int, width: int, cell_size: int) -> Tensor:
    """Error-map cells of pixels: ``cell_size`` x ``cell_size`` tiles of each image, flattened.

    Args:
        indices: (n, 3) long ``(image, y, x)``.
        height, width: image size in pixels (the largest image's, for mixed sizes).
        cell_size: tile side in pixels.

    Returns:
        (n,) long cell ids in ``[0, num_images * ceil(height / cell_size) * ceil(width / cell_size))``.
    """
    if cell_size < 1:
        raise ValueError(f"cell_size must be >= 1, got {cell_size}")
    rows, cols = -(-height // cell_size), -(-width // cell_size)
    indices = indices.long()
    return (indices[:, 0] * rows + indices[:, 1] // cell_size) * cols + indices[:, 2] // cell_size


def voxel_cells(coords: Tensor, resolution: int, low: float = -0.5, high: float = 0.5) -> Tensor:
    """Error-map cells of 3D points: voxels of a ``resolution^3`` grid over ``[low, high]^3`` (outside: clamped).

    Args:
        coords: (n, 3) points.

    Returns:
        (n,) long cell ids in ``[0, resolution^3)``.
    """
    if resolution < 1:
        raise ValueError(f"resolution must be >= 1, got {resolution}")
    ijk = ((coords.detach() - low) / (high - low) * resolution).floor().long().clamp_(0, resolution - 1)
    return (ijk[:, 0] * resolution + ijk[:, 1]) * resolution + ijk[:, 2]


class IntSampler:
    """INT's whole selection policy for one training run (see the module docstring).

    Per step the adapter calls :meth:`select` with two callbacks: ``draw()`` (only called when the sampler wants a
    new pool: the adapter draws candidates, keeps their data aligned with the returned :class:`PoolCandidates`,
    or returns None to keep a fixed candidate set) and ``score(positions)`` (a no-grad forward: errors, shape
    (m,), of the pool points at ``positions``, shape (m,)). It trains on ``pool[selection.indices]`` with
    ``selection.weights`` and hands the training forward's per-point errors back through :meth:`record`.

    Args:
        config: the options.
        total_steps: T of the schedules.
        num_points: size of the id space (enables the no-starvation guard when ``config.max_skips`` is set).
        num_cells: number of error-map cells (required by ``error-map``).
        fresh_candidates: the candidates change every step (a new batch each step): a new pool every step.
        generator: CPU generator for random draws (default: one seeded with ``config.seed``).
    """

    def __init__(
        self,
        config: IntSamplerConfig,
        total_steps: int,
        *,
        num_points: int | None = None,
        num_cells: int | None = None,
        fresh_candidates: bool = False,
        generator: torch.Generator | None = None,
    ) -> None:
        if not isinstance(config, IntSamplerConfig):
            raise TypeError(f"config must be an IntSamplerConfig, got {type(config).__name__}")
        self.config = config
        self.schedule = config.schedule(total_steps)
        self.fresh_candidates = bool(fresh_candidates)
        self.generator = generator if generator is not None else torch.Generator().manual_seed(config.seed)
        if num_points is not None and (not isinstance(num_points, int) or num_points < 1):
            raise ValueError(f"num_points must be a positive int or None, got {num_points!r}")
        if config.sampler == "error-map" and (not isinstance(num_cells, int) or num_cells < 1):
            raise ValueError("the error-map sampler needs num_cells (the number of error-map cells) >= 1")
        self.num_points = num_points
        self.num_cells = num_cells if config.sampler == "error-map" else None
        self.skips: Tensor | None = None
        """(num_points,) uint8 consecutive untrained pools per point (guard on and ids seen)."""
        self.error_map: Tensor | None = None
        """(num_cells,) float32 error of each cell (error-map)."""
        self.error_map_step: Tensor | None = None
        """(num_cells,) int64 step of each cell's last write, -1 never."""
        self.pool: _Pool | None = None
        self.kept: Selection | None = None
        """The subset drawn at the last re-selection (``reuse = keep``)."""

    # ------------------------------------------------------------------------------------------- schedule
    @property
    def total_steps(self) -> int:
        """T of the schedules."""
        return self.schedule.total_steps

    def alpha_at(self, step: int) -> float:
        """Importance-correction exponent at ``step``: ``alpha * min(1, step / (alpha_warmup * T))``."""
        c = self.config
        if c.sampler not in _PROPORTIONAL:
            return 0.0
        warmup = c.alpha_warmup * self.total_steps
        return float(c.alpha) if warmup <= 0 else float(c.alpha) * min(1.0, step / warmup)

    def is_refresh_step(self, step: int) -> bool:
        """Whether :meth:`select` at ``step`` draws a new pool (given the current pool)."""
        pool = self.pool
        if self.fresh_candidates or self.config.sampler not in _SCHEDULED or pool is None or step < pool.step:
            return True
        # Same rule as core.int_selection.selection_steps (t - last >= interval(t)), also valid past T and on resume.
        return step - pool.step >= self.schedule.interval(step)

    def planned_counts(self, step: int, batch_size: int, pool_size: int) -> tuple[int, int]:
        """(points trained, points scored) at ``step`` of a run from step 0 without forced points.

        Args:
            batch_size: the batch whose ``ratio`` fraction is trained.  pool_size: candidates per pool.
        """
        c = self.config
        k = min(num_selected(batch_size, self.schedule.ratio(step)), pool_size)
        if c.sampler == "two-forward":
            return k, (0 if k >= pool_size else min(pool_size, math.ceil(c.score_factor * k)))
        if c.sampler not in ("int", "soft") or k >= pool_size:
            return k, 0
        refresh = self.fresh_candidates or self.schedule.is_selection_step(step)
        return k, (pool_size if refresh else 0)

    # ------------------------------------------------------------------------------------------- selection
    def select(
        self,
        step: int,
        draw: Callable[[], PoolCandidates | None],
        score: Callable[[Tensor], Tensor],
        batch_size: int | None = None,
    ) -> Selection:
        """The points to train at ``step``.

        Args:
            step: training step (>= 0; past T the last stage's schedule continues).
            draw: called when a new pool is due; returns its candidates, or None to keep the current candidate set
                (a fixed set: same ids and cells as the last draw; the first draw must not return None).
            score: ``score(positions (m,)) -> errors (m,)``: a no-grad forward on those pool points.
            batch_size: the batch whose ratio is trained, ``k = ceil(ratio(step) * batch_size)`` (default: the pool).

        Returns:
            :class:`Selection`.
        """
        if isinstance(step, bool) or not isinstance(step, int) or step < 0:
            raise ValueError(f"step must be a non-negative int, got {step!r}")
        c = self.config
        ratio = self.schedule.ratio(step)
        interval = self.schedule.interval(step)
        alpha = self.alpha_at(step)
        refresh = self.is_refresh_step(step)
        if not refresh and c.reuse == "keep" and self.kept is not None and c.sampler in _SCHEDULED:
            kept = self.kept
            return dataclasses.replace(
                kept, step=step, new_pool=False, num_scored=0, num_forced=0, ratio=ratio, interval=interval
            )
        if refresh:
            self._new_pool(step, draw())
        pool = self.pool
        assert pool is not None
        n = pool.size
        k = min(num_selected(n if batch_size is None else int(batch_size), ratio), n)
        indices, weights, num_scored = self._choose(pool, k, alpha, score)
        num_forced = int(pool.forced[indices].sum()) if pool.forced.any() else 0
        pool.trained[indices] = True
        pool.forced[indices] = False
        if self.skips is not None and pool.ids is not None:
            self.skips[pool.ids[indices]] = 0
        selection = Selection(step, indices, weights, refresh, num_scored, num_forced, ratio, interval, alpha)
        self.kept = selection if refresh else self.kept
        return selection

    def record(self, selection: Selection, errors: Tensor) -> None:
        """Hand back the training forward's errors of the trained points (pre-update L1, shape (k,)).

        ``rerank`` refreshes the pool's scores of those points; ``error-map`` writes them into the map.
        A no-op for the other configurations (callers may skip computing errors when :attr:`needs_errors` is False).
        """
        pool = self.pool
        if pool is None or not self.needs_errors:
            return
        errors = errors.detach().reshape(-1)
        if errors.shape[0] != selection.indices.shape[0]:
            raise ValueError(f"errors must have shape ({selection.indices.shape[0]},), got {tuple(errors.shape)}")
        if self.config.sampler == "error-map":
            assert pool.cells is not None
            self._write_error_map(pool.cells[selection.indices], errors, selection.step)
        elif pool.scores is not None:
            pool.scores[selection.indices] = errors.to(pool.scores)

    @property
    def needs_errors(self) -> bool:
        """Whether :meth:`record` uses the training forward's errors."""
        c = self.config
        return c.sampler == "error-map" or (c.sampler in ("int", "soft") and c.reuse == "rerank")

    def _choose(
        self, pool: _Pool, k: int, alpha: float, score: Callable[[Tensor], Tensor]
    ) -> tuple[Tensor, Tensor | None, int]:
        """(indices (k,), weights (k,) or None, points scored) for this step."""
        c = self.config
        n = pool.size
        device = pool.forced.device
        if k >= n:  # everything is trained: nothing to choose, nothing to score
            return torch.arange(n, device=device), None, 0
        forced = torch.nonzero(pool.forced).squeeze(1)
        if forced.numel() >= k:  # the longest-waiting forced points first (no starvation among them either)
            assert self.skips is not None and pool.ids is not None
            waited = self.skips[pool.ids[forced]].to(torch.int32)
            return forced[torch.sort(waited, descending=True, stable=True).indices[:k]], None, 0
        if c.sampler == "int":
            scored = self._ensure_scores(pool, score)
            keys = pool.scores.clone()  # type: ignore[union-attr]
            keys[pool.forced] = float("inf")
            return torch.topk(keys, k, sorted=False).indices, None, scored
        free = torch.nonzero(~pool.forced).squeeze(1) if forced.numel() else torch.arange(n, device=device)
        slots = k - forced.numel()
        weights: Tensor | None = None
        scored = 0
        if c.sampler == "random":
            chosen = free[torch.randperm(free.numel(), generator=self.generator)[:slots].to(device)]
        elif c.sampler == "two-forward":
            m = min(free.numel(), math.ceil(c.score_factor * slots))
            candidates = free[torch.randperm(free.numel(), generator=self.generator)[:m].to(device)]
            errors = score(candidates).detach().reshape(-1)
            scored = m
            chosen = candidates[torch.topk(errors.to(device), slots, sorted=False).indices]
        else:  # soft, error-map
            if c.sampler == "soft":
                scored = self._ensure_scores(pool, score)
                errors = pool.scores[free]  # type: ignore[index]
            else:
                errors = self._error_map_values(pool.cells[free], pool.step)  # type: ignore[index]
            chosen, weights = self._draw_proportional(free, errors, slots, alpha)
        indices = torch.cat([forced, chosen]) if forced.numel() else chosen
        if weights is not None and forced.numel():
            weights = torch.cat([torch.ones(forced.numel(), dtype=weights.dtype, device=weights.device), weights])
        if weights is not None:
            weights = weights / weights.mean()
        return indices, weights, scored

    def _ensure_scores(self, pool: _Pool, score: Callable[[Tensor], Tensor]) -> int:
        """Score the whole pool once (fresh no-grad forward); returns the points scored now."""
        if pool.scores is not None:
            return 0
        positions = torch.arange(pool.size, device=pool.forced.device)
        scores = score(positions).detach().reshape(-1)
        if scores.shape[0] != pool.size:
            raise ValueError(f"score() must return shape ({pool.size},), got {tuple(scores.shape)}")
        pool.scores = scores.to(device=pool.forced.device, dtype=torch.float32).clone()
        return pool.size

    def _draw_proportional(
        self, free: Tensor, errors: Tensor, slots: int, alpha: float
    ) -> tuple[Tensor, Tensor | None]:
        """Draw ``slots`` of ``free`` without replacement, probability ~ (1 - u) err^p / sum + u / n; weights."""
        c = self.config
        n = free.numel()
        q = drawing_probabilities(errors, c.uniform_share, c.error_power)
        if int((q > 0).sum()) < slots:  # too few points with positive probability: mix in a little uniform
            q = 0.999 * q + 0.001 / n
        picks = torch.multinomial(q.cpu(), slots, replacement=False, generator=self.generator).to(free.device)
        if alpha <= 0.0:
            return free[picks], None
        pi = inclusion_probabilities(q, slots)[picks].clamp_min(1e-12)
        weights = ((slots / (n * pi)) ** alpha).to(torch.float32)
        return free[picks], weights

    # ------------------------------------------------------------------------------------------- pools
    def _new_pool(self, step: int, candidates: PoolCandidates | None) -> None:
        """Retire the current pool (skip counters) and install the new candidates."""
        old = self.pool
        self._retire_pool()
        if candidates is None:
            if old is None:
                raise ValueError("draw() returned None for the first pool: it must return the candidates")
            ids, cells, size = old.ids, old.cells, old.size
        else:
            ids, cells, size = candidates.ids, candidates.cells, int(candidates.size)
        if size < 1:
            raise ValueError(f"a candidate pool needs at least one point, got {size}")
        for name, value in (("ids", ids), ("cells", cells)):
            if value is not None and (value.dim() != 1 or value.shape[0] != size):
                raise ValueError(f"PoolCandidates.{name} must have shape ({size},), got {tuple(value.shape)}")
        if self.config.sampler == "error-map" and cells is None:
            raise ValueError("the error-map sampler needs PoolCandidates.cells (error-map cells of the candidates)")
        device = ids.device if ids is not None else (cells.device if cells is not None else torch.device("cpu"))
        forced = torch.zeros(size, dtype=torch.bool, device=device)
        if ids is not None and self.config.max_skips is not None and self.num_points is not None:
            ids = _indices_below(ids, self.num_points, "candidate ids")
            if self.skips is None:
                self.skips = torch.zeros(self.num_points, dtype=torch.uint8, device=device)
            forced = self.skips[ids] >= self.config.max_skips
        if cells is not None and self.num_cells is not None:
            cells = _indices_below(cells, self.num_cells, "error-map cells")
        trained = torch.zeros(size, dtype=torch.bool, device=device)
        self.pool = _Pool(step=step, size=size, ids=ids, cells=cells, forced=forced, trained=trained)

    def _retire_pool(self) -> None:
        """One more skip for every point of the current pool left untrained (a point drawn twice counts as trained if
        either copy was); trained points back to 0."""
        pool = self.pool
        self.pool = None
        if pool is None or self.skips is None or pool.ids is None:
            return
        untrained = pool.ids[~pool.trained]
        counts = self.skips[untrained].to(torch.int32) + 1
        self.skips[untrained] = counts.clamp_(max=MAX_SKIP_COUNT).to(torch.uint8)
        self.skips[pool.ids[pool.trained]] = 0

    # ------------------------------------------------------------------------------------------- error map
    def _ensure_error_map(self, device: torch.device) -> None:
        if self.error_map is None:
            assert self.num_cells is not None
            self.error_map = torch.zeros(self.num_cells, dtype=torch.float32, device=device)
            self.error_map_step = torch.full((self.num_cells,), -1, dtype=torch.int64, device=device)

    def _fresh_cells(self, step: int) -> Tensor:
        """(num_cells,) bool: written, and not older than ``error_map_max_age`` steps."""
        assert self.error_map_step is not None
        seen = self.error_map_step >= 0
        if self.config.error_map_max_age is not None:
            seen &= step - self.error_map_step <= self.config.error_map_max_age
        return seen

    def _error_map_values(self, cells: Tensor, step: int) -> Tensor:
        """(n,) map values of these cells; never-seen and stale cells get the map's maximum over fresh cells."""
        self._ensure_error_map(cells.device)
        assert self.error_map is not None
        fresh = self._fresh_cells(step)
        values = self.error_map[cells].clone()
        optimistic = float(self.error_map[fresh].max()) if bool(fresh.any()) else 1.0
        values[~fresh[cells]] = optimistic
        return values

    def _write_error_map(self, cells: Tensor, errors: Tensor, step: int) -> None:
        """Per-cell mean of this step's errors, blended into the map with ``error_map_ema``."""
        self._ensure_error_map(cells.device)
        assert self.error_map is not None and self.error_map_step is not None
        sums = torch.zeros_like(self.error_map).index_add_(0, cells, errors.to(self.error_map))
        counts = torch.zeros_like(self.error_map).index_add_(0, cells, torch.ones_like(errors, dtype=torch.float32))
        hit = counts > 0
        new = sums[hit] / counts[hit]
        old = self.error_map[hit]
        seen = self.error_map_step[hit] >= 0
        ema = float(self.config.error_map_ema)
        self.error_map[hit] = torch.where(seen, ema * old + (1.0 - ema) * new, new)
        self.error_map_step[hit] = step

    # ------------------------------------------------------------------------------------------- state
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue exactly: options, T, pool, kept subset, counters, error map, generator.

        Plain dicts, tensors, numbers and strings only (loadable with ``torch.load(weights_only=True)``).
        """
        pool = self.pool
        kept = self.kept
        return {
            "format": STATE_FORMAT,
            "config": dataclasses.asdict(self.config),
            "total_steps": self.total_steps,
            "num_points": self.num_points,
            "num_cells": self.num_cells,
            "fresh_candidates": self.fresh_candidates,
            "generator": self.generator.get_state(),
            "skips": self.skips,
            "error_map": self.error_map,
            "error_map_step": self.error_map_step,
            "pool": None if pool is None else {f.name: getattr(pool, f.name) for f in dataclasses.fields(_Pool)},
            "kept": None if kept is None else {f.name: getattr(kept, f.name) for f in dataclasses.fields(Selection)},
        }

    def load_state_dict(self, state: dict[str, Any], device: torch.device | str | None = None) -> None:
        """Restore :meth:`state_dict` (tensors moved to ``device`` if given); refuses (ValueError) a state of another
        sampler, schedule or point set, naming what differs."""
        if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
            raise ValueError(f"not an INT sampler state (expected format {STATE_FORMAT!r})")
        mismatches = []
        saved_config = state["config"]
        for name, value in dataclasses.asdict(self.config).items():
            if name in saved_config and saved_config[name] != value:
                mismatches.append(f"{name} {saved_config[name]!r} (now {value!r})")
        for name in ("total_steps", "num_points", "num_cells", "fresh_candidates"):
            if state[name] != getattr(self, name):
                mismatches.append(f"{name} {state[name]!r} (now {getattr(self, name)!r})")
        if mismatches:
            raise ValueError("the saved INT state was made with " + ", ".join(mismatches))

        def moved(value: Any) -> Any:
            return value.to(device) if isinstance(value, Tensor) and device is not None else value

        self.generator.set_state(state["generator"].cpu())
        self.skips = moved(state["skips"])
        self.error_map = moved(state["error_map"])
        self.error_map_step = moved(state["error_map_step"])
        self.pool = None if state["pool"] is None else _Pool(**{k: moved(v) for k, v in state["pool"].items()})
        self.kept = None if state["kept"] is None else Selection(**{k: moved(v) for k, v in state["kept"].items()})
