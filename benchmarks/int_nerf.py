"""INT on NeRF: vanilla NeRF vs int-nerf (and optionally INT's random-subset control) on Blender mic at 100 px.

Each arm trains the same InrNeRFModel (nerfstudio's vanilla NeRF fields and samplers) with the CPU preset from the
same seed through nerfstudio's Trainer (``benchmarks.nerf_common.train_arm``); only the pipeline's ray selection
differs. The clock counts training only (INT's scoring passes included, evaluation excluded). PSNR is measured every
``--eval-every`` steps on a fixed subset of test views (every ``--view-every``-th of the test split, full image,
white background as trained).

Reported per arm: final PSNR, training seconds, rays trained (forward + backward) and scored (no-grad forward), the
load-independent cost ``3 * trained + scored`` in ray-forward units (a training ray ~ forward + backward ~ 3
forwards), and the time / cost to reach the vanilla arm's final PSNR (linear interpolation between evaluations).
Target (issue 4): INT reaches vanilla's final PSNR in <= 0.7x vanilla's time, final PSNR within 0.2 dB. The vanilla
curve's gain over its last 20% of steps says whether its final PSNR is a plateau (< 0.1 dB, benchmarks.md).

Run from the repository root: ``python -m benchmarks.int_nerf`` (< 15 min on 2 cores) or ``--quick`` (a smoke run,
written to ``int_nerf_quick.json``). Arms run one after the other, so on a shared machine their clocks see
different loads: compare the cost column too.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Literal, Sequence

import torch

from benchmarks import common
from benchmarks.common import finish, fmt_pm, log, markdown_table, paired_stats, plateau_gain, time_to_target, verdict
from benchmarks.nerf_common import MIC, MIC_100PX, check_scene_folder, train_arm
from nerf_inr_methods.nerfstudio_plugin.runs import prepare_config

ArmName = Literal["vanilla", "int", "random"]
ARMS = ("vanilla", "int", "random")
TRAIN_COST = 3
"""A trained ray costs ~3 no-grad forwards of one ray (forward + backward); a scored ray costs 1."""


@dataclass
class IntNerfConfig(common.BenchmarkOptions):
    """INT on NeRF: vanilla NeRF vs int-nerf (and optionally INT's random-subset control) on Blender mic at 100 px
    (--quick: 40 steps, 2 views)."""

    data: Path = MIC
    """Blender scene folder."""
    steps: int | None = None
    """Training steps T per arm (default 1500; quick 40)."""
    eval_every: int | None = None
    """Evaluation period in steps (default T/10; quick T/4)."""
    view_every: int | None = None
    """Use every n-th test view (default 100; quick 200)."""
    seeds: List[int] = field(default_factory=lambda: [0])
    """Seeds (each arm shares each seed)."""
    arms: List[ArmName] = field(default_factory=lambda: ["vanilla", "int"])
    """Arms to train (vanilla is required: its final PSNR is the target)."""
    r0: float = 0.2
    """INT starting ratio (ratio 'step' schedule)."""
    max_interval: int = 10
    """INT max pool-refresh interval ('incremental')."""
    pool_batches: int = 1
    """INT candidate pool size in 256-ray batches."""

    def resolved(self) -> IntNerfConfig:
        """A copy with the defaults of the full or quick run filled in and the inputs checked."""
        c = self.with_run_defaults("int_nerf", steps=(1500, 40), view_every=(100, 200))
        eval_every = c.eval_every or max(1, c.steps // (4 if c.quick else 10))
        c = dataclasses.replace(c, seeds=list(c.seeds), arms=list(c.arms), eval_every=eval_every)
        if "vanilla" not in c.arms:
            raise ValueError(f"--arms must include vanilla (its final PSNR is the target), got {c.arms}")
        check_scene_folder(c.data)
        return c


def arm_config(arm: str, seed: int, output_dir: Path, args: IntNerfConfig):
    """TrainerConfig of one arm: inr-nerf (INT off) for vanilla, int-nerf for int / random, CPU preset, mic 100 px."""
    overrides: Dict[str, Any] = dict(MIC_100PX)
    if arm != "vanilla":
        overrides.update(
            {
                "pipeline.int_r0": args.r0,
                "pipeline.int_max_interval": args.max_interval,
                "pipeline.int_pool_batches": args.pool_batches,
                "pipeline.int_random_subset": arm == "random",
            }
        )
    method = "inr-nerf" if arm == "vanilla" else "int-nerf"
    return prepare_config(
        method, args.data, output_dir, steps=args.steps, seed=seed, timestamp=f"{arm}-{seed}", overrides=overrides
    )


def rays_scored_by_step(config, steps: List[int]) -> List[int]:
    """Cumulative rays scored (no-grad forward) after each of ``steps`` steps: P at every pool refresh of INT."""
    pipe = config.pipeline
    if not getattr(pipe, "int_enabled", False) or pipe.int_random_subset:
        return [0 for _ in steps]
    schedule = pipe.int_sampler_config().schedule(config.max_num_iterations)
    pool = pipe.int_pool_batches * pipe.datamanager.train_num_rays_per_batch
    refreshes = schedule.selection_steps()
    return [pool * sum(1 for r in refreshes if r < s) for s in steps]


def run_arm(arm: str, seed: int, args: IntNerfConfig, log) -> Dict[str, Any]:
    """Train one arm and return its curve: step, train_seconds, rays (trained), scored, cost, psnr."""
    with tempfile.TemporaryDirectory(prefix=f"int_nerf_{arm}_") as tmp:
        config = arm_config(arm, seed, Path(tmp), args)
        history = train_arm(
            config,
            eval_every=args.eval_every,
            split="test",
            view_every=args.view_every,
            progress=lambda msg: log(f"  [{arm} seed {seed}] {msg}"),
        )
        scored = rays_scored_by_step(config, history["step"])
    history["scored"] = scored
    history["cost"] = [TRAIN_COST * t + s for t, s in zip(history["rays"], scored, strict=True)]
    history["arm"], history["seed"] = arm, seed
    history["median_step_seconds"] = statistics.median(history["step_seconds"])
    return history


def summarize_seed(runs: Dict[str, Dict[str, Any]]) -> Dict[str, Any]:
    """Targets and ratios of one seed: every arm against the vanilla arm's final PSNR."""
    van = runs["vanilla"]
    target = van["psnr"][-1]
    row: Dict[str, Any] = {
        "seed": van["seed"],
        "target_psnr": target,
        "vanilla_seconds": van["train_seconds"][-1],
        "vanilla_cost": van["cost"][-1],
        "vanilla_plateau_gain_db": plateau_gain(van["step"], van["psnr"], 0.2),
    }
    for arm, h in runs.items():
        if arm == "vanilla":
            continue
        t = time_to_target(h["train_seconds"], h["psnr"], target)
        c = time_to_target(h["cost"], h["psnr"], target)
        row[f"{arm}_final_psnr"] = h["psnr"][-1]
        row[f"{arm}_psnr_minus_vanilla"] = h["psnr"][-1] - target
        row[f"{arm}_seconds_to_target"] = t
        row[f"{arm}_time_ratio"] = t / row["vanilla_seconds"] if t is not None else None
        row[f"{arm}_cost_ratio"] = c / row["vanilla_cost"] if c is not None else None
        # Equal-time view: vanilla's PSNR after as much training time as this arm used in total.
        row[f"vanilla_psnr_at_{arm}_time"] = _interp(h["train_seconds"][-1], van["train_seconds"], van["psnr"])
    return row


def _interp(x: float, xs: List[float], ys: List[float]) -> float:
    """Piecewise-linear y(x) through the samples (xs increasing), clamped to the first/last sample."""
    if x <= xs[0]:
        return ys[0]
    for i in range(1, len(xs)):
        if x <= xs[i]:
            return ys[i - 1] + (ys[i] - ys[i - 1]) * (x - xs[i - 1]) / (xs[i] - xs[i - 1])
    return ys[-1]


def main(argv: Sequence[str] | None = None) -> Dict[str, Any]:
    """Parse ``argv`` (default: the command line), run the benchmark, write the JSON; returns its payload."""
    args = common.parse(IntNerfConfig, argv)
    start = time.perf_counter()
    log(
        f"INT NeRF: {args.data.name} at 100 px, CPU preset, T={args.steps}, eval every {args.eval_every} steps on "
        f"every {args.view_every}th test view, seeds {args.seeds}, arms {args.arms}, INT step ratio r0={args.r0} + "
        f"incremental interval (max {args.max_interval}), pool {args.pool_batches} batch(es), "
        f"{torch.get_num_threads()} thread(s)"
    )
    runs: Dict[str, List[Dict[str, Any]]] = {arm: [] for arm in args.arms}
    per_seed = []
    for seed in args.seeds:
        seed_runs = {arm: run_arm(arm, seed, args, log) for arm in args.arms}
        for arm, h in seed_runs.items():
            runs[arm].append(h)
        per_seed.append(summarize_seed(seed_runs))

    headers = ["seed", "arm", "final PSNR", "train s", "median s/step", "rays trained", "rays scored", "cost"]
    headers += ["s to vanilla PSNR", "time ratio", "cost ratio", "vanilla PSNR at same time"]
    rows = []
    for i, row in enumerate(per_seed):
        for arm in args.arms:
            h = runs[arm][i]
            vanilla = arm == "vanilla"
            rows.append(
                [
                    row["seed"],
                    arm,
                    h["psnr"][-1],
                    h["train_seconds"][-1],
                    h["median_step_seconds"],
                    h["rays"][-1],
                    h["scored"][-1],
                    h["cost"][-1],
                    h["train_seconds"][-1] if vanilla else row[f"{arm}_seconds_to_target"],
                    1.0 if vanilla else row[f"{arm}_time_ratio"],
                    1.0 if vanilla else row[f"{arm}_cost_ratio"],
                    h["psnr"][-1] if vanilla else row[f"vanilla_psnr_at_{arm}_time"],
                ]
            )
    log("")
    log(markdown_table(headers, rows))
    curve_rows = [
        [arm, s, *[round(p, 2) for p in h["psnr"]]]
        for arm in args.arms
        for s, h in zip(args.seeds, runs[arm], strict=True)
    ]
    log("")
    log(markdown_table(["arm", "seed", *[str(s) for s in runs["vanilla"][0]["step"]]], curve_rows))
    gains = [r["vanilla_plateau_gain_db"] for r in per_seed]
    plateau = all(g < 0.1 for g in gains)
    log("")
    log(
        f"vanilla gain over its last 20% of steps: {', '.join(f'{g:+.2f}' for g in gains)} dB "
        f"({'plateau' if plateau else 'NOT a plateau: the target is mid-climb'})"
    )

    summary: Dict[str, Any] = {"per_seed": per_seed, "vanilla_at_plateau": plateau}
    parts = []
    for arm in [a for a in args.arms if a != "vanilla"]:
        ratios = [r[f"{arm}_time_ratio"] for r in per_seed]
        diffs = [r[f"{arm}_psnr_minus_vanilla"] for r in per_seed]
        reached = all(x is not None for x in ratios)
        ratio_txt = ""
        if reached:
            ratio_txt = fmt_pm(statistics.mean(ratios), statistics.stdev(ratios) if len(ratios) > 1 else math.nan)
        stats = paired_stats([r["target_psnr"] for r in per_seed], [r[f"{arm}_final_psnr"] for r in per_seed])
        summary[f"{arm}_psnr_minus_vanilla"] = stats
        met = reached and max(ratios) <= 0.7 and max(abs(d) for d in diffs) <= 0.2
        judged = "" if len(per_seed) == 1 else f", {verdict(stats['mean'], stats['std'], True, what=arm)}"
        parts.append(
            f"{arm}: "
            + (f"{ratio_txt}x vanilla's time to its final PSNR" if reached else "did NOT reach vanilla's final PSNR")
            + f", final PSNR {fmt_pm(stats['mean'], stats['std'])} dB vs vanilla{judged}"
            + (f" (target <= 0.7x and within 0.2 dB: {'met' if met else 'missed'})" if arm == "int" else "")
        )
        summary[f"{arm}_target_met"] = met if arm == "int" else None
    summary_line = (
        f"SUMMARY int_nerf ({args.data.name} 100 px, T={args.steps}, {len(args.seeds)} seed(s)): "
        + "; ".join(parts)
        + f"; vanilla {'at' if plateau else 'NOT at'} plateau; shared machine, arms run sequentially."
    )
    results = {"runs": runs, "summary": summary}
    return finish("int_nerf", args, results, summary_line, start=start)


if __name__ == "__main__":
    main()
