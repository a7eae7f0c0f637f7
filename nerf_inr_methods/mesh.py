"""Framework-free mesh extraction: chunked grid evaluation + marching cubes (pymcubes) + trimesh export.

Works with any callable ``points (n, 3) float32 numpy -> values (n,)`` (numpy array, list, or a torch
tensor, which is detached and moved to the CPU), so the shape trainer's SDF/occupancy networks and a NeRF
density field share one implementation. Memory is bounded by ``chunk_size``: grid coordinates are
generated per chunk (never the full ``(R^3, 3)`` array); only the float32 ``R^3`` volume itself is held
(``4 R^3`` bytes: 8 MB at 128^3, 512 MB at 512^3); marching cubes adds two float64 copies (peak
:data:`GRID_BYTES_PER_POINT` = 20 bytes per grid point). :func:`check_grid_memory` compares that with the memory
available before any work (commands call it with their flag's name), and the grid evaluation shows a progress
bar with ETA on a terminal.

Coordinates: the grid samples the closed box ``[bounds_min, bounds_max]`` with ``R`` points per axis
(spacing ``(max - min) / (R - 1)``, the first and last samples on the box faces). Vertices come out in the
box's coordinates, then go through the optional 4x4 ``transform`` (e.g. back to the input mesh's units).

Example:
    >>> import numpy as np
    >>> sphere = lambda p: np.linalg.norm(p, axis=-1) - 0.3  # signed distance, negative inside
    >>> mesh = extract_mesh(sphere, resolution=32, level=0.0, inside="below")
    >>> bool(abs(np.linalg.norm(mesh.vertices, axis=-1).mean() - 0.3) < 0.01)
    True
"""

from __future__ import annotations

import math
import os
import sys
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal, Union

import mcubes
import numpy as np
import trimesh

from nerf_inr_methods.reporting import atomic_target

FieldFn = Callable[[np.ndarray], Any]
"""``points (n, 3) float32 -> values (n,)`` (or (n, 1)); numpy, list or torch tensor."""
ColorFn = Callable[[np.ndarray], Any]
"""``points (n, 3) float32 -> colours (n, 3) or (n, 4)``: floats in [0, 1] or uint8."""
Resolution = Union[int, Sequence[int]]
Inside = Literal["above", "below"]

EXPORT_SUFFIXES: tuple[str, ...] = (".ply", ".obj", ".off", ".stl", ".glb")
DEFAULT_CHUNK = 1 << 18
GRID_BYTES_PER_POINT = 20
"""Peak bytes per grid point of :func:`extract_mesh`: the float32 volume (4) and marching cubes' float64 copies (16)."""
VOLUME_BYTES_PER_POINT = 4
"""Bytes per grid point of :func:`evaluate_grid` (the float32 volume)."""


def _to_numpy(values: Any, what: str) -> np.ndarray:
    """Array-like (numpy, list, torch tensor) -> numpy array, without importing torch."""
    if hasattr(values, "detach"):  # torch tensor
        values = values.detach().cpu().numpy()
    arr = np.asarray(values)
    if arr.dtype == object:
        raise TypeError(f"{what} must return an array of numbers, got {type(values).__name__}")
    return arr


def _box(bounds_min: Sequence[float], bounds_max: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    lo = np.asarray(bounds_min, dtype=np.float64).reshape(-1)
    hi = np.asarray(bounds_max, dtype=np.float64).reshape(-1)
    if lo.shape != (3,) or hi.shape != (3,):
        raise ValueError(f"bounds_min and bounds_max must each hold 3 numbers, got {lo.tolist()} and {hi.tolist()}")
    if not np.all(np.isfinite(lo)) or not np.all(np.isfinite(hi)) or not np.all(hi > lo):
        raise ValueError(
            f"bounds_max must be finite and > bounds_min on every axis, got {lo.tolist()} .. {hi.tolist()}"
        )
    return lo, hi


def _resolution(resolution: Resolution) -> tuple[int, int, int]:
    res = (resolution,) * 3 if isinstance(resolution, (int, np.integer)) else tuple(resolution)
    if len(res) != 3 or any(int(r) != r or r < 2 for r in res):
        raise ValueError(f"resolution must be an int >= 2 or 3 ints >= 2, got {resolution!r}")
    return int(res[0]), int(res[1]), int(res[2])


def available_memory_bytes() -> int | None:
    """Memory the process can still allocate without swapping: ``MemAvailable`` of /proc/meminfo (Linux), else the
    available physical pages (``sysconf``), else None (unknown)."""
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return None


def format_bytes(n: float) -> str:
    """1536 -> '1.5 KiB' (binary units up to EiB)."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(n) < 1024:
            return f"{n:.3g} {unit}"
        n /= 1024
    return f"{n:.3g} EiB"


def check_grid_memory(
    resolution: Resolution,
    flag: str = "resolution",
    bytes_per_point: int = GRID_BYTES_PER_POINT,
    available: int | None = None,
) -> int:
    """Refuse a grid whose memory (``Rx Ry Rz x bytes_per_point``) exceeds the available memory, before any work.

    Args:
        resolution: samples per axis (int or 3 ints).
        flag: the option's name in messages (e.g. ``--resolution``).
        bytes_per_point: peak bytes per grid point (default: mesh extraction's).
        available: bytes available (default: :func:`available_memory_bytes`; no check when unknown).

    Returns:
        The estimated bytes.

    Raises:
        ValueError: naming ``flag``, the estimate, the available memory and the largest resolution that fits.
    """
    try:
        res = _resolution(resolution)
    except ValueError:
        raise ValueError(f"{flag} must be an int >= 2 (or 3 ints >= 2), got {resolution!r}") from None
    need = res[0] * res[1] * res[2] * int(bytes_per_point)
    free = available_memory_bytes() if available is None else available
    if free is not None and need > free:
        largest = max(2, int(math.floor((free / bytes_per_point) ** (1.0 / 3.0))))
        shown = res[0] if res[0] == res[1] == res[2] else "x".join(map(str, res))
        raise ValueError(
            f"{flag} {shown}: the grid needs about {format_bytes(need)} of memory ({shown}^3 points x "
            f"{bytes_per_point} bytes), but {format_bytes(free)} is available; use {flag} {largest} or less"
        )
    return need


def _progress_bar(total: int, enabled: bool | None, description: str) -> Any:
    """A tqdm bar with ETA on stderr when ``enabled`` (None: only when stderr is a terminal), else None."""
    if enabled is None:
        enabled = bool(getattr(sys.stderr, "isatty", lambda: False)())
    if not enabled:
        return None
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover - tqdm comes with the package's dependencies
        return None
    return tqdm(total=total, desc=description, unit="pt", unit_scale=True, dynamic_ncols=True, leave=False)


def grid_axes(
    bounds_min: Sequence[float] = (-0.5, -0.5, -0.5),
    bounds_max: Sequence[float] = (0.5, 0.5, 0.5),
    resolution: Resolution = 128,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sample positions along x, y and z: three float32 arrays of shapes (Rx,), (Ry,), (Rz,)."""
    lo, hi = _box(bounds_min, bounds_max)
    res = _resolution(resolution)
    return tuple(np.linspace(lo[a], hi[a], res[a], dtype=np.float64).astype(np.float32) for a in range(3))  # type: ignore[return-value]


def grid_chunks(
    bounds_min: Sequence[float] = (-0.5, -0.5, -0.5),
    bounds_max: Sequence[float] = (0.5, 0.5, 0.5),
    resolution: Resolution = 128,
    chunk_size: int = DEFAULT_CHUNK,
):
    """Yield ``(start, points)`` over the grid in C order (x slowest): ``points`` (m <= chunk_size, 3) float32.

    ``start`` is the flat index of the chunk's first point in the (Rx, Ry, Rz) grid.
    """
    if int(chunk_size) != chunk_size or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive int, got {chunk_size!r}")
    ax, ay, az = grid_axes(bounds_min, bounds_max, resolution)
    shape = (len(ax), len(ay), len(az))
    total = shape[0] * shape[1] * shape[2]
    for start in range(0, total, int(chunk_size)):
        flat = np.arange(start, min(start + int(chunk_size), total), dtype=np.int64)
        i, j, k = np.unravel_index(flat, shape)
        yield start, np.stack([ax[i], ay[j], az[k]], axis=-1)


def evaluate_grid(
    fn: FieldFn,
    bounds_min: Sequence[float] = (-0.5, -0.5, -0.5),
    bounds_max: Sequence[float] = (0.5, 0.5, 0.5),
    resolution: Resolution = 128,
    chunk_size: int = DEFAULT_CHUNK,
    progress: bool | None = None,
    description: str = "grid",
) -> np.ndarray:
    """Evaluate ``fn`` on the grid, ``chunk_size`` points per call.

    Args:
        fn: ``points (n, 3) float32 -> values (n,)`` (or (n, 1)).
        bounds_min, bounds_max: box corners, 3 numbers each.
        resolution: samples per axis R (int) or (Rx, Ry, Rz).
        chunk_size: maximum number of points per call of ``fn``.
        progress: progress bar with ETA on stderr (None: only when stderr is a terminal; False: never).
        description: the bar's label.

    Returns:
        float32 volume, shape (Rx, Ry, Rz), ``volume[i, j, k] = fn(x_i, y_j, z_k)``.

    Raises:
        ValueError: bad box / resolution, or a volume larger than the available memory.
    """
    res = _resolution(resolution)
    check_grid_memory(res, "resolution", VOLUME_BYTES_PER_POINT)
    volume = np.empty(res[0] * res[1] * res[2], dtype=np.float32)
    bar = _progress_bar(volume.size, progress, description)
    try:
        for start, pts in grid_chunks(bounds_min, bounds_max, res, chunk_size):
            vals = _to_numpy(fn(pts), "fn").astype(np.float32, copy=False)
            if vals.size != len(pts):
                raise ValueError(f"fn must return one value per point: got shape {vals.shape} for {len(pts)} points")
            volume[start : start + len(pts)] = vals.reshape(-1)
            if bar is not None:
                bar.update(len(pts))
    finally:
        if bar is not None:
            bar.close()
    return volume.reshape(res)


def marching_cubes(
    volume: np.ndarray,
    level: float = 0.0,
    inside: Inside = "below",
    bounds_min: Sequence[float] = (-0.5, -0.5, -0.5),
    bounds_max: Sequence[float] = (0.5, 0.5, 0.5),
) -> tuple[np.ndarray, np.ndarray]:
    """Iso-surface of a sampled volume with pymcubes, faces oriented with normals pointing outside.

    Args:
        volume: (Rx, Ry, Rz) samples on the closed box (as returned by :func:`evaluate_grid`).
        level: iso-value.
        inside: "below" when the inside has values below ``level`` (SDF, negative inside), "above" for
            densities, occupancies and occupancy logits.
        bounds_min, bounds_max: the box the volume samples.

    Returns:
        vertices (m, 3) float64 in box coordinates, faces (f, 3) int64. Both empty when the volume
        never crosses ``level``.
    """
    if volume.ndim != 3 or min(volume.shape) < 2:
        raise ValueError(f"volume must have shape (Rx, Ry, Rz) with every R >= 2, got {volume.shape}")
    if inside not in ("above", "below"):
        raise ValueError(f"inside must be 'above' or 'below', got {inside!r}")
    lo, hi = _box(bounds_min, bounds_max)
    vol = np.nan_to_num(volume.astype(np.float64), nan=np.inf if inside == "below" else -np.inf)
    vol = vol if inside == "above" else -vol  # pymcubes orients faces outward when the inside is above
    lev = float(level) if inside == "above" else -float(level)
    verts, faces = mcubes.marching_cubes(vol, lev)
    spacing = (hi - lo) / (np.asarray(volume.shape, dtype=np.float64) - 1.0)
    return verts * spacing + lo, faces.astype(np.int64)


def _apply_colors(mesh: trimesh.Trimesh, color_fn: ColorFn, box_vertices: np.ndarray, chunk_size: int) -> None:
    cols = [
        _to_numpy(color_fn(box_vertices[s : s + chunk_size].astype(np.float32)), "vertex_color_fn")
        for s in range(0, len(box_vertices), chunk_size)
    ]
    col = np.concatenate(cols, axis=0) if cols else np.zeros((0, 3))
    if col.ndim != 2 or col.shape[0] != len(box_vertices) or col.shape[1] not in (3, 4):
        raise ValueError(f"vertex_color_fn must return (n, 3) or (n, 4) colours, got shape {col.shape}")
    if col.dtype != np.uint8:
        col = np.clip(np.rint(col.astype(np.float64) * 255.0), 0, 255).astype(np.uint8)
    mesh.visual.vertex_colors = col


def extract_mesh(
    fn: FieldFn,
    bounds_min: Sequence[float] = (-0.5, -0.5, -0.5),
    bounds_max: Sequence[float] = (0.5, 0.5, 0.5),
    resolution: Resolution = 128,
    level: float = 0.0,
    inside: Inside = "below",
    chunk_size: int = DEFAULT_CHUNK,
    transform: np.ndarray | None = None,
    vertex_color_fn: ColorFn | None = None,
    volume: np.ndarray | None = None,
    progress: bool | None = None,
) -> trimesh.Trimesh:
    """Evaluate a field on a grid in chunks and extract its ``level`` iso-surface as a trimesh mesh.

    Args:
        fn: ``points (n, 3) float32 -> values (n,)`` in box coordinates (ignored when ``volume`` is given).
        bounds_min, bounds_max: the box, 3 numbers each, in the field's coordinates.
        resolution: samples per axis (int or 3 ints); cost ``R^3`` calls' worth of points.
        level: iso-value (0 for an SDF, 0.5 for an occupancy probability, a density threshold for NeRF).
        inside: "below" (SDF: inside has values < level) or "above" (occupancy, density).
        chunk_size: maximum points per call of ``fn`` / ``vertex_color_fn``.
        transform: optional (4, 4) matrix from box coordinates to output coordinates (applied to the
            vertices; faces are flipped when it mirrors, so normals keep pointing outside).
        vertex_color_fn: optional ``points (n, 3) -> colours (n, 3|4)`` evaluated at the vertices in box
            (field) coordinates; floats in [0, 1] or uint8.
        volume: optional precomputed (Rx, Ry, Rz) samples (skips the evaluation).
        progress: progress bar of the grid evaluation (None: only on a terminal; False: never).

    Returns:
        ``trimesh.Trimesh`` (not processed: vertices exactly as marching cubes produced them, merged).

    Raises:
        ValueError: bad box/resolution/transform, a grid larger than the available memory, or the field never
            crosses ``level`` in the box (the message gives the field's range).
    """
    res = _resolution(resolution)
    check_grid_memory(res, "resolution")
    if volume is None:
        volume = evaluate_grid(fn, bounds_min, bounds_max, res, chunk_size, progress=progress)
    elif volume.shape != res:
        raise ValueError(f"volume has shape {volume.shape} but resolution is {res}")
    verts, faces = marching_cubes(volume, level, inside, bounds_min, bounds_max)
    if len(faces) == 0:
        finite = volume[np.isfinite(volume)]
        rng = (float(finite.min()), float(finite.max())) if finite.size else (float("nan"), float("nan"))
        raise ValueError(
            f"extract_mesh: the field never crosses level={level} in the box {list(bounds_min)} .. "
            f"{list(bounds_max)} at resolution {res} (field range {rng[0]:.4g} .. {rng[1]:.4g}); "
            "choose another level or box"
        )
    box_verts = verts
    if transform is not None:
        mat = np.asarray(transform, dtype=np.float64)
        if mat.shape != (4, 4) or not np.all(np.isfinite(mat)):
            raise ValueError(f"transform must be a finite (4, 4) matrix, got shape {mat.shape}")
        verts = verts @ mat[:3, :3].T + mat[:3, 3]
        if np.linalg.det(mat[:3, :3]) < 0:
            faces = faces[:, ::-1].copy()
    mesh = trimesh.Trimesh(vertices=verts, faces=faces, process=False)
    if vertex_color_fn is not None:
        _apply_colors(mesh, vertex_color_fn, box_verts, int(chunk_size))
    return mesh


def export_mesh(mesh: trimesh.Trimesh, path: str | os.PathLike) -> Path:
    """Write ``mesh`` to ``path`` atomically (temporary file + rename); format from the suffix.

    Supported suffixes: .ply, .obj, .off, .stl, .glb. Returns the path written.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in EXPORT_SUFFIXES:
        raise ValueError(
            f"export_mesh: unsupported mesh format {suffix!r} for {path}; expected one of {EXPORT_SUFFIXES}"
        )
    if len(mesh.faces) == 0:
        raise ValueError(f"export_mesh: refusing to write an empty mesh to {path}")
    with atomic_target(path, suffix=suffix) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mesh.export(tmp, file_type=suffix[1:])
    return path


def torch_field(module: Callable[[Any], Any], device: Any = None, output_index: int | None = None) -> FieldFn:
    """Wrap a torch callable ``(n, 3) tensor -> (n,) | (n, 1) | (n, C)`` as a numpy field for this module.

    Runs under ``torch.no_grad()`` on ``device`` (default: the module's first parameter's device, else
    CPU), with float32 inputs. ``output_index`` picks one channel of a (n, C) output. Torch is imported
    lazily so this module stays importable without it.
    """
    import torch

    if device is None:
        params = getattr(module, "parameters", None)
        first = next(iter(params()), None) if callable(params) else None
        device = first.device if first is not None else torch.device("cpu")

    def field(points: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            out = module(torch.from_numpy(np.ascontiguousarray(points, dtype=np.float32)).to(device))
        if output_index is not None:
            out = out[..., output_index]
        elif out.dim() == 2 and out.shape[-1] == 1:
            out = out[:, 0]
        return out.detach().float().cpu().numpy()

    return field
