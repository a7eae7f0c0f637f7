"""The shape trainer: builds data, model, optimizer and method switches from a :class:`ShapeFitConfig`,
trains with the shared coordinate loop (:func:`nerf_inr_methods.coordfit.fit`), and fills a run folder.

Run folder (``<output_dir>/<run_name>/``)::

    config.json                 resolved configuration (protocol defaults filled in)
    checkpoints/step_XXXXXXX.pt written atomically (temporary file + rename); final.pt at the end;
                                interrupted.pt when training stops early (Ctrl-C, an error)
    metrics.json                protocol, final IoU / Chamfer / timings, evaluation curve, loss curve
    mesh.ply (or .obj)          extracted mesh in the input mesh's coordinates

Multi-process training (``num_processes > 1`` or launched by ``torchrun``): DistributedDataParallel with
the gloo backend; each process draws its own points (seed, rank) with ``batch_size / world_size`` points
per step (fresh/pool) or its own ``1 / world_size`` share of the pool (full); gradients are averaged, so
the model is the same on every process. Rank 0 evaluates and writes the run folder.

A new run never writes into a folder holding an earlier run's files: it goes to ``<run-name>-2`` (-3, ...)
instead, said on stderr. ``resume=True`` (``inr-shape fit --resume``) continues a run folder from its newest
checkpoint that loads: model, optimizer, LR schedule, sampler, every random stream and the metrics history carry
on, so N steps in one go and N/2 + resume + N/2 give the same network (same flags and process count).
Checkpoints are read with ``torch.load(weights_only=True)`` (:mod:`nerf_inr_methods.safe_io`).
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn

from nerf_inr_methods import mesh as meshlib
from nerf_inr_methods.cli import check_output_dir
from nerf_inr_methods.coordfit import FitHistory, StepResult, coord_loss, fit_iter
from nerf_inr_methods.core.iga import IGAAdjust
from nerf_inr_methods.core.int_sampler import IntSampler, voxel_cells
from nerf_inr_methods.core.mlp import CoordinateMLP, make_mlp
from nerf_inr_methods.reporting import atomic_target, write_json
from nerf_inr_methods.safe_io import RefusedFileError, safe_torch_load

from . import derivative as deriv
from .config import ShapeFitConfig, config_from_dict, config_to_dict, resolve_config
from .data import (
    MESH_SUFFIXES,
    MeshSDF,
    Normalization,
    PreparedShape,
    morton_order,
    prepare_shape,
    sample_points,
    voxel_centers,
)
from .metrics import chamfer_distance, iou, reference_inside_grid, voxel_center_bounds

CHECKPOINT_FORMAT = "inr-shape-checkpoint-v1"


# ------------------------------------------------------------------------------------------- building
def build_model(cfg: ShapeFitConfig) -> CoordinateMLP:
    """The shape network (3 -> 1) of a resolved config, from the shared MLP builder."""
    return make_mlp(
        3,
        1,
        width=cfg.width,
        depth=cfg.depth,
        activation=cfg.activation,
        sigma=cfg.sigma,
        w0=cfg.w0,
        pe_frequencies=cfg.pe_frequencies if cfg.activation == "relu" else 0,
    )


def build_optimizer(cfg: ShapeFitConfig, model: nn.Module) -> torch.optim.Optimizer:
    """Adam, ESGD or L-BFGS over the model's parameters, as the resolved config says (its choices are checked)."""
    params = list(model.parameters())
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr)
    if cfg.optimizer == "esgd":
        seed = cfg.seed if cfg.esgd.rademacher_seed is None else cfg.esgd.rademacher_seed
        return dataclasses.replace(cfg.esgd, rademacher_seed=seed).build(params, lr=cfg.lr)
    return torch.optim.LBFGS(
        params,
        lr=cfg.lr,
        max_iter=cfg.lbfgs.max_iter,
        history_size=cfg.lbfgs.history_size,
        line_search_fn=None if cfg.lbfgs.line_search == "none" else cfg.lbfgs.line_search,
    )


def decision_rule(cfg: ShapeFitConfig) -> tuple[float, str]:
    """(level, inside) of the network's output: sdf (0, below); occupancy logits (0, above); occupancy
    values trained with mse (0.5, above)."""
    if cfg.task == "sdf":
        return 0.0, "below"
    return (0.0, "above") if cfg.loss == "bce" else (0.5, "above")


def targets_from_sdf(sdf: np.ndarray, task: str) -> Tensor:
    """(n,) signed distances (negative inside) -> (n, 1) float32 targets: the SDF or the occupancy 1/0."""
    values = sdf if task == "sdf" else (sdf < 0).astype(np.float32)
    return torch.from_numpy(np.ascontiguousarray(values, dtype=np.float32)).reshape(-1, 1)


class PointSource:
    """Training points and targets of one process.

    - ``fresh``: a new batch each step (near-surface + uniform samples, targets from pysdf).
    - ``pool``: random batches from a fixed pool computed once (samples or voxel centres).
    - ``full``: the whole (per-process) pool every step (:meth:`full`).

    With IGA the points are ordered along a Morton curve and batches are made of whole groups of
    ``group_size`` contiguous points (pool: ``groups_per_step`` random groups of the pool, or with
    ``iga.pool_groups = "sorted"`` a random batch in pool, hence Morton, order; fresh: each batch sorted).
    """

    def __init__(self, shape: PreparedShape, cfg: ShapeFitConfig, rank: int = 0, world_size: int = 1) -> None:
        self.cfg = cfg
        self.sdf: MeshSDF = shape.sdf
        self.sampling = cfg.sampling()
        self.rng = np.random.default_rng([cfg.seed, rank])
        self.device = torch.device(cfg.device)
        self.iga = cfg.iga.enabled
        self.group_size = cfg.iga.group_size
        self.batch_size = max(1, cfg.batch_size // world_size)
        self.pool: Tensor | None = None
        self.morton_rank: np.ndarray | None = None
        """Position of the i-th drawn pool point in the Morton-ordered pool (IGA only)."""
        self.pool_targets: Tensor | None = None
        self.last_index: Tensor | None = None
        """Pool indices of the last ``batch`` (``pool`` points only)."""
        if cfg.points == "fresh":
            return
        if cfg.point_set == "voxels":
            pts = voxel_centers(cfg.voxel_resolution)
            if cfg.points == "full" and world_size > 1:  # contiguous share of the Morton-ordered grid
                pts = pts[morton_order(pts, cfg.iga.morton_bits)]
                pts = np.array_split(pts, world_size)[rank]
        else:
            pts = sample_points(self.sdf, max(1, cfg.pool_size // world_size), self.sampling, self.rng)
        if self.iga:
            order = morton_order(pts, cfg.iga.morton_bits)
            pts = pts[order]
            self.morton_rank = np.empty_like(order)
            self.morton_rank[order] = np.arange(len(order))
        self.pool = torch.from_numpy(np.ascontiguousarray(pts)).to(self.device)
        self.pool_targets = targets_from_sdf(self._signed_distance(pts), cfg.task).to(self.device)

    def _signed_distance(self, pts: np.ndarray, chunk: int = 1 << 18) -> np.ndarray:
        return np.concatenate([self.sdf.signed_distance(pts[i : i + chunk]) for i in range(0, len(pts), chunk)])

    def full(self) -> tuple[Tensor, Tensor]:
        """The whole pool: coords (n, 3), targets (n, 1)."""
        if self.pool is None or self.pool_targets is None:
            raise ValueError("PointSource.full() needs --points pool or full")
        return self.pool, self.pool_targets

    def batch(self, step: int) -> tuple[Tensor, Tensor]:
        """Batch of step ``step``: coords (b, 3), targets (b, 1) (groups contiguous with IGA)."""
        if self.pool is None:
            pts = sample_points(self.sdf, self.batch_size, self.sampling, self.rng)
            if self.iga:
                pts = pts[morton_order(pts, self.cfg.iga.morton_bits)]
            coords = torch.from_numpy(pts).to(self.device)
            return coords, targets_from_sdf(self.sdf.signed_distance(pts), self.cfg.task).to(self.device)
        assert self.pool_targets is not None
        n = self.pool.shape[0]
        if self.iga and self.cfg.iga.pool_groups == "sorted" and self.morton_rank is not None:
            # the points of the plain batch (same draw), in Morton order: sorted positions in the ordered pool
            idx = np.sort(self.morton_rank[self.rng.integers(0, n, size=min(self.batch_size, n))])
        elif self.iga:
            n_groups = n // self.group_size
            if n_groups < 1:
                raise ValueError(f"the pool ({n} points) holds no complete group of --iga.group-size {self.group_size}")
            chosen = self.rng.choice(n_groups, size=min(self.cfg.iga.groups_per_step, n_groups), replace=False)
            idx = (np.sort(chosen)[:, None] * self.group_size + np.arange(self.group_size)[None, :]).reshape(-1)
        else:
            idx = self.rng.integers(0, n, size=min(self.batch_size, n))
        index = torch.from_numpy(idx).to(self.device)
        self.last_index = index  # pool ids of this batch (INT's no-starvation guard)
        return self.pool[index], self.pool_targets[index]

    def surface_with_normals(self, n: int) -> tuple[Tensor, Tensor]:
        """n surface samples (n, 3) and their outward unit normals (n, 3) (for the normal term)."""
        pts, face = self.sdf.sample_surface_with_faces(n, self.rng)
        nrm = self.sdf.outward_normals()[face]
        return torch.from_numpy(pts).to(self.device), torch.from_numpy(nrm).to(self.device)


# ------------------------------------------------------------------------------------------- adjust
class ShapeLossHook:
    """``adjust`` hook for :func:`coordfit.fit`: IGA's surrogate and/or a derivative term.

    Returns ``base + weight * derivative`` where ``base`` is IGA's surrogate loss (if enabled) or the data
    loss, and the derivative term is Eikonal or normal alignment. The logged loss stays the true data loss.
    """

    def __init__(
        self,
        cfg: ShapeFitConfig,
        model: nn.Module,
        points: PointSource,
        iga: IGAAdjust | None,
    ) -> None:
        self.cfg = cfg
        self.model = model
        self.points = points
        self.iga = iga
        self.calls = 0
        self.weight = float(cfg.derivative.weight)
        self.weights: list[tuple[int, float]] = []

    def __call__(self, coords: Tensor, preds: Tensor, targets: Tensor) -> Tensor:
        d = self.cfg.derivative
        base = self.iga(coords, preds, targets) if self.iga is not None else coord_loss(preds, targets, self.cfg.loss)
        if d.kind != "none":
            if d.kind == "eikonal":
                sub = coords[torch.randperm(coords.shape[0], device=coords.device)[: d.num_points]]
                term = deriv.eikonal_loss(self.model, sub)
            else:
                pts, nrm = self.points.surface_with_normals(d.num_points)
                if d.weight_from == "ntk-trace" and self.calls % d.trace_every == 0:
                    self.weight = deriv.ntk_trace_weight(self.model, pts[: d.trace_points])
                    self.weights.append((self.calls, self.weight))
                term = deriv.normal_loss(self.model, pts, nrm)
            base = base + self.weight * term
        self.calls += 1
        return base


# ------------------------------------------------------------------------------------------- checkpoints
def atomic_torch_save(obj: Any, path: Path) -> None:
    """torch.save to a temporary file in the same folder, then rename (never a half-written file)."""
    with atomic_target(path) as tmp:
        torch.save(obj, tmp)


def save_checkpoint(
    path: Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None,
    step: int,
    cfg: ShapeFitConfig,
    norm: Normalization,
    resume: dict[str, Any] | None = None,
) -> None:
    """Checkpoint = model and optimizer state, step, resolved config, the unit-box transform and (to continue
    training) the ``resume`` state of :func:`train_shape`. Plain tensors, containers and numbers only (loadable with
    ``weights_only=True``); written atomically."""
    level, inside = decision_rule(cfg)
    atomic_torch_save(
        {
            "format": CHECKPOINT_FORMAT,
            "step": step,
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict() if optimizer is not None else None,
            "config": config_to_dict(cfg),
            "normalization": {"center": [float(c) for c in norm.center], "scale": float(norm.scale)},
            "level": float(level),
            "inside": inside,
            "resume": resume,
        },
        path,
    )


@dataclass
class LoadedShapeModel:
    """A trained shape network restored from a checkpoint."""

    model: CoordinateMLP
    """The network in eval mode, (n, 3) unit-box points -> (n, 1)."""
    config: ShapeFitConfig
    """Its resolved training config."""
    normalization: Normalization
    """Unit box <-> input coordinates."""
    level: float
    """Iso-level of the surface."""
    inside: str
    """'below' or 'above': which side of the level is inside."""
    step: int
    """Training steps done."""


def load_checkpoint(path: str | os.PathLike, device: str = "cpu") -> LoadedShapeModel:
    """Restore a shape network written by the trainer.

    Loaded with ``torch.load(weights_only=True)`` (:func:`nerf_inr_methods.safe_io.safe_torch_load`): the file may
    only hold tensors, containers and plain values, never code.

    Raises:
        FileNotFoundError: no such file. ValueError: truncated, not an inr-shape checkpoint, or refused (it would
        run code).
    """
    path = Path(path)
    ckpt = safe_torch_load(path, map_location=device)  # plain weights only: a crafted pickle is refused
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path} is not an inr-shape checkpoint (expected format {CHECKPOINT_FORMAT!r})")
    cfg = config_from_dict(ckpt["config"])
    model = build_model(cfg).to(device)
    model.load_state_dict(ckpt["model"])
    model.eval()
    norm = Normalization(center=tuple(ckpt["normalization"]["center"]), scale=float(ckpt["normalization"]["scale"]))
    return LoadedShapeModel(model, cfg, norm, float(ckpt["level"]), str(ckpt["inside"]), int(ckpt["step"]))


# ------------------------------------------------------------------------------------------- evaluation
class ShapeEvaluator:
    """IoU against the mesh's inside test on N^3 voxel centres; mesh extraction; Chamfer distance.

    The ground-truth grids are cached per (mesh file, its modification time, fill, resolution) for the
    process's lifetime (a few of them: 2 MB each at 128^3), so repeated runs on one mesh pay once.
    """

    _truth_cache: dict[tuple[str, float, float, int], np.ndarray] = {}
    _cache_size = 8

    def __init__(self, shape: PreparedShape, level: float, inside: str, chunk_size: int = 1 << 17) -> None:
        self.shape = shape
        self.level = level
        self.inside = inside
        self.chunk_size = chunk_size

    def truth(self, resolution: int) -> np.ndarray:
        """(R, R, R) bool ground truth (pysdf robust inside test)."""
        path = self.shape.path.resolve()
        fill = float(max(self.shape.unit_mesh.extents))
        key = (str(path), path.stat().st_mtime if path.exists() else 0.0, round(fill, 9), int(resolution))
        cache = ShapeEvaluator._truth_cache
        if key not in cache:
            while len(cache) >= self._cache_size:
                cache.pop(next(iter(cache)))
            cache[key] = reference_inside_grid(self.shape.sdf, resolution, self.chunk_size)
        return cache[key]

    def volume(self, model: nn.Module, resolution: int) -> np.ndarray:
        """(R, R, R) float32 network outputs on the voxel centres."""
        lo, hi = voxel_center_bounds(resolution)
        was_training = model.training
        model.eval()
        try:
            return meshlib.evaluate_grid(meshlib.torch_field(model), lo, hi, resolution, self.chunk_size)
        finally:
            model.train(was_training)

    def inside_of(self, volume: np.ndarray) -> np.ndarray:
        """Bool inside mask of a volume of network outputs."""
        return volume < self.level if self.inside == "below" else volume > self.level

    def iou(self, model: nn.Module, resolution: int, volume: np.ndarray | None = None) -> float:
        """IoU of the network's inside region with the mesh's on R^3 voxel centres."""
        vol = self.volume(model, resolution) if volume is None else volume
        return iou(self.inside_of(vol), self.truth(resolution))

    def extract(self, model: nn.Module, resolution: int, volume: np.ndarray | None = None, to_input: bool = False):
        """Mesh of the network's surface (unit-box coordinates, or the input's with ``to_input``)."""
        lo, hi = voxel_center_bounds(resolution)
        transform = self.shape.normalization.unit_to_input_matrix() if to_input else None
        return meshlib.extract_mesh(
            meshlib.torch_field(model),
            lo,
            hi,
            resolution,
            self.level,
            self.inside,
            self.chunk_size,
            transform,
            volume=volume,
        )


# ------------------------------------------------------------------------------------------- up-front checks
POOL_BYTES_PER_POINT = 64
"""Peak bytes per point of a fixed pool (float64 sampling / voxel-grid intermediates, coords, targets, Morton)."""


def check_fit_inputs(cfg: ShapeFitConfig) -> None:
    """Refuse, before any work, what would fail later: the --mesh file, an unwritable --output-dir, and grids or
    pools larger than the available memory (the final mesh's included). ValueError/FileNotFoundError name the flag.
    """
    mesh = Path(cfg.mesh)
    if not mesh.exists():
        raise FileNotFoundError(f"--mesh {mesh} does not exist")
    if mesh.is_dir():
        raise ValueError(f"--mesh {mesh} is a folder, expected a mesh file ({', '.join(MESH_SUFFIXES)})")
    if mesh.suffix.lower() not in MESH_SUFFIXES:
        raise ValueError(f"--mesh {mesh}: unknown mesh format {mesh.suffix!r}; expected one of {MESH_SUFFIXES}")
    check_output_dir(cfg.output_dir, "--output-dir")
    for flag, resolution in (
        ("--mesh-resolution", cfg.mesh_resolution),
        ("--iou-resolution", cfg.iou_resolution),
        ("--eval-iou-resolution", cfg.eval_iou_resolution),
    ):
        if resolution >= 2:
            meshlib.check_grid_memory(resolution, flag)
    if cfg.points != "fresh" and cfg.point_set == "voxels":
        meshlib.check_grid_memory(cfg.voxel_resolution, "--voxel-resolution", POOL_BYTES_PER_POINT)
    elif cfg.points != "fresh":
        free = meshlib.available_memory_bytes()
        need = cfg.pool_size * POOL_BYTES_PER_POINT
        if free is not None and need > free:
            raise ValueError(
                f"--pool-size {cfg.pool_size}: the pool needs about {meshlib.format_bytes(need)} of memory, but "
                f"{meshlib.format_bytes(free)} is available; use --pool-size {free // POOL_BYTES_PER_POINT} or less"
            )


# ------------------------------------------------------------------------------------------- run folder, resume
RESUME_FREE_FIELDS = ("resume", "run_name", "output_dir", "progress", "num_threads", "device", "chunk_size")
"""Config fields that may differ between a run and its resumption (they do not change what is trained)."""


def _holds_files(folder: Path) -> bool:
    return folder.is_dir() and any(folder.iterdir())


def new_run_dir(cfg: ShapeFitConfig) -> Path:
    """The folder of a new run: ``--output-dir/--run-name`` (default name with a timestamp); if that folder already
    holds an earlier run's files, ``<name>-2`` (-3, ...) instead, said on stderr, so two runs' files never mix."""
    out = Path(cfg.output_dir)
    base = cfg.run_name or default_run_name(cfg)
    name, k = base, 1
    while _holds_files(out / name) or (out / name).is_file():
        k += 1
        name = f"{base}-{k}"
    if name != base:
        print(
            f"inr-shape: run folder {out / base} already holds a run; writing this one to {out / name} "
            "(--resume continues the earlier run)",
            file=sys.stderr,
        )
    return out / name


def resume_run_dir(cfg: ShapeFitConfig) -> Path:
    """The folder ``--resume`` continues: ``--output-dir/--run-name``, or without a name the newest
    ``<mesh stem>-<protocol>-*`` folder with checkpoints in --output-dir."""
    out = Path(cfg.output_dir)
    if cfg.run_name is not None:
        run_dir = out / cfg.run_name
        if not (run_dir / "checkpoints").is_dir():
            raise FileNotFoundError(
                f"--resume: {run_dir} is not a run folder with checkpoints (check --output-dir and --run-name)"
            )
        return run_dir
    prefix = f"{Path(cfg.mesh).stem}-{cfg.protocol}-"
    found = sorted(p for p in out.glob(f"{prefix}*") if (p / "checkpoints").is_dir()) if out.is_dir() else []
    if not found:
        raise FileNotFoundError(f"--resume: no run folder {prefix}* with checkpoints in {out}; give --run-name")
    return max(found, key=lambda p: (p / "checkpoints").stat().st_mtime)


def _flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in d.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = list(value) if isinstance(value, tuple) else value
    return out


def check_resume_config(stored: dict[str, Any], cfg: ShapeFitConfig, source: Path) -> None:
    """Refuse to continue a run with other training flags (ValueError listing each differing flag). A flag added
    since the run was made (absent from its stored config) counts at its default."""

    def training_flags(config: dict[str, Any]) -> dict[str, Any]:
        return _flat({k: v for k, v in config.items() if k not in RESUME_FREE_FIELDS})

    old = {**training_flags(config_to_dict(ShapeFitConfig(mesh=cfg.mesh))), **training_flags(stored)}
    new = training_flags(config_to_dict(cfg))
    if "mesh" in old and "mesh" in new:
        old["mesh"], new["mesh"] = str(Path(old["mesh"]).resolve()), str(Path(new["mesh"]).resolve())
    diffs = [
        f"--{key.replace('_', '-')} {old.get(key)!r} (now {new.get(key)!r})"
        for key in sorted(set(old) | set(new))
        if old.get(key) != new.get(key)
    ]
    if diffs:
        raise ValueError(
            f"--resume: {source} was trained with other flags: {'; '.join(diffs)}; repeat the first run's flags"
        )


def latest_resumable_checkpoint(run_dir: Path) -> tuple[Path, dict[str, Any]]:
    """The newest checkpoint of a run folder that loads and carries a resume state (step_*.pt, interrupted.pt).

    A truncated or unreadable checkpoint is skipped with a warning (the next older one is used); a file that would
    run code is refused (:class:`RefusedFileError`), never skipped.

    Raises:
        ValueError: the run finished (final.pt) or no checkpoint can be resumed.
    """
    ckpt_dir = run_dir / "checkpoints"
    if (ckpt_dir / "final.pt").exists():
        raise ValueError(f"--resume: {run_dir} already finished (checkpoints/final.pt); nothing to resume")
    candidates: list[tuple[int, Path]] = []
    for path in ckpt_dir.glob("step_*.pt"):
        digits = path.stem.split("_", 1)[1]
        if digits.isdigit():
            candidates.append((int(digits), path))
    if (ckpt_dir / "interrupted.pt").exists():
        candidates.append((-1, ckpt_dir / "interrupted.pt"))  # its step is inside
    best: tuple[int, Path, dict[str, Any]] | None = None
    skipped: list[str] = []
    for listed_step, path in sorted(candidates, key=lambda c: (c[0] < 0, c[0]), reverse=True):  # interrupted first
        if best is not None and listed_step >= 0 and listed_step <= best[0]:
            break
        try:
            ckpt = safe_torch_load(path)
        except RefusedFileError:
            raise
        except ValueError as error:
            skipped.append(str(error))
            warnings.warn(f"--resume: skipping {path}: {error}", stacklevel=2)
            continue
        if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT or not ckpt.get("resume"):
            skipped.append(f"{path} is not an inr-shape checkpoint with a resume state")
            warnings.warn(f"--resume: skipping {path}: not an inr-shape checkpoint with a resume state", stacklevel=2)
            continue
        if best is None or int(ckpt["step"]) > best[0]:
            best = (int(ckpt["step"]), path, ckpt)
    if best is None:
        reason = f" ({skipped[0]})" if skipped else " (no step_*.pt or interrupted.pt)"
        raise ValueError(f"--resume: no checkpoint in {ckpt_dir} can be resumed{reason}")
    return best[1], best[2]


@dataclass
class _RunParts:
    """The parts of a run whose state a resumable checkpoint carries besides the model and optimizer weights."""

    points: PointSource
    optimizer: torch.optim.Optimizer
    sampler: IntSampler | None
    scheduler: Any
    hook: ShapeLossHook | None
    iga: IGAAdjust | None

    def random_streams(self) -> dict[str, Any]:
        """Copies of the random streams a step draws from before it changes any weight: the point sampler's,
        torch's global one and the optimizer's private generator (ESGD)."""
        generator = getattr(self.optimizer, "generator", None)
        return {
            "point_rng": self.points.rng.bit_generator.state,
            "torch_rng": torch.get_rng_state(),
            "optimizer_rng": generator.get_state() if isinstance(generator, torch.Generator) else None,
        }

    def resume_state(
        self,
        hist: FitHistory,
        timing: dict[str, Any],
        world_size: int,
        gather: bool,
        streams: dict[str, Any] | None = None,
    ) -> dict[str, Any] | None:
        """What :func:`train_shape` needs to continue exactly (None when another process's random state is missing).

        ``streams``: the random streams as :meth:`random_streams` saw them at the last step boundary (an
        interrupted step may already have drawn its batch), instead of their current state.
        """
        streams = streams or self.random_streams()
        point_states = [streams["point_rng"]]
        if world_size > 1:
            if not gather:
                return None
            point_states = [None] * world_size
            dist.all_gather_object(point_states, streams["point_rng"])
        history = hist.to_dict()
        n_evals = len(history["eval_metrics"])  # an interruption during an evaluation leaves it half-recorded
        for key in ("eval_steps", "eval_time", "eval_points_trained", "eval_points_scored"):
            history[key] = history[key][:n_evals]
        hook, sampler, scheduler = self.hook, self.sampler, self.scheduler
        return {
            "history": history,
            "timing": dict(timing),
            "world_size": world_size,
            "point_rng": point_states,
            "torch_rng": streams["torch_rng"],
            "optimizer_rng": streams["optimizer_rng"],
            "sampler": sampler.state_dict() if sampler is not None else None,
            "scheduler": scheduler.state_dict() if scheduler is not None else None,
            "hook": None
            if hook is None
            else {"calls": hook.calls, "weight": hook.weight, "weights": list(hook.weights)},
            "iga": None if self.iga is None else _iga_counters(self.iga),
        }

    def restore(self, state: dict[str, Any], rank: int, device: torch.device) -> FitHistory:
        """Put the random streams and method states of :meth:`resume_state` back; returns the history to continue."""
        self.points.rng.bit_generator.state = state["point_rng"][rank]
        torch.set_rng_state(state["torch_rng"])
        generator = getattr(self.optimizer, "generator", None)
        if isinstance(generator, torch.Generator) and state["optimizer_rng"] is not None:
            generator.set_state(state["optimizer_rng"])
        if self.sampler is not None:
            self.sampler.load_state_dict(state["sampler"], device)
        if self.scheduler is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        hook = self.hook
        if hook is not None and state["hook"] is not None:
            hook.calls, hook.weight = int(state["hook"]["calls"]), float(state["hook"]["weight"])
            hook.weights = [tuple(w) for w in state["hook"]["weights"]]
        if self.iga is not None and state["iga"] is not None:
            target = getattr(self.iga, "state", self.iga)
            for key, value in state["iga"].items():
                setattr(target, key, value.to(device) if isinstance(value, Tensor) and key == "matrix" else value)
        return FitHistory(**state["history"])


def _iga_counters(iga: IGAAdjust) -> dict[str, Any]:
    """IGA's running state (call counter, latest S, diagnostics): the non-init fields of its state dataclass."""
    state = getattr(iga, "state", iga)
    return {f.name: getattr(state, f.name) for f in dataclasses.fields(state) if not f.init}


# ------------------------------------------------------------------------------------------- training
@dataclass
class ShapeFitResult:
    """What :func:`train_shape` returns (rank 0 has the metrics; other ranks an empty dict)."""

    run_dir: Path
    """The run folder."""
    metrics: dict[str, Any]
    """Contents of metrics.json."""
    model: nn.Module
    """The trained network (unwrapped)."""
    history: FitHistory
    """Per-step log from the shared coordinate loop."""
    cpu_time: list[float]
    """Cumulative process CPU seconds of training after each step (evaluation excluded)."""


def default_run_name(cfg: ShapeFitConfig) -> str:
    """'<mesh stem>-<protocol>-<YYYYmmdd-HHMMSS>'."""
    return f"{Path(cfg.mesh).stem}-{cfg.protocol}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"


def _eval_schedule(every: int, steps: int) -> list[int]:
    return sorted(set(([s for s in range(every, steps + 1, every)] if every > 0 else []) + [steps]))


def build_int_sampler(
    cfg: ShapeFitConfig, points: PointSource, batch_fn: Callable[[int], tuple[Tensor, ...]] | None
) -> tuple[IntSampler, Callable[[Tensor], Tensor] | None, Callable[[int], tuple[Tensor, ...]] | None]:
    """The INT-family sampler of a resolved config, its error-map cells (voxels of the unit box) and the batch
    function (with pool ids for the no-starvation guard when --points pool)."""
    o = cfg.int_selection
    config = o.sampler_config(int(o.max_interval), cfg.seed)  # type: ignore[arg-type]
    num_points = int(points.pool.shape[0]) if points.pool is not None else None
    resolution = int(o.error_map_resolution)
    sampler = IntSampler(
        config,
        cfg.steps,
        num_points=num_points if cfg.points != "fresh" else None,
        num_cells=resolution**3,
        fresh_candidates=batch_fn is not None,
        generator=torch.Generator().manual_seed(cfg.seed + 1),
    )
    cells_fn = (lambda coords: voxel_cells(coords, resolution)) if config.sampler == "error-map" else None
    if batch_fn is not None and cfg.points == "pool" and config.max_skips is not None:
        plain = batch_fn

        def with_ids(step: int) -> tuple[Tensor, ...]:
            coords, targets = plain(step)
            assert points.last_index is not None
            return coords, targets, points.last_index

        batch_fn = with_ids
    return sampler, cells_fn, batch_fn


def _progress_bar(cfg: ShapeFitConfig, rank: int) -> tuple[Callable[[int, StepResult], None] | None, Any]:
    if not cfg.progress or rank != 0:
        return None, None
    from tqdm.auto import tqdm

    bar = tqdm(total=cfg.steps, desc=f"inr-shape {Path(cfg.mesh).stem}", unit="step", dynamic_ncols=True)

    def update(step: int, result: StepResult) -> None:
        bar.update(1)
        if step % 10 == 0 or step == cfg.steps - 1:
            bar.set_postfix(loss=f"{result.loss:.3e}", points=result.num_trained)

    return update, bar


def train_shape(
    cfg: ShapeFitConfig,
    rank: int = 0,
    world_size: int = 1,
    eval_callback: Callable[[nn.Module, int], dict[str, float]] | None = None,
) -> ShapeFitResult:
    """Train one shape network and fill its run folder (rank 0).

    Args:
        cfg: configuration (resolved here if needed).
        rank, world_size: process rank and count (torch.distributed must be initialised when > 1).
        eval_callback: optional extra evaluation ``(model, steps_done) -> metrics`` merged into each
            evaluation record (also at step 0; its time is excluded from the training clock, which the
            history records as ``eval_time``).

    Returns:
        :class:`ShapeFitResult`.
    """
    cfg = resolve_config(cfg)
    check_fit_inputs(cfg)
    run_dir = None
    if rank == 0:
        run_dir = resume_run_dir(cfg) if cfg.resume else new_run_dir(cfg)
    if world_size > 1:  # rank 0 chose the folder
        shared = [run_dir]
        dist.broadcast_object_list(shared, src=0)
        run_dir = shared[0]
    assert run_dir is not None
    cfg.run_name = run_dir.name
    resume_from: dict[str, Any] | None = None
    if cfg.resume:
        resume_path, checkpoint = latest_resumable_checkpoint(run_dir)
        check_resume_config(checkpoint["config"], cfg, resume_path)
        resume_from = checkpoint
        if checkpoint["resume"]["world_size"] != world_size:
            raise ValueError(
                f"--resume: {resume_path} was trained by {checkpoint['resume']['world_size']} processes, not "
                f"{world_size}: use the same --num-processes"
            )
        if rank == 0:
            print(f"inr-shape: resuming {run_dir} from {resume_path.name} (step {checkpoint['step']})", file=sys.stderr)
    if cfg.num_threads is not None:
        torch.set_num_threads(cfg.num_threads)
    t_setup = time.perf_counter()
    device = torch.device(cfg.device)
    with warnings.catch_warnings():
        if rank != 0:
            warnings.simplefilter("ignore")
        shape = prepare_shape(cfg.mesh, cfg.fill, cfg.non_watertight)
    torch.manual_seed(cfg.seed)
    model = build_model(cfg).to(device)
    if resume_from is not None:
        model.load_state_dict(resume_from["model"])
    train_model: nn.Module = model
    if world_size > 1:
        from torch.nn.parallel import DistributedDataParallel

        train_model = DistributedDataParallel(model)
    optimizer = build_optimizer(cfg, model)
    points = PointSource(shape, cfg, rank, world_size)
    coords, targets = points.full() if cfg.points == "full" else (None, None)
    batch_fn = None if cfg.points == "full" else points.batch

    sampler, cells_fn = None, None
    if cfg.int_selection.enabled:
        sampler, cells_fn, batch_fn = build_int_sampler(cfg, points, batch_fn)
    iga = None
    if cfg.iga.enabled:
        iga = IGAAdjust(model, cfg.iga.end, cfg.iga.group_size, cfg.iga.update_every, cfg.iga.identity)
    hook = ShapeLossHook(cfg, model, points, iga) if (iga is not None or cfg.derivative.kind != "none") else None
    scheduler = None
    if cfg.lr_final_factor < 1.0 and cfg.optimizer != "lbfgs":
        scheduler = torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=cfg.lr_final_factor ** (1.0 / cfg.steps))
    level, inside = decision_rule(cfg)
    evaluator = ShapeEvaluator(shape, level, inside, cfg.chunk_size)
    parts = _RunParts(points, optimizer, sampler, scheduler, hook, iga)
    start_step, history0, timing0 = 0, None, {"eval_s": 0.0, "train_cpu_s": 0.0, "cpu_curve": []}
    if resume_from is not None:
        if resume_from["optimizer"] is not None:
            optimizer.load_state_dict(resume_from["optimizer"])
        history0 = parts.restore(resume_from["resume"], rank, device)
        start_step, timing0 = int(resume_from["step"]), resume_from["resume"]["timing"]

    ckpt_dir = run_dir / "checkpoints"
    if rank == 0:
        run_dir.mkdir(parents=True, exist_ok=True)
        if resume_from is None:
            write_json(config_to_dict(cfg), run_dir / "config.json")
    setup_seconds = time.perf_counter() - t_setup

    eval_steps = set(_eval_schedule(cfg.eval_every, cfg.steps))
    ckpt_steps = set(_eval_schedule(cfg.checkpoint_every, cfg.steps)) - {cfg.steps}
    # Process CPU clock next to fit's wall clock: with one intra-op thread it measures the work done, and
    # it is far less sensitive than wall time to other jobs on a shared machine. Evaluation is excluded.
    clock = {"eval": float(timing0["eval_s"]), "eval_cpu": 0.0, "cpu0": time.process_time() - timing0["train_cpu_s"]}
    cpu_curve: list[float] = list(timing0["cpu_curve"])

    def train_cpu() -> float:
        return time.process_time() - clock["cpu0"] - clock["eval_cpu"]

    def eval_fn(net: nn.Module, done: int) -> dict[str, float]:
        t0, c0 = time.perf_counter(), time.process_time()
        out: dict[str, float] = {"train_cpu_s": train_cpu()}
        if rank == 0:
            if done in eval_steps:
                out[f"iou_{cfg.eval_iou_resolution}"] = evaluator.iou(model, cfg.eval_iou_resolution)
            if eval_callback is not None:
                out.update(eval_callback(model, done))
        clock["eval"] += time.perf_counter() - t0
        clock["eval_cpu"] += time.process_time() - c0
        return out

    user_progress, bar = _progress_bar(cfg, rank)

    def progress(step: int, result: StepResult) -> None:
        cpu_curve.append(train_cpu())
        if user_progress is not None:
            user_progress(step, result)

    if bar is not None and start_step:
        bar.update(start_step)

    def checkpoint(path: Path, hist: FitHistory, gather: bool, streams: dict[str, Any] | None = None) -> None:
        """Write a checkpoint after ``len(hist.loss)`` steps (every process takes part when ``gather``)."""
        t0, c0 = time.perf_counter(), time.process_time()
        done = len(hist.loss)
        timing = {"eval_s": clock["eval"], "train_cpu_s": train_cpu(), "cpu_curve": cpu_curve[:done]}
        state = parts.resume_state(hist, timing, world_size, gather, streams)
        if rank == 0:
            save_checkpoint(path, model, optimizer, done, cfg, shape.normalization, resume=state)
        clock["eval"] += time.perf_counter() - t0
        clock["eval_cpu"] += time.process_time() - c0

    history = history0 if history0 is not None else FitHistory()
    boundary = parts.random_streams()  # at the last step boundary, for interrupted.pt
    try:
        steps = fit_iter(
            train_model,
            optimizer,
            cfg.steps,
            coords,
            targets,
            batch_fn=batch_fn,
            sampler=sampler,
            cells_fn=cells_fn,
            loss=cfg.loss,
            adjust=hook,
            lr_scheduler=scheduler,
            eval_fn=eval_fn,
            eval_steps=sorted(eval_steps | ckpt_steps | ({0} if eval_callback is not None else set())),
            progress=progress,
            start_step=start_step,
            history=history0,
        )
        for history in steps:
            if len(history.loss) in ckpt_steps:
                checkpoint(ckpt_dir / f"step_{len(history.loss):07d}.pt", history, gather=True)
            boundary = parts.random_streams()
    except BaseException:
        if rank == 0:
            # Keep what was learnt so far (finished checkpoints are untouched: all writes are atomic), with the random
            # streams of the last step boundary. Resuming from it is exact when the interruption came before the
            # step changed any weight or sampler state (batch drawing, the forward pass); otherwise close.
            checkpoint(ckpt_dir / "interrupted.pt", history, gather=False, streams=boundary)
        raise
    finally:
        if bar is not None:
            bar.close()

    metrics: dict[str, Any] = {}
    if rank == 0:
        save_checkpoint(ckpt_dir / "final.pt", model, optimizer, cfg.steps, cfg, shape.normalization)
        metrics = final_metrics(cfg, shape, model, evaluator, history, run_dir)
        metrics["timings"].update(
            {
                "setup_s": setup_seconds,
                "intermediate_eval_s": clock["eval"],
                "train_cpu_s": cpu_curve[-1] if cpu_curve else 0.0,
                "torch_threads": torch.get_num_threads(),
            }
        )
        metrics["world_size"] = world_size
        write_json(metrics, run_dir / "metrics.json")
    return ShapeFitResult(run_dir, metrics, model, history, cpu_curve)


def final_metrics(
    cfg: ShapeFitConfig,
    shape: PreparedShape,
    model: nn.Module,
    evaluator: ShapeEvaluator,
    history: FitHistory,
    run_dir: Path,
) -> dict[str, Any]:
    """Final IoU at ``iou_resolution``, extracted mesh (exported in input coordinates), Chamfer, timings."""
    t0 = time.perf_counter()
    volume = evaluator.volume(model, cfg.iou_resolution)
    final_iou = evaluator.iou(model, cfg.iou_resolution, volume)
    t_iou = time.perf_counter() - t0
    mesh_path, chamfer, mesh_error = None, None, None
    t1 = time.perf_counter()
    if cfg.mesh_resolution > 0:
        reuse = volume if cfg.mesh_resolution == cfg.iou_resolution else None
        try:
            unit_mesh = evaluator.extract(model, cfg.mesh_resolution, volume=reuse)
        except ValueError as exc:  # the network has no surface yet
            mesh_error = str(exc)
        else:
            out_mesh = unit_mesh.copy()
            out_mesh.vertices = shape.normalization.from_unit(unit_mesh.vertices)
            mesh_path = meshlib.export_mesh(out_mesh, run_dir / f"mesh.{cfg.mesh_format}")
            if cfg.chamfer_samples > 0:
                chamfer = chamfer_distance(unit_mesh, shape.unit_mesh, cfg.chamfer_samples, seed=cfg.seed)
    t_mesh = time.perf_counter() - t1
    curve = [
        {"step": s, "train_s": t, "points_trained": pt, "points_scored": ps, **m}
        for s, t, pt, ps, m in zip(
            history.eval_steps,
            history.eval_time,
            history.eval_points_trained,
            history.eval_points_scored,
            history.eval_metrics,
            strict=True,
        )
    ]
    every = max(1, len(history.loss) // 500)
    return {
        "protocol": cfg.protocol,
        "task": cfg.task,
        "loss": cfg.loss,
        "mesh": str(cfg.mesh),
        "watertight": shape.watertight,
        "steps": cfg.steps,
        f"iou_{cfg.iou_resolution}": final_iou,
        "iou": final_iou,
        "iou_resolution": cfg.iou_resolution,
        "chamfer": chamfer,
        "chamfer_units": "unit box (input longest side = fill)",
        "mesh_path": str(mesh_path) if mesh_path is not None else None,
        "mesh_error": mesh_error,
        "final_loss": history.loss[-1] if history.loss else None,
        "points_trained": history.points_trained[-1] if history.points_trained else 0,
        "points_scored": history.points_scored[-1] if history.points_scored else 0,
        "timings": {"train_s": history.time[-1] if history.time else 0.0, "final_iou_s": t_iou, "mesh_s": t_mesh},
        "eval_curve": curve,
        "loss_curve": {"step": list(range(0, len(history.loss), every)), "loss": history.loss[::every]},
    }


# ------------------------------------------------------------------------------------------- processes
def _worker(rank: int, cfg: ShapeFitConfig, world_size: int, init_file: str) -> None:
    # File rendezvous (no TCP port to pick, so no race with other jobs on the machine).
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    try:
        train_shape(cfg, rank, world_size)
        finished_together()
    finally:
        dist.destroy_process_group()


def finished_together() -> None:
    """Wait until every rank has finished training before any tears gloo down: a rank that destroyed its process
    group while another was still in its last collective aborted ("terminate called without an active exception",
    about 1 in 7 two-process runs)."""
    dist.barrier()


def run_fit(cfg: ShapeFitConfig) -> dict[str, Any]:
    """Train as configured: one process, ``num_processes`` spawned gloo processes, or under torchrun
    (``WORLD_SIZE`` / ``RANK`` in the environment). Returns rank 0's metrics (with ``run_dir``)."""
    cfg = resolve_config(cfg)
    check_fit_inputs(cfg)  # fail before spawning processes
    run_dir = resume_run_dir(cfg) if cfg.resume else new_run_dir(cfg)
    cfg.run_name = run_dir.name
    if cfg.resume and cfg.num_processes > 1:
        check_resume_config(latest_resumable_checkpoint(run_dir)[1]["config"], cfg, run_dir)
    env_world = int(os.environ.get("WORLD_SIZE", "1"))
    if env_world > 1:  # launched by torchrun
        rank = int(os.environ["RANK"])
        dist.init_process_group("gloo")
        try:
            result = train_shape(cfg, rank, env_world)
            finished_together()
        finally:
            dist.destroy_process_group()
        return {**result.metrics, "run_dir": str(result.run_dir)}
    if cfg.num_processes > 1:
        import torch.multiprocessing as mp

        with tempfile.TemporaryDirectory(prefix="inr-shape-ddp-") as tmp:
            init_file = str(Path(tmp) / "rendezvous")
            mp.spawn(_worker, args=(cfg, cfg.num_processes, init_file), nprocs=cfg.num_processes, join=True)
        run_dir = Path(cfg.output_dir) / cfg.run_name
        metrics = json.loads((run_dir / "metrics.json").read_text())
        return {**metrics, "run_dir": str(run_dir)}
    result = train_shape(cfg)
    return {**result.metrics, "run_dir": str(result.run_dir)}
