"""Configuration of the shape trainer (``inr-shape fit``) and the three shape-fitting protocols.

Fields left at ``None`` take the chosen protocol's value (methods.md, "Shape-fitting protocol"); see
:data:`PROTOCOL_DEFAULTS` and :func:`resolve_config`. The resolved configuration is what the run folder's
``config.json`` records, so every reported number names its protocol and every setting behind it.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from nerf_inr_methods.cli import check_choices, check_device, check_positive
from nerf_inr_methods.core.esgd import ESGDConfig, default_lr
from nerf_inr_methods.core.int_sampler import IntSamplerConfig, SamplerName, SamplerOptionError, SamplerParameters
from nerf_inr_methods.core.int_selection import IntervalKind, RatioKind
from nerf_inr_methods.core.mlp import Activation

from .data import NoiseKind, NonWatertight, SamplingConfig

Protocol = Literal["int", "iga", "esgd"]
Task = Literal["sdf", "occupancy"]
LossName = Literal["mse", "bce"]
PointSet = Literal["samples", "voxels"]
PointMode = Literal["fresh", "pool", "full"]
OptimizerName = Literal["adam", "esgd", "lbfgs"]

_SIREN_PROTOCOL: dict[str, Any] = dict(
    loss="mse",
    activation="siren",
    optimizer="adam",
    coarse_fraction=0.45,
    fine_fraction=0.45,
    uniform_fraction=0.1,
    noise="laplace",
    coarse_scale=0.1,
    fine_scale=1e-3,
)
"""What the INT and IGA protocols share: SIREN and Adam on an l2 loss; SIREN's surface + Laplacian noise (scales
1e-1 / 1e-3) + uniform samples."""

PROTOCOL_DEFAULTS: dict[str, dict[str, Any]] = {
    # INT (default): SDF regression, fresh 50k batch of samples.
    "int": dict(_SIREN_PROTOCOL, task="sdf", point_set="samples", points="fresh", batch_size=50_000),
    # IGA: l2 on occupancy values of a voxel grid, groups of 256 Morton-contiguous voxels, 512 groups a step.
    "iga": dict(_SIREN_PROTOCOL, task="occupancy", point_set="voxels", points="pool", batch_size=512 * 256),
    # ESGD: occupancy with BCE, 1/3 uniform + 2/3 near-surface with Gaussian noise 0.1 / 0.01, Gaussian MLP.
    "esgd": dict(
        task="occupancy",
        loss="bce",
        activation="gaussian",
        point_set="samples",
        points="fresh",
        batch_size=50_000,
        optimizer="esgd",
        coarse_fraction=1.0 / 3.0,
        fine_fraction=1.0 / 3.0,
        uniform_fraction=1.0 / 3.0,
        noise="gaussian",
        coarse_scale=0.1,
        fine_scale=0.01,
    ),
}
"""Per-protocol values of the fields left at None."""

DEFAULT_LR: dict[str, float] = {"adam": 1e-4, "lbfgs": 1.0}
"""Learning rate per optimizer when ``lr`` is None: SIREN's Adam 1e-4, L-BFGS 1; ESGD's is its recipe's
(:func:`nerf_inr_methods.core.esgd.default_lr`: robust 4, official 0.15)."""


@dataclass
class IntOptions(SamplerParameters):
    """INT (implicit neural teaching) example selection; methods.md section 1. The samplers' parameters
    (--int-selection.alpha, ...) are the core's :class:`SamplerParameters`."""

    enabled: bool = False
    """Train each step on the points with the largest current error only."""
    ratio: RatioKind = "step"
    """Selected-fraction schedule: step (paper default), cosine, r-cosine or constant."""
    r0: float = 0.2
    """Starting selected fraction."""
    interval: IntervalKind = "incremental"
    """Re-selection interval schedule: incremental (paper default), dense or decremental."""
    max_interval: int | None = None
    """Largest re-selection interval (None: min(90, max(10, steps // 100)): 90 from 9000 steps, 10 for short runs)."""
    random_subset: bool = False
    """Control: a uniformly random subset of the same size under the same schedule (no scoring)."""
    sampler: SamplerName = "int"
    """int (paper: top-k by error), random (its control, = --int-selection.random-subset), soft (soft mining),
    error-map (per-voxel error map, no scoring pass) or two-forward (score more points, train the hardest)."""
    max_skips: int | None = None
    """No-starvation guard (--points pool / full): a point left untrained in this many consecutive pools
    is forced into its next (None: off, the paper's INT)."""
    error_map_resolution: int = 32
    """error-map: voxels per axis of the error map over the unit box."""

    def sampler_config(self, max_interval: int, seed: int) -> IntSamplerConfig:
        """The core sampler options (ValueError naming the --int-selection flag if one is bad)."""
        if self.random_subset and self.sampler not in ("int", "random"):
            raise ValueError(
                "--int-selection.random-subset is INT's control: it needs --int-selection.sampler int "
                f"(or use --int-selection.sampler random), got {self.sampler!r}"
            )
        sampler = "random" if self.random_subset else self.sampler
        try:
            return IntSamplerConfig(
                sampler=sampler,
                max_interval=max_interval,
                reuse="keep" if sampler in ("int", "random") else "rerank",  # the paper's subset; soft re-draws
                seed=seed,
                **{core: getattr(self, ours) for ours, core in _SAMPLER_FIELDS.items()},
                **self.sampler_parameters(),
            )
        except SamplerOptionError as exc:
            flag = {core: ours for ours, core in _SAMPLER_FIELDS.items()}.get(exc.field, exc.field)
            raise ValueError(f"--int-selection.{flag.replace('_', '-')} {exc.problem}") from None


_SAMPLER_FIELDS = {"ratio": "ratio_kind", "r0": "r0", "interval": "interval_kind", "max_skips": "max_skips"}
""":class:`IntOptions` field (flag --int-selection.<field>) -> the :class:`IntSamplerConfig` field it sets (besides
the :class:`SamplerParameters`, which have the same names in both)."""


@dataclass
class IgaOptions:
    """IGA (inductive gradient adjustment) with groups of spatially contiguous points; methods.md section 2."""

    enabled: bool = False
    """Replace the residual by S R, S balancing the top eigenvalues of the eNTK on one point per group."""
    end: int | None = None
    """Number of balanced eNTK eigenvalues (None: 7 for ReLU+PE, 14 for SIREN/Gaussian, the IGA protocol's)."""
    group_size: int = 256
    """Points per group p, contiguous in Morton (Z-curve) order."""
    groups_per_step: int = 512
    """Groups drawn per step from a pool or voxel grid (fresh batches use batch_size // group_size groups)."""
    pool_groups: Literal["contiguous", "sorted"] = "contiguous"
    """How a pool batch is grouped (--points pool): contiguous draws groups_per_step whole groups of the
    Morton-ordered pool (the IGA protocol; batches are spatially clustered); sorted draws batch_size random
    pool points and cuts them, in Morton order, into groups of group_size (as fresh batches are)."""
    update_every: int = 1
    """Recompute S every m steps (1: every step, the paper's setting)."""
    identity: bool = False
    """Control: S = I through the same surrogate-loss path (gradient equal to the plain MSE's)."""
    morton_bits: int = 10
    """Bits per axis of the Morton codes that order the points."""


@dataclass
class LbfgsOptions:
    """L-BFGS settings (used when optimizer is lbfgs; full batch on a fixed pool)."""

    max_iter: int = 1
    """L-BFGS iterations per training step."""
    history_size: int = 20
    """Number of curvature pairs kept."""
    line_search: Literal["strong_wolfe", "none"] = "strong_wolfe"
    """Line search ('none' takes steps of size lr; required with several processes)."""


@dataclass
class DerivativeOptions:
    """Optional derivative term added to the SDF loss (task sdf only)."""

    kind: Literal["none", "eikonal", "normal"] = "none"
    """none; eikonal: mean (|grad f| - 1)^2; normal: mean |grad f - n|^2 on surface samples (n = outward normal)."""
    weight: float = 0.1
    """Weight of the term relative to the data loss (when weight_from is fixed)."""
    weight_from: Literal["fixed", "ntk-trace"] = "fixed"
    """fixed, or ntk-trace: weight tr(K) / tr(K'') from eNTK traces (normal term only: its label is linear)."""
    num_points: int = 4096
    """Points per step in the derivative term (surface samples for normal, batch points for eikonal)."""
    trace_points: int = 64
    """Points used to estimate the eNTK traces."""
    trace_every: int = 100
    """Re-estimate the trace weight every this many steps."""


@dataclass
class ShapeFitConfig:
    """Fit an SDF or occupancy network to a triangle mesh (``inr-shape fit``)."""

    mesh: Path
    """Input mesh (.obj, .ply or .off)."""
    output_dir: Path = Path("outputs/inr-shape")
    """Folder that receives the run folder."""
    run_name: str | None = None
    """Run folder name (None: '<mesh stem>-<protocol>-<timestamp>'). An existing, non-empty folder is never mixed
    with a new run: the new run goes to '<run-name>-2' (-3, ...) unless --resume is given."""
    resume: bool = False
    """Continue the run folder --run-name (None: the newest '<mesh stem>-<protocol>-*' folder) from its latest
    checkpoint: optimizer, step, random streams and metrics history carry on. Give the first run's flags again."""
    protocol: Protocol = "int"
    """Shape-fitting protocol: int (SDF, default), iga (voxel-grid occupancy, l2) or esgd (occupancy, BCE)."""
    task: Task | None = None
    """What the network predicts: sdf (negative inside) or occupancy (None: protocol's)."""
    loss: LossName | None = None
    """Data loss: mse, or bce on occupancy logits (None: protocol's)."""
    activation: Activation | None = None
    """MLP family: siren, gaussian or relu (+ positional encoding) (None: protocol's)."""
    width: int = 256
    """Hidden width of the MLP."""
    depth: int = 3
    """Number of hidden layers."""
    sigma: float = 0.09
    """Gaussian activation width (gaussian only; occupancy default 0.09)."""
    w0: float = 30.0
    """SIREN frequency factor (siren only)."""
    pe_frequencies: int = 8
    """Positional-encoding frequencies (relu only)."""
    fill: float = 0.9
    """Longest side of the normalised mesh's bounding box, inside the unit box [-0.5, 0.5]^3."""
    non_watertight: NonWatertight = "warn"
    """Non-watertight input: warn and use pysdf's robust ray-casting inside test, or error."""
    point_set: PointSet | None = None
    """Training points: samples (surface + noise + uniform) or voxels (voxel centres) (None: protocol's)."""
    points: PointMode | None = None
    """fresh batch every step, random batches from a fixed pool, or full: the whole pool every step."""
    batch_size: int | None = None
    """Points per step for fresh/pool (None: protocol's; split across processes)."""
    pool_size: int = 500_000
    """Size of the fixed pool of samples (pool/full modes)."""
    voxel_resolution: int = 128
    """Voxel grid resolution for point_set voxels."""
    coarse_fraction: float | None = None
    """Fraction of points = surface + coarse noise (None: protocol's)."""
    fine_fraction: float | None = None
    """Fraction of points = surface + fine noise (None: protocol's)."""
    uniform_fraction: float | None = None
    """Fraction of points uniform in the box (None: protocol's)."""
    noise: NoiseKind | None = None
    """Near-surface noise: laplace or gaussian (None: protocol's)."""
    coarse_scale: float | None = None
    """Coarse noise scale, unit-box units (None: protocol's)."""
    fine_scale: float | None = None
    """Fine noise scale, unit-box units (None: protocol's)."""
    optimizer: OptimizerName | None = None
    """adam, esgd or lbfgs (None: protocol's)."""
    lr: float | None = None
    """Learning rate (None: adam 1e-4, esgd 4 with its robust recipe and 0.15 with --esgd.recipe official, lbfgs 1)."""
    lr_final_factor: float = 1.0
    """Exponential learning-rate decay to lr * factor at the last step (1: constant; not for lbfgs)."""
    steps: int = 2000
    """Number of training steps."""
    int_selection: IntOptions = field(default_factory=IntOptions)
    """INT example selection."""
    iga: IgaOptions = field(default_factory=IgaOptions)
    """IGA gradient adjustment."""
    esgd: ESGDConfig = field(default_factory=ESGDConfig)
    """ESGD settings (used when optimizer is esgd; the lr is --lr; rademacher-seed None: --seed)."""
    lbfgs: LbfgsOptions = field(default_factory=LbfgsOptions)
    """L-BFGS settings."""
    derivative: DerivativeOptions = field(default_factory=DerivativeOptions)
    """Optional Eikonal / normal term."""
    eval_every: int = 500
    """Evaluate IoU (at eval_iou_resolution) every this many steps (0: only at the end)."""
    eval_iou_resolution: int = 64
    """Grid resolution of the intermediate IoU evaluations."""
    iou_resolution: int = 128
    """Grid resolution N of the final IoU (N^3 voxel centres)."""
    mesh_resolution: int = 256
    """Marching-cubes resolution of the extracted mesh (0: no mesh)."""
    mesh_format: Literal["ply", "obj"] = "ply"
    """Format of the extracted mesh."""
    chamfer_samples: int = 100_000
    """Surface samples per mesh for the Chamfer distance (0: skip)."""
    chunk_size: int = 1 << 17
    """Points per forward pass in evaluation and extraction (bounds memory)."""
    checkpoint_every: int = 500
    """Write a checkpoint every this many steps (0: only the final one)."""
    seed: int = 0
    """Random seed (initialisation and point sampling)."""
    device: str = "cpu"
    """Torch device."""
    num_threads: int | None = None
    """torch.set_num_threads per process (None: torch's default)."""
    num_processes: int = 1
    """Processes for data-parallel training (torch.distributed, gloo backend on CPU)."""
    progress: bool = True
    """Show a progress bar."""

    def sampling(self) -> SamplingConfig:
        """The point mixture (fractions, noise, scales) of a resolved config (ValueError if one is bad)."""
        fractions = (self.coarse_fraction, self.fine_fraction, self.uniform_fraction)
        return SamplingConfig(*fractions, self.noise, self.coarse_scale, self.fine_scale)


def _lookup(cfg: ShapeFitConfig, name: str) -> Any:
    value = getattr(cfg, name)
    return PROTOCOL_DEFAULTS[cfg.protocol][name] if value is None else value


def resolve_config(cfg: ShapeFitConfig) -> ShapeFitConfig:
    """Check every choice (:func:`nerf_inr_methods.cli.check_choices`), fill every None field from the protocol's
    defaults and validate the combination.

    Raises:
        ValueError: naming the flag(s) and what was expected.
    """
    check_choices(cfg)
    names = [n for n in PROTOCOL_DEFAULTS[cfg.protocol] if n != "lr"]
    out = dataclasses.replace(cfg, **{n: _lookup(cfg, n) for n in names})
    if out.lr is None:
        out.lr = default_lr(out.esgd.recipe) if out.optimizer == "esgd" else DEFAULT_LR[out.optimizer]
    iga = dataclasses.replace(out.iga)
    if iga.end is None:
        iga.end = 7 if out.activation == "relu" else 14
    out.iga = iga
    intopt = dataclasses.replace(out.int_selection)
    if intopt.max_interval is None:
        intopt.max_interval = min(90, max(10, out.steps // 100))
    out.int_selection = intopt
    validate_config(out)
    return out


def validate_config(cfg: ShapeFitConfig) -> None:
    """Check the ranges and combinations of a resolved configuration whose choices :func:`resolve_config` checked;
    raise ValueError naming the offending flag."""
    if cfg.task == "sdf" and cfg.loss == "bce":
        raise ValueError("--loss bce needs --task occupancy (BCE trains occupancy logits)")
    check_device(cfg.device, "--device")
    for flag, value in (("--width", cfg.width), ("--depth", cfg.depth), ("--steps", cfg.steps)):
        check_positive(value, flag)
    check_positive(cfg.pe_frequencies, "--pe-frequencies", 0)
    if not cfg.sigma > 0 or not cfg.w0 > 0:
        raise ValueError(f"--sigma and --w0 must be > 0, got {cfg.sigma} and {cfg.w0}")
    if not 0 < cfg.fill <= 1:
        raise ValueError(f"--fill must be in (0, 1], got {cfg.fill}")
    if cfg.point_set == "voxels" and cfg.points == "fresh":
        raise ValueError("--point-set voxels is a fixed set of points: use --points pool or --points full")
    check_positive(cfg.batch_size, "--batch-size")
    check_positive(cfg.pool_size, "--pool-size")
    check_positive(cfg.voxel_resolution, "--voxel-resolution", 2)
    cfg.sampling()  # validates fractions and scales
    if not (isinstance(cfg.lr, (int, float)) and math.isfinite(cfg.lr) and cfg.lr > 0):
        raise ValueError(f"--lr must be a finite number > 0, got {cfg.lr!r}")
    if not 0 < cfg.lr_final_factor <= 1:
        raise ValueError(f"--lr-final-factor must be in (0, 1], got {cfg.lr_final_factor}")
    if cfg.optimizer == "lbfgs":
        if cfg.points != "full":
            raise ValueError("--optimizer lbfgs is full-batch: use --points full (a fixed pool trained every step)")
        if cfg.iga.enabled:
            raise ValueError(
                "--iga.enabled cannot be combined with --optimizer lbfgs (its line search needs the true loss)"
            )
        if cfg.derivative.kind != "none":
            raise ValueError("--derivative.kind needs a first-order optimizer (adam or esgd), not lbfgs")
        check_positive(cfg.lbfgs.max_iter, "--lbfgs.max-iter")
        check_positive(cfg.lbfgs.history_size, "--lbfgs.history-size")
    if cfg.int_selection.enabled and cfg.iga.enabled:
        raise ValueError(
            "--int-selection.enabled and --iga.enabled cannot be combined: INT's top-k subset breaks IGA's groups "
            "of contiguous points"
        )
    if cfg.int_selection.random_subset and not cfg.int_selection.enabled:
        raise ValueError("--int-selection.random-subset is INT's control: it needs --int-selection.enabled")
    check_positive(cfg.int_selection.max_interval, "--int-selection.max-interval")
    check_positive(cfg.int_selection.error_map_resolution, "--int-selection.error-map-resolution")
    sampler = cfg.int_selection.sampler_config(cfg.int_selection.max_interval, cfg.seed)
    if cfg.int_selection.enabled and sampler.weights_loss and cfg.derivative.kind != "none":
        raise ValueError(
            f"--int-selection.sampler {sampler.sampler} weights each point's loss, which the --derivative.kind "
            "loss hook does not take: set --int-selection.alpha 0 or --derivative.kind none"
        )
    if cfg.iga.enabled:
        if cfg.loss != "mse":
            raise ValueError("--iga.enabled adjusts the residual of an l2 loss: use --loss mse")
        check_positive(cfg.iga.end, "--iga.end", 0)
        check_positive(cfg.iga.group_size, "--iga.group-size")
        check_positive(cfg.iga.groups_per_step, "--iga.groups-per-step")
        check_positive(cfg.iga.update_every, "--iga.update-every")
        if not 1 <= cfg.iga.morton_bits <= 21:
            raise ValueError(f"--iga.morton-bits must be in 1..21, got {cfg.iga.morton_bits}")
        sorted_batches = cfg.points == "fresh" or (cfg.points == "pool" and cfg.iga.pool_groups == "sorted")
        if sorted_batches and cfg.batch_size < 2 * cfg.iga.group_size:
            raise ValueError("--batch-size must hold at least 2 groups of --iga.group-size points")
    if cfg.derivative.kind != "none":
        if cfg.task != "sdf":
            raise ValueError("--derivative.kind eikonal/normal needs --task sdf")
        if cfg.derivative.weight_from == "ntk-trace" and cfg.derivative.kind != "normal":
            raise ValueError(
                "--derivative.weight-from ntk-trace applies to a linear derivative label (--derivative.kind normal); "
                "the Eikonal loss is nonlinear (methods.md 'beyond')"
            )
        if not cfg.derivative.weight >= 0:
            raise ValueError(f"--derivative.weight must be >= 0, got {cfg.derivative.weight}")
        check_positive(cfg.derivative.num_points, "--derivative.num-points")
        check_positive(cfg.derivative.trace_points, "--derivative.trace-points")
        check_positive(cfg.derivative.trace_every, "--derivative.trace-every")
    for flag, value, low in (
        ("--eval-every", cfg.eval_every, 0),
        ("--eval-iou-resolution", cfg.eval_iou_resolution, 2),
        ("--iou-resolution", cfg.iou_resolution, 2),
        ("--mesh-resolution", cfg.mesh_resolution, 0),
        ("--chamfer-samples", cfg.chamfer_samples, 0),
        ("--chunk-size", cfg.chunk_size, 1),
        ("--checkpoint-every", cfg.checkpoint_every, 0),
        ("--num-processes", cfg.num_processes, 1),
    ):
        check_positive(value, flag, low)
    if cfg.mesh_resolution == 1:
        raise ValueError("--mesh-resolution must be 0 (no mesh) or >= 2")
    if cfg.num_processes > 1:
        if cfg.optimizer == "esgd" and cfg.esgd.hvp_source == "hessian":
            raise ValueError(
                "--optimizer esgd (Hessian-vector products) is not supported with --num-processes > 1: "
                "DistributedDataParallel cannot backpropagate with create_graph=True; use one process or "
                "--esgd.hvp-source gradient"
            )
        if cfg.optimizer == "lbfgs" and cfg.lbfgs.line_search != "none":
            raise ValueError(
                "--optimizer lbfgs with --num-processes > 1 needs --lbfgs.line-search none (each process "
                "sees only its own loss, so line searches would diverge)"
            )
        if cfg.derivative.kind != "none":
            raise ValueError("--derivative.kind needs double backward, not supported with --num-processes > 1")


def config_to_dict(cfg: ShapeFitConfig) -> dict[str, Any]:
    """JSON-ready dict (paths as strings)."""
    d = dataclasses.asdict(cfg)
    for k, v in list(d.items()):
        if isinstance(v, Path):
            d[k] = str(v)
    return d


def config_from_dict(d: dict[str, Any]) -> ShapeFitConfig:
    """Inverse of :func:`config_to_dict`."""
    d = dict(d)
    nested = {
        "int_selection": IntOptions,
        "iga": IgaOptions,
        "esgd": ESGDConfig,
        "lbfgs": LbfgsOptions,
        "derivative": DerivativeOptions,
    }
    for key, cls in nested.items():
        if key in d and isinstance(d[key], dict):
            d[key] = cls(**d[key])
    d["mesh"] = Path(d["mesh"])
    d["output_dir"] = Path(d["output_dir"])
    return ShapeFitConfig(**d)
