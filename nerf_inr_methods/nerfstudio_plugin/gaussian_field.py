"""Gaussian-activation NeRF fields (methods.md section 3), built from ``core.mlp``.

Two layouts, with ``L = base_mlp_num_layers`` Gaussian layers on xyz and ``W = base_mlp_layer_width`` (the size
arguments are named as nerfstudio's ``NeRFField``'s):

``"nerf"`` (NeRF/BARF layout on raw xyz):

- position MLP on raw xyz (no positional encoding): ``make_mlp(3, 1 + W, width=W, depth=L - 1, "gaussian",
  skip_layers=(4,))``, i.e. ``L - 1`` Gaussian hidden layers, xyz concatenated to the input of hidden layer 4, then
  one linear layer whose first output is the raw density and whose other ``W`` outputs, after a Gaussian
  activation, are the feature: ``L`` Gaussian layers on xyz in all;
- colour head: ``make_mlp(W + 3, 3, width=head_mlp_layer_width, depth=head_mlp_num_layers, "gaussian")`` on
  ``[feature, view direction]`` (raw unit vectors, no encoding), then a sigmoid.

``"garf"`` (GARF's ``NeRF_Gaussian``, sfchng/Gaussian-Activated-Radiance-Fields):

- a Gaussian *embedding* of xyz: ``Linear(3, W)`` followed by a Gaussian of the pre-activations centred on their
  mean over the ``W`` features (:class:`~nerf_inr_methods.core.mlp.CenteredGaussianActivation`), then ``L - 1``
  Gaussian layers of ``W``; the embedding (not raw xyz) is concatenated to the input of the layer after hidden
  layer 4 (GARF's skip);
- density = a linear layer of the last hidden activations, the feature = another linear layer (no activation);
- colour head on ``[feature, Gaussian embedding of the view direction]`` (``Linear(3, W)`` + centred Gaussian):
  ``head_mlp_num_layers`` Gaussian layers of ``head_mlp_layer_width``, then a linear layer and a sigmoid.

Both: density = softplus(raw density), sigmoid colour (GARF: 8 layers of 256, a head layer of 128). Every trainable
parameter sits in an ``nn.Linear`` applied exactly once per sample, so the layer-factored eNTK (``core.entk``, IGA)
applies. The field always computes in float32 (or float64; autocast is disabled inside it): the Gaussian
``exp(-x^2 / (2 sigma^2))`` underflows in half precision.

Example:
    >>> field = GaussianNeRFField(base_mlp_num_layers=4, base_mlp_layer_width=32, head_mlp_layer_width=8, layout="garf")
    >>> # field.forward(ray_samples) -> {FieldHeadNames.DENSITY: (..., 1), FieldHeadNames.RGB: (..., 3)}
"""

from __future__ import annotations

from typing import Dict, Literal, Sequence, Tuple

import torch
from nerfstudio.cameras.rays import RaySamples
from nerfstudio.field_components.field_heads import FieldHeadNames
from nerfstudio.fields.base_field import Field
from torch import Tensor, nn

from nerf_inr_methods.core.mlp import CenteredGaussianActivation, GaussianActivation, make_mlp

SKIP_LAYER = 4
"""Hidden layer of the position MLP whose input is concatenated with xyz (NeRF) or its embedding (GARF)."""
FieldLayout = Literal["nerf", "garf"]
FIELD_LAYOUTS: Tuple[str, ...] = ("nerf", "garf")


class GaussianNeRFField(Field):
    """Gaussian-activation NeRF field on raw xyz (see the module docstring for the two layouts).

    Args:
        base_mlp_num_layers: Gaussian layers on xyz (>= 2).
        base_mlp_layer_width: width W of the position MLP (and of the feature passed to the colour head).
        head_mlp_num_layers: Gaussian hidden layers of the colour head (>= 1).
        head_mlp_layer_width: width of the colour head.
        sigma: width of the Gaussian activation (> 0; NeRF: 0.1), in units of the pre-activation.
        skip_layers: hidden-layer indices of the position MLP whose input also receives xyz (nerf) or its embedding
            (garf); None: ``(4,)`` when the MLP has more than 4 hidden layers, else none.
        layout: "nerf" or "garf" (see the module docstring).
    """

    def __init__(
        self,
        base_mlp_num_layers: int = 8,
        base_mlp_layer_width: int = 256,
        head_mlp_num_layers: int = 1,
        head_mlp_layer_width: int = 128,
        sigma: float = 0.1,
        skip_layers: Sequence[int] | None = None,
        layout: FieldLayout = "nerf",
    ) -> None:
        super().__init__()
        for name, value, low in (
            ("base_mlp_num_layers", base_mlp_num_layers, 2),
            ("base_mlp_layer_width", base_mlp_layer_width, 1),
            ("head_mlp_num_layers", head_mlp_num_layers, 1),
            ("head_mlp_layer_width", head_mlp_layer_width, 1),
        ):
            if isinstance(value, bool) or int(value) != value or value < low:
                raise ValueError(f"GaussianNeRFField: {name} must be an integer >= {low}, got {value!r}")
        if not float(sigma) > 0:
            raise ValueError(f"GaussianNeRFField: sigma must be > 0, got {sigma!r}")
        if layout not in FIELD_LAYOUTS:
            raise ValueError(f"GaussianNeRFField: layout must be one of {FIELD_LAYOUTS}, got {layout!r}")
        depth = int(base_mlp_num_layers) - 1
        if skip_layers is None:
            skip_layers = (SKIP_LAYER,) if depth > SKIP_LAYER else ()
        self.sigma = float(sigma)
        self.layer_width = width = int(base_mlp_layer_width)
        self.layout = layout
        if layout == "nerf":
            self.position_mlp = make_mlp(
                3, 1 + width, width=width, depth=depth, activation="gaussian", sigma=self.sigma,
                skip_layers=tuple(skip_layers),
            )  # fmt: skip
            self.feature_activation = GaussianActivation(self.sigma)
            head_in = width + 3
        else:
            self.position_embedding = nn.Linear(3, width)
            self.direction_embedding = nn.Linear(3, width)
            self.embedding_activation = CenteredGaussianActivation(self.sigma)
            # hidden layer i of the GARF trunk gets [embedding, h] when i - 1 is a skip layer (GARF concatenates after
            # its layer i - 1); layer 0 is the embedding itself.
            self.position_mlp = make_mlp(
                width, width, width=width, depth=depth, activation="gaussian", sigma=self.sigma,
                skip_layers=tuple(s + 1 for s in skip_layers if s + 1 < depth),
            )  # fmt: skip
            self.density_layer = nn.Linear(width, 1)
            head_in = 2 * width
        self.head_mlp = make_mlp(
            head_in, 3, width=int(head_mlp_layer_width), depth=int(head_mlp_num_layers), activation="gaussian",
            sigma=self.sigma,
        )  # fmt: skip

    def linear_layers(self) -> list[nn.Linear]:
        """All ``nn.Linear`` layers in application order (position MLP, then colour head)."""
        if self.layout == "nerf":
            return [*self.position_mlp.linear_layers(), *self.head_mlp.linear_layers()]
        position = [
            self.position_embedding,
            *self.position_mlp.hidden,
            self.density_layer,
            self.position_mlp.output_layer,
        ]
        return [*position, self.direction_embedding, *self.head_mlp.linear_layers()]

    def density_and_feature(self, positions: Tensor) -> Tuple[Tensor, Tensor]:
        """positions (..., 3) in scene units -> density (..., 1) >= 0 (1 / scene unit), feature (..., W)."""
        with torch.autocast(device_type=positions.device.type, enabled=False):
            x = _at_least_float32(positions)
            if self.layout == "nerf":
                out = self.position_mlp(x)
                return nn.functional.softplus(out[..., :1]), self.feature_activation(out[..., 1:])
            trunk = self.position_mlp.features(self.embedding_activation(self.position_embedding(x)))
            density = nn.functional.softplus(self.density_layer(trunk))
            return density, self.position_mlp.output_layer(trunk)

    def get_density(self, ray_samples: RaySamples) -> Tuple[Tensor, Tensor]:
        """Density (*bs, 1) and the feature (*bs, W) the colour head conditions on, at the samples' positions."""
        return self.density_and_feature(ray_samples.frustums.get_positions())

    def get_outputs(
        self, ray_samples: RaySamples, density_embedding: Tensor | None = None
    ) -> Dict[FieldHeadNames, Tensor]:
        """Colour (*bs, 3) in (0, 1) from the feature (*bs, W) and the samples' unit view directions (*bs, 3)."""
        if density_embedding is None:
            raise ValueError("GaussianNeRFField.get_outputs needs the density_embedding returned by get_density")
        directions = ray_samples.frustums.directions
        with torch.autocast(device_type=directions.device.type, enabled=False):
            directions = _at_least_float32(directions)
            if self.layout == "garf":
                directions = self.embedding_activation(self.direction_embedding(directions))
            inputs = torch.cat([_at_least_float32(density_embedding), directions], dim=-1)
            rgb = torch.sigmoid(self.head_mlp(inputs))
        return {FieldHeadNames.RGB: rgb}


def _at_least_float32(x: Tensor) -> Tensor:
    """``x`` in float32, or unchanged if it is float64 (half/bfloat16 inputs are promoted)."""
    return x if x.dtype in (torch.float32, torch.float64) else x.float()
