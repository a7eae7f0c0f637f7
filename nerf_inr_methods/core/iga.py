"""IGA (Inductive Gradient Adjustment): balance the eNTK spectrum on representatives, apply it to groups.

methods.md section 2. Plain gradient descent on the MSE moves the residual as r <- (I - eta K) r, so the
directions of K's small eigenvalues (high frequencies) converge slowly. IGA picks one representative per
group of points, computes the empirical NTK K (n, n) on them (:mod:`nerf_inr_methods.core.entk`), builds
``S = V diag(s) V^T`` with ``s_i = lambda_end / lambda_i`` for ``i < end`` (1 otherwise), and trains on the
gradient ``J^T (S R)`` where R (n_groups, p, C) holds the residuals of all points, grouped. The gradient is
produced by the surrogate loss ``(2 / N) sum(f * stopgrad(S R))``; with S = I it is exactly the MSE's.

Plain functions on tensors; :class:`IGAState`, IGA's only state across steps (the ``update_every`` schedule, the
latest S, its diagnostics), shared by every adapter; :class:`IGAAdjust`, the coordinate-network loop's ``adjust``
hook built on it. The NeRF adapter is ``nerfstudio_plugin.iga_nerf``.

Example:
    >>> import torch
    >>> from nerf_inr_methods.core.entk import empirical_ntk
    >>> net = torch.nn.Sequential(torch.nn.Linear(2, 64), torch.nn.ReLU(), torch.nn.Linear(64, 3))
    >>> x, y = torch.rand(4096, 2), torch.rand(4096, 3)          # 64 groups of p = 64 contiguous points
    >>> pred = net(x)
    >>> residual = (pred - y).detach()
    >>> reps = max_residual_representatives(residual, group_size=64)          # (64,)
    >>> S = balance_spectrum(empirical_ntk(net, lambda: net(x[reps])), end=10)  # (64, 64)
    >>> adjusted = ungroup_points(adjust_residual(S, group_points(residual, 64)), 4096)  # (4096, 3)
    >>> iga_surrogate_loss(pred, adjusted).backward()
"""

from __future__ import annotations

import math
import numbers
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Dict, NamedTuple

import torch
from torch import Tensor, nn

from nerf_inr_methods.core.entk import OtherParams, empirical_ntk


class SpectrumBalance(NamedTuple):
    """Result of :func:`balance_spectrum_info`."""

    matrix: Tensor
    """S, (n, n), dtype/device of K, detached."""
    eigenvalues: Tensor
    """Eigenvalues of K in descending order, (n,) float64 (empty if eigh failed)."""
    end: int
    """Effective end after the guards (0 means S = I)."""


def effective_end(eigenvalues: Tensor, end: int, rtol: float) -> int:
    """Clamp ``end`` so that ``lambda[end]`` exists and is positive (above ``rtol * lambda[0]``).

    Args:
        eigenvalues: (n,) eigenvalues in descending order.
        end: requested number of balanced eigenvalues (>= 0).
        rtol: eigenvalues ``<= rtol * max(lambda[0], 0)`` count as non-positive.

    Returns:
        e in [0, n - 1] with ``lambda[i] > rtol * lambda[0]`` for all i <= e (0 if there is no such range).
    """
    n = int(eigenvalues.shape[0])
    if n == 0:
        return 0
    end = min(int(end), n - 1)
    top = float(eigenvalues[0])
    if not top > 0:
        return 0
    positive = int((eigenvalues > rtol * top).sum())  # descending: positives form a prefix
    return max(0, min(end, positive - 1))


def balance_spectrum_info(K: Tensor, end: int, rtol: float | None = None) -> SpectrumBalance:
    """Spectrum-balancing matrix S for the eNTK K, with the eigenvalues and effective end used.

    ``K = V diag(lambda) V^T`` (eigh in float64, lambda descending, indexed from 0);
    ``s_i = lambda[end] / lambda_i`` for ``0 <= i < end`` and ``s_i = 1`` otherwise, so the top ``end + 1``
    eigenvalues of ``S K`` all equal ``lambda[end]``; ``S = V diag(s) V^T``. Guards: ``end`` is clamped to
    ``n - 1`` and to stop before non-positive eigenvalues (those ``<= rtol * lambda[0]``); a non-finite K or a
    failing eigh gives S = I with a RuntimeWarning.

    Args:
        K: (n, n) symmetric PSD kernel (symmetrised here).
        end: number of top eigenvalues to balance (>= 0; 0 gives S = I).
        rtol: relative threshold below which eigenvalues count as zero; default ``n * eps(K.dtype)``
            (numpy's matrix-rank tolerance).

    Returns:
        :class:`SpectrumBalance` ``(matrix (n, n), eigenvalues (n,), end)``, all detached.
    """
    if not isinstance(K, Tensor) or K.ndim != 2 or K.shape[0] != K.shape[1] or K.shape[0] == 0:
        raise ValueError(f"balance_spectrum: K must be a square (n, n) Tensor, got {getattr(K, 'shape', K)}")
    if isinstance(end, bool) or int(end) != end or end < 0:
        raise ValueError(f"balance_spectrum: end must be an integer >= 0, got {end!r}")
    K = K.detach()
    n = K.shape[0]
    eye = torch.eye(n, dtype=K.dtype, device=K.device)
    if rtol is None:
        rtol = n * torch.finfo(K.dtype).eps if K.is_floating_point() else 0.0
    if not bool(torch.isfinite(K).all()):
        warnings.warn("balance_spectrum: K has non-finite entries; using S = I", RuntimeWarning, stacklevel=2)
        return SpectrumBalance(eye, torch.empty(0, dtype=torch.float64), 0)
    k64 = K.to(torch.float64)
    k64 = 0.5 * (k64 + k64.T)
    try:
        lam, vec = torch.linalg.eigh(k64)
    except RuntimeError as err:  # torch.linalg.LinAlgError subclasses RuntimeError
        warnings.warn(f"balance_spectrum: eigh failed ({err}); using S = I", RuntimeWarning, stacklevel=2)
        return SpectrumBalance(eye, torch.empty(0, dtype=torch.float64), 0)
    lam, vec = lam.flip(0), vec.flip(1)  # descending
    e = effective_end(lam, int(end), rtol)
    if e == 0:
        return SpectrumBalance(eye, lam, 0)
    # S = I - sum_{i<e} (1 - s_i) v_i v_i^T  (exact identity outside the balanced range)
    shrink = 1.0 - lam[e] / lam[:e]  # (e,)
    top = vec[:, :e]
    s_mat = torch.eye(n, dtype=torch.float64, device=K.device) - (top * shrink) @ top.T
    return SpectrumBalance(s_mat.to(K.dtype), lam, e)


def balance_spectrum(K: Tensor, end: int, rtol: float | None = None) -> Tensor:
    """S (n, n) that equalises the top ``end + 1`` eigenvalues of ``S K``; see :func:`balance_spectrum_info`.

    Example:
        >>> K = torch.diag(torch.tensor([8.0, 4.0, 2.0, 1.0]))
        >>> torch.diag(balance_spectrum(K, end=2))
        tensor([0.2500, 0.5000, 1.0000, 1.0000])
    """
    return balance_spectrum_info(K, end, rtol).matrix


def adjust_residual(S: Tensor, R: Tensor) -> Tensor:
    """Apply S over the group axis: ``(S R)[g] = sum_h S[g, h] R[h]``.

    Args:
        S: (n, n) adjustment matrix.
        R: (n, p, C) grouped residuals (or (n, C), or any (n, ...)).

    Returns:
        Detached tensor with R's shape and dtype.
    """
    if not isinstance(S, Tensor) or S.ndim != 2 or S.shape[0] != S.shape[1]:
        raise ValueError(f"adjust_residual: S must be a square (n, n) Tensor, got {getattr(S, 'shape', S)}")
    if not isinstance(R, Tensor) or R.ndim < 1 or R.shape[0] != S.shape[0]:
        raise ValueError(
            f"adjust_residual: R must have the group axis first with n = {S.shape[0]} groups, "
            f"got shape {tuple(getattr(R, 'shape', ()))}"
        )
    flat = R.detach().reshape(R.shape[0], -1)
    return (S.detach().to(flat.dtype) @ flat).reshape(R.shape)


def iga_surrogate_loss(pred: Tensor, adjusted_residual: Tensor) -> Tensor:
    """Surrogate loss ``(2 / N) * sum(pred * stopgrad(S R))`` whose gradient is ``(2 / N) J^T (S R)``.

    With ``S = I`` (``adjusted_residual = pred - target``) its gradient equals that of
    ``((pred - target) ** 2).mean()``. Its value is not the MSE: log the true MSE separately.

    Args:
        pred: (..., C) predictions carrying the graph to the parameters.
        adjusted_residual: same shape as ``pred`` (N = its number of entries), treated as a constant.

    Returns:
        Scalar tensor.
    """
    if not isinstance(pred, Tensor) or not isinstance(adjusted_residual, Tensor):
        raise ValueError("iga_surrogate_loss: pred and adjusted_residual must be Tensors")
    if pred.shape != adjusted_residual.shape:
        raise ValueError(
            f"iga_surrogate_loss: adjusted_residual shape {tuple(adjusted_residual.shape)} must equal pred shape "
            f"{tuple(pred.shape)}"
        )
    if pred.numel() == 0:
        raise ValueError("iga_surrogate_loss: pred is empty")
    return (2.0 / pred.numel()) * (pred * adjusted_residual.detach().to(pred.dtype)).sum()


def _check_group_size(group_size: int, where: str) -> int:
    if isinstance(group_size, bool) or int(group_size) != group_size or group_size < 1:
        raise ValueError(f"{where}: group_size must be an integer >= 1, got {group_size!r}")
    return int(group_size)


def group_points(x: Tensor, group_size: int) -> Tensor:
    """Split points stored contiguously in groups of p into (n_groups, p, ...), zero-padding the last group.

    Args:
        x: (N, ...) per-point values (residuals, coordinates); point k belongs to group ``k // p``.
        group_size: p.

    Returns:
        (ceil(N / p), p, ...) tensor; padded entries are 0 (so they contribute nothing to ``S R``).
    """
    p = _check_group_size(group_size, "group_points")
    if not isinstance(x, Tensor) or x.ndim < 1 or x.shape[0] == 0:
        raise ValueError(f"group_points: x must be a non-empty (N, ...) Tensor, got {getattr(x, 'shape', x)}")
    n_pts = x.shape[0]
    n_groups = math.ceil(n_pts / p)
    pad = n_groups * p - n_pts
    if pad:
        x = torch.cat([x, x.new_zeros((pad, *x.shape[1:]))], dim=0)
    return x.reshape(n_groups, p, *x.shape[1:])


def ungroup_points(xg: Tensor, num_points: int) -> Tensor:
    """Inverse of :func:`group_points`: (n_groups, p, ...) -> (num_points, ...), dropping the padding."""
    if not isinstance(xg, Tensor) or xg.ndim < 2 or xg.shape[0] * xg.shape[1] < num_points:
        raise ValueError(
            f"ungroup_points: xg must be (n_groups, p, ...) with at least num_points={num_points} entries, "
            f"got {getattr(xg, 'shape', xg)}"
        )
    return xg.reshape(-1, *xg.shape[2:])[:num_points]


def max_residual_representatives(residual: Tensor, group_size: int) -> Tensor:
    """Index of the point with the largest residual (L1 over channels) in each contiguous group of p.

    Args:
        residual: (N, C) or (N,) residuals ``pred - target``; points contiguous in groups of p (the last
            group may be shorter).
        group_size: p.

    Returns:
        (ceil(N / p),) long tensor of global point indices in [0, N).
    """
    p = _check_group_size(group_size, "max_residual_representatives")
    if not isinstance(residual, Tensor) or residual.ndim not in (1, 2) or residual.shape[0] == 0:
        raise ValueError(
            "max_residual_representatives: residual must be a non-empty (N, C) or (N,) Tensor, "
            f"got {getattr(residual, 'shape', residual)}"
        )
    score = residual.detach().abs()
    if score.ndim == 2:
        score = score.sum(dim=1)
    n_pts = score.shape[0]
    n_groups = math.ceil(n_pts / p)
    pad = n_groups * p - n_pts
    if pad:
        score = torch.cat([score, score.new_full((pad,), -math.inf)])
    local = score.reshape(n_groups, p).argmax(dim=1)
    return local + torch.arange(n_groups, device=local.device) * p


def max_weight_representatives(weights: Tensor) -> Tensor:
    """NeRF representatives: index of the sample with the largest rendering weight on each ray.

    Args:
        weights: (n_rays, n_samples) or (n_rays, n_samples, 1) rendering weights (fine network).

    Returns:
        (n_rays,) long sample indices.
    """
    if not isinstance(weights, Tensor) or weights.ndim not in (2, 3) or (weights.ndim == 3 and weights.shape[-1] != 1):
        raise ValueError(
            "max_weight_representatives: weights must be (n_rays, n_samples) or (n_rays, n_samples, 1), "
            f"got {getattr(weights, 'shape', weights)}"
        )
    w = weights.detach()
    if w.ndim == 3:
        w = w[..., 0]
    return w.argmax(dim=1)


def _check_integer(value: object, minimum: int, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or int(value) != value or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


@dataclass
class IGAState:
    """IGA's state across training steps: when S is recomputed, the S in use and the diagnostics of the latest S.

    The one place where IGA's schedule and options live; the coordinate-network hook (:class:`IGAAdjust`) and the
    NeRF model (``nerfstudio_plugin.inr_nerf``) call :meth:`matrix_for_call` once per training step with their own
    way of computing the eNTK. Every ``update_every``-th call computes ``S = balance_spectrum(K, end)`` (``identity``:
    S = I, K is not computed). The calls in between either apply the latest S (``reuse_between_updates``: the groups
    are the same points every step, e.g. full-batch fitting; a change in the number of groups recomputes S) or are
    not adjusted (the caller trains on the plain loss; NeRF, whose rays change every step).

    Example:
        >>> state = IGAState(end=2, update_every=2, reuse_between_updates=False)
        >>> K = torch.diag(torch.tensor([8.0, 4.0, 2.0, 1.0]))
        >>> [state.matrix_for_call(4, lambda: K, K) is not None for _ in range(3)]
        [True, False, True]
    """

    end: int = 20
    """Number of top eNTK eigenvalues to balance (clamped by :func:`effective_end`)."""
    update_every: int = 1
    """Recompute S every m calls (1 = every step, the paper's setting)."""
    identity: bool = False
    """Use S = I (control: same surrogate-loss path, gradient equal to the plain MSE's); no eNTK is computed."""
    reuse_between_updates: bool = True
    """Between updates, apply the latest S (True) or leave the call unadjusted (False: ``matrix_for_call`` -> None)."""
    min_end: int = 0
    """Smallest accepted ``end`` (a caller may refuse 0, which balances nothing)."""
    option_names: Mapping[str, str] = field(default_factory=lambda: {"end": "end", "update_every": "update_every"})
    """How error messages name ``end`` and ``update_every`` (e.g. the command-line flags they came from)."""
    calls: int = field(default=0, init=False)
    """Number of calls so far."""
    matrix: Tensor | None = field(default=None, init=False, repr=False)
    """The latest S (n_groups, n_groups)."""
    last_applied: bool = field(default=False, init=False)
    """Whether the latest call was adjusted (returned an S)."""
    last_end: int = field(default=0, init=False)
    """Effective end used by the latest S (after the guards; 0 for S = I)."""
    last_eigenvalues: Tensor | None = field(default=None, init=False, repr=False)
    """Descending eNTK eigenvalues (float64, CPU) behind the latest S (None for S = I; empty if eigh failed)."""
    last_seconds: float = field(default=0.0, init=False)
    """Seconds spent on the latest S (eNTK + eigh; 0 for S = I)."""

    def __post_init__(self) -> None:
        self.end = _check_integer(self.end, self.min_end, self.option_names["end"])
        self.update_every = _check_integer(self.update_every, 1, self.option_names["update_every"])

    def reset(self) -> None:
        """Forget the latest S and the call counter."""
        self.calls = 0
        self.matrix = None
        self.last_applied = False
        self.last_end = 0
        self.last_eigenvalues = None
        self.last_seconds = 0.0

    def matrix_for_call(self, n_groups: int, kernel: Callable[[], Tensor], like: Tensor) -> Tensor | None:
        """S (n_groups, n_groups) for this call (detached), or None when this call is not adjusted.

        Args:
            n_groups: number of groups n of this call.
            kernel: computes the eNTK K (n, n) of this call's representatives; called only when S is recomputed.
            like: a tensor whose dtype and device S = I takes (e.g. the residual).
        """
        update = self.calls % self.update_every == 0
        self.calls += 1
        if self.reuse_between_updates:
            update = update or self.matrix is None or self.matrix.shape[0] != n_groups
        self.last_applied = update or self.reuse_between_updates
        if update:
            self.matrix = self._balance(n_groups, kernel, like)
        return self.matrix if self.last_applied else None

    def _balance(self, n_groups: int, kernel: Callable[[], Tensor], like: Tensor) -> Tensor:
        if self.identity:
            self.last_end, self.last_eigenvalues, self.last_seconds = 0, None, 0.0
            return torch.eye(n_groups, dtype=like.dtype, device=like.device)
        start = time.perf_counter()
        info = balance_spectrum_info(kernel(), self.end)
        self.last_end, self.last_eigenvalues = info.end, info.eigenvalues.cpu()
        self.last_seconds = time.perf_counter() - start
        return info.matrix

    def diagnostics(self) -> Dict[str, float]:
        """Logged values of the latest S: ``iga_end``, and unless S = I ``iga_eig_top``, ``iga_eig_end`` (the
        eigenvalues lambda_0 and lambda_end of K, NaN if eigh failed) and ``iga_seconds`` (eNTK + eigh)."""
        if self.last_eigenvalues is None:
            return {"iga_end": float(self.last_end)}
        lam = self.last_eigenvalues
        return {
            "iga_end": float(self.last_end),
            "iga_eig_top": float(lam[0]) if lam.numel() else math.nan,
            "iga_eig_end": float(lam[self.last_end]) if lam.numel() else math.nan,
            "iga_seconds": self.last_seconds,
        }


class IGAAdjust:
    """``adjust`` hook for the coordinate-network loop: IGA's surrogate loss on one step's points.

    Call signature (``nerf_inr_methods.coordfit``): ``adjust(coords (N, D), preds (N, C), targets (N, C))
    -> scalar loss``, with points contiguous in groups of ``group_size``. Per call: residual R = preds -
    targets (detached), one representative per group (max L1 residual), eNTK of ``field_fn`` on the
    representatives, S from :class:`IGAState` (recomputed every ``update_every`` calls, or when the number of
    groups changes; the latest S is applied in between), loss = :func:`iga_surrogate_loss` (preds, S R).
    ``identity=True`` uses S = I through the same path (control; no eNTK is computed), whose gradient equals the
    MSE's. With ``update_every > 1`` the latest S is only meaningful if the groups are the same points every step
    (full-batch fitting).

    Args:
        model: module whose trainable parameters define the eNTK (the field being trained).
        end: number of top eNTK eigenvalues to balance (public image configs: 20 for ReLU+PE, 25 otherwise).
        group_size: points per group p (images: a 32x32 patch = 1024 contiguous pixels).
        update_every: recompute S every m calls (1 = every step, the paper's setting).
        identity: use S = I (control: same surrogate-loss path, gradient equal to the plain MSE's).
        field_fn: maps representative coords (n, D) to the predictions (n, C) the loss sees; default ``model``.
        other_params: trainable parameters outside nn.Linear: see :func:`nerf_inr_methods.core.entk.empirical_ntk`.
    """

    def __init__(
        self,
        model: nn.Module,
        end: int = 20,
        group_size: int = 1024,
        update_every: int = 1,
        identity: bool = False,
        field_fn: Callable[[Tensor], Tensor] | None = None,
        other_params: OtherParams = "error",
    ) -> None:
        if not isinstance(model, nn.Module):
            raise ValueError(f"IGAAdjust: model must be an nn.Module, got {type(model).__name__}")
        self.model = model
        self.group_size = _check_group_size(group_size, "IGAAdjust")
        self.field_fn = field_fn
        self.other_params = other_params
        names = {"end": "IGAAdjust: end", "update_every": "IGAAdjust: update_every"}
        self.state = IGAState(end=end, update_every=update_every, identity=identity, option_names=names)
        """Schedule, latest S and diagnostics (``state.matrix``, ``state.last_end``, ...; ``state.reset()`` forgets
        them). The latest S is applied between updates: the groups are the same points every step."""

    def __call__(self, coords: Tensor, preds: Tensor, targets: Tensor) -> Tensor:
        """coords (N, D), preds (N, C) with graph, targets (N, C) -> scalar surrogate loss."""
        if preds.ndim == 1:
            preds, targets = preds[:, None], targets.reshape(-1, 1)
        if preds.shape != targets.shape or coords.shape[0] != preds.shape[0]:
            raise ValueError(
                f"IGAAdjust: expected coords (N, D), preds (N, C), targets (N, C); got {tuple(coords.shape)}, "
                f"{tuple(preds.shape)}, {tuple(targets.shape)}"
            )
        residual = (preds - targets).detach()
        n_pts = residual.shape[0]

        def kernel() -> Tensor:
            rep_coords = coords[max_residual_representatives(residual, self.group_size)].detach()
            fn = self.field_fn if self.field_fn is not None else self.model
            return empirical_ntk(self.model, lambda: fn(rep_coords), other_params=self.other_params)

        s_matrix = self.state.matrix_for_call(math.ceil(n_pts / self.group_size), kernel, residual)
        assert s_matrix is not None  # reuse_between_updates: every call is adjusted
        adjusted = ungroup_points(adjust_residual(s_matrix, group_points(residual, self.group_size)), n_pts)
        return iga_surrogate_loss(preds, adjusted)
