"""InrNeRFModel: nerfstudio's vanilla NeRF with the switches our methods add.

With every switch at its default this model *is* nerfstudio's ``vanilla-nerf`` (same fields, samplers,
renderers, losses and initialisation); the method configs in ``method_configs.py`` turn switches on.
"""

from __future__ import annotations

import math
import typing
from dataclasses import dataclass, field
from typing import Any, ClassVar, Dict, List, Literal, Tuple, Type

import torch
from nerfstudio.cameras.rays import RayBundle, RaySamples
from nerfstudio.engine.callbacks import TrainingCallback, TrainingCallbackAttributes
from nerfstudio.field_components.encodings import NeRFEncoding
from nerfstudio.field_components.field_heads import FieldHeadNames
from nerfstudio.fields.base_field import Field
from nerfstudio.fields.vanilla_nerf_field import NeRFField
from nerfstudio.model_components.scene_colliders import NearFarCollider
from nerfstudio.models.vanilla_nerf import NeRFModel, VanillaModelConfig
from nerfstudio.utils import misc
from torch import Tensor
from torch.nn import Parameter

from nerf_inr_methods.core.iga import IGAState
from nerf_inr_methods.core.int_sampler import LOSS_WEIGHTS_KEY, weighted_mse
from nerf_inr_methods.nerfstudio_plugin.gaussian_field import GaussianNeRFField
from nerf_inr_methods.nerfstudio_plugin.iga_nerf import iga_fine_loss, nerf_iga_state
from nerf_inr_methods.nerfstudio_plugin.offline import drop_unavailable_metrics, install
from nerf_inr_methods.nerfstudio_plugin.step_times import StepTimer

install()  # also when a saved config.yml imports this module directly

TRUE_FINE_MSE_KEY = "rgb_mse_fine"
"""Metrics-dict key of the true fine-colour MSE (detached scalar)."""
TRUE_COARSE_MSE_KEY = "rgb_mse_coarse"
"""Metrics-dict key of the true coarse-colour MSE (detached scalar)."""
TRUE_LOSS_KEY = "true_loss"
"""Metrics-dict key of the true training objective ``sum_f coefficient_f * MSE_f`` (detached scalar)."""
_BLENDED_RGB_KEY = "_blended_rgb"
"""Private outputs key memoising :meth:`InrNeRFModel.blended_rgb` for the step."""
MLP_SIZES = ("base_mlp_num_layers", "base_mlp_layer_width", "head_mlp_num_layers", "head_mlp_layer_width")
"""The field sizes of :class:`InrNeRFModelConfig`, named as nerfstudio's ``NeRFField`` and ``GaussianNeRFField`` take
them."""
FieldType = Literal["relu-pe", "gaussian"]
"""Values of --pipeline.model.field-type."""


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
    collider_params. Datasets without them: blender-data keeps collider_params (near 2, far 6); with ns-train, others
    get planes from their training cameras and scene box unless collider-params is set (see ``preflight``). False:
    always collider_params."""
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
    field_type: FieldType = "relu-pe"
    """Field architecture: vanilla NeRF's ReLU MLPs on positional encodings, or a GARF-style MLP of Gaussian
    activations on raw xyz and view directions (no encoding, fp32; sizes from the base/head MLP flags, where the
    head's layers are its Gaussian layers on [feature, direction])."""
    gaussian_sigma: float = 0.1
    """Width sigma of the Gaussian activation exp(-x^2 / (2 sigma^2)) (NeRF: 0.1); used by --field-type gaussian."""
    gaussian_layout: Literal["nerf", "garf"] = "nerf"
    """Layout of the Gaussian field (--field-type gaussian): nerf = NeRF's MLP on raw xyz and directions (xyz at the
    skip); garf = GARF's (centred Gaussian embeddings of xyz and directions, the embedding at the skip, linear density
    and feature layers). See gaussian_field.py."""
    hierarchical_sampling: bool = True
    """Coarse and fine fields with PDF resampling (vanilla NeRF). False: a single field (the fine one) on
    num-coarse-samples stratified samples, as GARF; the coarse outputs are then gradient-free copies of it."""

    def check_field_flags(self) -> None:
        """--field-type, and the Gaussian field's sigma and depth (ValueError naming the flag). Checked by ns-train's
        preflight, before any data is loaded, and when the model is set up (configs built in Python skip both tyro
        and the preflight)."""
        prefix = "--pipeline.model."
        if self.field_type not in typing.get_args(FieldType):
            raise ValueError(f"{prefix}field-type must be one of {typing.get_args(FieldType)}, got {self.field_type!r}")
        if self.field_type == "gaussian":
            sigma, layers = self.gaussian_sigma, self.base_mlp_num_layers
            if not (isinstance(sigma, (int, float)) and math.isfinite(sigma) and sigma > 0):
                raise ValueError(f"{prefix}gaussian-sigma must be a number > 0, got {sigma!r}")
            if layers < 2:
                raise ValueError(
                    f"{prefix}base-mlp-num-layers must be an integer >= 2 with --field-type gaussian, got {layers!r}"
                )

    def uses_vanilla_fields(self) -> bool:
        """True when the field sizes are nerfstudio's, so nerfstudio's own fields are kept."""
        return (self.base_mlp_num_layers, self.base_mlp_layer_width, self.head_mlp_num_layers) == (8, 256, 2) and (
            self.head_mlp_layer_width == 128
        )


class InrNeRFModel(NeRFModel):
    """Vanilla NeRF whose training outputs also expose the fine samples and weights (for IGA)."""

    config: InrNeRFModelConfig
    takes_ray_loss_weights: ClassVar[bool] = True
    """Its coarse and fine MSE weight each ray by batch["ray_loss_weights"] (InrPipeline's soft / error-map
    samplers)."""

    def populate_modules(self) -> None:
        if self.config.enable_temporal_distortion:
            raise ValueError("--pipeline.model.enable-temporal-distortion is not supported by nerf-inr-methods models")
        self.config.check_field_flags()
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
        sizes = {name: getattr(c, name) for name in MLP_SIZES}
        if c.field_type == "gaussian":
            return GaussianNeRFField(**sizes, sigma=c.gaussian_sigma, layout=c.gaussian_layout)
        return NeRFField(
            position_encoding=NeRFEncoding(
                in_dim=3, num_frequencies=10, min_freq_exp=0.0, max_freq_exp=8.0, include_input=True
            ),
            direction_encoding=NeRFEncoding(
                in_dim=3, num_frequencies=4, min_freq_exp=0.0, max_freq_exp=4.0, include_input=True
            ),
            **sizes,
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

    def get_training_callbacks(
        self, training_callback_attributes: TrainingCallbackAttributes
    ) -> List[TrainingCallback]:
        """nerfstudio's callbacks plus :class:`StepTimer`: the exact duration of every training step in the log
        (``inr-compare`` reads it instead of unrolling nerfstudio's running mean)."""
        return [*super().get_training_callbacks(training_callback_attributes), *StepTimer().callbacks()]

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
        # The final (fine) image under the names nerfstudio's viewer, ns-render and ns-export read, first (the viewer
        # shows the first output by default).
        outputs: Dict[str, Tensor | RaySamples] = {key: fine[key] for key in ("rgb", "accumulation", "depth")}
        for name, rendered in (("coarse", coarse), ("fine", fine)):
            for key in ("rgb", "accumulation", "depth"):
                outputs[f"{key}_{name}"] = rendered[key]
        if self.training:
            # (n_rays, n_fine_samples, 1) weights and their samples: IGA picks one representative per ray.
            outputs["weights_fine"] = fine["weights"]
            outputs["ray_samples_fine"] = ray_samples_fine
        return outputs

    def iga_state(self) -> IGAState | None:
        """IGA's state (schedule, latest S, diagnostics), created from the config on first use; None when IGA is off."""
        if not self.config.iga:
            if self.config.iga_identity:
                raise ValueError("--pipeline.model.iga-identity True needs --pipeline.model.iga True")
            return None
        if getattr(self, "_iga", None) is None:
            c = self.config
            self._iga = nerf_iga_state(end=c.iga_end, update_every=c.iga_update_every, identity=c.iga_identity)
        return self._iga

    def blended_rgb(self, outputs: Dict[str, Any], batch: Dict[str, Tensor]) -> Dict[str, Tuple[Tensor, Tensor]]:
        """(pred, target) colours, each (n_rays, 3), per field ("coarse", "fine"), blended with the background as
        vanilla NeRF's loss blends them.

        Memoised in ``outputs`` (private key ``_blended_rgb``): a "random" background is drawn once per step, coarse
        then fine as in vanilla's ``get_loss_dict`` (same random stream), and the metrics, the loss and the curvature
        loss of the step all see it, whichever asks first.

        Args:
            outputs: model outputs with ``rgb_{coarse,fine}`` (n_rays, 3), ``accumulation_{coarse,fine}`` (n_rays, 1).
            batch: batch with ``image`` (n_rays, 3 or 4) in [0, 1].
        """
        cached = outputs.get(_BLENDED_RGB_KEY)
        if cached is not None:
            return cached
        if "image" not in batch:
            raise ValueError(f"batch must hold the ground-truth colours under 'image', got keys {sorted(batch)}")
        pairs: Dict[str, Tuple[Tensor, Tensor]] = {}
        for name in ("coarse", "fine"):
            pred = outputs[f"rgb_{name}"]
            pairs[name] = self.renderer_rgb.blend_background_for_loss_computation(
                pred_image=pred,
                pred_accumulation=outputs[f"accumulation_{name}"],
                gt_image=batch["image"].to(pred.device),
            )
        outputs[_BLENDED_RGB_KEY] = pairs
        return pairs

    def true_rgb_mse(self, outputs: Dict[str, Any], batch: Dict[str, Tensor]) -> Dict[str, Tensor]:
        """Per field ("coarse", "fine"), the true colour MSE (scalar, with its graph), blended as the loss is."""
        pairs = self.blended_rgb(outputs, batch)
        return {name: torch.mean((pred - target) ** 2) for name, (pred, target) in pairs.items()}

    def true_loss(self, outputs: Dict[str, Any], batch: Dict[str, Tensor]) -> Tensor:
        """The true training objective ``sum_f coefficient_f * MSE_f`` over the trained fields (scalar, with its graph);
        equal to ``sum(get_loss_dict(...).values())`` when IGA is off and the rays are unweighted."""
        return self._weighted_sum(self.true_rgb_mse(outputs, batch))

    def _weighted_sum(self, mse: Dict[str, Tensor]) -> Tensor:
        trained = ("fine",) if self.field_coarse is None else ("coarse", "fine")
        coefficients = self.config.loss_coefficients
        return sum(float(coefficients.get(f"rgb_loss_{name}", 1.0)) * mse[name] for name in trained)  # type: ignore

    def get_metrics_dict(self, outputs: Dict[str, Any], batch: Dict[str, Tensor]) -> Dict[str, Tensor]:
        """True colour metrics (detached), blended as the loss is: ``rgb_mse_coarse``, ``rgb_mse_fine``,
        ``true_loss`` (the objective's value, whatever surrogate trains it) and the fine ``psnr`` (dB)."""
        metrics = super().get_metrics_dict(outputs, batch)
        mse = self.true_rgb_mse(outputs, batch)
        fine_mse = mse["fine"].detach()
        metrics.update(
            {
                TRUE_COARSE_MSE_KEY: mse["coarse"].detach(),
                TRUE_FINE_MSE_KEY: fine_mse,
                TRUE_LOSS_KEY: self._weighted_sum(mse).detach(),
                "psnr": -10.0 * torch.log10(fine_mse.clamp_min(1e-10)),
            }
        )
        return metrics

    def get_loss_dict(
        self, outputs: Dict[str, Any], batch: Dict[str, Tensor], metrics_dict: Dict[str, Tensor] | None = None
    ) -> Dict[str, Tensor]:
        """Vanilla NeRF's coarse and fine MSE (weighted per ray when the batch holds INT's loss weights); with ``iga``
        in training, the fine term is IGA's surrogate loss on the steps IGA adjusts (one step of the IGA state).

        Adds IGA's logged diagnostics to ``metrics_dict`` when given: ``iga_applied`` (1 on adjusted steps) and
        :meth:`IGAState.diagnostics <nerf_inr_methods.core.iga.IGAState.diagnostics>`.
        """
        pairs = self.blended_rgb(outputs, batch)
        (coarse_pred, coarse_image), (fine_pred, fine_image) = pairs["coarse"], pairs["fine"]
        ray_weights = batch.get(LOSS_WEIGHTS_KEY)  # per-ray importance weights of INT's soft / error-map samplers
        rgb_loss_coarse = (
            self.rgb_loss(coarse_image, coarse_pred)
            if ray_weights is None
            else weighted_mse(coarse_pred, coarse_image, ray_weights)
        )
        iga = self.iga_state()
        rgb_loss_fine = None
        if iga is not None and self.training:
            weights, samples = outputs["weights_fine"], outputs["ray_samples_fine"]
            rgb_loss_fine = iga_fine_loss(iga, self.field_fine, fine_pred, fine_image, weights, samples)
            if metrics_dict is not None:
                metrics_dict["iga_applied"] = torch.tensor(float(rgb_loss_fine is not None))
                if rgb_loss_fine is not None:
                    metrics_dict.update({k: torch.tensor(v) for k, v in iga.diagnostics().items()})
        if rgb_loss_fine is None:
            rgb_loss_fine = (
                self.rgb_loss(fine_image, fine_pred)
                if ray_weights is None
                else weighted_mse(fine_pred, fine_image, ray_weights)
            )
        loss_dict = {"rgb_loss_coarse": rgb_loss_coarse, "rgb_loss_fine": rgb_loss_fine}
        if self.field_coarse is None:  # single-field mode: the coarse outputs are gradient-free copies, no term
            del loss_dict["rgb_loss_coarse"]
        return misc.scale_dict(loss_dict, self.config.loss_coefficients)

    def curvature_loss(self, outputs: Dict[str, Any], batch: Dict[str, Tensor]) -> Tensor | None:
        """The loss whose curvature an optimizer that needs one (ESGD's Hessian-vector products) takes on this step.

        None when the training loss is the true loss (IGA off, evaluation, or a step IGA did not adjust): the
        optimizer then differentiates the training loss itself. On IGA-adjusted steps the training loss is a
        stop-gradient surrogate whose Hessian lacks ``J^T S J``, and this is :meth:`true_loss`, with its graph.
        Call it after ``get_loss_dict`` of the same step (the IGA state says whether that step was adjusted).
        """
        iga = self.iga_state()
        if iga is None or not self.training or not iga.last_applied:
            return None
        return self.true_loss(outputs, batch)

    def get_image_metrics_and_images(
        self, outputs: Dict[str, Tensor], batch: Dict[str, Tensor]
    ) -> Tuple[Dict[str, float], Dict[str, Tensor]]:
        """Vanilla NeRF's evaluation, with LPIPS omitted (not faked) when its weights are unavailable."""
        metrics, images = super().get_image_metrics_and_images(outputs, batch)
        return drop_unavailable_metrics(metrics), images
