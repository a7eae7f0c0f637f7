"""Robust ESGD's image control: a Gaussian MLP fitting a photograph, Adam vs robust / official ESGD vs ablations.

Protocol (../shared/docs/benchmarks.md, issue 17):

- Signal: ``skimage.data.astronaut()`` downscaled to ``size`` px (256), values in [0, 1], pixel-centre coordinates
  in [-1, 1]^2; lr tuning on ``skimage.data.chelsea()`` (centre crop, same size) with a seed not used on the test
  image. Network: ``make_mlp(2, 3, 256, 4, "gaussian", sigma=0.05)`` (the official image set-up), default init,
  the same init and pixel order (epoch-wise shuffled batches of ``batch`` = 512 pixels) per seed for every arm.
- Arms (:data:`ARMS`): ``adam``; ``esgd-robust`` (``ESGDConfig(recipe="robust")``); ``esgd-official`` (the official
  INR code's recipe); ``esgd-g2`` (the robust recipe with ``(Hv)^2`` replaced by ``g^2``, identical schedule); and
  one ablation per robust option (the robust recipe with that option set back to the official value, at the robust
  arm's lr, so each changes one thing: ``-1draw``, ``-no-warmup``, ``-mean``, ``-no-bound``; ``-bound0.03`` a looser
  bound), plus ``esgd-official-draws`` (the
  official recipe with the robust step-0 draws only, at the official arm's lr). Ablations run on the first
  ``ablation_seeds`` seeds.
- Learning rates (constant; a grid whose best sits on an edge is extended by x3 steps, ``max_extensions`` times):
  ``adam`` and ``esgd-g2`` on ``adam_lr_grid``, ``esgd-robust`` on ``robust_lr_grid``,
  ``esgd-official`` on ``official_lr_grid`` (3 values each, x3 spacing), best final PSNR on the validation image.
- Clock: training wall-clock and process CPU time of every step (forward, backward, the double backwards of
  curvature steps, the extra draws of the first one, batch gathering); evaluation excluded. PSNR on the pixels of
  every ``eval_stride``-th row and column (a fixed 1/16 of the image with stride 4) every ``eval_every`` steps
  and at step 0, and on the full image at the end. Runs of one seed are interleaved, so load hits them alike.
- Stability (per run): final PSNR above the initial one, and the largest single update of any weight (or bias)
  relative to its layer's init range ``1 / sqrt(fan_in)`` (PyTorch's default bound), over all steps.
- Targets: steps and seconds for a run to reach the paired Adam run's final PSNR (mean of the evaluations in the
  last 10% of steps), as a fraction of Adam's own first crossing of that level; robust ESGD needs <= 0.6x steps and
  <= 0.8x wall-clock on every seed.

Run from the repository root: ``python -m benchmarks.esgd_robust`` (~15-20 min, 1 thread) or ``--quick`` (a smoke
run written to a temporary folder unless ``--results-dir`` is given). Writes ``benchmarks/results/esgd_robust.json``
with a list ``runs`` of ``{optimizer, seed, lr, curve: [{step, train_seconds, cpu_seconds, psnr}], ...}``.
"""

from __future__ import annotations

import math
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Literal, Tuple

import torch
import tyro
from torch import Tensor, nn

from benchmarks import common
from benchmarks.common import (
    fmt_pm,
    log,
    lr_beyond_edge,
    markdown_table,
    mean_std,
    paired_stats,
    time_to_target,
    verdict,
)
from benchmarks.esgd_image import load_image
from nerf_inr_methods.coordfit import optimization_step, predict, psnr_from_mse
from nerf_inr_methods.core.esgd import RECIPES, ESGDConfig
from nerf_inr_methods.core.mlp import make_mlp


@dataclass(frozen=True)
class Arm:
    """One optimizer of the study: Adam, or ESGD with config overrides; which lr grid it is tuned on (or whose lr)."""

    kind: Literal["adam", "esgd"]
    esgd: Dict[str, Any] = field(default_factory=dict)
    """ESGDConfig fields (recipe and overrides)."""
    grid: Literal["adam", "robust", "official"] | None = None
    """Tuned on this grid; None: takes the lr of ``lr_of``."""
    lr_of: str | None = None
    """Arm whose tuned lr this ablation uses (it changes one option, not the lr)."""
    what: str = ""


def _official(name: str) -> Any:
    return RECIPES["official"][name]


ARMS: Dict[str, Arm] = {
    "adam": Arm("adam", grid="adam", what="torch Adam"),
    "esgd-robust": Arm("esgd", {"recipe": "robust"}, grid="robust", what="the robust recipe (default)"),
    "esgd-official": Arm("esgd", {"recipe": "official"}, grid="official", what="the official INR code's recipe"),
    "esgd-g2": Arm(
        "esgd", {"recipe": "robust", "hvp_source": "gradient"}, grid="adam", what="robust, g^2 instead of (Hv)^2"
    ),
    "esgd-robust-1draw": Arm(
        "esgd", {"recipe": "robust", "init_draws": 1}, lr_of="esgd-robust", what="robust, one draw at step 0"
    ),
    "esgd-robust-no-warmup": Arm(
        "esgd", {"recipe": "robust", "lr_warmup": 0.0}, lr_of="esgd-robust", what="robust without the lr warm-up"
    ),
    "esgd-robust-mean": Arm(
        "esgd",
        {"recipe": "robust", "d_statistic": "mean", "d_bias_correction": "curvature_steps"},
        lr_of="esgd-robust",
        what="robust with the EMA of (Hv)^2 (bias-corrected by curvature steps) instead of the decayed max",
    ),
    "esgd-robust-no-bound": Arm(
        "esgd",
        {"recipe": "robust", "update_bound": 0.0},
        lr_of="esgd-robust",
        what="robust without the step bound (preconditioned step entries not clipped)",
    ),
    "esgd-robust-bound0.03": Arm(
        "esgd",
        {"recipe": "robust", "update_bound": 0.03},
        lr_of="esgd-robust",
        what="robust, each preconditioned step entry clipped to +-0.03",
    ),
    "esgd-official-draws": Arm(
        "esgd",
        {"recipe": "official", "init_draws": RECIPES["robust"]["init_draws"]},
        lr_of="esgd-official",
        what="official + the robust recipe's step-0 draws only",
    ),
}
"""Every arm the benchmark knows; ``--arms`` picks a subset (adam is required: it sets the targets)."""
MAIN_ARMS: Tuple[str, ...] = ("adam", "esgd-robust", "esgd-official", "esgd-g2")
TARGET_STEP_RATIO, TARGET_TIME_RATIO = 0.6, 0.8


@dataclass
class EsgdRobustConfig(common.BenchmarkOptions):
    """Robust ESGD vs Adam on a 256 px photograph (Gaussian MLP 4x256, batches of 512 pixels, 5 seeds; --quick: 32 px,
    width 32, 40 steps, 2 seeds, written to a temporary folder unless --results-dir is given)."""

    size: int = 256
    """Image side in pixels."""
    width: int = 256
    """Hidden width of the Gaussian MLP."""
    depth: int = 4
    """Number of hidden (Gaussian) layers."""
    sigma: float = 0.05
    """Gaussian activation width (images: 0.05)."""
    batch: int = 512
    """Pixels per step."""
    steps: int = 1000
    """Optimisation steps per run."""
    eval_every: int = 50
    """Evaluate PSNR every this many steps (and at step 0 and the last step)."""
    eval_stride: int = 4
    """Evaluation pixels: every eval_stride-th row and column (1: the full image)."""
    final_window: float = 0.1
    """Final PSNR = mean of the evaluations in this last fraction of the steps."""
    seeds: Tuple[int, ...] = (0, 1, 2, 3, 4)
    """Paired seeds on the test image (init, pixel order, Rademacher vectors)."""
    arms: Tuple[str, ...] = tuple(ARMS)
    """Arms to run (adam is required)."""
    ablation_seeds: int | None = 2
    """Run the ablation arms (all but adam, esgd-robust, esgd-official, esgd-g2) on this many seeds (None: all)."""
    adam_lr_grid: Tuple[float, ...] = (1.7e-4, 5e-4, 1.5e-3)
    """lr grid of adam and esgd-g2 (x3 spacing)."""
    robust_lr_grid: Tuple[float, ...] = (1.35, 4.0, 12.0)
    """lr grid of esgd-robust (x3 spacing; the decayed max of (Hv)^2 makes its steps smaller than the official's)."""
    official_lr_grid: Tuple[float, ...] = (0.05, 0.15, 0.45)
    """lr grid of esgd-official (x3 spacing around the official code's 0.15)."""
    tune_steps: int | None = None
    """Steps of the lr-tuning runs (None: steps)."""
    tune_seed: int = 1000
    """Seed of the tuning runs (not a test seed)."""
    max_extensions: int = 2
    """How many times a tuned arm's grid may be extended by one x3 step while its best lr is on an edge."""
    lr: Dict[str, float] = field(default_factory=dict)
    """Skip tuning: arm -> lr (e.g. from an earlier run)."""


QUICK = dict(size=32, width=32, batch=64, steps=40, eval_every=10, seeds=(0, 1), tune_steps=20, max_extensions=0)


# ----------------------------------------------------------------------------------------------------- runs
def init_bounds(net: nn.Module) -> Dict[str, float]:
    """PyTorch's default init range ``1 / sqrt(fan_in)`` of every parameter of the MLP's linear layers."""
    bounds = {}
    for name, module in net.named_modules():
        if isinstance(module, nn.Linear):
            for pname, _ in module.named_parameters():
                bounds[f"{name}.{pname}"] = 1.0 / math.sqrt(module.in_features)
    return bounds


def build_optimizer(arm: Arm, params: Any, lr: float, seed: int) -> torch.optim.Optimizer:
    if arm.kind == "adam":
        return torch.optim.Adam(params, lr=lr)
    return ESGDConfig(**arm.esgd, rademacher_seed=seed).build(params, lr=lr)


def run_one(
    name: str, lr: float, seed: int, image: Tuple[Tensor, Tensor], cfg: EsgdRobustConfig, steps: int, final: bool
):
    """A generator training one network: yields after every step (so runs of one seed interleave), returns
    the run's record."""
    coords, colors = image
    arm = ARMS[name]
    torch.manual_seed(seed)
    net = make_mlp(2, 3, cfg.width, cfg.depth, "gaussian", sigma=cfg.sigma)
    bounds = init_bounds(net)
    named = list(net.named_parameters())
    opt = build_optimizer(arm, net.parameters(), lr, seed)
    side = int(round(math.sqrt(coords.shape[0])))
    grid = torch.arange(side * side).reshape(side, side)[:: cfg.eval_stride, :: cfg.eval_stride].reshape(-1)
    eval_coords, eval_colors = coords[grid], colors[grid]

    def psnr(c: Tensor, y: Tensor) -> float:
        mse = float(((predict(net, c) - y) ** 2).mean())
        return psnr_from_mse(mse) if math.isfinite(mse) else -math.inf

    order = torch.Generator().manual_seed(10_000 + seed)
    n, per_epoch = coords.shape[0], coords.shape[0] // cfg.batch
    perm = torch.empty(0, dtype=torch.long)
    curve = [{"step": 0, "train_seconds": 0.0, "cpu_seconds": 0.0, "psnr": psnr(eval_coords, eval_colors)}]
    wall = cpu = 0.0
    max_ratio, max_ratio_where, max_update = 0.0, "", 0.0
    first_ratio = 0.0  # the largest update ratio over the first 10 steps
    for step in range(steps):
        before = [p.detach().clone() for _, p in named]
        t0, c0 = time.perf_counter(), time.process_time()
        if step % per_epoch == 0:
            perm = torch.randperm(n, generator=order)
        idx = perm[(step % per_epoch) * cfg.batch : (step % per_epoch + 1) * cfg.batch]
        optimization_step(net, opt, coords[idx], colors[idx])
        wall += time.perf_counter() - t0
        cpu += time.process_time() - c0
        for (pname, p), b in zip(named, before, strict=True):
            update = float((p.detach() - b).abs().max())
            max_update = max(max_update, update)
            ratio = update / bounds[pname]
            if step < 10:
                first_ratio = max(first_ratio, ratio)
            if ratio > max_ratio:
                max_ratio, max_ratio_where = ratio, f"{pname} at step {step}"
        done = step + 1
        if done % cfg.eval_every == 0 or done == steps:
            curve.append(
                {"step": done, "train_seconds": wall, "cpu_seconds": cpu, "psnr": psnr(eval_coords, eval_colors)}
            )
        yield None
    window = [c["psnr"] for c in curve[1:] if c["step"] >= (1 - cfg.final_window) * steps] or [curve[-1]["psnr"]]
    record = {
        "optimizer": name,
        "seed": seed,
        "lr": lr,
        "curve": curve,
        "initial_psnr": curve[0]["psnr"],
        "final_psnr": statistics.fmean(window),
        "last_psnr": curve[-1]["psnr"],
        "full_image_final_psnr": psnr(coords, colors) if final else None,
        "max_update": max_update,
        "max_update_over_init_range": max_ratio,
        "max_update_over_init_range_where": max_ratio_where,
        "max_update_over_init_range_first10": first_ratio,
        "curvature_steps": getattr(opt, "num_curvature_steps", 0),
        "train_seconds": wall,
        "cpu_seconds": cpu,
    }
    return record


def run_interleaved(tasks: List[Tuple[str, float, int]], image, cfg: EsgdRobustConfig, steps: int, final: bool):
    """Train ``tasks`` (arm, lr, seed) step by step in lockstep; return their records in order."""
    gens = [run_one(name, lr, seed, image, cfg, steps, final) for name, lr, seed in tasks]
    records: List[Dict[str, Any] | None] = [None] * len(gens)
    while any(r is None for r in records):
        for i, gen in enumerate(gens):
            if records[i] is None:
                try:
                    next(gen)
                except StopIteration as stop:
                    records[i] = stop.value
    return records


# -------------------------------------------------------------------------------------------------- analysis
def reach(run: Dict[str, Any], target: float) -> Tuple[float | None, float | None, float | None]:
    """(steps, wall seconds, CPU seconds) at which a run's curve first reaches ``target`` (None if never)."""
    curve = run["curve"]
    psnrs = [c["psnr"] for c in curve]
    return tuple(time_to_target([c[k] for c in curve], psnrs, target) for k in ("step", "train_seconds", "cpu_seconds"))  # type: ignore[return-value]


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or b <= 0 else a / b


def _cell(values: List[float | None], digits: int = 2) -> str:
    got = [v for v in values if v is not None]
    if not got:
        return f"never (0/{len(values)})"
    text = fmt_pm(*mean_std(got), digits) if len(got) > 1 else f"{got[0]:.{digits}f}"
    return text if len(got) == len(values) else f"{text} ({len(got)}/{len(values)} seeds)"


def summarize(runs: List[Dict[str, Any]], arms: List[str]) -> Dict[str, Any]:
    """Per arm: finals, stability, steps / seconds to Adam's final PSNR (ratios to Adam's own crossing)."""
    by = {(r["optimizer"], r["seed"]): r for r in runs}
    seeds = sorted({r["seed"] for r in runs if r["optimizer"] == "adam"})
    out: Dict[str, Any] = {}
    for arm in arms:
        arm_seeds = [s for s in seeds if (arm, s) in by]
        rows = []
        for s in arm_seeds:
            adam, run = by[("adam", s)], by[(arm, s)]
            target = adam["final_psnr"]
            a_steps, a_wall, a_cpu = reach(adam, target)
            steps, wall, cpu = reach(run, target)
            rows.append(
                {
                    "seed": s,
                    "target_psnr": target,
                    "steps_to_target": steps,
                    "seconds_to_target": wall,
                    "step_ratio": _ratio(steps, a_steps),
                    "time_ratio": _ratio(wall, a_wall),
                    "cpu_ratio": _ratio(cpu, a_cpu),
                    "final_psnr": run["final_psnr"],
                    "initial_psnr": run["initial_psnr"],
                    "ends_above_initial": run["final_psnr"] > run["initial_psnr"]
                    and run["last_psnr"] > run["initial_psnr"],
                    "max_update_over_init_range": run["max_update_over_init_range"],
                }
            )
        finals = paired_stats([by[("adam", s)]["final_psnr"] for s in arm_seeds], [r["final_psnr"] for r in rows])
        finals["verdict"] = verdict(finals["mean"], finals["std"], True, what=arm)
        stable = [r["ends_above_initial"] and r["max_update_over_init_range"] <= 1.0 for r in rows]
        steps_ok = [r["step_ratio"] is not None and r["step_ratio"] <= TARGET_STEP_RATIO for r in rows]
        time_ok = [r["time_ratio"] is not None and r["time_ratio"] <= TARGET_TIME_RATIO for r in rows]
        out[arm] = {
            "per_seed": rows,
            "final_minus_adam": finals,
            "stable_seeds": sum(stable),
            "n_seeds": len(rows),
            "targets_met_seeds": sum(a and b for a, b in zip(steps_ok, time_ok, strict=True)),
        }
    return out


# ------------------------------------------------------------------------------------------------------ main
def tune(cfg: EsgdRobustConfig, arms: List[str], log) -> Tuple[Dict[str, float], Dict[str, Dict[str, float]]]:
    """Best lr per tuned arm on the validation image (runs of one lr interleaved across arms)."""
    steps = cfg.tune_steps or cfg.steps
    image = load_image("chelsea", cfg.size)
    tuned = [a for a in arms if ARMS[a].grid is not None and a not in cfg.lr]
    grid_of = {"adam": cfg.adam_lr_grid, "robust": cfg.robust_lr_grid, "official": cfg.official_lr_grid}
    grids = {a: grid_of[ARMS[a].grid] for a in tuned}  # type: ignore[index]
    scores: Dict[str, Dict[str, float]] = {a: {} for a in tuned}

    def score(tasks: List[Tuple[str, float, int]], note: str = "") -> None:
        for (a, lr, _), rec in zip(tasks, run_interleaved(tasks, image, cfg, steps, final=False), strict=True):
            scores[a][f"{lr:g}"] = rec["final_psnr"]
            log(f"[tune] {a:24s} lr {lr:<8g} validation final PSNR {rec['final_psnr']:.2f} dB{note}")

    for i in range(max((len(g) for g in grids.values()), default=0)):
        score([(a, grids[a][i], cfg.tune_seed) for a in tuned if i < len(grids[a])])
    for _ in range(cfg.max_extensions):  # a best lr on a grid's edge: one x3 step beyond it, interleaved
        beyond = {a: lr_beyond_edge({float(k): v for k, v in scores[a].items()}) for a in tuned}
        tasks = [(a, lr, cfg.tune_seed) for a, lr in beyond.items() if lr is not None]
        if not tasks:
            break
        score(tasks, " (grid extended)")
    best = {a: float(max(s, key=lambda k: s[k])) for a, s in scores.items()}
    best.update({a: float(v) for a, v in cfg.lr.items()})
    for a in arms:
        if ARMS[a].grid is None:
            if ARMS[a].lr_of not in best:
                raise ValueError(f"--arms: {a} takes the lr of {ARMS[a].lr_of}, which is not in --arms or --lr")
            best[a] = best[ARMS[a].lr_of]
    return best, scores


def main(cfg: EsgdRobustConfig) -> Dict[str, Any]:
    """Run the benchmark; print the tables and the summary line; write the JSON. Returns the payload."""
    if cfg.quick:
        for k, v in QUICK.items():
            setattr(cfg, k, v)
        cfg.arms = tuple(a for a in cfg.arms if a in MAIN_ARMS) or MAIN_ARMS
    unknown = [a for a in cfg.arms if a not in ARMS]
    if unknown or "adam" not in cfg.arms:
        raise ValueError(f"--arms must include adam and name arms from {tuple(ARMS)}, got {cfg.arms}")
    if cfg.size < 8 or cfg.batch < 1 or cfg.batch > cfg.size**2 or cfg.steps < 1 or cfg.eval_every < 1:
        raise ValueError("--size >= 8, 1 <= --batch <= size^2, --steps >= 1 and --eval-every >= 1 are required")
    cfg.use_threads()
    start = time.perf_counter()

    arms = list(cfg.arms)
    best_lr, tuning = tune(cfg, arms, log)
    image = load_image("astronaut", cfg.size)
    runs: List[Dict[str, Any]] = []
    for i, seed in enumerate(cfg.seeds):
        names = [a for a in arms if a in MAIN_ARMS or cfg.ablation_seeds is None or i < cfg.ablation_seeds]
        records = run_interleaved([(a, best_lr[a], seed) for a in names], image, cfg, cfg.steps, final=True)
        for rec in records:
            runs.append(rec)
            log(
                f"[test] seed {seed} {rec['optimizer']:24s} lr {rec['lr']:<8g} final {rec['final_psnr']:.2f} dB "
                f"(initial {rec['initial_psnr']:.2f}), max update / init range "
                f"{rec['max_update_over_init_range']:.3g}, train {rec['train_seconds']:.1f} s"
            )
    summary = summarize(runs, arms)

    headers = ["arm", "lr", "final PSNR", "- Adam (paired)", "stable", "x Adam steps", "x Adam wall", "x Adam CPU"]
    headers += ["max update / init range", "curv. steps", "train s"]
    rows = []
    for a in arms:
        s, rs = summary[a], [r for r in runs if r["optimizer"] == a]
        per = s["per_seed"]
        rows.append(
            [
                a,
                f"{best_lr[a]:g}",
                fmt_pm(*mean_std([r["final_psnr"] for r in rs])),
                fmt_pm(s["final_minus_adam"]["mean"], s["final_minus_adam"]["std"]),
                f"{s['stable_seeds']}/{s['n_seeds']}",
                _cell([p["step_ratio"] for p in per]),
                _cell([p["time_ratio"] for p in per]),
                _cell([p["cpu_ratio"] for p in per]),
                f"{max(r['max_update_over_init_range'] for r in rs):.3g}",
                rs[0]["curvature_steps"],
                fmt_pm(*mean_std([r["train_seconds"] for r in rs]), 1),
            ]
        )
    log("")
    log(
        f"Gaussian MLP {cfg.depth}x{cfg.width} (sigma {cfg.sigma}) on astronaut {cfg.size} px, batches of {cfg.batch} "
        f"px, {cfg.steps} steps, seeds {list(cfg.seeds)}, {cfg.threads} thread(s), shared machine. lr tuned on chelsea."
    )
    for a, sc in tuning.items():
        log(f"  tuning {a}: " + ", ".join(f"{lr}: {v:.2f} dB" for lr, v in sc.items()))
    log(markdown_table(headers, rows))

    robust = summary.get("esgd-robust")
    parts = []
    if robust:
        per = robust["per_seed"]
        met = robust["targets_met_seeds"] == robust["n_seeds"] and robust["stable_seeds"] == robust["n_seeds"]
        parts.append(
            f"robust ESGD stable on {robust['stable_seeds']}/{robust['n_seeds']} seeds, reaches Adam's final PSNR in "
            f"{_cell([p['step_ratio'] for p in per])}x its steps and {_cell([p['time_ratio'] for p in per])}x its "
            f"wall-clock (targets <= {TARGET_STEP_RATIO} / {TARGET_TIME_RATIO} on every seed: "
            f"{'met' if met else 'MISSED'})"
        )
    for a in arms:
        if a not in ("adam", "esgd-robust"):
            s = summary[a]
            step_cell = _cell([p["step_ratio"] for p in s["per_seed"]])
            parts.append(
                f"{a}: stable {s['stable_seeds']}/{s['n_seeds']}, steps {step_cell}x"
                f", final {fmt_pm(s['final_minus_adam']['mean'], s['final_minus_adam']['std'])} dB vs Adam"
            )
    summary_line = f"SUMMARY esgd_robust ({cfg.size} px, T={cfg.steps}, {len(cfg.seeds)} seeds): " + "; ".join(parts)
    log("")
    log(summary_line)
    payload = {
        "benchmark": "esgd_robust",
        "quick": cfg.quick,
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(cfg).items()},
        "arms": {a: asdict(ARMS[a]) for a in arms},
        "recipes": RECIPES,
        "command": common.command_line(),
        "environment": common.environment_info(),
        "best_lr": best_lr,
        "tuning_validation_final_psnr": tuning,
        "summary": summary,
        "summary_line": summary_line,
        "runs": runs,
        "wall_clock_total_s": time.perf_counter() - start,
    }
    results_dir = cfg.results_dir
    if results_dir is None and cfg.quick:
        results_dir = Path(tempfile.mkdtemp(prefix="esgd_robust_quick_"))
    path = common.write_results(cfg.results_stem("esgd_robust"), payload, results_dir)
    log(f"wrote {path} ({payload['wall_clock_total_s']:.0f} s wall clock)")
    return payload


if __name__ == "__main__":
    main(tyro.cli(EsgdRobustConfig))
