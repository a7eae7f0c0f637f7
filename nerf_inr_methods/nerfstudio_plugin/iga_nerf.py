"""IGA for nerfstudio's vanilla NeRF: the fine field trains on an adjusted gradient, the coarse keeps plain MSE.

methods.md section 2, NeRF specifics. Per training step, on the ``n`` rays of the batch (each ray is one group):

1. representative of a ray = its fine sample with the largest rendering weight
   (``inr_nerf.fine_representatives``), RaySamples (n,);
2. ``K`` (n, n) = empirical NTK of the fine field on the representatives, ``g = (density + r + g + b) / 2``
   (the field's C = 4 outputs as it returns them: softplus density, sigmoid colour), computed layer-factored by
   :func:`nerf_inr_methods.core.entk.empirical_ntk` (no per-sample Jacobians);
3. ``S`` = :func:`nerf_inr_methods.core.iga.balance_spectrum_info` (K, end), detached;
4. fine loss = ``(2 / N) sum(pred * stopgrad(S R))`` with R (n, 3) the rendered colour residual, blended with the
   background exactly as vanilla's loss blends it (:func:`rgb_loss_pairs`); its gradient is ``(2 / N) J^T (S R)``.

The surrogate's value is not an MSE. The true objective stays visible: the metrics dict (logged) holds the
detached true MSEs :data:`TRUE_COARSE_MSE_KEY`, :data:`TRUE_FINE_MSE_KEY`, the true loss :data:`TRUE_LOSS_KEY` and
the fine ``psnr``; the model outputs hold ``outputs[TRUE_LOSS_KEY]``, the same true loss *with its graph*, for trainers
that need the real objective (ESGD's Hessian-vector products): ``outputs, loss_dict, metrics_dict =
pipeline.get_train_loss_dict(step)``, then ``optimizer.accumulate_curvature(outputs[TRUE_LOSS_KEY])`` before the
backward of ``sum(loss_dict.values())``.

Multi-GPU (DDP): each process computes K and S on its own rays and its own surrogate; DDP averages the gradients as
it averages vanilla's. The eNTK pass calls the unwrapped field and differentiates to layer outputs only (never
into ``.grad``), so it does not trigger DDP's gradient hooks.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Dict, Tuple

import torch
from nerfstudio.cameras.rays import RaySamples
from nerfstudio.field_components.field_heads import FieldHeadNames
from nerfstudio.fields.base_field import Field
from nerfstudio.model_components.renderers import RGBRenderer
from torch import Tensor

from nerf_inr_methods.core.entk import empirical_ntk
from nerf_inr_methods.core.iga import adjust_residual, balance_spectrum_info, iga_surrogate_loss

TRUE_FINE_MSE_KEY = "rgb_mse_fine"
"""Metrics-dict key of the true fine-colour MSE (detached scalar)."""
TRUE_COARSE_MSE_KEY = "rgb_mse_coarse"
"""Metrics-dict key of the true coarse-colour MSE (detached scalar)."""
TRUE_LOSS_KEY = "true_loss"
"""Key of the true training objective ``sum_f coefficient_f * MSE_f`` over coarse and fine: detached in the metrics
dict, graph-carrying in the model outputs; equals ``sum(loss_dict.values())`` when IGA is off."""
_PAIRS_KEY = "_rgb_loss_pairs"
"""Private key caching the background-blended (pred, target) pairs in the model's outputs dict."""


def rgb_loss_pairs(
    renderer: RGBRenderer, outputs: Dict[str, Any], batch: Dict[str, Tensor]
) -> Dict[str, Tuple[Tensor, Tensor]]:
    """(pred, target) colours, each (n_rays, 3), per field ("coarse", "fine"), blended as vanilla NeRF's loss does.

    Computed once per outputs dict (cached in it), coarse before fine as in vanilla's ``get_loss_dict``, so a
    "random" background is drawn once per step and the random stream matches vanilla's.

    Args:
        renderer: the model's ``renderer_rgb``.
        outputs: model outputs with ``rgb_{coarse,fine}`` (n_rays, 3) and ``accumulation_{coarse,fine}`` (n_rays, 1).
        batch: batch with ``image`` (n_rays, 3 or 4) in [0, 1].
    """
    cached = outputs.get(_PAIRS_KEY)
    if cached is not None:
        return cached
    if "image" not in batch:
        raise ValueError(f"batch must hold the ground-truth colours under 'image', got keys {sorted(batch)}")
    pairs: Dict[str, Tuple[Tensor, Tensor]] = {}
    for name in ("coarse", "fine"):
        pred = outputs[f"rgb_{name}"]
        pairs[name] = renderer.blend_background_for_loss_computation(
            pred_image=pred, pred_accumulation=outputs[f"accumulation_{name}"], gt_image=batch["image"].to(pred.device)
        )
    outputs[_PAIRS_KEY] = pairs
    return pairs


def true_rgb_metrics(
    renderer: RGBRenderer,
    outputs: Dict[str, Any],
    batch: Dict[str, Tensor],
    loss_coefficients: Dict[str, float],
    trained_fields: Tuple[str, ...] = ("coarse", "fine"),
) -> Dict[str, Tensor]:
    """True training metrics (detached): coarse/fine MSE, true loss, fine PSNR (dB); with the loss's blending.

    Also stores the graph-carrying true loss in ``outputs[TRUE_LOSS_KEY]``.

    Args:
        renderer: the model's ``renderer_rgb``.
        outputs: model outputs (see :func:`rgb_loss_pairs`); receives ``TRUE_LOSS_KEY``.
        batch: batch with ``image`` (n_rays, 3 or 4).
        loss_coefficients: the model config's ``loss_coefficients`` (missing keys count as 1).
        trained_fields: the fields whose MSE is a training term (single-field models: ``("fine",)``).
    """
    pairs = rgb_loss_pairs(renderer, outputs, batch)
    mse = {name: torch.mean((pred - target) ** 2) for name, (pred, target) in pairs.items()}
    true_loss = sum(float(loss_coefficients.get(f"rgb_loss_{name}", 1.0)) * mse[name] for name in trained_fields)
    outputs[TRUE_LOSS_KEY] = true_loss
    fine_mse = mse["fine"].detach()
    return {
        TRUE_COARSE_MSE_KEY: mse["coarse"].detach(),
        TRUE_FINE_MSE_KEY: fine_mse,
        TRUE_LOSS_KEY: true_loss.detach(),
        "psnr": -10.0 * torch.log10(fine_mse.clamp_min(1e-10)),
    }


def field_outputs_matrix(field_module: Field, ray_samples: RaySamples) -> Tensor:
    """The field's outputs on n samples as one (n, 4) matrix: [density, r, g, b] (density after its activation).

    Args:
        field_module: a NeRF field (nerfstudio ``NeRFField`` or any Field returning DENSITY and RGB).
        ray_samples: RaySamples of shape (n,).
    """
    out = field_module.forward(ray_samples)
    density, rgb = out[FieldHeadNames.DENSITY], out[FieldHeadNames.RGB]
    return torch.cat([density.reshape(-1, 1), rgb.reshape(-1, 3)], dim=-1)


def fine_field_entk(field_module: Field, representatives: RaySamples) -> Tensor:
    """Empirical NTK (n, n) of a NeRF field on n samples, ``g = sum of the 4 outputs / 2``; detached.

    Args:
        field_module: the fine field (every trainable parameter must sit in an ``nn.Linear``).
        representatives: RaySamples (n,), one per ray.
    """
    if len(representatives.shape) != 1:
        raise ValueError(f"representatives must be RaySamples of shape (n,), got shape {tuple(representatives.shape)}")
    return empirical_ntk(field_module, lambda: field_outputs_matrix(field_module, representatives))


@dataclass
class NeRFIGA:
    """IGA's fine-field loss for a NeRF model, with its only state: the step counter and the latest diagnostics.

    ``fine_loss`` is called once per training step (from the model's ``get_loss_dict``). On every
    ``update_every``-th call it computes K and S on the current rays and returns the surrogate loss; on the other
    calls it returns None and the caller trains on the plain MSE. (The rays change every step and S is a matrix over
    the rays it was computed on, so a cached S cannot be applied to another batch.)
    """

    end: int = 25
    """Number of top eNTK eigenvalues to balance (paper: 25 with 1024 rays)."""
    update_every: int = 1
    """Adjust every m-th step (1 = every step, the paper's setting)."""
    identity: bool = False
    """S = I through the same surrogate path (control; no eNTK is computed)."""
    calls: int = field(default=0, init=False)
    """Training steps seen."""
    last: Dict[str, float] = field(default_factory=dict, init=False)
    """Diagnostics of the latest adjusted step: effective end, top/end eigenvalues, eNTK+eigh seconds."""

    def __post_init__(self) -> None:
        if isinstance(self.end, bool) or int(self.end) != self.end or self.end < 1:
            raise ValueError(f"--pipeline.model.iga-end must be an integer >= 1, got {self.end!r}")
        if isinstance(self.update_every, bool) or int(self.update_every) != self.update_every or self.update_every < 1:
            raise ValueError(f"--pipeline.model.iga-update-every must be an integer >= 1, got {self.update_every!r}")

    def balance(self, field_module: Field, representatives: RaySamples) -> Tensor:
        """S (n, n) for the rays whose representatives are given (identity if ``self.identity``)."""
        n = representatives.shape[0]
        if self.identity:
            self.last = {"iga_end": 0.0}
            return torch.eye(n, device=representatives.frustums.origins.device)
        start = time.perf_counter()
        info = balance_spectrum_info(fine_field_entk(field_module, representatives), int(self.end))
        lam = info.eigenvalues
        self.last = {
            "iga_end": float(info.end),
            "iga_eig_top": float(lam[0]) if lam.numel() else math.nan,
            "iga_eig_end": float(lam[info.end]) if lam.numel() else math.nan,
            "iga_seconds": time.perf_counter() - start,
        }
        return info.matrix

    def fine_loss(
        self, field_module: Field, pred: Tensor, target: Tensor, representatives: RaySamples
    ) -> Tensor | None:
        """IGA's surrogate fine loss, or None on steps that are not adjusted (train on the MSE then).

        Args:
            field_module: the fine field.
            pred: (n_rays, 3) rendered fine colour (background-blended as in the loss), carrying the graph.
            target: (n_rays, 3) ground-truth colour, blended the same way.
            representatives: RaySamples (n_rays,), each ray's max-weight fine sample.

        Returns:
            Scalar whose gradient is ``(2 / (3 n)) J^T (S R)``, R = pred - target; with S = I exactly the gradient of
            ``mean((pred - target) ** 2)``.
        """
        if pred.shape != target.shape or pred.ndim != 2 or representatives.shape[0] != pred.shape[0]:
            raise ValueError(
                f"IGA expects pred and target (n_rays, 3) and representatives (n_rays,); got {tuple(pred.shape)}, "
                f"{tuple(target.shape)}, {tuple(representatives.shape)}"
            )
        adjust = self.calls % int(self.update_every) == 0
        self.calls += 1
        if not adjust:
            return None
        s_matrix = self.balance(field_module, representatives)
        return iga_surrogate_loss(pred, adjust_residual(s_matrix, (pred - target).detach()))
