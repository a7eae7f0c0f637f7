"""``inr-mesh``: extract a mesh from a trained nerfstudio run (any of our methods, vanilla-nerf, nerfacto, ...).

The field's density is queried on a regular grid inside the scene box in memory-bounded chunks (zero-length ray
samples at the grid points, the field's own ``get_density``), the iso-surface ``density = threshold`` is extracted
with marching cubes (pymcubes) and written with trimesh, by default in the dataset's original coordinates
(``dataparser_transforms.json`` inverted). Vertex colours, optional, are the field's colour seen along the
surface normal: view direction ``d = grad(sigma) / |grad(sigma)|``, i.e. looking into the surface from outside.

Choosing the threshold (density, in 1 / scene unit of the model's coordinates):

- Default, ``--opacity 0.5``: the density at which one voxel-length segment of a ray is 50% opaque,
  ``sigma = -ln(1 - opacity) / voxel = ln 2 / voxel``. It is the level at which the grid itself starts to
  "see" matter: thinner or fainter structures would be invisible at this resolution anyway, and it scales with
  the resolution (finer grid -> higher threshold -> the surface moves to where the density is a genuine wall).
  Raise ``--opacity`` (0.9, 0.99) to drop floaters, lower it to keep thin structures. In Blender's 3-unit scene
  box this gives 29 at R = 128 and 59 at R = 256, the range of the fixed 50 of the original NeRF code's mesh
  notebook. A model that renders from uniform (stratified) samples only (our models with
  ``--pipeline.model.hierarchical-sampling False``, e.g. gauss-nerf) never needs a wall thinner than its sample
  interval ``(far - near) / num_coarse_samples``: its segment is the longer of the voxel and that interval (gauss-nerf
  on mic, 32 samples: 0.125, level 5.5, where the voxel rule's 29 lies above the whole field). Models with
  importance or proposal sampling concentrate samples at surfaces and keep the voxel.
- ``--threshold SIGMA``: a fixed density, the natural choice when comparing resolutions or runs; look at the
  density percentiles ``inr-mesh`` prints to pick one.
- ``--occupancy F``: the level that leaves a fraction F of the grid points inside (the (1 - F) quantile of the
  sampled densities). Scene-agnostic and always gives a surface, useful for barely trained runs; the surface it
  gives has no physical meaning beyond "the densest F of the box".

Cost: ``R^3`` field evaluations (vanilla NeRF at R = 128 is ~2M points, minutes on a CPU, seconds on a GPU);
memory is bounded by ``--chunk-size`` (plus the float32 volume, 4 R^3 bytes).

Example::

    inr-mesh --load-config outputs/lego/inr-nerf/<timestamp>/config.yml --output-path lego.ply --resolution 256
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Sequence, Tuple

import numpy as np
import torch
from nerfstudio.cameras.rays import Frustums, RaySamples
from nerfstudio.field_components.field_heads import FieldHeadNames
from nerfstudio.fields.base_field import Field
from torch import Tensor

from nerf_inr_methods import mesh as meshlib
from nerf_inr_methods.cli import check_output_file, check_positive, run_command
from nerf_inr_methods.nerfstudio_plugin.offline import load_run


def field_of(model: torch.nn.Module, field_name: str | None = None) -> Field:
    """The field to mesh: ``model.<field_name>``, else ``field_fine`` when present, else ``field``."""
    names = [field_name] if field_name else ["field_fine", "field"]
    for name in names:
        candidate = getattr(model, name, None)
        if isinstance(candidate, Field):
            return candidate
    available = [n for n, m in model.named_children() if isinstance(m, Field)]
    raise ValueError(
        f"--field-name: {type(model).__name__} has no nerfstudio Field attribute {' or '.join(names)!r}; "
        f"its fields are {available or 'none'}"
    )


def point_samples(points: Tensor, directions: Tensor | None = None) -> RaySamples:
    """Zero-length ray samples at ``points`` (n, 3): ``get_positions()`` returns the points exactly.

    ``directions`` (n, 3) unit vectors are the view directions (default +z, irrelevant for density).
    Camera index 0 (appearance-embedding fields need one); zero-length frustums make integrated
    (mip-NeRF) encodings reduce to the point's positional encoding.
    """
    n = points.shape[0]
    zeros = points.new_zeros((n, 1))
    if directions is None:
        directions = torch.zeros_like(points)
        directions[:, 2] = 1.0
    frustums = Frustums(
        origins=points, directions=directions, starts=zeros, ends=zeros, pixel_area=torch.ones_like(zeros)
    )
    camera_indices = torch.zeros((n, 1), dtype=torch.long, device=points.device)
    return RaySamples(frustums=frustums, camera_indices=camera_indices, deltas=zeros)


def _device_of(field: Field) -> torch.device:
    param = next(iter(field.parameters()), None)
    return param.device if param is not None else torch.device("cpu")


def density_fn(field: Field) -> meshlib.FieldFn:
    """``points (n, 3) float32 numpy -> density (n,)`` (1 / scene unit), evaluated on the field's device."""
    device = _device_of(field)

    def fn(points: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            pts = torch.from_numpy(np.ascontiguousarray(points, dtype=np.float32)).to(device)
            density, _ = field.get_density(point_samples(pts))
        return density.reshape(-1).float().cpu().numpy()

    return fn


def density_gradient_directions(field: Field, points: Tensor, fallback_center: Tensor) -> Tensor:
    """Unit view directions (n, 3) looking into the surface: ``grad(sigma) / |grad(sigma)|`` = -outward normal.

    Where the gradient vanishes (e.g. outside a field's bounded region) the direction points from the point to
    ``fallback_center`` (3,), i.e. the view of an observer outside a star-shaped object.
    """
    with torch.enable_grad():
        pts = points.detach().clone().requires_grad_(True)
        density, _ = field.get_density(point_samples(pts))
        (grad,) = torch.autograd.grad(density.sum(), pts, allow_unused=False)
    norm = grad.norm(dim=-1, keepdim=True)
    inward = fallback_center.to(points) - points
    inward = inward / inward.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    ok = norm > 1e-12
    return torch.where(ok, grad / norm.clamp_min(1e-12), inward).detach()


def normal_view_color_fn(field: Field, center: Sequence[float], chunk_size: int = 1 << 13) -> meshlib.ColorFn:
    """``points (n, 3) -> rgb (n, 3)`` in [0, 1]: the field's colour viewed along the surface normal.

    Each point is looked at from outside along its normal (direction ``-n``, see
    :func:`density_gradient_directions`); ``chunk_size`` bounds the autograd memory of the gradient pass.
    """
    device = _device_of(field)
    center_t = torch.tensor(list(center), dtype=torch.float32, device=device)

    def fn(points: np.ndarray) -> np.ndarray:
        out = []
        for start in range(0, len(points), chunk_size):
            pts = torch.from_numpy(np.ascontiguousarray(points[start : start + chunk_size], dtype=np.float32))
            pts = pts.to(device)
            directions = density_gradient_directions(field, pts, center_t)
            with torch.no_grad():
                rgb = field.forward(point_samples(pts, directions))[FieldHeadNames.RGB]
            out.append(rgb.reshape(len(pts), -1)[:, :3].clamp(0.0, 1.0).float().cpu().numpy())
        return np.concatenate(out, axis=0) if out else np.zeros((0, 3), dtype=np.float32)

    return fn


def cubic_resolution(bounds_min: Sequence[float], bounds_max: Sequence[float], resolution: int) -> Tuple[int, int, int]:
    """Samples per axis giving (nearly) cubic voxels, with ``resolution`` samples along the longest side."""
    if int(resolution) != resolution or resolution < 2:
        raise ValueError(f"--resolution must be an int >= 2, got {resolution!r}")
    extent = np.asarray(bounds_max, dtype=np.float64) - np.asarray(bounds_min, dtype=np.float64)
    if extent.shape != (3,) or not np.all(extent > 0):
        raise ValueError(f"bounds must satisfy bounds_max > bounds_min on every axis, got {bounds_min} .. {bounds_max}")
    voxel = extent.max() / (resolution - 1)
    res = [max(2, int(round(e / voxel)) + 1) for e in extent]
    return res[0], res[1], res[2]


def voxel_size(bounds_min: Sequence[float], bounds_max: Sequence[float], resolution: Sequence[int]) -> float:
    """Geometric mean of the grid spacings (cube root of a voxel's volume), in scene units."""
    extent = np.asarray(bounds_max, dtype=np.float64) - np.asarray(bounds_min, dtype=np.float64)
    spacing = extent / (np.asarray(resolution, dtype=np.float64) - 1.0)
    return float(np.exp(np.log(spacing).mean()))


def uniform_sample_interval(model: torch.nn.Module) -> float | None:
    """Distance between the ray samples (model units) of a model that renders from uniform samples only: ``(far -
    near) / num_coarse_samples`` when its config has ``hierarchical_sampling = False`` (our inr-nerf family); None
    for models with importance or proposal sampling, whose samples concentrate at surfaces."""
    config = getattr(model, "config", None)
    if getattr(config, "hierarchical_sampling", True) is not False:
        return None
    planes = getattr(config, "collider_params", None) or {}
    samples = getattr(config, "num_coarse_samples", None)
    if not {"near_plane", "far_plane"} <= set(planes) or not samples:
        return None
    return (float(planes["far_plane"]) - float(planes["near_plane"])) / int(samples)


def opacity_threshold(voxel: float, opacity: float = 0.5) -> float:
    """Density at which a segment of length ``voxel`` is ``opacity`` opaque: ``-ln(1 - opacity) / voxel``."""
    if not 0.0 < opacity < 1.0:
        raise ValueError(f"--opacity must be in (0, 1), got {opacity}")
    if not voxel > 0.0:
        raise ValueError(f"voxel size must be > 0, got {voxel}")
    return -math.log1p(-opacity) / voxel


def original_from_nerfstudio(transforms_json: Path) -> np.ndarray:
    """(4, 4) matrix mapping the model's coordinates back to the dataset's (inverse of the dataparser's transform).

    ``dataparser_transforms.json`` holds the (3, 4) ``transform`` T and ``scale`` s the dataparser applied:
    ``x_model = s * (T @ [x, 1])``; the inverse is ``inv([T; 0 0 0 1]) @ diag(1/s, 1/s, 1/s, 1)``.
    """
    path = Path(transforms_json)
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found (written by ns-train next to config.yml)")
    data = json.loads(path.read_text())
    try:
        transform = np.asarray(data["transform"], dtype=np.float64)
        scale = float(data["scale"])
    except (KeyError, TypeError, ValueError) as error:
        raise ValueError(f"{path}: expected keys 'transform' (3x4) and 'scale' (number): {error}") from None
    return _inverse_dataparser_transform(transform, scale, str(path))


def _inverse_dataparser_transform(transform: np.ndarray, scale: float, source: str) -> np.ndarray:
    if transform.shape != (3, 4) or not np.all(np.isfinite(transform)) or not (math.isfinite(scale) and scale > 0):
        raise ValueError(f"{source}: expected a finite 3x4 transform and a scale > 0, got {transform.shape}, {scale}")
    forward = np.eye(4)
    forward[:3, :] = transform
    return np.linalg.inv(forward) @ np.diag([1.0 / scale, 1.0 / scale, 1.0 / scale, 1.0])


@dataclass
class FieldMeshResult:
    """A mesh and how it was made (threshold, grid, density statistics)."""

    mesh: Any
    """trimesh.Trimesh (vertices in the output coordinates)."""
    threshold: float
    """Density iso-level used (1 / model unit)."""
    resolution: Tuple[int, int, int]
    """Grid samples per axis."""
    voxel: float
    """Voxel edge (geometric mean), model units."""
    density_percentiles: dict
    """Percentiles 0, 50, 90, 99, 100 of the sampled density."""
    occupied_fraction: float
    """Fraction of grid points with density above the threshold."""
    segment: float | None = None
    """Length over which the opacity rule measured opacity (the voxel or the model's longer ray-sample interval);
    None when --threshold or --occupancy set the level."""


def extract_field_mesh(
    field: Field,
    bounds_min: Sequence[float],
    bounds_max: Sequence[float],
    resolution: int = 128,
    *,
    opacity: float = 0.5,
    threshold: float | None = None,
    occupancy: float | None = None,
    sample_interval: float | None = None,
    chunk_size: int = 1 << 16,
    transform: np.ndarray | None = None,
    vertex_colors: bool = False,
    progress: bool | None = None,
) -> FieldMeshResult:
    """Mesh the ``threshold`` iso-surface of a nerfstudio field's density inside a box.

    Args:
        field: any nerfstudio ``Field`` (``get_density`` on ray samples; ``forward`` for colours).
        bounds_min, bounds_max: box corners (3,) in the field's coordinates.
        resolution: samples along the longest box side; other axes get (nearly) cubic voxels.
        opacity: default threshold ``-ln(1 - opacity) / voxel`` (used when threshold and occupancy are None).
        threshold: explicit density level (1 / field unit).
        occupancy: level = the (1 - occupancy) quantile of the sampled densities.
        sample_interval: the model's uniform ray-sample interval (:func:`uniform_sample_interval`); the opacity
            rule's segment is the longer of it and the voxel.
        chunk_size: points per field evaluation (bounds memory).
        transform: optional (4, 4) matrix from field to output coordinates.
        vertex_colors: colour vertices with the field's rgb viewed along the normal.
        progress: progress bar with ETA of the grid evaluation (None: only on a terminal; False: never).

    Returns:
        :class:`FieldMeshResult`. Raises ValueError if the density never crosses the level in the box.
    """
    if threshold is not None and occupancy is not None:
        raise ValueError("give at most one of --threshold and --occupancy")
    if occupancy is not None and not 0.0 < occupancy < 1.0:
        raise ValueError(f"--occupancy must be in (0, 1), got {occupancy}")
    res = cubic_resolution(bounds_min, bounds_max, resolution)
    voxel = voxel_size(bounds_min, bounds_max, res)
    fn = density_fn(field)
    meshlib.check_grid_memory(res, "--resolution")
    volume = meshlib.evaluate_grid(
        fn, bounds_min, bounds_max, res, chunk_size, progress=progress, description="density"
    )
    finite = volume[np.isfinite(volume)]
    if finite.size == 0:
        raise ValueError("the field's density is NaN/inf everywhere in the box")
    segment = None
    if threshold is not None:
        level = float(threshold)
    elif occupancy is not None:
        level = float(np.quantile(finite, 1.0 - occupancy))
    else:
        segment = max(voxel, sample_interval or 0.0)
        level = opacity_threshold(segment, opacity)
    percentiles = (0, 50, 90, 99, 100)
    pct = {str(p): float(v) for p, v in zip(percentiles, np.percentile(finite, percentiles), strict=True)}
    center = (0.5 * (np.asarray(bounds_min, dtype=np.float64) + np.asarray(bounds_max, dtype=np.float64))).tolist()
    color_fn = normal_view_color_fn(field, center, chunk_size=max(1, chunk_size // 8)) if vertex_colors else None
    try:
        mesh = meshlib.extract_mesh(
            fn,
            bounds_min,
            bounds_max,
            res,
            level,
            inside="above",
            chunk_size=chunk_size,
            transform=transform,
            vertex_color_fn=color_fn,
            volume=volume,
        )
    except ValueError as error:
        raise ValueError(
            f"{error}. Density percentiles (0/50/90/99/100): "
            + ", ".join(f"{v:.4g}" for v in pct.values())
            + "; try a lower --threshold or --opacity, or --occupancy 0.05"
        ) from None
    return FieldMeshResult(mesh, level, res, voxel, pct, float((finite > level).mean()), segment)


@dataclass
class ExportMesh:
    """Extract a mesh from a trained nerfstudio run (density iso-surface by marching cubes) and export it."""

    load_config: Path
    """Path to the run's config.yml (written by ns-train)."""
    output_path: Path = Path("mesh.ply")
    """Mesh file to write: .ply, .obj, .off, .stl or .glb (vertex colours need .ply, .obj, .off or .glb)."""
    resolution: int = 128
    """Grid samples along the longest side of the box (cost grows as resolution^3; 256-512 on a GPU)."""
    opacity: float = 0.5
    """Default threshold: the density at which one segment is this opaque (-ln(1-opacity)/segment); the segment is
    the voxel, or the model's ray-sample interval when it renders from uniform samples only and that is longer."""
    threshold: float | None = None
    """Fixed density threshold (1 / model unit), instead of the opacity rule."""
    occupancy: float | None = None
    """Threshold leaving this fraction of the grid inside (a density quantile), instead of the opacity rule."""
    bounds_min: Tuple[float, float, float] | None = None
    """Lower corner of the box in the model's coordinates (default: the scene box)."""
    bounds_max: Tuple[float, float, float] | None = None
    """Upper corner of the box in the model's coordinates (default: the scene box)."""
    vertex_colors: bool = True
    """Colour vertices with the field's colour viewed along the surface normal."""
    coordinates: Literal["original", "model"] = "original"
    """Vertex coordinates: the dataset's original ones (dataparser_transforms.json inverted) or the model's."""
    field_name: str | None = None
    """Model attribute holding the field to mesh (default: field_fine when present, else field)."""
    chunk_size: int = 1 << 16
    """Points per field evaluation (bounds memory)."""
    progress: bool | None = None
    """Progress bar with ETA of the grid evaluation (default: on a terminal)."""

    def check_flags(self) -> None:
        """Refuse bad flags and an unwritable output before loading anything (ValueError naming the flag)."""
        check_load_config(self.load_config)
        check_output_file(self.output_path, "--output-path", meshlib.EXPORT_SUFFIXES)
        check_positive(self.resolution, "--resolution", 2)
        check_positive(self.chunk_size, "--chunk-size", 1)
        if not 0.0 < self.opacity < 1.0:
            raise ValueError(f"--opacity must be in (0, 1), got {self.opacity}")
        if self.threshold is not None and self.occupancy is not None:
            raise ValueError("give at most one of --threshold and --occupancy")
        if self.threshold is not None and not math.isfinite(self.threshold):
            raise ValueError(f"--threshold must be a finite density, got {self.threshold}")
        if self.occupancy is not None and not 0.0 < self.occupancy < 1.0:
            raise ValueError(f"--occupancy must be in (0, 1), got {self.occupancy}")
        for flag, corner in (("--bounds-min", self.bounds_min), ("--bounds-max", self.bounds_max)):
            if corner is not None and not all(math.isfinite(c) for c in corner):
                raise ValueError(f"{flag} must be 3 finite numbers, got {corner}")
        if self.bounds_min is not None and self.bounds_max is not None:
            if not all(hi > lo for lo, hi in zip(self.bounds_min, self.bounds_max, strict=True)):
                raise ValueError(
                    f"--bounds-max {self.bounds_max} must exceed --bounds-min {self.bounds_min} on every axis"
                )
        # the longest side gets --resolution samples, the others at most as many: an upper bound, checked now
        meshlib.check_grid_memory(self.resolution, "--resolution")

    def main(self) -> Path:
        """Load the run, extract, export; returns the written path."""
        self.check_flags()
        run = load_run(self.load_config, test_mode="inference")
        pipeline, step = run.pipeline, run.step
        model = pipeline.model
        field = field_of(model, self.field_name)
        aabb = model.scene_box.aabb.detach().cpu().double().numpy()
        lo = np.asarray(self.bounds_min if self.bounds_min is not None else aabb[0], dtype=np.float64)
        hi = np.asarray(self.bounds_max if self.bounds_max is not None else aabb[1], dtype=np.float64)
        transform = None
        if self.coordinates == "original":
            transform = self._original_transform(run.run_dir, pipeline)
        result = extract_field_mesh(
            field,
            lo,
            hi,
            self.resolution,
            opacity=self.opacity,
            threshold=self.threshold,
            occupancy=self.occupancy,
            sample_interval=uniform_sample_interval(model),
            chunk_size=self.chunk_size,
            transform=transform,
            vertex_colors=self.vertex_colors,
            progress=self.progress,
        )
        path = meshlib.export_mesh(result.mesh, self.output_path)
        if result.segment is not None and result.segment > result.voxel:
            print(f"inr-mesh: opacity {self.opacity} over the model's uniform ray-sample interval {result.segment:.4g}")
        print(
            f"inr-mesh: step {step}, grid {result.resolution} (voxel {result.voxel:.4g}), density threshold "
            f"{result.threshold:.4g} ({100 * result.occupied_fraction:.2f}% of the grid inside); density "
            "percentiles 0/50/90/99/100: " + ", ".join(f"{v:.4g}" for v in result.density_percentiles.values())
        )
        print(f"inr-mesh: wrote {path} ({len(result.mesh.vertices)} vertices, {len(result.mesh.faces)} faces)")
        return path

    @staticmethod
    def _original_transform(run_dir: Path, pipeline: Any) -> np.ndarray:
        json_path = run_dir / "dataparser_transforms.json"
        if json_path.is_file():
            return original_from_nerfstudio(json_path)
        # Runs trained outside Trainer.train() lack the file; the dataparser recomputes the same values.
        outputs = getattr(pipeline.datamanager, "train_dataparser_outputs", None)
        if outputs is None:
            raise FileNotFoundError(f"{json_path} not found; use --coordinates model")
        transform = outputs.dataparser_transform.detach().cpu().double().numpy()
        return _inverse_dataparser_transform(transform, float(outputs.dataparser_scale), "the run's dataparser")


def check_load_config(path: Path, flag: str = "--load-config") -> Path:
    """A run's config.yml must be a file; for a folder, say so and suggest the config.yml below it."""
    path = Path(path)
    if path.is_dir():
        found = sorted(path.rglob("config.yml"))
        if len(found) == 1:
            hint = f"; did you mean {flag} {found[0]}?"
        elif found:
            hint = f"; it holds {len(found)} runs' config.yml, e.g. {found[0]}"
        else:
            hint = " (no config.yml below it)"
        raise ValueError(f"{flag} {path} is a folder, expected a run's config.yml{hint}")
    if not path.is_file():
        raise FileNotFoundError(f"{flag} {path} does not exist (expected a run's config.yml)")
    return path


def entrypoint() -> None:
    """Console script ``inr-mesh``."""
    run_command("inr-mesh", ExportMesh, __doc__)


if __name__ == "__main__":
    entrypoint()
