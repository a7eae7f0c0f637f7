"""IGA for nerfstudio's NeRF fields: the translation from rays and fields to the core's groups and eNTK.

methods.md section 2, NeRF specifics. Per training step, on the ``n`` rays of the batch (each ray is one group):

1. representative of a ray = its fine sample with the largest rendering weight (:func:`fine_representatives`,
   the core's :func:`~nerf_inr_methods.core.iga.max_weight_representatives`), RaySamples (n,);
2. ``K`` (n, n) = empirical NTK of the fine field on the representatives, ``g = (density + r + g + b) / 2``
   (the field's C = 4 outputs as it returns them: softplus density, sigmoid colour), computed layer-factored by
   :func:`nerf_inr_methods.core.entk.empirical_ntk` (no per-sample Jacobians; :func:`fine_field_entk`);
3. ``S`` from the model's :class:`~nerf_inr_methods.core.iga.IGAState` (:func:`nerf_iga_state`: every
   ``update_every``-th step; the steps in between are not adjusted, since S is a matrix over the rays it was
   computed on and the rays change every step);
4. fine loss = ``(2 / N) sum(pred * stopgrad(S R))`` with R (n, 3) the rendered colour residual, blended with the
   background exactly as vanilla's loss blends it; its gradient is ``(2 / N) J^T (S R)`` (:func:`iga_fine_loss`).

The model (``inr_nerf.InrNeRFModel``) logs the true MSEs and PSNR and names the true loss, with its graph, for
optimizers that need the curvature of the real objective (``InrNeRFModel.curvature_loss``: ESGD).

Multi-GPU (DDP): each process computes K and S on its own rays and its own surrogate; DDP averages the gradients as
it averages vanilla's. The eNTK pass calls the unwrapped field and differentiates to layer outputs only (never
into ``.grad``), so it does not trigger DDP's gradient hooks.
"""

from __future__ import annotations

from typing import Tuple

import torch
from nerfstudio.cameras.rays import RaySamples
from nerfstudio.field_components.field_heads import FieldHeadNames
from nerfstudio.fields.base_field import Field
from torch import Tensor

from nerf_inr_methods.core.entk import empirical_ntk
from nerf_inr_methods.core.iga import IGAState, adjust_residual, iga_surrogate_loss, max_weight_representatives

IGA_FLAGS = {"end": "--pipeline.model.iga-end", "update_every": "--pipeline.model.iga-update-every"}
"""The command-line flags of IGA's options, as error messages name them."""


def nerf_iga_state(end: int, update_every: int, identity: bool) -> IGAState:
    """IGA's state for a NeRF model: ``end >= 1``, no S reused across steps (each step has new rays).

    Args:
        end: ``--pipeline.model.iga-end``.  update_every: ``--pipeline.model.iga-update-every``.
        identity: ``--pipeline.model.iga-identity`` (S = I control).
    """
    return IGAState(
        end=end,
        update_every=update_every,
        identity=identity,
        reuse_between_updates=False,
        min_end=1,
        option_names=IGA_FLAGS,
    )


def fine_representatives(weights: Tensor, ray_samples: RaySamples) -> Tuple[Tensor, RaySamples]:
    """Per ray, the fine sample with the largest rendering weight (IGA's representative of the ray's group).

    Args:
        weights: (n_rays, n_samples, 1) volume-rendering weights of the fine field.
        ray_samples: the (n_rays, n_samples) fine samples the weights belong to.

    Returns:
        (n_rays,) sample indices and the (n_rays,) RaySamples at those indices.
    """
    index = max_weight_representatives(weights)
    rays = torch.arange(index.shape[0], device=index.device)
    return index, ray_samples[rays, index]


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


def iga_fine_loss(
    state: IGAState, field_module: Field, pred: Tensor, target: Tensor, weights: Tensor, ray_samples: RaySamples
) -> Tensor | None:
    """IGA's surrogate fine loss for one training step, or None on steps ``state`` does not adjust (train on the MSE).

    Args:
        state: the model's IGA state (advanced by one step).
        field_module: the fine field.
        pred: (n_rays, 3) rendered fine colour (background-blended as in the loss), carrying the graph.
        target: (n_rays, 3) ground-truth colour, blended the same way.
        weights: (n_rays, n_samples, 1) fine rendering weights; ray_samples: the (n_rays, n_samples) fine samples.

    Returns:
        Scalar whose gradient is ``(2 / (3 n)) J^T (S R)``, R = pred - target; with S = I exactly the gradient of
        ``mean((pred - target) ** 2)``.
    """
    if pred.shape != target.shape or pred.ndim != 2 or weights.shape[0] != pred.shape[0]:
        raise ValueError(
            "IGA expects pred and target (n_rays, 3) and fine weights (n_rays, n_samples, 1); got "
            f"{tuple(pred.shape)}, {tuple(target.shape)}, {tuple(weights.shape)}"
        )
    residual = (pred - target).detach()

    def kernel() -> Tensor:
        return fine_field_entk(field_module, fine_representatives(weights, ray_samples)[1])

    s_matrix = state.matrix_for_call(pred.shape[0], kernel, residual)
    if s_matrix is None:
        return None
    return iga_surrogate_loss(pred, adjust_residual(s_matrix, residual))
