"""Shape data: mesh loading, unit-box normalisation, training points with signed distances, Morton order.

Conventions used across ``nerf_inr_methods.shapes``:

- Unit box: the mesh is centred and scaled so its longest bounding-box side is ``fill`` (0.9 by default,
  as in the public INT/BACON code), inside the box [-0.5, 0.5]^3. :class:`Normalization` keeps the
  transform so extracted meshes go back to the input's coordinates.
- Signed distance: **negative inside**, positive outside, in unit-box units (pysdf returns positive inside;
  we negate it). Occupancy = 1 inside, 0 outside (= ``sdf < 0``).
- Inside test: pysdf in robust mode (ray-casting with a vote over several directions). On a watertight
  mesh it agrees with ``trimesh.Trimesh.contains``; on a mesh with holes it is the documented fallback
  (see :func:`prepare_shape`): signs, training targets and the IoU ground truth all come from it.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pysdf
import trimesh

MESH_SUFFIXES: tuple[str, ...] = (".obj", ".ply", ".off")
NoiseKind = Literal["laplace", "gaussian"]
NonWatertight = Literal["warn", "error"]


class NonWatertightMeshWarning(UserWarning):
    """The input mesh is not watertight: inside/outside comes from pysdf's robust ray-casting vote."""


def load_mesh(path: str | os.PathLike) -> trimesh.Trimesh:
    """Load a triangle mesh from a .obj, .ply or .off file (scenes are concatenated).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: unknown suffix, unreadable file, or a mesh without vertices/faces or with
            non-finite vertices.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"mesh file not found: {path}")
    if not path.is_file():
        raise ValueError(f"mesh path is not a file: {path}")
    suffix = path.suffix.lower()
    if suffix not in MESH_SUFFIXES:
        raise ValueError(f"unknown mesh format {suffix!r} for {path}; expected one of {MESH_SUFFIXES}")
    try:
        loaded = trimesh.load(str(path), force="mesh", process=False)
    except Exception as exc:  # trimesh raises many different exception types on corrupt input
        raise ValueError(f"could not read mesh {path}: {type(exc).__name__}: {exc}") from exc
    if not isinstance(loaded, trimesh.Trimesh):
        raise ValueError(f"{path} does not contain a triangle mesh (got {type(loaded).__name__})")
    if len(loaded.vertices) == 0 or len(loaded.faces) == 0:
        raise ValueError(
            f"mesh {path} is empty ({len(loaded.vertices)} vertices, {len(loaded.faces)} faces); "
            "expected a triangle mesh"
        )
    if not np.all(np.isfinite(loaded.vertices)):
        raise ValueError(f"mesh {path} has non-finite vertex coordinates")
    if np.all(loaded.extents <= 0):
        raise ValueError(f"mesh {path} is degenerate: all vertices coincide")
    return loaded


@dataclass(frozen=True)
class Normalization:
    """Similarity transform between input coordinates and the unit box: ``unit = (x - center) * scale``."""

    center: tuple[float, float, float]
    """Centre of the input mesh's bounding box, in input units."""
    scale: float
    """Unit-box units per input unit."""

    @staticmethod
    def from_bounds(bounds: np.ndarray, fill: float = 0.9) -> Normalization:
        """Centre the (2, 3) bounding box and scale its longest side to ``fill`` (in (0, 1])."""
        if not 0.0 < fill <= 1.0:
            raise ValueError(f"fill must be in (0, 1], got {fill}")
        lo, hi = np.asarray(bounds, dtype=np.float64)
        extent = float((hi - lo).max())
        if not extent > 0:
            raise ValueError("cannot normalise a mesh whose bounding box has zero size")
        center = (lo + hi) / 2.0
        return Normalization(center=tuple(float(c) for c in center), scale=fill / extent)  # type: ignore[arg-type]

    def to_unit(self, points: np.ndarray) -> np.ndarray:
        """(n, 3) input coordinates -> (n, 3) unit-box coordinates."""
        return (np.asarray(points) - np.asarray(self.center)) * self.scale

    def from_unit(self, points: np.ndarray) -> np.ndarray:
        """(n, 3) unit-box coordinates -> (n, 3) input coordinates."""
        return np.asarray(points) / self.scale + np.asarray(self.center)

    def unit_to_input_matrix(self) -> np.ndarray:
        """(4, 4) homogeneous matrix mapping unit-box to input coordinates (for ``mesh.extract_mesh``)."""
        mat = np.eye(4)
        mat[:3, :3] /= self.scale
        mat[:3, 3] = self.center
        return mat


class MeshSDF:
    """Signed distance and inside test of a triangle mesh (pysdf, robust mode), plus seeded surface sampling.

    Args:
        vertices: (V, 3) vertex positions.
        faces: (F, 3) vertex indices.
    """

    def __init__(self, vertices: np.ndarray, faces: np.ndarray) -> None:
        self.vertices = np.ascontiguousarray(vertices, dtype=np.float32)
        self.faces = np.ascontiguousarray(faces, dtype=np.uint32)
        self._sdf = pysdf.SDF(self.vertices, self.faces, robust=True)
        tri = self.vertices[self.faces].astype(np.float64)  # (F, 3, 3)
        areas = 0.5 * np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=-1)
        if not areas.sum() > 0:
            raise ValueError("mesh has zero surface area")
        self._cum_area = np.cumsum(areas) / areas.sum()
        self._tri = tri
        self._normals: np.ndarray | None = None

    def signed_distance(self, points: np.ndarray) -> np.ndarray:
        """(n, 3) points -> (n,) float32 signed distance, negative inside (same units as the vertices)."""
        pts = np.ascontiguousarray(points, dtype=np.float32).reshape(-1, 3)
        return -self._sdf(pts).reshape(-1)

    def contains(self, points: np.ndarray) -> np.ndarray:
        """(n, 3) points -> (n,) bool, True inside (robust ray-casting vote)."""
        pts = np.ascontiguousarray(points, dtype=np.float32).reshape(-1, 3)
        return self._sdf.contains(pts).reshape(-1).astype(bool)

    def sample_surface(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """(n, 3) float32 points uniformly distributed (by area) on the surface, from ``rng``."""
        return self.sample_surface_with_faces(n, rng)[0]

    def sample_surface_with_faces(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """(n, 3) float32 surface points (uniform by area) and the (n,) int64 index of each point's face."""
        face = np.minimum(np.searchsorted(self._cum_area, rng.random(n)), len(self._cum_area) - 1)
        u, v = rng.random(n), rng.random(n)
        flip = u + v > 1.0
        u[flip], v[flip] = 1.0 - u[flip], 1.0 - v[flip]
        t = self._tri[face]
        pts = t[:, 0] + u[:, None] * (t[:, 1] - t[:, 0]) + v[:, None] * (t[:, 2] - t[:, 0])
        return pts.astype(np.float32), face.astype(np.int64)

    def outward_normals(self) -> np.ndarray:
        """(F, 3) float32 unit face normals, flipped as a whole if the winding points them inside.

        Orientation test: points pushed 1e-3 along the normals from 2000 surface samples must mostly lie
        outside (positive signed distance). Degenerate faces get a zero normal.
        """
        if self._normals is None:
            tri = self._tri
            nrm = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
            length = np.linalg.norm(nrm, axis=-1, keepdims=True)
            nrm = np.where(length > 0, nrm / np.maximum(length, 1e-30), 0.0)
            pts, face = self.sample_surface_with_faces(2000, np.random.default_rng(0))
            eps = 1e-3 * float(np.ptp(self.vertices, axis=0).max())
            if np.mean(self.signed_distance(pts + eps * nrm[face]) > 0) < 0.5:
                nrm = -nrm
            self._normals = nrm.astype(np.float32)
        return self._normals


@dataclass
class PreparedShape:
    """A loaded mesh, its unit-box copy and the SDF oracle on the unit-box copy."""

    path: Path
    """The input file."""
    mesh: trimesh.Trimesh
    """The input mesh in its own coordinates."""
    unit_mesh: trimesh.Trimesh
    """The mesh in unit-box coordinates."""
    normalization: Normalization
    """Input <-> unit-box transform."""
    sdf: MeshSDF
    """Signed distance / inside test in unit-box coordinates."""
    watertight: bool
    """Whether trimesh considers the input watertight."""


def prepare_shape(path: str | os.PathLike, fill: float = 0.9, non_watertight: NonWatertight = "warn") -> PreparedShape:
    """Load and normalise a mesh and build its SDF oracle.

    Non-watertight meshes (holes, e.g. the Stanford bunny's base): with ``non_watertight="warn"`` a
    :class:`NonWatertightMeshWarning` is issued and the documented fallback applies: inside/outside (the
    SDF sign, occupancy targets and the IoU ground truth) comes from pysdf's robust mode, a ray-casting
    vote over several directions that closes small holes; distances are unaffected. Large openings make
    "inside" ill-defined and the vote may leak; ``non_watertight="error"`` raises instead.
    """
    if non_watertight not in ("warn", "error"):
        raise ValueError(f"non_watertight must be 'warn' or 'error', got {non_watertight!r}")
    mesh = load_mesh(path)
    norm = Normalization.from_bounds(mesh.bounds, fill)
    unit = trimesh.Trimesh(vertices=norm.to_unit(mesh.vertices), faces=mesh.faces, process=False)
    watertight = bool(mesh.is_watertight)
    if not watertight:
        msg = (
            f"mesh {path} is not watertight: inside/outside (SDF sign, occupancy, IoU ground truth) falls back "
            "to pysdf's robust ray-casting vote, which closes small holes but may leak through large openings"
        )
        if non_watertight == "error":
            raise ValueError(msg)
        warnings.warn(msg, NonWatertightMeshWarning, stacklevel=2)
    return PreparedShape(Path(path), mesh, unit, norm, MeshSDF(unit.vertices, unit.faces), watertight)


@dataclass(frozen=True)
class SamplingConfig:
    """Mixture of training points: surface + noise at a coarse and a fine scale, plus uniform in the box."""

    coarse_fraction: float = 0.45
    """Fraction of points = surface sample + noise at ``coarse_scale``."""
    fine_fraction: float = 0.45
    """Fraction of points = surface sample + noise at ``fine_scale``."""
    uniform_fraction: float = 0.1
    """Fraction of points uniform in the box [-0.5, 0.5]^3."""
    noise: NoiseKind = "laplace"
    """Noise distribution: "laplace" (INT/BACON protocol) or "gaussian" (ESGD protocol)."""
    coarse_scale: float = 0.1
    """Coarse noise scale (Laplace scale b or Gaussian std), unit-box units."""
    fine_scale: float = 1e-3
    """Fine noise scale (Laplace scale b or Gaussian std), unit-box units."""

    def __post_init__(self) -> None:
        fr = (self.coarse_fraction, self.fine_fraction, self.uniform_fraction)
        if any(f < 0 for f in fr) or abs(sum(fr) - 1.0) > 1e-6:
            raise ValueError(f"sampling fractions (coarse, fine, uniform) must be >= 0 and sum to 1, got {fr}")
        if self.noise not in ("laplace", "gaussian"):
            raise ValueError(f"noise must be 'laplace' or 'gaussian', got {self.noise!r}")
        if not (self.coarse_scale > 0 and self.fine_scale > 0):
            raise ValueError(f"noise scales must be > 0, got {self.coarse_scale}, {self.fine_scale}")

    def counts(self, n: int) -> tuple[int, int, int]:
        """Numbers of (coarse, fine, uniform) points among ``n`` (rounding goes to the fine part)."""
        n_coarse = int(round(n * self.coarse_fraction))
        n_uniform = int(round(n * self.uniform_fraction))
        n_fine = n - n_coarse - n_uniform
        if n_fine < 0:
            n_uniform += n_fine
            n_fine = 0
        return n_coarse, n_fine, n_uniform


def _wrap_into_box(points: np.ndarray) -> np.ndarray:
    """Wrap coordinates periodically into [-0.5, 0.5) (as the public INT/BACON code does)."""
    return (points + 0.5) % 1.0 - 0.5


def sample_points(shape_sdf: MeshSDF, n: int, sampling: SamplingConfig, rng: np.random.Generator) -> np.ndarray:
    """Draw ``n`` training points in unit-box coordinates (no targets).

    Near-surface points that the noise pushes out of the box are wrapped back periodically.

    Returns:
        (n, 3) float32 points, in the order [coarse | fine | uniform].
    """
    if int(n) != n or n < 1:
        raise ValueError(f"number of points must be a positive int, got {n!r}")
    n_coarse, n_fine, n_uniform = sampling.counts(int(n))
    surf = shape_sdf.sample_surface(n_coarse + n_fine, rng).astype(np.float64)
    draw = rng.laplace if sampling.noise == "laplace" else rng.normal
    noise = np.concatenate(
        [draw(0.0, sampling.coarse_scale, size=(n_coarse, 3)), draw(0.0, sampling.fine_scale, size=(n_fine, 3))]
    )
    near = _wrap_into_box(surf + noise)
    uniform = rng.random((n_uniform, 3)) - 0.5
    return np.concatenate([near, uniform]).astype(np.float32)


def voxel_centers(resolution: int) -> np.ndarray:
    """(R^3, 3) float32 centres of an R^3 voxel grid of [-0.5, 0.5]^3, C order (x slowest)."""
    if int(resolution) != resolution or resolution < 1:
        raise ValueError(f"voxel resolution must be a positive int, got {resolution!r}")
    ax = (np.arange(resolution, dtype=np.float64) + 0.5) / resolution - 0.5
    grid = np.stack(np.meshgrid(ax, ax, ax, indexing="ij"), axis=-1)
    return grid.reshape(-1, 3).astype(np.float32)


def _spread_bits(v: np.ndarray) -> np.ndarray:
    """Insert two zero bits between the low 21 bits of each uint64 (3D Morton interleave)."""
    v = v.astype(np.uint64) & np.uint64(0x1FFFFF)
    v = (v | (v << np.uint64(32))) & np.uint64(0x1F00000000FFFF)
    v = (v | (v << np.uint64(16))) & np.uint64(0x1F0000FF0000FF)
    v = (v | (v << np.uint64(8))) & np.uint64(0x100F00F00F00F00F)
    v = (v | (v << np.uint64(4))) & np.uint64(0x10C30C30C30C30C3)
    v = (v | (v << np.uint64(2))) & np.uint64(0x1249249249249249)
    return v


def morton_codes(points: np.ndarray, bits: int = 10) -> np.ndarray:
    """Z-order (Morton) codes of points in [-0.5, 0.5]^3 quantised to ``2^bits`` cells per axis.

    Args:
        points: (n, 3) coordinates (clipped to the box).
        bits: bits per axis, 1..21.

    Returns:
        (n,) uint64 codes; points close in space tend to have close codes.
    """
    if not 1 <= bits <= 21:
        raise ValueError(f"bits must be in 1..21, got {bits}")
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    cells = np.clip(np.floor((pts + 0.5) * (1 << bits)), 0, (1 << bits) - 1).astype(np.uint64)
    return (
        _spread_bits(cells[:, 0]) << np.uint64(2)
        | _spread_bits(cells[:, 1]) << np.uint64(1)
        | _spread_bits(cells[:, 2])
    )


def morton_order(points: np.ndarray, bits: int = 10) -> np.ndarray:
    """(n,) int64 permutation sorting (n, 3) points by Morton code (stable), so that consecutive runs of
    p points are spatially contiguous groups (IGA's groups for shapes)."""
    return np.argsort(morton_codes(points, bits), kind="stable").astype(np.int64)
