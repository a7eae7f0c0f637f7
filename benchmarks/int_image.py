"""INT positive control: SIREN fitting skimage's ``camera()`` with Adam, with and without INT.

Protocol (../shared/docs/benchmarks.md):

1. Learning-rate tuning, per method, over the same grid (>= 3 values): train on 90% of the pixels with a
   tuning seed not used later, pick the lr with the best PSNR on the 10% held-out pixels at the end.
2. For each of >= 3 paired seeds (same SIREN initialisation for every method): baseline (all pixels every
   step), INT (paper defaults: "step" ratio from 0.2, "incremental" interval) and the random-subset control
   (same sizes and schedule, uniformly random pixels, no scoring pass), each at its tuned lr, fitting all
   pixels; full-image PSNR evaluated at fixed steps (evaluation excluded from the clock; INT scoring passes
   included). The three runs of a seed advance in lockstep (one step each in turn), so load changes on the
   shared machine hit all clocks alike.
3. Report: final PSNRs, the baseline's plateau gain (< 0.1 dB over the last 20% of steps = plateau), the time
   INT (and random) needs to reach the baseline's final PSNR as a fraction of the baseline's training time
   (paper: INT <= 0.7x), points processed, and paired differences mean +- std with the 2-std rule.

Run from the repository root: ``python -m benchmarks.int_image`` (full, < 15 min on 2 idle cores) or
``--quick`` (~2 min smoke run, written to ``int_image_quick.json``).
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, List, Literal

import numpy as np
import torch
from torch import Tensor

from benchmarks import common
from benchmarks.common import finish, fmt_pm, log, markdown_table, paired_stats, verdict
from nerf_inr_methods.coordfit import FitHistory, fit_iter, predict, psnr_from_mse
from nerf_inr_methods.core.int_selection import IntervalKind, IntSchedule, RatioKind
from nerf_inr_methods.core.mlp import make_mlp

METHODS = ("baseline", "int", "random")


@dataclass
class IntImageConfig(common.BenchmarkOptions):
    """INT positive control: SIREN fitting skimage's camera() with Adam, with and without INT (--quick: ~2 min,
    smaller image, network and run)."""

    size: int | None = None
    """Image side after downscaling camera() (default 128; quick 48)."""
    width: int | None = None
    """SIREN hidden width (default 64; quick 32)."""
    depth: int = 3
    """SIREN hidden layers."""
    w0: float = 30.0
    """SIREN frequency factor."""
    steps: int | None = None
    """Training steps T (default 600; quick 200)."""
    lr_schedule: Literal["cosine", "constant"] = "cosine"
    """Adam lr schedule (every method)."""
    seeds: List[int] = field(default_factory=lambda: [0, 1, 2])
    """Paired seeds."""
    tune_seed: int = 1000
    """Seed of the lr-tuning runs and the val split."""
    lrs: List[float] = field(default_factory=lambda: [3e-4, 1e-3, 3e-3])
    """Adam lr grid (every method)."""
    r0: float = 0.2
    """INT starting ratio."""
    ratio: RatioKind = "step"
    """INT ratio schedule (paper: step)."""
    interval: IntervalKind = "incremental"
    """INT interval schedule (paper: incremental)."""
    max_interval: int | None = None
    """INT max interval (default min(90, T // 50))."""
    num_evals: int = 50
    """Number of evaluations along training."""

    def resolved(self) -> IntImageConfig:
        """A copy with the defaults of the full or quick run filled in and the inputs checked."""
        q = self.quick
        c = self.with_run_defaults("int_image", size=(128, 48), width=(64, 32), steps=(600, 200))
        c = dataclasses.replace(
            c, seeds=list(c.seeds), lrs=list(c.lrs), max_interval=c.max_interval or max(1, min(90, c.steps // 50))
        )
        if len(c.lrs) < 3 and not q:
            raise ValueError(f"--lrs: the protocol needs a grid of at least 3 values, got {c.lrs}")
        if len(c.seeds) < 3 and not q:
            raise ValueError(f"--seeds: the protocol needs at least 3 paired seeds, got {c.seeds}")
        if c.tune_seed in c.seeds:
            raise ValueError(f"--tune-seed {c.tune_seed} must differ from the evaluation --seeds {c.seeds}")
        return c


def load_camera(size: int) -> tuple[Tensor, Tensor]:
    """skimage's 512x512 ``camera()`` resized (anti-aliased) to size x size.

    Returns:
        coords (size*size, 2) in [-1, 1] (row, col), pixels (size*size, 1) in [0, 1], float32.
    """
    import skimage.data
    import skimage.transform

    if not 8 <= size <= 512:
        raise ValueError(f"--size must be in [8, 512] (camera() is 512x512), got {size}")
    img = skimage.data.camera().astype(np.float32) / 255.0
    if size != img.shape[0]:
        img = skimage.transform.resize(img, (size, size), anti_aliasing=True).astype(np.float32)
    return common.pixel_grid(size), torch.from_numpy(np.ascontiguousarray(img)).reshape(-1, 1)


def mse_psnr(model: torch.nn.Module, coords: Tensor, pixels: Tensor) -> float:
    """PSNR (dB) of the model on these pixels (signal range [0, 1])."""
    return psnr_from_mse(float(((predict(model, coords) - pixels) ** 2).mean()))


def run_lockstep(
    specs: list[tuple[str, float]],
    seed: int,
    train: tuple[Tensor, Tensor],
    evals: dict[str, tuple[Tensor, Tensor]],
    args: IntImageConfig,
) -> list[dict[str, Any]]:
    """Train one SIREN per (method, lr) in ``specs`` from the same seed, advanced in lockstep.

    One step of each run in turn (order rotated every step), so load changes on a shared machine hit every
    run's clock alike; each clock counts only its own steps (INT scoring included, evaluation excluded).

    Returns:
        One dict per spec: eval steps, train seconds and points at each evaluation, PSNR curves, totals.
    """
    eval_steps = sorted(set(range(0, args.steps + 1, max(1, args.steps // args.num_evals))) | {args.steps})

    def eval_fn(m: torch.nn.Module, step: int) -> dict[str, float]:
        return {name: mse_psnr(m, c, p) for name, (c, p) in evals.items()}

    gens = []
    for method, lr in specs:
        if method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {method!r}")
        torch.manual_seed(seed)  # identical initialisation for every method at this seed
        model = make_mlp(2, 1, width=args.width, depth=args.depth, activation="siren", w0=args.w0)
        opt = torch.optim.Adam(model.parameters(), lr=lr)
        lr_scheduler = None
        if args.lr_schedule == "cosine":  # as INT's public image code: cosine annealing to 1e-6 over T steps
            lr_scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(opt, args.steps, eta_min=1e-6)
        schedule = None
        if method != "baseline":
            schedule = IntSchedule(
                total_steps=args.steps,
                ratio_kind=args.ratio,
                r0=args.r0,
                interval_kind=args.interval,
                max_interval=args.max_interval,
            )
        gens.append(
            fit_iter(
                model,
                opt,
                args.steps,
                *train,
                int_schedule=schedule,
                random_subset=method == "random",
                generator=torch.Generator().manual_seed(seed),
                lr_scheduler=lr_scheduler,
                eval_fn=eval_fn,
                eval_steps=eval_steps,
            )
        )
    hists: list[FitHistory] = [FitHistory() for _ in gens]
    for step in range(args.steps):
        for k in range(len(gens)):
            i = (k + step) % len(gens)
            hists[i] = next(gens[i])

    outs = []
    for (method, lr), hist in zip(specs, hists, strict=True):
        out: dict[str, Any] = {
            "method": method,
            "lr": lr,
            "seed": seed,
            "eval_steps": hist.eval_steps,
            "eval_time": hist.eval_time,
            "eval_points_trained": hist.eval_points_trained,
            "eval_points_scored": hist.eval_points_scored,
            "train_time": hist.time[-1],
            "points_trained": hist.points_trained[-1],
            "points_scored": hist.points_scored[-1],
            "num_selections": int(sum(hist.selected)) if method != "baseline" else 0,
        }
        for name in evals:
            out[f"psnr_{name}"] = hist.eval_series(name)
            out[f"final_psnr_{name}"] = out[f"psnr_{name}"][-1]
        outs.append(out)
    return outs


def tune_lrs(coords: Tensor, pixels: Tensor, args: IntImageConfig, log: Any) -> dict[str, Any]:
    """Per-method lr from the grid, by final PSNR on held-out pixels (90/10 split, tuning seed)."""
    n = coords.shape[0]
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(args.tune_seed))
    n_val = max(1, n // 10)
    val, tr = perm[:n_val], perm[n_val:]
    runs: dict[str, dict[str, float]] = {m: {} for m in METHODS}
    for lr in args.lrs:
        specs = [(m, lr) for m in METHODS]
        results = run_lockstep(
            specs, args.tune_seed, (coords[tr], pixels[tr]), {"val": (coords[val], pixels[val])}, args
        )
        for res in results:
            runs[res["method"]][str(lr)] = res["final_psnr_val"]
            psnr, secs = res["final_psnr_val"], res["train_time"]
            log(f"  tune {res['method']:8s} lr={lr:g}: val PSNR {psnr:.2f} dB ({secs:.1f} s)")
    best = {m: float(max(runs[m], key=lambda k: runs[m][k])) for m in METHODS}
    return {"val_psnr": runs, "best_lr": best, "num_val_pixels": n_val, "num_train_pixels": n - n_val}


def summarize(runs: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Per-seed target times, equal-time PSNRs and paired statistics (method - baseline, same seed)."""
    per_seed = []
    for i, b in enumerate(runs["baseline"]):
        target = b["final_psnr_full"]
        row: dict[str, Any] = {
            "seed": b["seed"],
            "target_psnr": target,
            "baseline_time": b["train_time"],
            "baseline_plateau_gain_db": common.plateau_gain(b["eval_steps"], b["psnr_full"], 0.2),
        }
        for m in ("int", "random"):
            r = runs[m][i]
            t = common.time_to_target(r["eval_time"], r["psnr_full"], target)
            row[f"{m}_time_to_target"] = t
            row[f"{m}_time_ratio"] = t / b["train_time"] if t is not None else None
            # Load-independent view: steps and points trained (forward + backward) / scored up to the target.
            j = next((k for k, v in enumerate(r["psnr_full"]) if v >= target), None)
            row[f"{m}_steps_to_target"] = r["eval_steps"][j] if j is not None else None
            row[f"{m}_points_trained_ratio"] = (
                r["eval_points_trained"][j] / b["points_trained"] if j is not None else None
            )
            row[f"{m}_points_scored_to_target"] = r["eval_points_scored"][j] if j is not None else None
            # Equal-time view: the baseline's PSNR after as much training time as this method used in total.
            at = float(np.interp(r["train_time"], b["eval_time"], b["psnr_full"]))
            row[f"baseline_psnr_at_{m}_time"] = at
        per_seed.append(row)

    def finals(m: str) -> list[float]:
        return [r["final_psnr_full"] for r in runs[m]]

    stats = {
        "psnr_int_minus_baseline": paired_stats(finals("baseline"), finals("int")),
        "psnr_int_minus_baseline_equal_time": paired_stats(
            [r["baseline_psnr_at_int_time"] for r in per_seed], finals("int")
        ),
        "psnr_random_minus_baseline": paired_stats(finals("baseline"), finals("random")),
        "psnr_int_minus_random": paired_stats(finals("random"), finals("int")),
    }
    reached = [r["int_time_to_target"] is not None for r in per_seed]
    out: dict[str, Any] = {
        "per_seed": per_seed,
        "paired": stats,
        "int_reached_target": f"{sum(reached)}/{len(reached)}",
    }
    if all(reached):
        stats["time_to_target_int_minus_baseline"] = paired_stats(
            [r["baseline_time"] for r in per_seed], [r["int_time_to_target"] for r in per_seed]
        )
        ratios = [r["int_time_ratio"] for r in per_seed]
        out["int_time_ratio_mean"] = float(np.mean(ratios))
        out["int_time_ratio_std"] = float(np.std(ratios, ddof=1)) if len(ratios) > 1 else math.nan
    return out


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Parse ``argv`` (default: the command line), run the benchmark, write the JSON; returns its payload."""
    args = common.parse(IntImageConfig, argv)
    start = time.perf_counter()
    coords, pixels = load_camera(args.size)
    log(
        f"INT image control: camera() {args.size}x{args.size}, SIREN {args.depth}x{args.width} (w0 {args.w0:g}), "
        f"Adam ({args.lr_schedule} lr), T={args.steps}, {torch.get_num_threads()} thread(s), "
        f"INT {args.ratio} ratio r0={args.r0} + {args.interval} interval (max {args.max_interval}), "
        f"seeds {args.seeds}, lr grid {args.lrs}"
    )
    tuning = tune_lrs(coords, pixels, args, log)
    log("  tuned lr (best val PSNR): " + ", ".join(f"{m} {tuning['best_lr'][m]:g}" for m in METHODS))

    runs: dict[str, list[dict[str, Any]]] = {m: [] for m in METHODS}
    for seed in args.seeds:
        specs = [(m, tuning["best_lr"][m]) for m in METHODS]
        for res in run_lockstep(specs, seed, (coords, pixels), {"full": (coords, pixels)}, args):
            runs[res["method"]].append(res)
            log(f"  seed {seed} {res['method']:8s}: {res['final_psnr_full']:.2f} dB in {res['train_time']:.1f} s")
    summary = summarize(runs)

    rows = []
    for r, b, i_, rd in zip(summary["per_seed"], runs["baseline"], runs["int"], runs["random"], strict=True):
        rows.append(
            [
                r["seed"],
                b["final_psnr_full"],
                r["baseline_plateau_gain_db"],
                b["train_time"],
                i_["final_psnr_full"],
                i_["train_time"],
                r["baseline_psnr_at_int_time"],
                r["int_time_to_target"],
                r["int_time_ratio"],
                rd["final_psnr_full"],
                rd["train_time"],
                r["random_time_to_target"],
            ]
        )
    headers = [
        "seed",
        "base PSNR",
        "base gain last 20% (dB)",
        "base time (s)",
        "INT PSNR",
        "INT time (s)",
        "base PSNR at INT time",
        "INT time to base PSNR (s)",
        "INT time ratio",
        "random PSNR",
        "random time (s)",
        "random time to base PSNR (s)",
    ]
    log("")
    log(markdown_table(headers, rows))
    log("")
    st = summary["paired"]
    diff_rows = []
    for key, label, higher, who in (
        ("psnr_int_minus_baseline", "final PSNR, INT - baseline, equal steps (dB)", True, "INT"),
        ("psnr_int_minus_baseline_equal_time", "PSNR, INT - baseline, equal time (dB)", True, "INT"),
        ("psnr_random_minus_baseline", "final PSNR, random - baseline, equal steps (dB)", True, "random"),
        ("psnr_int_minus_random", "final PSNR, INT - random, equal steps (dB)", True, "INT"),
        ("time_to_target_int_minus_baseline", "time to baseline final PSNR, INT - baseline (s)", False, "INT"),
    ):
        if key in st:
            s_ = st[key]
            diff_rows.append([label, fmt_pm(s_["mean"], s_["std"]), verdict(s_["mean"], s_["std"], higher, what=who)])
    log(markdown_table(["paired difference (mean +- std over seeds)", "value", "verdict"], diff_rows))
    plateau_ok = all(r["baseline_plateau_gain_db"] < 0.1 for r in summary["per_seed"])
    if not plateau_ok:
        log("WARNING: the baseline gained >= 0.1 dB over its last 20% of steps on some seed (not at plateau).")

    if "int_time_ratio_mean" in summary:
        t_st = st["time_to_target_int_minus_baseline"]
        ratio_txt = fmt_pm(summary["int_time_ratio_mean"], summary["int_time_ratio_std"])
        time_txt = (
            f"INT reaches the baseline's final PSNR in {ratio_txt}x "
            f"its time (paper <= 0.7x; {verdict(t_st['mean'], t_st['std'], False, what='INT')})"
        )
    else:
        time_txt = (
            f"INT did NOT reach the baseline's final PSNR within {args.steps} steps on "
            f"{len(summary['per_seed']) - int(summary['int_reached_target'].split('/')[0])}/{len(summary['per_seed'])} "
            "seeds (paper: <= 0.7x time)"
        )
    p_st, e_st, r_st = (
        st["psnr_int_minus_baseline"],
        st["psnr_int_minus_baseline_equal_time"],
        st["psnr_int_minus_random"],
    )
    summary_line = (
        f"SUMMARY int_image: {time_txt}; INT - baseline {fmt_pm(p_st['mean'], p_st['std'])} dB at equal steps "
        f"({verdict(p_st['mean'], p_st['std'], True, what='INT')}), {fmt_pm(e_st['mean'], e_st['std'])} dB at equal "
        f"time ({verdict(e_st['mean'], e_st['std'], True, what='INT')}); INT - random "
        f"{fmt_pm(r_st['mean'], r_st['std'])} dB ({verdict(r_st['mean'], r_st['std'], True, what='INT')}); "
        f"baseline plateau {'yes' if plateau_ok else 'NO'}; shared machine."
    )
    results = {
        "tuning": tuning,
        "runs": runs,
        "summary": summary,
        "baseline_at_plateau": plateau_ok,
        "not_resolvable_label": common.NOT_RESOLVABLE,
    }
    return finish("int_image", args, results, summary_line, start=start)


if __name__ == "__main__":
    main()
