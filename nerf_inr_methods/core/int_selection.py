"""INT (Implicit Neural Teaching): pick the points with the largest current error, with growing ratio and interval.

Plain functions on tensors plus one frozen schedule dataclass; no hidden state. See methods.md, section 1.

Example::

    >>> import torch
    >>> from nerf_inr_methods.core.int_selection import IntSchedule, int_scores, select_topk
    >>> schedule = IntSchedule(total_steps=1000)  # paper defaults: "step" ratio, "incremental" interval
    >>> pred, target = torch.rand(4096, 3), torch.rand(4096, 3)
    >>> if schedule.is_selection_step(0):
    ...     indices = select_topk(int_scores(pred, target), schedule.ratio(0))
    >>> indices.shape
    torch.Size([820])
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from numbers import Integral
from typing import Literal

import torch
from torch import Tensor

RatioKind = Literal["constant", "step", "cosine", "r-cosine"]
"""How the selected fraction evolves: fixed r0; r0 -> 1 in 10 stages; r0 -> 1 cosine; 1 -> r0 cosine."""
IntervalKind = Literal["dense", "incremental", "decremental", "constant"]
"""How often the subset is re-selected: every step; 1 then growing to max_interval; max_interval shrinking to 1."""

RATIO_KINDS: tuple[str, ...] = ("constant", "step", "cosine", "r-cosine")
INTERVAL_KINDS: tuple[str, ...] = ("dense", "incremental", "decremental", "constant")
NUM_STAGES = 10
"""The schedules split training into 10 equal stages s = 0..9."""


def _check_ratio(ratio: float, name: str = "ratio") -> None:
    if not isinstance(ratio, (int, float)) or isinstance(ratio, bool) or not (0.0 < float(ratio) <= 1.0):
        raise ValueError(f"{name} must be a number in (0, 1], got {ratio!r}")


def _check_step(step: int, total_steps: int) -> None:
    if not isinstance(total_steps, Integral) or total_steps < 1:
        raise ValueError(f"total_steps must be a positive int, got {total_steps!r}")
    if not isinstance(step, Integral) or step < 0:
        raise ValueError(f"step must be a non-negative int, got {step!r}")


@torch.no_grad()
def int_scores(pred: Tensor, target: Tensor) -> Tensor:
    """INT score of each point: L1 error summed over output channels, without gradient.

    Args:
        pred: predictions, shape (n, C) (or (n,) for a single channel).
        target: targets, same shape as ``pred``.

    Returns:
        Scores, shape (n,), on the device of ``pred``.
    """
    if pred.shape != target.shape:
        raise ValueError(f"pred and target must have the same shape, got {tuple(pred.shape)} and {tuple(target.shape)}")
    if pred.dim() not in (1, 2):
        raise ValueError(f"pred must have shape (n,) or (n, C), got {tuple(pred.shape)}")
    err = (pred.detach() - target.detach()).abs()
    return err if err.dim() == 1 else err.sum(dim=-1)


def num_selected(n: int, ratio: float) -> int:
    """Number of selected points k = ceil(ratio * n), at least 1 when n > 0.

    A relative tolerance of 1e-12 absorbs float error (0.28 * 100 is 28.000000000000004 in binary: k = 28).
    """
    _check_ratio(ratio)
    if not isinstance(n, int) or n < 0:
        raise ValueError(f"n must be a non-negative int, got {n!r}")
    if n == 0:
        return 0
    k = math.ceil(ratio * n * (1.0 - 1e-12))
    return min(max(k, 1), n)


def select_topk(scores: Tensor, ratio: float) -> Tensor:
    """Indices of exactly the k = ceil(ratio * n) largest scores (ties broken by torch.topk).

    Args:
        scores: per-point scores, shape (n,).
        ratio: selected fraction in (0, 1].

    Returns:
        Indices into ``scores``, shape (k,), dtype long, same device as ``scores``.
    """
    if scores.dim() != 1:
        raise ValueError(f"scores must have shape (n,), got {tuple(scores.shape)}")
    k = num_selected(scores.shape[0], ratio)
    if k == scores.shape[0]:
        return torch.arange(k, device=scores.device)
    return torch.topk(scores, k, sorted=False).indices


def select_random(
    n: int, ratio: float, generator: torch.Generator | None = None, device: torch.device | str = "cpu"
) -> Tensor:
    """Indices of k = ceil(ratio * n) points drawn uniformly without replacement (INT's random-subset control).

    Args:
        n: number of candidates.
        ratio: selected fraction in (0, 1].
        generator: optional CPU generator for reproducibility.
        device: device of the returned indices.

    Returns:
        Indices, shape (k,), dtype long.
    """
    k = num_selected(n, ratio)
    return torch.randperm(n, generator=generator)[:k].to(device)


def stage_of(step: int, total_steps: int) -> int:
    """Stage s in 0..9 of ``step``: stage s covers steps [ceil(s T / 10), ceil((s + 1) T / 10))."""
    _check_step(step, total_steps)
    return min(step * NUM_STAGES // total_steps, NUM_STAGES - 1)


def _stage_start(stage: int, total_steps: int) -> int:
    """First step of ``stage`` (inverse of ``stage_of``); total_steps for stage 10."""
    return -(-stage * total_steps // NUM_STAGES)


def ratio_at(step: int, total_steps: int, kind: RatioKind = "step", r0: float = 0.2) -> float:
    """Selected fraction at ``step``.

    - ``constant``: r0.
    - ``step``: min(r0 + s (1 - r0) / 10, 1) in stage s (r0 = 0.2: 0.20, 0.28, ..., 0.92).
    - ``cosine``: 1 - (1 - r0) (1 + cos(pi t / T)) / 2, from r0 at t = 0 towards 1.
    - ``r-cosine``: r0 + (1 - r0) (1 + cos(pi t / T)) / 2, from 1 at t = 0 towards r0.
    """
    _check_step(step, total_steps)
    _check_ratio(r0, "r0")
    if kind == "constant":
        return float(r0)
    if kind == "step":
        return min(r0 + stage_of(step, total_steps) * (1.0 - r0) / NUM_STAGES, 1.0)
    if kind in ("cosine", "r-cosine"):
        up = 0.5 * (1.0 + math.cos(math.pi * step / total_steps))  # 1 -> 0 over training
        return 1.0 - (1.0 - r0) * up if kind == "cosine" else r0 + (1.0 - r0) * up
    raise ValueError(f"ratio kind must be one of {RATIO_KINDS}, got {kind!r}")


def interval_at(step: int, total_steps: int, kind: IntervalKind = "incremental", max_interval: int = 90) -> int:
    """Re-selection interval (steps) at ``step``.

    - ``dense``: 1.
    - ``incremental``: 1 in stage 0, then max(1, round(max_interval * s / 9)) in stage s (90: 1, 10, 20, ..., 90).
    - ``decremental``: the reverse, max_interval in stage 0 down to 1 in stage 9.
    - ``constant``: max_interval in every stage (a fixed scoring cost per step, e.g. for soft mining's pool).
    """
    _check_step(step, total_steps)
    if not isinstance(max_interval, int) or max_interval < 1:
        raise ValueError(f"max_interval must be a positive int, got {max_interval!r}")
    s = stage_of(step, total_steps)
    if kind == "dense":
        return 1
    if kind == "constant":
        return max_interval
    if kind == "decremental":
        s = NUM_STAGES - 1 - s
    elif kind != "incremental":
        raise ValueError(f"interval kind must be one of {INTERVAL_KINDS}, got {kind!r}")
    return 1 if s == 0 else max(1, round(max_interval * s / (NUM_STAGES - 1)))


@lru_cache(maxsize=64)
def selection_steps(total_steps: int, kind: IntervalKind = "incremental", max_interval: int = 90) -> tuple[int, ...]:
    """All steps in [0, total_steps) at which the subset is re-selected, in increasing order.

    Step 0 always selects; afterwards step t re-selects when t - (last selection step) >= interval_at(t).
    Deterministic, so trainers need no state to know whether to select (cached per argument tuple).
    """
    interval_at(0, total_steps, kind, max_interval)  # validates the arguments
    steps = [0]
    last, t = 0, 1
    while t < total_steps:
        iv = interval_at(t, total_steps, kind, max_interval)
        if t - last >= iv:
            steps.append(t)
            last, t = t, t + 1
            continue
        # The interval is constant within a stage: jump to the first candidate in this stage or the next stage.
        next_stage = _stage_start(stage_of(t, total_steps) + 1, total_steps)
        t = min(last + iv, max(next_stage, t + 1))
    return tuple(steps)


def is_selection_step(step: int, total_steps: int, kind: IntervalKind = "incremental", max_interval: int = 90) -> bool:
    """Whether the INT subset is re-selected at ``step`` (see ``selection_steps``)."""
    _check_step(step, total_steps)
    if kind == "dense":
        interval_at(step, total_steps, kind, max_interval)
        return True
    return step in _selection_set(total_steps, kind, max_interval)


@lru_cache(maxsize=64)
def _selection_set(total_steps: int, kind: IntervalKind, max_interval: int) -> frozenset[int]:
    return frozenset(selection_steps(total_steps, kind, max_interval))


@dataclass(frozen=True)
class IntSchedule:
    """INT ratio and interval schedules for a run of ``total_steps`` steps (paper defaults: step + incremental)."""

    total_steps: int
    """Total number of training steps T (the 10 stages are T / 10 steps each)."""
    ratio_kind: RatioKind = "step"
    """Ratio schedule: constant, step (paper default), cosine, or r-cosine."""
    r0: float = 0.2
    """Starting (constant: fixed; r-cosine: final) selected fraction."""
    interval_kind: IntervalKind = "incremental"
    """Interval schedule: dense, incremental (paper default), decremental, or constant (max_interval throughout)."""
    max_interval: int = 90
    """Largest re-selection interval (stage 9 for incremental); scale it down for short runs."""

    def __post_init__(self) -> None:
        if not isinstance(self.total_steps, int) or self.total_steps < 1:
            raise ValueError(f"total_steps must be a positive int, got {self.total_steps!r}")
        if self.ratio_kind not in RATIO_KINDS:
            raise ValueError(f"ratio_kind must be one of {RATIO_KINDS}, got {self.ratio_kind!r}")
        if self.interval_kind not in INTERVAL_KINDS:
            raise ValueError(f"interval_kind must be one of {INTERVAL_KINDS}, got {self.interval_kind!r}")
        _check_ratio(self.r0, "r0")
        if not isinstance(self.max_interval, int) or self.max_interval < 1:
            raise ValueError(f"max_interval must be a positive int, got {self.max_interval!r}")

    def ratio(self, step: int) -> float:
        """Selected fraction at ``step``."""
        return ratio_at(step, self.total_steps, self.ratio_kind, self.r0)

    def interval(self, step: int) -> int:
        """Re-selection interval at ``step``."""
        return interval_at(step, self.total_steps, self.interval_kind, self.max_interval)

    def num_selected(self, step: int, n: int) -> int:
        """k = ceil(ratio(step) * n)."""
        return num_selected(n, self.ratio(step))

    def selection_steps(self) -> tuple[int, ...]:
        """All re-selection steps in [0, total_steps)."""
        return selection_steps(self.total_steps, self.interval_kind, self.max_interval)

    def is_selection_step(self, step: int) -> bool:
        """Whether to re-select at ``step``."""
        return is_selection_step(step, self.total_steps, self.interval_kind, self.max_interval)
