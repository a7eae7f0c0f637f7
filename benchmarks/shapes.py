"""Shape fitting on real meshes: Adam baseline vs +INT vs ESGD (Gaussian) vs +IGA, same seeds and time budget.

Protocol (../shared/docs/benchmarks.md; shape protocol from ../shared/docs/methods.md):

- Data: ``../shared/data/meshes/`` (Stanford bunny, dragon), normalised into [-0.5, 0.5]^3 (longest side 0.9).
  Shape protocol "int" (the trainer's default): SDF regression (MSE), points = surface samples + Laplacian
  noise (scales 0.1 / 0.001, 45% each) + 10% uniform. CPU deviation, named in the output: random batches of
  ``--batch`` (8192) points from a fixed pool of ``--pool`` (262144) points drawn once, instead of a fresh 50k
  batch per step (on this CPU pysdf's signed distances for a fresh batch cost more than the training step:
  a 150 s dragon pilot made 462 steps with fresh 16k batches, IoU 0.873, vs 2053 steps from a 262k pool, IoU
  0.914; a 1M pool gave the same IoU as 262k). Full-batch training on the pool (``--points full``, the
  previous design, which lets INT reuse its selection over the interval schedule) was worse still: 239 steps,
  IoU 0.825 on the 65k pool. With random batches the candidate set changes every step, so INT scores every
  batch (a no-grad forward) and trains on its top ``ratio`` share: the interval schedule has nothing to reuse.
  SIREN w0 = 60 (``--w0``): the unit box [-0.5, 0.5] halves SIREN's input range [-1, 1], so 60 here is
  SIREN's 30 (dragon pilot at 150 s: IoU 0.936 with 60 vs 0.921 with 30).
- Variants (all through ``nerf_inr_methods.shapes.train``): ``adam`` SIREN + Adam (baseline); ``int`` the same +
  INT (step ratio from 0.2, incremental interval, max interval min(90, max(10, steps // 100))); ``esgd``
  Gaussian MLP (sigma 0.09) + ESGD (official defaults apart from lr) under *its own* shape protocol "esgd"
  (occupancy with BCE, 1/3 uniform + 2/3 near-surface with Gaussian noise 0.1 / 0.01, same pool size: a
  pilot gave the Gaussian MLP IoU 0.74 (Adam) / 0.84 (ESGD) on the SDF protocol vs 0.93 on its own);
  ``iga`` SIREN + Adam + IGA (end 14) on the same random batches as ``adam``, cut in Morton order into groups of 256
  (``--iga.pool-groups sorted``; ``iga-identity`` then trains exactly like ``adam``, a test checks it). Drawing
  whole Morton-contiguous groups of the pool instead (the IGA voxel protocol's draw) makes spatially clustered
  batches that cost accuracy by themselves: in a pilot (bunny, 20 s, seed 0) IGA with contiguous groups reached IoU
  0.966 vs Adam's 0.983, and its S = I control 0.921 vs Adam's 0.970 in the 5 s tuning runs. The ablations (on by
  default, ``--no-controls`` skips them): ``int-random`` (random subset, same schedule), ``iga-identity`` (S = I
  through the surrogate path), ``esgd-g2`` (g^2 instead of (Hv)^2), ``adam-gaussian`` (the Gaussian MLP with Adam on
  the esgd protocol: ESGD's paper comparison). INT's samplers, by ``--variants`` only: ``int-soft`` (soft mining),
  ``int-error-map`` (per-voxel error map, no scoring pass), ``int-two-forward``, each on INT's schedule and batches
  (the core's samplers, as on NeRF rays and image pixels). Same width/depth for all; the learning rate decays
  exponentially to 0.1x over each run for every variant.
- Learning rates: each variant's lr is tuned on its own grid (Adam-based: 3e-4, 1e-3, 3e-3; robust ESGD: 0.45, 1.35,
  4, 12; official ESGD: 0.05, 0.15, 0.5; a best lr on an edge extends the grid by x3 steps, ``--max-extensions``
  times) on a validation setting (the bunny, tuning seed 100, not used below; IoU at 64^3 after ``--tune-budget``
  seconds); the winners are used on both meshes.
- Clock and time budget: the training clock is the process's CPU time with one intra-op thread (wall
  time on this shared machine swings 2-3x with other jobs; CPU time measures the work). It includes
  batch/pool sampling, INT scoring passes, eNTK + eigh and double backward, and excludes evaluation; wall
  seconds are reported next to it. Each variant's number of steps is ``budget / (CPU seconds per step)``
  from a short calibration run of that variant on that mesh.
- Evaluation: IoU at 64^3 every 1/6 of the run (the curve), final IoU at 128^3 voxel centres against the
  mesh's inside test (pysdf robust mode; both meshes are not watertight: see the trainer's fallback),
  Chamfer-L1 (unit-box units) between the mesh extracted at 128^3 and the input, 20k samples each.
  Time to reach the baseline's final IoU (64^3 curve, linear interpolation between evaluations) per seed,
  paired against the baseline's own time to reach it. ``--seeds`` paired seeds; threads fixed by
  ``--threads`` (default 1, the machine is shared); runs of one seed are interleaved across variants.
- Verdicts: mean +- std of paired differences (method - baseline); |mean| < 2 std prints
  "not resolvable at this scale".

Usage (from the repository root):
    .venv/bin/python -m benchmarks.shapes             # with ablations: 36 min here (--no-controls: ~half)
    .venv/bin/python -m benchmarks.shapes --quick     # ~2 min smoke version (bunny, 1 seed, no tuning)
    .venv/bin/python -m benchmarks.shapes --target-run 600 --target-variant adam   # the 0.98-IoU check
    .venv/bin/python -m benchmarks.shapes --from-json benchmarks/results/shapes.json   # re-make its tables
Writes benchmarks/results/shapes.json (shapes_quick.json / shapes_target.json).
"""

from __future__ import annotations

import json
import math
import statistics
import tempfile
import time
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, List, Literal

import numpy as np

from benchmarks import common
from benchmarks.common import fmt_pm, markdown_table, paired_stats, plateau_gain, time_to_target, verdict
from nerf_inr_methods.core.esgd import ESGDConfig
from nerf_inr_methods.shapes.config import IgaOptions, IntOptions, ShapeFitConfig
from nerf_inr_methods.shapes.data import NonWatertightMeshWarning
from nerf_inr_methods.shapes.train import train_shape

REPO_ROOT = Path(__file__).resolve().parent.parent
MESH_DIR = REPO_ROOT.parent / "shared" / "data" / "meshes"
MeshName = Literal["bunny", "dragon"]
MESHES: dict[MeshName, str] = {"bunny": "stanford-bunny.obj", "dragon": "dragon.ply"}
VariantName = Literal["adam", "int", "esgd", "iga"]
VARIANTS: tuple[VariantName, ...] = ("adam", "int", "esgd", "iga")
CONTROLS = ("int-random", "iga-identity", "esgd-g2", "adam-gaussian", "esgd-official")
SAMPLERS = ("int-soft", "int-error-map", "int-two-forward")
"""INT's samplers (the core's, as in NeRF and the 2D control) on INT's schedule, by --variants only."""
ALL_VARIANTS = (*VARIANTS, *CONTROLS, *SAMPLERS)
LR_GRIDS = {"adam": (3e-4, 1e-3, 3e-3), "esgd": (0.45, 1.35, 4.0, 12.0), "esgd-official": (0.05, 0.15, 0.5)}
"""lr grids: Adam-based variants; ESGD's robust recipe (the default; its decayed maximum of (Hv)^2 takes larger lrs:
about 4 on the image control); ESGD's official recipe."""
CURVE_RES = 64
FINAL_RES = 128
TUNE_SEED = 100


def variant_config(base: ShapeFitConfig, variant: str) -> ShapeFitConfig:
    """The config of one variant on top of the shared base config."""
    if variant == "adam":
        return replace(base, optimizer="adam", activation="siren")
    if variant in ("int", "int-random", *SAMPLERS):
        sampler = variant.removeprefix("int-") if variant in SAMPLERS else "int"
        selection = IntOptions(enabled=True, random_subset=variant == "int-random", sampler=sampler)
        return replace(base, optimizer="adam", activation="siren", int_selection=selection)
    if variant in ("esgd", "esgd-g2", "esgd-official"):
        esgd = ESGDConfig(
            recipe="official" if variant == "esgd-official" else "robust",
            hvp_source="gradient" if variant == "esgd-g2" else "hessian",
        )
        return replace(base, protocol="esgd", optimizer="esgd", activation="gaussian", esgd=esgd)
    if variant == "adam-gaussian":
        return replace(base, protocol="esgd", optimizer="adam", activation="gaussian")
    if variant in ("iga", "iga-identity"):
        # pool mode: the plain random batch cut in Morton order into groups of 256 (pool_groups "sorted")
        iga = IgaOptions(enabled=True, group_size=256, end=14, pool_groups="sorted", identity=variant == "iga-identity")
        return replace(base, optimizer="adam", activation="siren", iga=iga)
    raise ValueError(f"unknown variant {variant!r}")


def lr_grid(variant: str) -> tuple[float, ...]:
    if variant == "esgd-official":
        return LR_GRIDS["esgd-official"]
    return LR_GRIDS["esgd" if variant.startswith("esgd") else "adam"]


def run_one(base: ShapeFitConfig, variant: str, lr: float, steps: int, seed: int, final: bool) -> dict[str, Any]:
    """Train one variant; return its curve (train seconds, IoU@64), final IoU@128 and Chamfer."""
    cfg = replace(
        variant_config(base, variant),
        lr=lr,
        steps=steps,
        seed=seed,
        eval_every=max(1, steps // 6),
        eval_iou_resolution=CURVE_RES,
        iou_resolution=FINAL_RES if final else CURVE_RES,
        mesh_resolution=FINAL_RES if final else 0,
        chamfer_samples=20_000 if final else 0,
        run_name=f"{Path(base.mesh).stem}-{variant}-lr{lr:g}-s{seed}-{steps}",
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NonWatertightMeshWarning)
        warnings.simplefilter("ignore", UserWarning)
        res = train_shape(cfg)
    m = res.metrics
    curve = [c for c in m["eval_curve"] if f"iou_{CURVE_RES}" in c]
    return {
        "variant": variant,
        "protocol": m["protocol"],
        "lr": lr,
        "seed": seed,
        "steps": steps,
        "train_s": m["timings"]["train_cpu_s"],
        "train_wall_s": m["timings"]["train_s"],
        "points_trained": m["points_trained"],
        "points_scored": m["points_scored"],
        "curve_t": [c["train_cpu_s"] for c in curve],
        "curve_wall_t": [c["train_s"] for c in curve],
        "curve_step": [c["step"] for c in curve],
        "curve_iou": [c[f"iou_{CURVE_RES}"] for c in curve],
        "iou_final": m["iou"],
        "iou_final_resolution": m["iou_resolution"],
        "chamfer": (m["chamfer"] or {}).get("chamfer_l1") if final else None,
        "final_loss": m["final_loss"],
    }


def calibrate(base: ShapeFitConfig, variant: str, lr: float, budget: float) -> int:
    """Number of steps of a variant that fit in ``budget`` training seconds, from a short timed run.

    Generic variants: median step time over 30 steps (the first, with allocations, skipped). ESGD variants:
    60 steps, so that both kinds of step are timed (50 warm-up curvature steps, then plain ones), and the
    schedule (curvature every ``update_d_every`` steps after the warm-up) is accounted for.
    """
    esgd = variant.startswith("esgd")
    steps = 60 if esgd else 30
    cfg = replace(
        variant_config(base, variant),
        lr=lr,
        steps=steps,
        eval_every=0,
        iou_resolution=16,
        eval_iou_resolution=16,
        mesh_resolution=0,
        chamfer_samples=0,
        run_name=f"calib-{Path(base.mesh).stem}-{variant}",
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = train_shape(cfg)
    cpu = res.cpu_time
    dt = [b - a for a, b in zip(cpu[:-1], cpu[1:], strict=True)]  # CPU seconds of steps 1..n-1
    if not esgd:
        return max(12, int(budget / statistics.median(dt)))
    warm, every = cfg.esgd.d_warmup, cfg.esgd.update_d_every
    t_curv, t_plain = statistics.median(dt[: warm - 1]), statistics.median(dt[warm:])
    if budget <= warm * t_curv:
        return max(12, int(budget / t_curv))
    per_step = t_plain + max(0.0, t_curv - t_plain) / every
    return max(12, warm + int((budget - warm * t_curv) / per_step))


def tune(
    base: ShapeFitConfig, variants: list[str], budget: float, log: list[str], max_extensions: int = 2
) -> dict[str, Any]:
    """Best lr per variant on the validation setting (bunny, tuning seed) by final IoU at 64^3; a grid whose best
    sits on an edge is extended by x3 steps, ``max_extensions`` times at most."""
    out: dict[str, Any] = {}
    for variant in variants:
        steps = calibrate(base, variant, lr_grid(variant)[1], budget)
        scores = common.search_lr(
            lambda lr, v=variant, n=steps: run_one(base, v, lr, n, TUNE_SEED, final=False)["iou_final"],
            lr_grid(variant),
            max_extensions,
        )
        best = max(scores, key=lambda k: scores[k])
        out[variant] = {"grid": list(scores), "iou64": list(scores.values()), "best_lr": best, "steps": steps}
        log.append(f"tune {variant}: steps {steps}, IoU@64 {scores} -> lr {best:g}")
        print(log[-1], flush=True)
    return out


def summarize(
    mesh: str, runs: list[dict[str, Any]], variants: list[str], baseline: str = "adam"
) -> tuple[str, dict[str, Any]]:
    """Markdown table and paired statistics of one mesh's runs (differences: variant - ``baseline``)."""
    by = {v: sorted([r for r in runs if r["variant"] == v], key=lambda r: r["seed"]) for v in variants}
    base = by[baseline]
    rows, stats = [], {}
    for v in variants:
        rs = by[v]
        ious = [r["iou_final"] for r in rs]
        chs = [r["chamfer"] for r in rs if r["chamfer"] is not None]
        ratios, ttts, base_at, variant_at = [], [], [], []
        for b, r in zip(base, rs, strict=True):
            t_common = min(b["curve_t"][-1], r["curve_t"][-1])  # the calibrated budgets differ by up to ~30%
            base_at.append(float(np.interp(t_common, b["curve_t"], b["curve_iou"])))
            variant_at.append(float(np.interp(t_common, r["curve_t"], r["curve_iou"])))
            target = b["curve_iou"][-1]
            t_base = time_to_target(b["curve_t"], b["curve_iou"], target)
            t_var = time_to_target(r["curve_t"], r["curve_iou"], target)
            ttts.append(t_var)
            ratios.append(t_var / t_base if (t_var is not None and t_base) else math.inf)
        d_iou = paired_stats([r["iou_final"] for r in base], ious)
        finite = [x for x in ratios if math.isfinite(x)]
        d_eq = paired_stats(base_at, variant_at)
        stats[v] = {
            "iou128": ious,
            "chamfer": chs,
            "time_to_baseline_iou_s": ttts,
            "time_ratio": ratios,
            "iou_diff_vs_adam" if baseline == "adam" else f"iou_diff_vs_{baseline}": d_iou,
            "verdict_iou": "baseline" if v == baseline else verdict(d_iou["mean"], d_iou["std"], what=v),
            "iou64_diff_equal_time": d_eq,
            "verdict_equal_time": "baseline" if v == baseline else verdict(d_eq["mean"], d_eq["std"], what=v),
            "reached": f"{len(finite)}/{len(ratios)}",
            "plateau_gain_iou64": [plateau_gain(r["curve_step"], r["curve_iou"]) for r in rs],
        }
        rows.append(
            [
                v,
                rs[0]["protocol"],
                f"{rs[0]['lr']:g}",
                f"{statistics.mean(r['steps'] for r in rs):.0f}",
                fmt_pm(statistics.mean(r["train_s"] for r in rs), _std([r["train_s"] for r in rs]), 1),
                fmt_pm(statistics.mean(ious), _std(ious), 4),
                fmt_pm(statistics.mean(chs), _std(chs), 5) if chs else "-",
                fmt_pm(statistics.mean(finite), _std(finite), 2) if finite else "never",
                stats[v]["reached"],
                "-" if v == baseline else f"{fmt_pm(d_iou['mean'], d_iou['std'], 4)} ({stats[v]['verdict_iou']})",
                "-" if v == baseline else f"{fmt_pm(d_eq['mean'], d_eq['std'], 4)} ({stats[v]['verdict_equal_time']})",
            ]
        )
    headers = [
        "variant",
        "protocol",
        "lr",
        "steps",
        "train CPU s",
        f"IoU@{FINAL_RES}^3",
        "Chamfer-L1",
        f"time to {baseline} IoU / {baseline}'s",
        "reached",
        f"IoU diff vs {baseline}",
        f"IoU@{CURVE_RES} diff at equal time",
    ]
    return f"### {mesh}\n\n" + markdown_table(headers, rows), stats


def _ratio_text(stats: dict[str, Any]) -> str:
    """Mean time-to-baseline ratio over the seeds that reached it, and how many did."""
    finite = [x for x in stats["time_ratio"] if math.isfinite(x)]
    return (f"{statistics.mean(finite):.2f}x" if finite else "never") + f" ({stats['reached']} seeds reached it)"


def points_text(args: ShapesConfig, pool: int) -> str:
    """How the training points were drawn, for the protocol line."""
    if args.points == "full":
        return f"a fixed pool of {pool} points, full batch"
    return f"random batches of {args.batch} from a fixed pool of {pool} points"


def _std(xs: list[float]) -> float:
    return statistics.stdev(xs) if len(xs) > 1 else math.nan


@dataclass
class ShapesConfig(common.BenchmarkOptions):
    """Shape fitting on real meshes: Adam baseline vs +INT vs ESGD (Gaussian) vs +IGA, same seeds and time budget
    (--quick: ~2 min, bunny, 1 seed, no tuning)."""

    seeds: int = 3
    """Paired seeds."""
    budget: float = 20.0
    """Training CPU seconds per run."""
    tune_budget: float = 5.0
    """Training CPU seconds per tuning run (0: no tuning)."""
    max_extensions: int = 2
    """How many times a grid whose best lr sits on an edge is extended by one x3 step beyond it."""
    meshes: List[MeshName] = field(default_factory=lambda: list(MESHES))
    """Meshes to fit."""
    width: int = 64
    """Hidden width of every variant's MLP."""
    depth: int = 3
    """Hidden layers of every variant's MLP."""
    pool: int = 262144
    """Fixed pool of training points."""
    points: Literal["pool", "full"] = "pool"
    """Random --batch points a step, or the whole pool."""
    batch: int = 8192
    """Points per step with --points pool."""
    w0: float = 60.0
    """SIREN frequency factor (60 on the unit box = 30 on [-1, 1])."""
    controls: bool = True
    """Also run the ablations int-random, iga-identity, esgd-g2, adam-gaussian and esgd-official (off with --quick)."""
    variants: tuple[str, ...] = ()
    """Run only these variants (any of the variants and controls; empty: the variants, plus the controls unless
    --no-controls). The baseline must be among them."""
    baseline: str = "adam"
    """Variant the others are compared with (e.g. adam-gaussian for ESGD vs Adam on the Gaussian MLP)."""
    target_run: float = 0.0
    """Seconds: train --target-variant once per mesh."""
    target_variant: VariantName = "adam"
    """Variant of --target-run."""
    target_width: int = 128
    """MLP width of --target-run."""
    target_pool: int = 262144
    """Pool of --target-run."""
    target_lr: float = 5e-4
    """Learning rate of --target-run."""
    target_lr_final: float = 0.01
    """--target-run: the lr decays to this factor over the run."""
    output_dir: Path | None = None
    """Run folders (default: a temporary folder)."""
    from_json: Path | None = None
    """Re-make the tables and summary of a saved shapes.json (no training)."""

    def resolved(self) -> ShapesConfig:
        """A copy with the --quick settings in place (they override the flags they name)."""
        if not self.meshes:
            raise ValueError("--meshes: give at least one of " + ", ".join(MESHES))
        unknown = [v for v in (*self.variants, self.baseline) if v not in ALL_VARIANTS]
        if unknown:
            raise ValueError(f"--variants / --baseline: unknown {unknown}; expected some of {', '.join(ALL_VARIANTS)}")
        if self.variants and self.baseline not in self.variants:
            raise ValueError(f"--variants must include the baseline {self.baseline!r}")
        if not self.quick:
            return replace(self, meshes=list(self.meshes))
        return replace(self, seeds=1, budget=8.0, tune_budget=0.0, meshes=["bunny"], controls=False)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Parse ``argv`` (default: the command line) and run the benchmark; returns the payload written."""
    args = common.parse(ShapesConfig, argv, description=__doc__.split("\n")[0])
    for name in args.meshes:
        if not (MESH_DIR / MESHES[name]).exists():
            raise FileNotFoundError(f"mesh {MESH_DIR / MESHES[name]} not found (../shared/data is needed)")
    tmp = tempfile.TemporaryDirectory(prefix="inr-shape-bench-")
    out_dir = args.output_dir or Path(tmp.name)
    t_start = time.perf_counter()

    def base_for(mesh: str, width: int, pool: int, lr_final_factor: float = 0.1) -> ShapeFitConfig:
        return ShapeFitConfig(
            mesh=MESH_DIR / MESHES[mesh],
            output_dir=out_dir,
            protocol="int",
            width=width,
            depth=args.depth,
            points=args.points,
            pool_size=pool,
            batch_size=args.batch if args.points == "pool" else None,
            w0=args.w0,
            lr_final_factor=lr_final_factor,
            checkpoint_every=0,
            num_threads=args.threads or None,
            progress=False,
        )

    if args.target_run > 0:
        return target_run(args, base_for, t_start)
    if args.from_json is not None:
        return report(args, json.loads(args.from_json.read_text()))

    variants = list(args.variants) or list(VARIANTS) + (list(CONTROLS) if args.controls else [])
    log: list[str] = []
    tuning: dict[str, Any] = {}
    if args.tune_budget > 0:
        tuning = tune(base_for("bunny", args.width, args.pool), variants, args.tune_budget, log, args.max_extensions)
    lrs = {v: tuning[v]["best_lr"] if v in tuning else lr_grid(v)[1] for v in variants}

    runs: dict[str, list[dict[str, Any]]] = {m: [] for m in args.meshes}
    steps_of: dict[str, dict[str, int]] = {}
    for mesh in args.meshes:
        base = base_for(mesh, args.width, args.pool)
        steps_of[mesh] = {}
        for v in variants:
            steps_of[mesh][v] = calibrate(base, v, lrs[v], args.budget)
            log.append(f"calibrate {mesh} {v}: {steps_of[mesh][v]} steps for {args.budget:g} s")
            print(log[-1], flush=True)
    for seed in range(args.seeds):
        for mesh in args.meshes:
            base = base_for(mesh, args.width, args.pool)
            for v in variants:
                r = run_one(base, v, lrs[v], steps_of[mesh][v], seed, final=True)
                runs[mesh].append(r)
                print(
                    f"{mesh} seed {seed} {v}: IoU@{FINAL_RES} {r['iou_final']:.4f} chamfer {r['chamfer']} "
                    f"train {r['train_s']:.1f}s steps {r['steps']} curve {[round(x, 4) for x in r['curve_iou']]}",
                    flush=True,
                )

    payload = {
        "command": common.command_line(),
        "environment": common.environment_info(),
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "tuning": tuning,
        "lr": lrs,
        "steps": steps_of,
        "runs": runs,
        "log": log,
        "elapsed_s": time.perf_counter() - t_start,
    }
    payload = report(args, payload)
    tmp.cleanup()
    return payload


def report(args: ShapesConfig, payload: dict[str, Any]) -> dict[str, Any]:
    """Tables, paired statistics and summary of the runs in ``payload``; prints them and writes the JSON.

    With ``--from-json`` the payload is a saved shapes.json: its own settings (meshes, budget, pool, ...) are used.
    """
    if args.from_json is not None:
        saved = payload["args"]
        for key in (
            "meshes",
            "budget",
            "seeds",
            "width",
            "depth",
            "pool",
            "points",
            "batch",
            "w0",
            "threads",
            "baseline",
        ):
            if key in saved:
                setattr(args, key, saved[key])
        payload["resummarized_by"] = common.command_line()
    runs, lrs, tuning = payload["runs"], payload["lr"], payload["tuning"]
    variants = list(lrs)
    tables, stats = [], {}
    for mesh in args.meshes:
        table, stats[mesh] = summarize(mesh, runs[mesh], variants, args.baseline)
        tables.append(table)
    elapsed = payload["elapsed_s"]
    protocol = (
        f"shape protocol 'int' (SDF MSE; Laplace 0.1/0.001 + 10% uniform; ESGD/Gaussian rows: protocol 'esgd', "
        f"occupancy BCE) on {points_text(args, args.pool)}; SIREN w0 {args.w0:g}; MLP {args.depth}x{args.width}; "
        f"budget {args.budget:g} s/run; {args.seeds} paired seeds; "
        f"{args.threads} thread(s); machine shared"
    )
    print(f"\nProtocol: {protocol}")
    print("LR grid winners: " + ", ".join(f"{v} {lrs[v]:g}" for v in variants) + (" (untuned)" if not tuning else ""))
    for t in tables:
        print("\n" + t)
    summary = []
    for mesh in args.meshes:
        s = stats[mesh]
        best = max(variants, key=lambda v: statistics.mean(s[v]["iou128"]))
        parts = [
            f"{v} time to {args.baseline} IoU {_ratio_text(s[v])}"
            for v in variants
            if v in ("int", "esgd") and v != args.baseline
        ]
        if "esgd" in variants and args.baseline != "esgd":
            d = s["esgd"]["iou64_diff_equal_time"]
            parts.append(f"esgd IoU@{CURVE_RES} at equal time {fmt_pm(d['mean'], d['std'], 4)}")
        parts.append(f"best {best} IoU@128 {statistics.mean(s[best]['iou128']):.4f} (target >= 0.98)")
        summary.append(f"{mesh}: " + "; ".join(parts))
    line = "Summary: " + "; ".join(summary) + f"; total {elapsed / 60:.1f} min"
    print("\n" + line)
    payload.update(
        {"protocol": protocol, "stats": stats, "summary": line, "not_resolvable_text": common.NOT_RESOLVABLE}
    )
    if args.from_json is not None:  # back into the file it came from
        path = common.write_results(args.from_json.stem, payload, args.from_json.parent)
    else:
        path = common.write_results(args.results_stem("shapes"), payload, args.results_dir)
    print(f"wrote {path}")
    return payload


def target_run(args: ShapesConfig, base_for, t_start: float) -> dict[str, Any]:
    """Train one variant per mesh for ``--target-run`` seconds (the 0.98-IoU target), bigger net and pool."""
    results = {}
    for mesh in args.meshes:
        base = base_for(mesh, args.target_width, args.target_pool, args.target_lr_final)
        steps = calibrate(base, args.target_variant, args.target_lr, args.target_run)
        r = run_one(base, args.target_variant, args.target_lr, steps, 0, final=True)
        results[mesh] = r
        print(
            f"{mesh} {args.target_variant}: IoU@{FINAL_RES} {r['iou_final']:.4f} chamfer {r['chamfer']} "
            f"train {r['train_s']:.1f}s steps {steps} curve {[round(x, 4) for x in r['curve_iou']]}",
            flush=True,
        )
    protocol = (
        f"shape protocol 'int' on {points_text(args, args.target_pool)}; SIREN w0 {args.w0:g}; MLP {args.depth}x"
        f"{args.target_width}; {args.target_variant}, lr {args.target_lr:g} decaying to {args.target_lr_final:g}x; "
        f"budget {args.target_run:g} s; {args.threads} thread(s); machine shared"
    )
    rows = [[m, f"{r['iou_final']:.4f}", r["chamfer"], f"{r['train_s']:.0f}", r["steps"]] for m, r in results.items()]
    print(f"\nProtocol: {protocol}\n")
    print(markdown_table(["mesh", f"IoU@{FINAL_RES}^3", "Chamfer-L1", "train s", "steps"], rows))
    ok = all(r["iou_final"] >= 0.98 for r in results.values())
    line = f"Summary: target IoU >= 0.98 within {args.target_run:g} s: {'met' if ok else 'not met'} " + ", ".join(
        f"{m} {r['iou_final']:.4f}" for m, r in results.items()
    )
    print("\n" + line)
    payload = {
        "protocol": protocol,
        "command": common.command_line(),
        "environment": common.environment_info(),
        "runs": results,
        "summary": line,
        "elapsed_s": time.perf_counter() - t_start,
    }
    print(f"wrote {common.write_results('shapes_target', payload, args.results_dir)}")
    return payload


if __name__ == "__main__":
    try:
        main()
    except (ValueError, FileNotFoundError) as error:  # bad flags or missing data: one line, no traceback
        raise SystemExit(f"benchmarks/shapes.py: error: {error}") from None
