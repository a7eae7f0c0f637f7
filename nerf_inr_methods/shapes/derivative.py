"""Derivative terms for SDF fitting (optional): Eikonal and normal alignment, with eNTK-trace weights.

- Eikonal: ``mean_i (|grad f(x_i)| - 1)^2`` (nonlinear in f; fixed weight only).
- Normal: ``mean_i |grad f(x_i) - n_i|^2`` on surface samples with outward normals n_i (a *linear*
  derivative label: for an SDF negative inside, grad f = n on the surface). Its weight can come from eNTK
  traces (methods.md "beyond", seed 004): with K the eNTK of the values and K'' that of the derivative
  outputs, ``lambda_r = tr(K*) / tr(K)``, ``lambda_g = tr(K*) / tr(K'')``; we keep the data loss at weight 1
  and use ``lambda_g / lambda_r = tr(K) / tr(K'')`` for the derivative term.

Plain functions on tensors; the eNTKs come from :mod:`nerf_inr_methods.core.entk`.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from nerf_inr_methods.core.entk import empirical_ntk, empirical_ntk_reference


def spatial_gradient(model: nn.Module, points: Tensor) -> Tensor:
    """grad_x f at points (n, 3) -> (n, 3), with a graph to the parameters (create_graph=True)."""
    x = points.detach().requires_grad_(True)
    with torch.enable_grad():
        out = model(x)
        (grad,) = torch.autograd.grad(out.sum(), x, create_graph=True)
    return grad


def eikonal_loss(model: nn.Module, points: Tensor) -> Tensor:
    """mean_i (|grad f(x_i)| - 1)^2 for points (n, 3); scalar with graph."""
    return (spatial_gradient(model, points).norm(dim=-1) - 1.0).square().mean()


def normal_loss(model: nn.Module, points: Tensor, normals: Tensor) -> Tensor:
    """mean_i |grad f(x_i) - n_i|^2 for surface points (n, 3) and unit outward normals (n, 3); scalar."""
    if points.shape != normals.shape:
        raise ValueError(f"normal_loss: points {tuple(points.shape)} and normals {tuple(normals.shape)} differ")
    return (spatial_gradient(model, points) - normals).square().sum(dim=-1).mean()


def ntk_trace_weight(model: nn.Module, points: Tensor) -> float:
    """Weight tr(K) / tr(K'') of the normal term, from eNTK traces on points (n, 3).

    K: layer-factored eNTK of the values f (n, n). K'': eNTK of the three derivative outputs
    ``d f / d x_c`` (traces of the per-component kernels summed; per-sample Jacobians materialised,
    so keep n small, e.g. 64).
    """
    pts = points.detach()
    tr_k = float(torch.diagonal(empirical_ntk(model, lambda: model(pts))).sum())
    tr_kd = 0.0
    for c in range(pts.shape[-1]):
        tr_kd += float(
            torch.diagonal(empirical_ntk_reference(model, lambda c=c: spatial_gradient(model, pts)[:, c : c + 1])).sum()
        )
    if not tr_kd > 0:
        raise ValueError("ntk_trace_weight: the derivative kernel has zero trace")
    return tr_k / tr_kd
