"""InrNerfactoModel: nerfstudio's nerfacto whose RGB loss takes per-ray importance weights.

The error map (``--pipeline.int-sampler error-map``, and ``soft``) draws rays with unequal probabilities and hands the
model one importance weight per ray as ``batch["ray_loss_weights"]`` (:data:`LOSS_WEIGHTS_KEY`). This model is
nerfacto (same fields, proposal sampler, renderers, callbacks and initialisation) with one override: the RGB term of
:meth:`get_loss_dict` becomes ``weighted_mse(pred, target, weights)`` when the batch holds weights. Without weights
(uniform rays, evaluation) every term is nerfacto's own, value for value.

nerfacto's other training losses stay unweighted means over the rays drawn:

- ``interlevel_loss`` (proposal networks) supervises the proposal densities with the NeRF field's weights along the
  same rays; it shapes where samples go, not the colour objective whose error drives the draw. Unweighted, the
  proposals learn most where the NeRF trains most (the high-error rays, where placing samples well matters), and every
  pixel still reaches them (the draw's uniform share and the no-starvation guard).
- ``distortion_loss`` is a per-ray prior on compact weights (scaled by 0.002), not a data term: no estimate of a
  full-batch mean to correct.

Weighting them would also need copies of nerfstudio's ``interlevel_loss`` and ``distortion_loss`` (both return the
batch mean, not per-ray values): a second implementation of each to maintain.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Dict, Tuple, Type

from nerfstudio.models.nerfacto import NerfactoModel, NerfactoModelConfig
from torch import Tensor

from nerf_inr_methods.core.int_sampler import LOSS_WEIGHTS_KEY, weighted_mse
from nerf_inr_methods.nerfstudio_plugin.offline import drop_unavailable_metrics, install

install()  # also when a saved config.yml imports this module directly


@dataclass
class InrNerfactoModelConfig(NerfactoModelConfig):
    """nerfacto whose RGB loss weights each ray by batch["ray_loss_weights"] when the pipeline provides them."""

    _target: Type = field(default_factory=lambda: InrNerfactoModel)


class InrNerfactoModel(NerfactoModel):
    """nerfacto plus per-ray importance weights in its RGB loss (see the module docstring)."""

    config: InrNerfactoModelConfig
    takes_ray_loss_weights: ClassVar[bool] = True
    """The pipeline's samplers that weight rays may train this model (``InrPipeline`` checks it)."""

    def get_loss_dict(
        self, outputs: Dict[str, Any], batch: Dict[str, Tensor], metrics_dict: Dict[str, Tensor] | None = None
    ) -> Dict[str, Tensor]:
        """nerfacto's losses; ``rgb_loss`` is ``mean_i(w_i * mean_c (pred - target)^2)`` when ``batch`` holds
        ``ray_loss_weights`` (n_rays,), the background blended as nerfacto blends it.

        Args:
            outputs: the model's outputs for n_rays rays (``rgb`` (n_rays, 3), ``accumulation`` (n_rays, 1), ...).
            batch: ``image`` (n_rays, 3 or 4) in [0, 1], optionally ``ray_loss_weights`` (n_rays,) of mean 1.
            metrics_dict: the step's metrics (nerfacto reads its ``distortion`` in training).
        """
        loss_dict = super().get_loss_dict(outputs, batch, metrics_dict)
        weights = batch.get(LOSS_WEIGHTS_KEY)
        if weights is not None:
            pred, target = self.renderer_rgb.blend_background_for_loss_computation(
                pred_image=outputs["rgb"],
                pred_accumulation=outputs["accumulation"],
                gt_image=batch["image"].to(self.device),
            )
            loss_dict["rgb_loss"] = weighted_mse(pred, target, weights)
        return loss_dict

    def get_image_metrics_and_images(
        self, outputs: Dict[str, Tensor], batch: Dict[str, Tensor]
    ) -> Tuple[Dict[str, float], Dict[str, Tensor]]:
        """nerfacto's evaluation, with LPIPS omitted (not faked) when its weights are unavailable."""
        metrics, images = super().get_image_metrics_and_images(outputs, batch)
        return drop_unavailable_metrics(metrics), images
