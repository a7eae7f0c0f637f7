"""ESGD positive control: a Gaussian-activation MLP fitting a photograph, ESGD vs Adam vs the g^2 ablation.

Protocol (../shared/docs/benchmarks.md):

- Signal: ``skimage.data.astronaut()`` (512 x 512 colour) downscaled to ``--size`` (anti-aliased), values in
  [0, 1], pixel-centre coordinates in [-1, 1]^2.
- Training: mini-batches of ``--batch`` pixels (512, as in the official ESGD image code), epoch-wise shuffled
  with a per-seed generator, so every optimizer sees the same pixel order (``--batch 0``: full batch).
- Network: ``make_mlp(2, 3, width, depth, "gaussian", sigma=0.05)``, no positional encoding, default init;
  official code: 4 Gaussian layers of 256, here 4 of ``--width`` 128 for CPU time. Same init per seed for
  every optimizer (paired seeds).
- Optimizers (constant lr):
  ``adam``: torch Adam, defaults apart from lr.
  ``esgd``: ``nerf_inr_methods.core.esgd.ESGD`` with the official INR defaults (betas (0.9, 0.999), eps 1e-4,
  d_warmup 50, update_d_every 100), ``d`` bias-corrected by the number of curvature steps (methods.md).
  ``esgd-official``: the same with ``d_bias_correction="all_steps"``, the official code's correction
  (``1 - b2^t`` over all steps t), which acts as an implicit lr warm-up.
  ``esgd-g2`` / ``esgd-official-g2``: the ablations, ``hvp_source="gradient"`` (``(Hv)^2`` replaced by ``g^2``
  on the identical schedule) for each of the two.
- Learning rates: each optimizer's lr is tuned on its own x3-spaced grid of 3 values around its default
  (ESGD divides by |Hv|, Adam by |g|: one shared grid would be meaningless), extended by one x3 step (at
  most twice) while the best value sits on an edge of the grid. Tuning uses a validation image
  (``skimage.data.chelsea()``, centre crop, same size) and a seed not used on the test image; the criterion
  is the final PSNR. Then ``--seeds`` paired seeds on the astronaut at each optimizer's best lr.
- Final PSNR = mean of the evaluations in the last 10% of steps (mini-batch training makes single
  evaluations noisy); the last evaluation is in the JSON too. Target = Adam's final PSNR on the same seed.
  Reported per method: steps and wall-clock to first reach it (read off the full-image PSNR curve evaluated
  every ``--eval-every`` steps, linear interpolation between evaluations; the clock includes the double
  backward of curvature steps and excludes evaluation), compared with Adam's own first time at that level.
  Whether Adam is at a plateau (< 0.1 dB gain over the last 20% of steps) is printed next to it.
- Clock: torch intra-op threads fixed by ``--threads`` (default 1: the machine is shared and one thread gives
  the most repeatable timings); the runs of one seed are interleaved so background load hits all sides alike.

Usage (from the repository root):
    .venv/bin/python -m benchmarks.esgd_image            # full run (~15 min on 2 shared CPU cores)
    .venv/bin/python -m benchmarks.esgd_image --quick    # ~1-2 min smoke version
Writes benchmarks/results/esgd_image.json (esgd_image_quick.json with --quick).
"""

from __future__ import annotations

import math
import statistics
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from benchmarks import common
from benchmarks.common import (
    fmt_pm,
    markdown_table,
    paired_stats,
    plateau_gain,
    search_lr,
    time_to_target,
    verdict,
)
from nerf_inr_methods.coordfit import fit, predict, psnr_from_mse
from nerf_inr_methods.core.esgd import ESGD
from nerf_inr_methods.core.mlp import make_mlp

OPTIMIZERS: tuple[str, ...] = ("adam", "esgd", "esgd-g2", "esgd-official", "esgd-official-g2")
"""Adam baseline; ESGD; its g^2 ablation; ESGD with the official code's bias correction; its g^2 ablation."""

COMPARISONS: tuple[tuple[str, str], ...] = (
    ("esgd", "adam"),
    ("esgd-official", "adam"),
    ("esgd-g2", "adam"),
    ("esgd-official-g2", "adam"),
    ("esgd", "esgd-g2"),
    ("esgd-official", "esgd-official-g2"),
)
"""(method, baseline) pairs reported with paired statistics."""


LR_GRIDS: dict[str, tuple[float, ...]] = {
    "adam": (1e-4, 3e-4, 1e-3),
    "esgd": (0.05, 0.15, 0.45),
    "esgd-g2": (1e-4, 3e-4, 1e-3),
    "esgd-official": (0.05, 0.15, 0.45),
    "esgd-official-g2": (1e-4, 3e-4, 1e-3),
}
"""Initial learning-rate grid per optimizer (x3 spacing; Adam's holds the official code's 1e-4, ESGD's 0.15)."""


@dataclass
class EsgdImageConfig(common.BenchmarkOptions):
    """ESGD positive control: a Gaussian-activation MLP fitting a photograph, ESGD vs Adam vs the g^2 ablation
    (--quick: a ~1-2 min smoke version, small image and network)."""

    size: int | None = None
    """Image side in pixels after downscaling (default 96; quick 32)."""
    width: int | None = None
    """Hidden width of the Gaussian MLP (default 128; quick 64)."""
    depth: int = 4
    """Number of hidden (Gaussian) layers."""
    sigma: float = 0.05
    """Gaussian activation width (images: 0.05)."""
    batch: int | None = None
    """Pixels per step (0 = full batch; default 512; quick 256)."""
    steps: int | None = None
    """Optimisation steps per run (default 3000; quick 600)."""
    eval_every: int | None = None
    """Evaluate full-image PSNR every this many steps, and at the last step (default 50; quick 20)."""
    final_window: float = 0.1
    """Final PSNR = mean of the evaluations in this last fraction of steps."""
    seeds: int = 3
    """Number of paired seeds 0..n-1 on the test image (network init, pixel order, ESGD's Rademacher vectors; >= 3
    for the protocol)."""
    tune_seed: int = 1000
    """Seed of the lr-tuning runs on the validation image."""
    max_extensions: int = 2
    """How many times a grid of LR_GRIDS may be extended by one x3 step while its best lr is on an edge."""

    def resolved(self) -> EsgdImageConfig:
        """A copy with the sizes of the full or quick run filled in and the inputs checked."""
        c = self.with_run_defaults(
            "esgd_image", size=(96, 32), width=(128, 64), batch=(512, 256), steps=(3000, 600), eval_every=(50, 20)
        )
        for name in ("size", "width", "depth", "steps", "eval_every", "seeds"):
            if getattr(c, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(c, name)}")
        if c.batch < 0:
            raise ValueError(f"--batch must be >= 0 (0 = full batch), got {c.batch}")
        return c


# ------------------------------------------------------------------------------------------------ data
def load_image(name: str, size: int) -> tuple[Tensor, Tensor]:
    """A scikit-image photograph (:func:`benchmarks.common.load_image`) as a coordinate-fitting problem.

    Args:
        name: "astronaut" (test) or "chelsea" (validation; centre square crop).
        size: output side in pixels.

    Returns:
        coords (size*size, 2) in [-1, 1] (x, y) at pixel centres, float32; colours (size*size, 3) in [0, 1], float32.
    """
    if name not in ("astronaut", "chelsea"):
        raise ValueError(f"load_image: name must be 'astronaut' or 'chelsea', got {name!r}")
    img = common.load_image(name, size)
    lin = (torch.arange(size, dtype=torch.float32) + 0.5) / size * 2 - 1
    yy, xx = torch.meshgrid(lin, lin, indexing="ij")
    coords = torch.stack([xx, yy], dim=-1).reshape(-1, 2)
    return coords, img.reshape(-1, 3).clamp(0, 1)


# ------------------------------------------------------------------------------------------------ runs
def make_optimizer(kind: str, params: Any, lr: float, seed: int) -> torch.optim.Optimizer:
    """The optimizer named ``kind`` (one of OPTIMIZERS) with the benchmark's settings."""
    if kind == "adam":
        return torch.optim.Adam(params, lr=lr)
    if kind not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {kind!r}")
    return ESGD(
        params,
        lr=lr,
        hvp_source="gradient" if kind.endswith("-g2") else "hessian",
        d_bias_correction="all_steps" if kind.startswith("esgd-official") else "curvature_steps",
        generator=torch.Generator().manual_seed(seed),
    )


def run_one(kind: str, lr: float, seed: int, coords: Tensor, colors: Tensor, cfg: EsgdImageConfig) -> dict[str, Any]:
    """Train one network; return its PSNR curve, clock and cost breakdown."""
    torch.manual_seed(seed)
    net: nn.Module = make_mlp(2, 3, cfg.width, cfg.depth, "gaussian", sigma=cfg.sigma)
    opt = make_optimizer(kind, net.parameters(), lr, seed)
    curvature_steps: list[int] = []

    def progress(step: int, _result: Any) -> None:
        # called after each step: the schedule counter says whether that step estimated curvature
        if isinstance(opt, ESGD) and opt.num_curvature_steps > len(curvature_steps):
            curvature_steps.append(step)

    def evaluate(model: nn.Module, _done: int) -> dict[str, float]:
        mse = float(((predict(model, coords) - colors) ** 2).mean())
        return {"psnr": psnr_from_mse(mse) if math.isfinite(mse) else float("nan")}

    n = coords.shape[0]
    data_kw: dict[str, Any]
    if cfg.batch == 0 or cfg.batch >= n:
        data_kw = {"coords": coords, "targets": colors}
    else:
        order_gen = torch.Generator().manual_seed(10_000 + seed)
        per_epoch = n // cfg.batch
        perm: list[Tensor] = []

        def batch_fn(step: int) -> tuple[Tensor, Tensor]:
            if step % per_epoch == 0:  # new epoch: reshuffle (drops the n % batch remainder)
                perm[:] = [torch.randperm(n, generator=order_gen)]
            idx = perm[0][(step % per_epoch) * cfg.batch : (step % per_epoch + 1) * cfg.batch]
            return coords[idx], colors[idx]

        data_kw = {"batch_fn": batch_fn}
    evals = sorted(set(range(0, cfg.steps + 1, cfg.eval_every)) | {cfg.steps})
    with warnings.catch_warnings():
        # backward(create_graph=True) warns about a param <-> grad reference cycle; ESGD.step() breaks it.
        warnings.filterwarnings("ignore", message=".*create_graph=True.*reference cycle.*")
        hist = fit(net, opt, cfg.steps, eval_fn=evaluate, eval_steps=evals, progress=progress, **data_kw)
    step_times = np.diff([0.0, *hist.time])
    is_curv = np.zeros(cfg.steps, dtype=bool)
    is_curv[curvature_steps] = True
    psnr = [p if math.isfinite(p) else -math.inf for p in hist.eval_series("psnr")]
    window = [p for s, p in zip(hist.eval_steps, psnr, strict=True) if s >= (1 - cfg.final_window) * cfg.steps]
    return {
        "optimizer": kind,
        "lr": lr,
        "seed": seed,
        "eval_steps": hist.eval_steps,
        "eval_time": hist.eval_time,
        "psnr": psnr,
        "final_psnr": statistics.fmean(window),
        "last_psnr": psnr[-1],
        "best_psnr": max(psnr),
        "plateau_gain_last20": plateau_gain(hist.eval_steps, psnr),
        "train_time": hist.time[-1],
        "points_trained": hist.points_trained[-1],
        "curvature_steps": curvature_steps,
        "median_step_time_plain": float(np.median(step_times[~is_curv])) if (~is_curv).any() else None,
        "median_step_time_curvature": float(np.median(step_times[is_curv])) if is_curv.any() else None,
    }


def reach(run: dict[str, Any], target: float) -> tuple[float | None, float | None]:
    """(steps, seconds) at which a run's PSNR curve first reaches ``target`` (None if never)."""
    steps = time_to_target(run["eval_steps"], run["psnr"], target)
    secs = time_to_target(run["eval_time"], run["psnr"], target)
    return steps, secs


def tune_lr(kind: str, cfg: EsgdImageConfig, coords: Tensor, colors: Tensor) -> tuple[float, dict[float, float], bool]:
    """Grid search (with edge extension) of ``kind``'s lr on the validation image.

    Returns:
        (best lr, {lr: validation final PSNR}, whether the best lr is still on an edge of the searched grid).
    """

    def score(lr: float) -> float:
        r = run_one(kind, lr, cfg.tune_seed, coords, colors, cfg)
        print(f"[tune] {kind:16s} lr={lr:<8.3g} validation final PSNR {r['final_psnr']:.2f} dB", flush=True)
        return r["final_psnr"] if math.isfinite(r["final_psnr"]) else -math.inf

    scores = search_lr(score, LR_GRIDS[kind], cfg.max_extensions)
    grid = sorted(scores)
    best = max(grid, key=lambda x: scores[x])
    return best, scores, best in (grid[0], grid[-1])


# ------------------------------------------------------------------------------------------------ report
def _mean_std(xs: list[float | None]) -> tuple[float, float]:
    vals = [x for x in xs if x is not None]
    if len(vals) < len(xs) or not vals:
        return math.nan, math.nan
    return statistics.fmean(vals), (statistics.stdev(vals) if len(vals) > 1 else math.nan)


def _cell_reach(xs: list[float | None], digits: int) -> str:
    got = [x for x in xs if x is not None]
    if len(got) < len(xs):
        return f"{len(got)}/{len(xs)} seeds" + (f" ({fmt_pm(*_mean_std(got), digits)})" if got else "")
    return fmt_pm(*_mean_std(xs), digits)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the benchmark; print the tables and summary; write the JSON. Returns the JSON payload."""
    cfg = common.parse(EsgdImageConfig, argv)
    wall_start = time.perf_counter()

    # 1. lr tuning on the validation image
    val_coords, val_colors = load_image("chelsea", cfg.size)
    best_lr: dict[str, float] = {}
    tuning: dict[str, dict[str, float]] = {}
    on_edge: dict[str, bool] = {}
    for kind in OPTIMIZERS:
        best_lr[kind], scores, on_edge[kind] = tune_lr(kind, cfg, val_coords, val_colors)
        tuning[kind] = {f"{lr:g}": v for lr, v in sorted(scores.items())}

    # 2. paired seeds on the test image, optimizers interleaved per seed
    coords, colors = load_image("astronaut", cfg.size)
    runs: dict[str, list[dict[str, Any]]] = {k: [] for k in OPTIMIZERS}
    for seed in range(cfg.seeds):
        for kind in OPTIMIZERS:
            r = run_one(kind, best_lr[kind], seed, coords, colors, cfg)
            runs[kind].append(r)
            print(
                f"[test] seed {seed} {kind:16s} lr={best_lr[kind]:<8.3g} final {r['final_psnr']:.2f} dB, "
                f"train {r['train_time']:.1f} s",
                flush=True,
            )

    # 3. steps / seconds to Adam's final PSNR (per seed) and paired statistics
    targets = [r["final_psnr"] for r in runs["adam"]]
    reached: dict[str, dict[str, list[float | None]]] = {}
    for kind in OPTIMIZERS:
        st, sc = zip(*(reach(r, t) for r, t in zip(runs[kind], targets, strict=True)), strict=True)
        reached[kind] = {"steps": list(st), "seconds": list(sc)}

    rows = []
    for kind in OPTIMIZERS:
        rs = runs[kind]
        curv_t = [r["median_step_time_curvature"] for r in rs if r["median_step_time_curvature"] is not None]
        plain_t = [r["median_step_time_plain"] for r in rs if r["median_step_time_plain"] is not None]
        rows.append(
            [
                kind,
                f"{best_lr[kind]:g}" + (" (edge)" if on_edge[kind] else ""),
                fmt_pm(*_mean_std([r["final_psnr"] for r in rs])),
                fmt_pm(*_mean_std([r["best_psnr"] for r in rs])),
                fmt_pm(*_mean_std([r["plateau_gain_last20"] for r in rs])),
                _cell_reach(reached[kind]["steps"], 0),
                _cell_reach(reached[kind]["seconds"], 1),
                fmt_pm(*_mean_std([r["train_time"] for r in rs]), 1),
                len(rs[0]["curvature_steps"]),
                " / ".join(f"{1e3 * statistics.fmean(t):.1f}" if t else "-" for t in (plain_t, curv_t)),
            ]
        )
    headers = [
        "optimizer",
        "best lr",
        "final PSNR (dB)",
        "best PSNR (dB)",
        "gain last 20% (dB)",
        "steps to Adam final",
        "s to Adam final",
        f"train s ({cfg.steps} steps)",
        "curv. steps",
        "ms/step plain / curv.",
    ]
    n_px = coords.shape[0]
    batch_txt = "full batch" if cfg.batch == 0 or cfg.batch >= n_px else f"batches of {cfg.batch} px"
    print()
    print(
        f"ESGD positive control: Gaussian MLP (sigma {cfg.sigma}, {cfg.depth}x{cfg.width}, no PE) on astronaut "
        f"{cfg.size}x{cfg.size}, {batch_txt}, {cfg.steps} steps, seeds {list(range(cfg.seeds))}, {cfg.threads} "
        "thread(s), shared machine. Final PSNR = mean over the last 10% of steps."
    )
    print("lr tuned on chelsea (validation final PSNR per lr, dB):")
    for kind in OPTIMIZERS:
        print(f"  {kind}: " + ", ".join(f"{lr}: {v:.2f}" for lr, v in tuning[kind].items()))
    print()
    print(markdown_table(headers, rows))

    comparisons: dict[str, Any] = {}
    pair_rows = []
    for method, base in COMPARISONS:
        fin = paired_stats([r["final_psnr"] for r in runs[base]], [r["final_psnr"] for r in runs[method]])
        fin["verdict"] = verdict(fin["mean"], fin["std"], True, what=method)
        comp: dict[str, Any] = {"final_psnr_diff": fin}
        row = [f"{method} - {base}", fmt_pm(fin["mean"], fin["std"]), fin["verdict"]]
        if base == "adam":
            secs, adam_secs = reached[method]["seconds"], reached["adam"]["seconds"]
            if all(s is not None for s in secs):
                tt = paired_stats(adam_secs, secs)
                tt["verdict"] = verdict(tt["mean"], tt["std"], False, what=method)
                tt["ratio"] = [s / a for s, a in zip(secs, adam_secs, strict=True)]
                row += [fmt_pm(tt["mean"], tt["std"], 1), fmt_pm(*_mean_std(tt["ratio"]), 2), tt["verdict"]]
            else:
                n_ok = sum(s is not None for s in secs)
                tt = {"verdict": f"reached Adam's final PSNR in {n_ok}/{len(secs)} seeds"}
                row += ["-", "-", tt["verdict"]]
            comp["time_to_adam_final_diff"] = tt
        else:
            row += ["-", "-", "-"]
        comparisons[f"{method}_vs_{base}"] = comp
        pair_rows.append(row)
    print()
    print(
        markdown_table(
            ["paired (per seed)", "final PSNR diff (dB)", "verdict", "s to Adam final: diff", "ratio", "verdict"],
            pair_rows,
        )
    )

    def time_txt(kind: str, label: str) -> str:
        t = comparisons[f"{kind}_vs_adam"]["time_to_adam_final_diff"]
        if "ratio" not in t:
            return f"{label} {t['verdict']}"
        return f"{label} {fmt_pm(*_mean_std(t['ratio']), 2)}x Adam's time ({t['verdict']})"

    adam_plateau = statistics.fmean(r["plateau_gain_last20"] for r in runs["adam"])
    t_e = comparisons["esgd_vs_adam"]["time_to_adam_final_diff"]
    t_o = comparisons["esgd-official_vs_adam"]["time_to_adam_final_diff"]
    fin_e = comparisons["esgd_vs_adam"]["final_psnr_diff"]
    fin_o = comparisons["esgd-official_vs_adam"]["final_psnr_diff"]
    status = "CONFIRMED" if t_e.get("verdict") == "esgd better" else "NOT confirmed"
    if t_o.get("verdict") == "esgd-official better":
        status += " (official-code variant: CONFIRMED)"
    plateau_txt = "at a plateau" if adam_plateau < 0.1 else f"NOT at a plateau (+{adam_plateau:.2f} dB, last 20%)"
    summary = (
        f"Summary: ESGD faster than Adam {status}. Time to Adam's final PSNR: {time_txt('esgd', 'ESGD')}; "
        f"{time_txt('esgd-official', 'ESGD-official')}; {time_txt('esgd-g2', 'g^2 ablation')}; "
        f"{time_txt('esgd-official-g2', 'official g^2 ablation')}. Final PSNR vs Adam: ESGD "
        f"{fmt_pm(fin_e['mean'], fin_e['std'])} dB, ESGD-official {fmt_pm(fin_o['mean'], fin_o['std'])} dB. "
        f"Adam is {plateau_txt}."
    )
    print()
    print(summary)

    payload = {
        "benchmark": "esgd_image",
        "quick": bool(cfg.quick),
        "config": {**common.config_dict(cfg), "seeds": list(range(cfg.seeds)), "lr_grids": LR_GRIDS},
        "command": common.command_line(),
        "environment": common.environment_info(),
        "wall_clock_total_s": time.perf_counter() - wall_start,
        "tuning_validation_final_psnr": tuning,
        "best_lr": best_lr,
        "best_lr_on_grid_edge": on_edge,
        "adam_final_psnr_targets": targets,
        "reached_adam_final": reached,
        "comparisons": comparisons,
        "summary": summary,
        "runs": runs,
    }
    path = common.write_results(cfg.results_stem("esgd_image"), payload, cfg.results_dir)
    print(f"wrote {path} ({payload['wall_clock_total_s']:.0f} s wall clock)")
    return payload


if __name__ == "__main__":
    main()
