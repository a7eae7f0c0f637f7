"""InrNeRFModel: nerfstudio's vanilla NeRF with the switches our methods add.

With every switch at its default this model *is* nerfstudio's ``vanilla-nerf`` (same fields, samplers,
renderers, losses and initialisation); the method configs in ``method_configs.py`` turn switches on.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Literal, Tuple, Type

import torch
from nerfstudio.cameras.rays import RayBundle, RaySamples
from nerfstudio.field_components.encodings import NeRFEncoding
from nerfstudio.field_components.field_heads import FieldHeadNames
from nerfstudio.fields.base_field import Field
from nerfstudio.fields.vanilla_nerf_field import NeRFField
from nerfstudio.model_components.scene_colliders import NearFarCollider
from nerfstudio.models.vanilla_nerf import NeRFModel, VanillaModelConfig
from nerfstudio.utils import misc
from torch import Tensor
from torch.nn import Parameter

from nerf_inr_methods.nerfstudio_plugin.gaussian_field import GaussianNeRFField
from nerf_inr_methods.nerfstudio_plugin.iga_nerf import NeRFIGA, rgb_loss_pairs, true_rgb_metrics
from nerf_inr_methods.nerfstudio_plugin.offline import drop_unavailable_metrics, install

install()  # also when a saved config.yml imports this module directly


@dataclass
class InrNeRFModelConfig(VanillaModelConfig):
    """Vanilla NeRF plus the sizes and switches of nerf-inr-methods."""

    _target: Type = field(default_factory=lambda: InrNeRFModel)
    base_mlp_num_layers: int = 8
    """Number of layers of each field's position MLP (vanilla NeRF: 8)."""
    base_mlp_layer_width: int = 256
    """Width of each field's position MLP (vanilla NeRF: 256)."""
    head_mlp_num_layers: int = 2
    """Number of layers of each field's view-direction MLP (vanilla NeRF: 2)."""
    head_mlp_layer_width: int = 128
    """Width of each field's view-direction MLP (vanilla NeRF: 128)."""
    use_dataparser_near_far: bool = True
    """Sample between the near/far planes the dataparser reports (e.g. llff-data's bounds) instead of
    collider_params; datasets without them (blender-data) keep collider_params (near 2, far 6)."""
    # IGA (methods.md section 2): the fine field's gradient is adjusted, the coarse field keeps the plain MSE.
    iga: bool = False
    """Train the fine field with IGA: balance the top eNTK eigenvalues over the rays of each batch (one group per
    ray, represented by its max-weight fine sample). Logged rgb_mse_fine / psnr stay the true MSE / PSNR."""
    iga_end: int = 25
    """Number of top eNTK eigenvalues IGA balances (paper: 25 with 1024 rays per batch; about 2.5% of the rays,
    e.g. 6 with 256 rays); clamped below the number of rays."""
    iga_update_every: int = 1
    """Adjust every m-th training step (eNTK + eigh each time); the steps in between train on the plain MSE,
    since S is a matrix over the rays it was computed on and the rays change every step."""
    iga_identity: bool = False
    """IGA's control: S = I through the same surrogate-loss path (same gradient as the plain MSE); needs --iga."""
    # Gaussian field (methods.md section 3): GARF-style field, usually trained with ESGD (gauss-nerf).
    field_type: Literal["relu-pe", "gaussian"] = "relu-pe"
    """Field architecture: vanilla NeRF's ReLU MLPs on positional encodings, or a GARF-style MLP of Gaussian
    activations on raw xyz and view directions (no encoding, fp32; sizes from the base/head MLP flags, where the
    head's layers are its Gaussian layers on [feature, direction])."""
    gaussian_sigma: float = 0.1
    """Width sigma of the Gaussian activation exp(-x^2 / (2 sigma^2)) (NeRF: 0.1); used by --field-type gaussian."""
    hierarchical_sampling: bool = True
    """Coarse and fine fields with PDF resampling (vanilla NeRF). False: a single field (the fine one) on
    num-coarse-samples stratified samples, as GARF; the coarse outputs are then gradient-free copies of it."""

    def uses_vanilla_fields(self) -> bool:
        """True when the field sizes are nerfstudio's, so nerfstudio's own fields are kept."""
        return (self.base_mlp_num_layers, self.base_mlp_layer_width, self.head_mlp_num_layers) == (8, 256, 2) and (
            self.head_mlp_layer_width == 128
        )


class InrNeRFModel(NeRFModel):
    """Vanilla NeRF whose training outputs also expose the fine samples and weights (for IGA)."""

    config: InrNeRFModelConfig

    def populate_modules(self) -> None:
        if self.config.enable_temporal_distortion:
            raise ValueError("--pipeline.model.enable-temporal-distortion is not supported by nerf-inr-methods models")
        super().populate_modules()
        metadata = self.kwargs.get("metadata") or {}
        if self.config.use_dataparser_near_far and {"near_plane", "far_plane"} <= set(metadata):
            near, far = float(metadata["near_plane"]), float(metadata["far_plane"])
            # reset_near_plane=False: nerfstudio's collider samples from 0 outside training (for the viewer); with
            # the data's own bounds (forward-facing LLFF) the space before the near plane was never trained.
            self.collider = NearFarCollider(near_plane=near, far_plane=far, reset_near_plane=False)
            self.config.collider_params = {"near_plane": near, "far_plane": far}  # depth colormaps use them
        if not self.config.hierarchical_sampling:
            # Single-field mode: the only field is field_fine (IGA adjusts it, export uses it).
            self.field_coarse = None
            if not self.config.uses_vanilla_fields() or self.config.field_type != "relu-pe":
                self.field_fine = self.make_field()
        elif not self.config.uses_vanilla_fields() or self.config.field_type != "relu-pe":
            self.field_coarse, self.field_fine = self.make_field(), self.make_field()

    def make_field(self) -> Field:
        """One NeRF field (coarse or fine) with the configured sizes: vanilla NeRF's, or the Gaussian field."""
        c = self.config
        if c.field_type == "gaussian":
            if not float(c.gaussian_sigma) > 0:
                raise ValueError(f"--pipeline.model.gaussian-sigma must be > 0, got {c.gaussian_sigma!r}")
            if c.base_mlp_num_layers < 2:
                raise ValueError(f"--pipeline.model.base-mlp-num-layers must be >= 2, got {c.base_mlp_num_layers}")
            return GaussianNeRFField(
                num_layers=c.base_mlp_num_layers,
                layer_width=c.base_mlp_layer_width,
                head_num_layers=c.head_mlp_num_layers,
                head_layer_width=c.head_mlp_layer_width,
                sigma=c.gaussian_sigma,
            )
        if c.field_type != "relu-pe":
            raise ValueError(f"--pipeline.model.field-type must be 'relu-pe' or 'gaussian', got {c.field_type!r}")
        return NeRFField(
            position_encoding=NeRFEncoding(
                in_dim=3, num_frequencies=10, min_freq_exp=0.0, max_freq_exp=8.0, include_input=True
            ),
            direction_encoding=NeRFEncoding(
                in_dim=3, num_frequencies=4, min_freq_exp=0.0, max_freq_exp=4.0, include_input=True
            ),
            base_mlp_num_layers=self.config.base_mlp_num_layers,
            base_mlp_layer_width=self.config.base_mlp_layer_width,
            head_mlp_num_layers=self.config.head_mlp_num_layers,
            head_mlp_layer_width=self.config.head_mlp_layer_width,
        )

    def render_field(self, field_module: Field, ray_samples: RaySamples) -> Dict[str, Tensor]:
        """Evaluate a field on samples (n_rays, n_samples) and volume-render colour, accumulation, depth."""
        field_outputs = field_module.forward(ray_samples)
        weights = ray_samples.get_weights(field_outputs[FieldHeadNames.DENSITY])
        return {
            "rgb": self.renderer_rgb(rgb=field_outputs[FieldHeadNames.RGB], weights=weights),
            "accumulation": self.renderer_accumulation(weights),
            "depth": self.renderer_depth(weights, ray_samples),
            "weights": weights,
        }

    def get_param_groups(self) -> Dict[str, List[Parameter]]:
        """{"fields": the parameters of the fields that exist} (coarse then fine; only fine in single-field mode)."""
        if self.field_fine is None:
            raise ValueError("populate_modules() must be called before get_param_groups")
        fields = [f for f in (self.field_coarse, self.field_fine) if f is not None]
        return {"fields": [p for f in fields for p in f.parameters()]}

    def get_outputs(self, ray_bundle: RayBundle) -> Dict[str, Tensor | RaySamples]:
        ray_samples_coarse = self.sampler_uniform(ray_bundle)
        if self.field_coarse is None:
            # Single-field mode: num_coarse_samples stratified samples, no PDF sampler. The coarse outputs are detached
            # copies, so vanilla's coarse loss/metrics keys exist but only the one field's term carries a gradient.
            ray_samples_fine = ray_samples_coarse
            fine = self.render_field(self.field_fine, ray_samples_fine)
            coarse = {key: fine[key].detach() for key in ("rgb", "accumulation", "depth")}
        else:
            coarse = self.render_field(self.field_coarse, ray_samples_coarse)
            ray_samples_fine = self.sampler_pdf(ray_bundle, ray_samples_coarse, coarse["weights"])
            fine = self.render_field(self.field_fine, ray_samples_fine)
        outputs: Dict[str, Tensor | RaySamples] = {}
        for name, rendered in (("coarse", coarse), ("fine", fine)):
            for key in ("rgb", "accumulation", "depth"):
                outputs[f"{key}_{name}"] = rendered[key]
        if self.training:
            # (n_rays, n_fine_samples, 1) weights and their samples: IGA picks one representative per ray.
            outputs["weights_fine"] = fine["weights"]
            outputs["ray_samples_fine"] = ray_samples_fine
        return outputs

    def iga_state(self) -> NeRFIGA | None:
        """IGA's step counter and diagnostics (created from the config on first use); None when IGA is off."""
        if not self.config.iga:
            if self.config.iga_identity:
                raise ValueError("--pipeline.model.iga-identity True needs --pipeline.model.iga True")
            return None
        if getattr(self, "_iga", None) is None:
            c = self.config
            self._iga = NeRFIGA(end=c.iga_end, update_every=c.iga_update_every, identity=c.iga_identity)
        return self._iga

    def get_metrics_dict(self, outputs: Dict[str, Tensor], batch: Dict[str, Tensor]) -> Dict[str, Tensor]:
        """True colour metrics (detached): rgb_mse_coarse, rgb_mse_fine, true_loss, fine psnr (dB), blended as the
        loss is; also puts the graph-carrying true loss in outputs["true_loss"] (for ESGD; see ``iga_nerf``)."""
        metrics = super().get_metrics_dict(outputs, batch)
        trained = ("fine",) if self.field_coarse is None else ("coarse", "fine")
        metrics.update(true_rgb_metrics(self.renderer_rgb, outputs, batch, self.config.loss_coefficients, trained))
        return metrics

    def get_loss_dict(
        self, outputs: Dict[str, Tensor], batch: Dict[str, Tensor], metrics_dict: Dict[str, Tensor] | None = None
    ) -> Dict[str, Tensor]:
        """Vanilla NeRF's coarse and fine MSE; with ``iga`` in training, the fine term is IGA's surrogate loss."""
        pairs = rgb_loss_pairs(self.renderer_rgb, outputs, batch)
        (coarse_pred, coarse_image), (fine_pred, fine_image) = pairs["coarse"], pairs["fine"]
        rgb_loss_coarse = self.rgb_loss(coarse_image, coarse_pred)
        iga = self.iga_state()
        rgb_loss_fine = None
        if iga is not None and self.training:
            _, representatives = fine_representatives(outputs["weights_fine"], outputs["ray_samples_fine"])
            rgb_loss_fine = iga.fine_loss(self.field_fine, fine_pred, fine_image, representatives)
            if metrics_dict is not None:
                metrics_dict["iga_applied"] = torch.tensor(float(rgb_loss_fine is not None))
                if rgb_loss_fine is not None:
                    metrics_dict.update({k: torch.tensor(v) for k, v in iga.last.items()})
        if rgb_loss_fine is None:
            rgb_loss_fine = self.rgb_loss(fine_image, fine_pred)
        loss_dict = {"rgb_loss_coarse": rgb_loss_coarse, "rgb_loss_fine": rgb_loss_fine}
        if self.field_coarse is None:  # single-field mode: the coarse outputs are gradient-free copies, no term
            del loss_dict["rgb_loss_coarse"]
        return misc.scale_dict(loss_dict, self.config.loss_coefficients)

    def get_image_metrics_and_images(
        self, outputs: Dict[str, Tensor], batch: Dict[str, Tensor]
    ) -> Tuple[Dict[str, float], Dict[str, Tensor]]:
        """Vanilla NeRF's evaluation, with LPIPS omitted (not faked) when its weights are unavailable."""
        metrics, images = super().get_image_metrics_and_images(outputs, batch)
        return drop_unavailable_metrics(metrics), images


def fine_representatives(weights: Tensor, ray_samples: RaySamples) -> Tuple[Tensor, RaySamples]:
    """Per ray, the fine sample with the largest rendering weight (IGA's representative of the ray's group).

    Args:
        weights: (n_rays, n_samples, 1) volume-rendering weights of the fine field.
        ray_samples: the (n_rays, n_samples) fine samples the weights belong to.
    Returns:
        (n_rays,) sample indices and the (n_rays,) RaySamples at those indices.
    """
    index = weights.detach()[..., 0].argmax(dim=-1)
    rays = torch.arange(index.shape[0], device=index.device)
    return index, ray_samples[rays, index]
