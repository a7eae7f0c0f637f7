"""Activations and coordinate MLPs shared by image fitting, the shape trainer and the NeRF fields.

Three families (methods.md section 3 and the IGA/INT papers' image tests):

- ``"relu"``: ReLU MLP, normally with a NeRF positional encoding (``pe_frequencies > 0``).
- ``"siren"``: sine activations ``sin(w0 * x)`` with the SIREN initialisation (Sitzmann et al. 2020).
- ``"gaussian"``: ``exp(-x^2 / (2 sigma^2))`` with PyTorch's default ``nn.Linear`` initialisation and
  no positional encoding (sigma: images 0.05, occupancy 0.09, NeRF 0.1).

Every affine map of the network is a plain ``nn.Linear`` applied exactly once per sample, so code that
hooks ``nn.Linear`` modules (the layer-factored empirical NTK) sees each layer's inputs and deltas once.

Example:
    >>> import torch
    >>> net = make_mlp(2, 3, width=64, depth=3, activation="gaussian", sigma=0.05)
    >>> net(torch.rand(10, 2) * 2 - 1).shape
    torch.Size([10, 3])
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor, nn

Activation = Literal["relu", "siren", "gaussian"]
ACTIVATIONS: tuple[str, ...] = ("relu", "siren", "gaussian")


def gaussian_activation(x: Tensor, sigma: float) -> Tensor:
    """Gaussian activation ``exp(-x^2 / (2 sigma^2))`` computed (and returned) in float32.

    Args:
        x: pre-activations, any shape.
        sigma: width of the bump, in the units of the pre-activation (> 0).

    Returns:
        Tensor of the same shape as ``x``, dtype float32 (float64 inputs stay float64): the function
        underflows quickly, so half precision is never used.
    """
    if x.dtype not in (torch.float32, torch.float64):
        x = x.float()
    return torch.exp(-0.5 * (x / sigma) ** 2)


class _ScaledActivation(nn.Module):
    """An activation with one positive scalar parameter, stored as attribute ``name`` (checked when built, shown in
    the module's repr)."""

    def __init__(self, name: str, value: float) -> None:
        super().__init__()
        if not value > 0:
            raise ValueError(f"{type(self).__name__}: {name} must be > 0, got {value}")
        self._scale_name = name
        setattr(self, name, float(value))

    def extra_repr(self) -> str:
        return f"{self._scale_name}={getattr(self, self._scale_name)}"


class GaussianActivation(_ScaledActivation):
    """Module form of :func:`gaussian_activation`: ``phi(x) = exp(-x^2 / (2 sigma^2))``.

    Args:
        sigma: width of the Gaussian (> 0). Paper defaults: images 0.05, occupancy 0.09, NeRF 0.1.
    """

    sigma: float

    def __init__(self, sigma: float = 0.05) -> None:
        super().__init__("sigma", sigma)

    def forward(self, x: Tensor) -> Tensor:
        """x: (...,) pre-activations -> (...,) float32 activations in (0, 1]."""
        return gaussian_activation(x, self.sigma)


class CenteredGaussianActivation(GaussianActivation):
    """GARF's Gaussian embedding: ``exp(-(x - mean(x))^2 / (2 sigma^2))``, the mean taken over the last axis.

    Applied after the first linear layer of GARF's fields (``gaussian_init_d`` / ``gaussian_init_c`` in
    sfchng/Gaussian-Activated-Radiance-Fields): each sample's pre-activations are centred on their mean over the
    features before the bump, which keeps part of the features active wherever the input lies.

    Args:
        sigma: width of the Gaussian (> 0).
    """

    def forward(self, x: Tensor) -> Tensor:
        """x: (..., F) pre-activations -> (..., F) float32 activations in (0, 1]."""
        return gaussian_activation(x - x.mean(dim=-1, keepdim=True), self.sigma)


class Sine(_ScaledActivation):
    """SIREN activation ``sin(w0 * x)``.

    Use with :func:`siren_init_` on the preceding ``nn.Linear`` (``make_mlp(activation="siren")`` does it).

    Args:
        w0: frequency factor (> 0), 30 in SIREN for every layer.
    """

    w0: float

    def __init__(self, w0: float = 30.0) -> None:
        super().__init__("w0", w0)

    def forward(self, x: Tensor) -> Tensor:
        """x: (...,) pre-activations -> (...,) values in [-1, 1]."""
        return torch.sin(self.w0 * x)


@torch.no_grad()
def siren_init_(linear: nn.Linear, w0: float = 30.0, is_first: bool = False) -> nn.Linear:
    """SIREN initialisation of a linear layer's weight, in place (bias keeps PyTorch's default).

    First layer: ``U(-1/in, 1/in)``; other layers: ``U(-sqrt(6/in)/w0, sqrt(6/in)/w0)``, with ``in`` the
    layer's fan-in. Returns the layer.
    """
    fan_in = linear.in_features
    bound = 1.0 / fan_in if is_first else math.sqrt(6.0 / fan_in) / w0
    linear.weight.uniform_(-bound, bound)
    return linear


def positional_encoding(x: Tensor, num_frequencies: int, include_input: bool = True) -> Tensor:
    """NeRF positional encoding (Mildenhall et al. 2020, Eq. 4).

    Frequency convention: ``gamma(x) = [x, sin(2^0 pi x), cos(2^0 pi x), ..., sin(2^(L-1) pi x),
    cos(2^(L-1) pi x)]`` with ``L = num_frequencies``, applied to each coordinate; ``x`` is expected in
    about [-1, 1] (the paper's convention, with pi; nerf-pytorch omits the pi). Layout of the last axis:
    ``[x (if include_input), sin(f_0 x), cos(f_0 x), sin(f_1 x), cos(f_1 x), ...]``, each block ``D`` wide.

    Args:
        x: (..., D) coordinates.
        num_frequencies: L >= 0 (0 returns ``x`` itself if ``include_input``).
        include_input: whether to keep the raw coordinates in front.

    Returns:
        (..., D * (include_input + 2 L)) encoding.

    Example:
        >>> positional_encoding(torch.zeros(5, 3), 4).shape
        torch.Size([5, 27])
    """
    if num_frequencies < 0:
        raise ValueError(f"positional_encoding: num_frequencies must be >= 0, got {num_frequencies}")
    if num_frequencies == 0 and not include_input:
        raise ValueError("positional_encoding: num_frequencies=0 with include_input=False gives an empty encoding")
    parts = [x] if include_input else []
    if num_frequencies > 0:
        freqs = math.pi * 2.0 ** torch.arange(num_frequencies, device=x.device, dtype=x.dtype)  # (L,)
        angles = x[..., None, :] * freqs[:, None]  # (..., L, D)
        enc = torch.stack([torch.sin(angles), torch.cos(angles)], dim=-2)  # (..., L, 2, D)
        parts.append(enc.flatten(-3))
    return torch.cat(parts, dim=-1) if len(parts) > 1 else parts[0]


def encoded_dim(in_dim: int, num_frequencies: int, include_input: bool = True) -> int:
    """Width of :func:`positional_encoding`'s output for ``in_dim`` coordinates."""
    return in_dim * (int(include_input) + 2 * num_frequencies)


class CoordinateMLP(nn.Module):
    """MLP ``(..., in_dim) -> (..., out_dim)`` with optional positional encoding and input skips.

    Structure: ``h_0 = PE(x)``; for hidden layer ``i = 0..depth-1``:
    ``h_{i+1} = act(hidden[i](h_i))``, where the input of layer ``i`` is ``cat([h_i, PE(x)])`` when
    ``i in skip_layers`` (NeRF's skip, e.g. ``(4,)``); output ``= output_layer(h_depth)`` (linear, no
    activation). All affine maps are ``nn.Linear`` modules (``hidden`` then ``output_layer``), each
    applied once per sample. Build it with :func:`make_mlp`.
    """

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        width: int,
        depth: int,
        activation: nn.Module,
        pe_frequencies: int = 0,
        pe_include_input: bool = True,
        skip_layers: Sequence[int] = (),
    ) -> None:
        super().__init__()
        for name, val, low in (("in_dim", in_dim, 1), ("out_dim", out_dim, 1), ("width", width, 1)):
            if int(val) != val or val < low:
                raise ValueError(f"make_mlp: {name} must be an integer >= {low}, got {val}")
        if int(depth) != depth or depth < 1:
            raise ValueError(f"make_mlp: depth (number of hidden layers) must be an integer >= 1, got {depth}")
        skips = tuple(sorted(set(int(s) for s in skip_layers)))
        bad = [s for s in skips if not 1 <= s < depth]
        if bad:
            raise ValueError(f"make_mlp: skip_layers must be hidden-layer indices in [1, {depth - 1}], got {bad}")
        self.in_dim = in_dim
        self.out_dim = out_dim
        self.pe_frequencies = pe_frequencies
        self.pe_include_input = pe_include_input
        self.skip_layers = skips
        self.encoded_dim = encoded_dim(in_dim, pe_frequencies, pe_include_input)
        dims_in = [self.encoded_dim] + [width + (self.encoded_dim if i in skips else 0) for i in range(1, depth)]
        self.hidden = nn.ModuleList([nn.Linear(d, width) for d in dims_in])
        self.activation = activation
        self.output_layer = nn.Linear(width, out_dim)

    def encode(self, x: Tensor) -> Tensor:
        """x: (..., in_dim) -> (..., encoded_dim) network input (identity without PE)."""
        if x.shape[-1] != self.in_dim:
            raise ValueError(f"CoordinateMLP: expected inputs with last dim {self.in_dim}, got shape {tuple(x.shape)}")
        if self.pe_frequencies == 0:
            return x
        return positional_encoding(x, self.pe_frequencies, self.pe_include_input)

    def features(self, x: Tensor) -> Tensor:
        """x: (..., in_dim) -> (..., width) activations of the last hidden layer."""
        enc = self.encode(x)
        h = enc
        for i, layer in enumerate(self.hidden):
            if i in self.skip_layers:
                h = torch.cat([h, enc], dim=-1)
            h = self.activation(layer(h))
        return h

    def forward(self, x: Tensor) -> Tensor:
        """x: (..., in_dim) coordinates -> (..., out_dim) raw outputs (no output activation)."""
        return self.output_layer(self.features(x))

    def linear_layers(self) -> list[nn.Linear]:
        """All ``nn.Linear`` modules in application order (hidden layers, then the output layer)."""
        return [*self.hidden, self.output_layer]


def make_activation(activation: Activation, sigma: float = 0.05, w0: float = 30.0) -> nn.Module:
    """The activation module named by ``activation`` ("relu", "siren" or "gaussian")."""
    if activation == "relu":
        return nn.ReLU()
    if activation == "siren":
        return Sine(w0)
    if activation == "gaussian":
        return GaussianActivation(sigma)
    raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")


def make_mlp(
    in_dim: int,
    out_dim: int,
    width: int = 256,
    depth: int = 4,
    activation: Activation = "relu",
    sigma: float = 0.05,
    w0: float = 30.0,
    pe_frequencies: int = 0,
    pe_include_input: bool = True,
    skip_layers: Sequence[int] = (),
) -> CoordinateMLP:
    """Build a coordinate MLP.

    Args:
        in_dim: number of input coordinates D (2 for images, 3 for shapes/NeRF positions).
        out_dim: number of outputs C.
        width: hidden width.
        depth: number of hidden (activated) layers; the network has ``depth + 1`` ``nn.Linear`` layers.
        activation: "relu", "siren" (``sin(w0 x)`` + SIREN init, also on the output layer as in SIREN)
            or "gaussian" (``exp(-x^2 / (2 sigma^2))``, default ``nn.Linear`` init).
        sigma: Gaussian width (only for "gaussian"); images 0.05, occupancy 0.09, NeRF 0.1.
        w0: SIREN frequency factor (only for "siren"), used in every sine layer.
        pe_frequencies: number L of positional-encoding frequencies (0 = raw coordinates; typical
            ReLU+PE: 10 for images/positions). See :func:`positional_encoding` for the convention.
        pe_include_input: keep the raw coordinates in the encoding.
        skip_layers: hidden-layer indices i in [1, depth-1] whose input is ``cat([h_i, PE(x)])``.

    Returns:
        A :class:`CoordinateMLP` mapping (..., in_dim) -> (..., out_dim).
    """
    act = make_activation(activation, sigma=sigma, w0=w0)
    net = CoordinateMLP(
        in_dim,
        out_dim,
        width,
        depth,
        act,
        pe_frequencies=pe_frequencies,
        pe_include_input=pe_include_input,
        skip_layers=skip_layers,
    )
    if activation == "siren":
        for i, layer in enumerate(net.linear_layers()):
            siren_init_(layer, w0=w0, is_first=(i == 0))
    return net
