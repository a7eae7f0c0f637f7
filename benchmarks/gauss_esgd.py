"""Gaussian-activation NeRF trained with ESGD vs Adam on Blender mic at 100 px (CPU preset), with the g^2 ablation
and vanilla ReLU-PE NeRF as a reference.

Arms (each trains one nerfstudio TrainerConfig through nerfstudio's Trainer, ``benchmarks.nerf_common.train_arm``):

- ``esgd``: gauss-nerf (GARF-style Gaussian field, sigma 0.1, no PE, one field on stratified samples), ESGD with the
  official INR code's recipe (``recipe="official"``: betas (0.9, 0.999), eps 1e-4, d_warmup 50, update_d_every 100,
  one Rademacher draw, ``d`` bias-corrected over all steps), lr decaying exponentially to ``lr / 100`` over the run
  (the default 1 -> 0.01, scaled with the tuned lr);
- ``esgd-robust``: the same with gauss-nerf's default, the robust recipe (``core.esgd.RECIPES["robust"]``);
- ``adam``: the same method with ``--optimizer adam``: Adam, lr decaying exponentially to ``lr / 5`` (BARF/GARF's
  5e-4 -> 1e-4, scaled with the tuned lr);
- ``esgd-g2``: the ablation, robust ESGD with ``hvp_source="gradient"`` ((Hv)^2 replaced by g^2) on the identical
  curvature and lr schedules (its own tuned lr: g^2 and (Hv)^2 have different scales);
- ``vanilla``: inr-nerf = nerfstudio's vanilla-nerf (ReLU + PE, coarse + fine fields), RAdam 5e-4 constant, not tuned
  (a reference: "does the Gaussian field pay off at all at this scale?").

Protocol (../shared/docs/benchmarks.md): each tuned arm's lr is chosen on its own x3-spaced grid of 3 values around
its default (extended by x3 while the best is on an edge, ``--max-extensions`` times), by the PSNR on every
``--view-every``-th *val* view after ``--tune-steps`` steps (seed ``--tune-seed``, not a test seed; the lr decays over
the tuning run's length). Then every arm trains ``--steps`` steps at its best lr for each of ``--seeds``: arms share the
seed, hence the initialisation of the Gaussian field and, since ESGD draws its Rademacher vectors from a private
generator, the ray batches. PSNR is measured every ``--eval-every`` steps on every ``--view-every``-th *test* view
(full image, white background as trained). The clock counts training only (ESGD's double backward included,
evaluation excluded); torch uses ``--threads`` threads. With ``--jobs 2`` two runs train at once (in the order of
:data:`ARMS` per seed), so paired arms see similar machine load.

Reported per seed: each arm's final test PSNR (last evaluation), and the iterations and training seconds each arm
needs to first reach the Adam run's final PSNR (linear interpolation between evaluations; Adam's own first crossing
for Adam). Targets (issue 6): ESGD <= 0.6x Adam's iterations and <= 0.8x its wall-clock (reported for both ESGD
arms). The converged comparison (runs to the plateau) is ``benchmarks/nerf_plateau.py``. The image positive control
is ``benchmarks/esgd_image.py``; its saved summary is printed when ``benchmarks/results/esgd_image.json`` exists.

Run from the repository root: ``python -m benchmarks.gauss_esgd`` (about 15 min on 2 shared cores) or ``--quick``
(a smoke run written to a temporary folder unless ``--results-dir`` is given).
"""

from __future__ import annotations

import json
import statistics
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any, Callable, Dict, List, Sequence, Tuple

import tyro

from benchmarks import common
from benchmarks.common import RESULTS_DIR, finish, fmt_pm, log, markdown_table, mean_std, paired_stats, verdict
from benchmarks.nerf_common import MIC, MIC_100PX, check_scene_folder
from nerf_inr_methods.core.esgd import default_lr

ARMS = ("adam", "esgd", "esgd-robust", "esgd-g2", "vanilla")
TUNED = ("adam", "esgd", "esgd-robust", "esgd-g2")
DEFAULT_LR = {
    "adam": 5e-4,
    "esgd": default_lr("official", "nerf"),
    "esgd-robust": default_lr("robust", "nerf"),
    "esgd-g2": 5e-4,
}
"""Centre of each tuned arm's grid: Adam's BARF/GARF lr, the official recipe's NeRF lr, gauss-nerf's default (the robust
recipe's), and Adam's for the (Adam-like) g^2 ablation."""
LR_FINAL_RATIO = {"adam": 0.2, "esgd": 0.01, "esgd-robust": 0.01, "esgd-g2": 0.01}
"""lr_final / lr of each arm's exponential decay (Adam 5e-4 -> 1e-4; ESGD 1 -> 0.01, the ablation on ESGD's)."""
ESGD_ARMS = {"esgd": ("official", "hessian"), "esgd-robust": ("robust", "hessian"), "esgd-g2": ("robust", "gradient")}
"""ESGD arms: (recipe, hvp_source)."""
VANILLA_LR = 5e-4
TARGET_STEP_RATIO, TARGET_TIME_RATIO = 0.6, 0.8


# ----------------------------------------------------------------------------------------------- one run
def arm_config(arm: str, lr: float | None, seed: int, steps: int, output_dir: Path, data: Path):
    """TrainerConfig of one arm at one lr (None for vanilla), CPU preset, mic at 100 px."""
    from nerf_inr_methods.nerfstudio_plugin.runs import prepare_config

    if arm == "vanilla":
        return prepare_config("inr-nerf", data, output_dir, steps=steps, seed=seed, timestamp=f"{arm}-{seed}",
                              overrides=dict(MIC_100PX))  # fmt: skip
    optimizer = "adam" if arm == "adam" else "esgd"
    overrides: Dict[str, Any] = {**MIC_100PX, "optimizer": optimizer}
    config = prepare_config("gauss-nerf", data, output_dir, steps=steps, seed=seed, timestamp=f"{arm}-{seed}-{lr:g}",
                            overrides=overrides)  # fmt: skip
    preset = config.optimizer_presets[optimizer]
    assert lr is not None
    preset["optimizer"].lr = float(lr)
    preset["scheduler"].lr_final = float(lr) * LR_FINAL_RATIO[arm]
    if optimizer == "esgd":
        preset["optimizer"].recipe, preset["optimizer"].hvp_source = ESGD_ARMS[arm]
        preset["optimizer"].rademacher_seed = seed
    return config


def run_task(task: Dict[str, Any]) -> Dict[str, Any]:
    """Train one arm (in this process or a pool worker) and return its history plus the task description."""
    import torch

    from benchmarks.nerf_common import train_arm

    if task["threads"]:  # 0: torch's default
        torch.set_num_threads(task["threads"])
    label = f"[{task['phase']} {task['arm']} lr {task['lr']} seed {task['seed']}]"
    with tempfile.TemporaryDirectory(prefix=f"gauss_esgd_{task['arm']}_") as tmp:
        config = arm_config(task["arm"], task["lr"], task["seed"], task["steps"], Path(tmp), Path(task["data"]))
        history = train_arm(  # closes the run's (process-wide) event writers before its folder is deleted
            config,
            eval_every=task["eval_every"],
            split=task["split"],
            view_every=task["view_every"],
            progress=lambda msg: print(f"  {label} {msg}", flush=True),
        )
    history["median_step_seconds"] = statistics.median(history["step_seconds"])
    del history["step_seconds"]
    return {**task, "history": history}


def run_all(tasks: List[Dict[str, Any]], jobs: int) -> List[Dict[str, Any]]:
    """Run tasks in order, ``jobs`` at a time (separate spawned processes when jobs > 1)."""
    if jobs <= 1:
        return [run_task(t) for t in tasks]
    with ProcessPoolExecutor(max_workers=jobs, mp_context=get_context("spawn")) as pool:
        return list(pool.map(run_task, tasks))


def curvature_steps(steps: int, d_warmup: int = 50, update_d_every: int = 100) -> int:
    """Number of ESGD curvature (double-backward) steps in a run of ``steps`` steps: 0..d_warmup-1, then every
    update_d_every-th step after the last one."""
    warm = max(1, min(d_warmup, steps))
    return warm + max(0, (steps - warm) // update_d_every)


# --------------------------------------------------------------------------------------------------- tuning
def tune(args: GaussEsgdConfig, log: Callable[[str], None]) -> Dict[str, Any]:
    """Best lr of each tuned arm on the val views (grids extended while the best sits on an edge)."""
    grids = {arm: [DEFAULT_LR[arm] / 3, DEFAULT_LR[arm], DEFAULT_LR[arm] * 3] for arm in args.tune_arms}
    scores: Dict[str, Dict[float, float]] = {arm: {} for arm in args.tune_arms}

    def base(arm: str, lr: float) -> Dict[str, Any]:
        return dict(phase="tune", arm=arm, lr=lr, seed=args.tune_seed, steps=args.tune_steps, split="val",
                    eval_every=args.tune_steps, **_common(args))  # fmt: skip

    pending = [base(arm, lr) for arm in args.tune_arms for lr in grids[arm]]
    for round_ in range(args.max_extensions + 1):
        for result in run_all(pending, args.jobs):
            scores[result["arm"]][result["lr"]] = result["history"]["psnr"][-1]
        pending = []
        if round_ == args.max_extensions:
            break
        for arm in args.tune_arms:
            lrs = sorted(scores[arm])
            best = max(lrs, key=lambda lr: scores[arm][lr])
            if best == lrs[0]:
                pending.append(base(arm, lrs[0] / 3))
            elif best == lrs[-1]:
                pending.append(base(arm, lrs[-1] * 3))
        if not pending:
            break
    best_lr, on_edge = {}, {}
    for arm in args.tune_arms:
        lrs = sorted(scores[arm])
        best_lr[arm] = max(lrs, key=lambda lr: scores[arm][lr])
        on_edge[arm] = best_lr[arm] in (lrs[0], lrs[-1])
        log(f"  tuning {arm}: " + ", ".join(f"lr {lr:.3g} -> {scores[arm][lr]:.2f} dB" for lr in lrs)
            + f"; best {best_lr[arm]:.3g}" + (" (ON THE GRID EDGE)" if on_edge[arm] else ""))  # fmt: skip
    return {"val_psnr": scores, "best_lr": best_lr, "best_on_grid_edge": on_edge}


def _common(args: GaussEsgdConfig) -> Dict[str, Any]:
    return dict(data=str(args.data), view_every=args.view_every, threads=args.threads)


# ------------------------------------------------------------------------------------------------- analysis
def summarize_seed(runs: Dict[str, Dict[str, Any]]) -> Dict[str, Any]:
    """Per seed: every arm's final PSNR and its iterations / seconds to first reach the Adam run's final PSNR."""
    adam = runs["adam"]
    target = adam["psnr"][-1]
    row: Dict[str, Any] = {
        "target_psnr": target,
        "adam_plateau_gain_db": common.plateau_gain(adam["step"], adam["psnr"]),
    }
    for arm, h in runs.items():
        steps = common.time_to_target(h["step"], h["psnr"], target)
        seconds = common.time_to_target(h["train_seconds"], h["psnr"], target)
        row[arm] = {
            "final_psnr": h["psnr"][-1],
            "steps_to_target": steps,
            "seconds_to_target": seconds,
            "train_seconds": h["train_seconds"][-1],
            "median_step_seconds": h["median_step_seconds"],
        }
    adam_steps, adam_seconds = row["adam"]["steps_to_target"], row["adam"]["seconds_to_target"]
    for arm in runs:
        r = row[arm]
        r["step_ratio"] = r["steps_to_target"] / adam_steps if r["steps_to_target"] is not None else None
        r["time_ratio"] = r["seconds_to_target"] / adam_seconds if r["seconds_to_target"] is not None else None
    return row


def _ratio_text(values: Sequence[float | None]) -> str:
    """``"m +- s x"`` over seeds, or how many seeds reached the target at all."""
    got = [v for v in values if v is not None]
    if not got:
        return f"never (0/{len(values)} seeds reached it)"
    if len(got) < len(values):
        return f"{fmt_pm(*mean_std(got))}x in the {len(got)}/{len(values)} seeds that reached it"
    return f"{fmt_pm(*mean_std(got))}x"


def image_control_summary() -> str | None:
    """The saved summary of benchmarks/esgd_image.py (the positive control), if it has been run."""
    path = RESULTS_DIR / "esgd_image.json"
    if not path.exists():
        return None
    data = json.loads(path.read_text())
    return str(data.get("summary") or data.get("summary_line") or "")[:600]


@dataclass
class GaussEsgdConfig(common.BenchmarkOptions):
    """gauss-nerf on mic at 100 px: Adam vs official and robust ESGD vs the g^2 ablation, vanilla NeRF as reference
    (--quick: 30 steps, 1 seed, 10 tuning steps without extensions, 1 view; written to a temporary folder unless
    --results-dir is given)."""

    data: Path = MIC
    """Blender scene folder."""
    steps: int = 500
    """Training steps per run."""
    eval_every: int = 50
    """Test evaluation period (steps)."""
    view_every: int = 100
    """Evaluate every n-th view of the split."""
    seeds: Tuple[int, ...] = (0, 1, 2)
    """Paired seeds."""
    vanilla_seeds: Tuple[int, ...] = (0,)
    """Seeds of the vanilla arm."""
    arms: Tuple[str, ...] = ARMS
    """Arms to train (adam is required: its final PSNR is the target)."""
    tune_steps: int = 200
    """Steps of each lr-tuning run (on val views)."""
    tune_seed: int = 1000
    """Seed of the tuning runs (not a test seed)."""
    max_extensions: int = 2
    """Grid extensions per tuned arm while its best lr sits on an edge."""
    lr: Dict[str, float] = field(default_factory=dict)
    """Skip tuning these arms: arm -> lr (e.g. esgd-robust 1 adam 0.0045)."""
    jobs: int = 2
    """Runs trained at once (separate processes)."""


QUICK = dict(steps=30, eval_every=10, view_every=200, seeds=(0,), vanilla_seeds=(0,), tune_steps=10, max_extensions=0)


def main(args: GaussEsgdConfig) -> Dict[str, Any]:
    """Run the benchmark; print the tables and the summary line; write the JSON. Returns the payload."""
    if args.quick:
        for key, value in QUICK.items():
            setattr(args, key, value)
    args.out = args.results_stem("gauss_esgd")
    if args.results_dir is None and args.quick:
        args.results_dir = Path(tempfile.mkdtemp(prefix="gauss_esgd_quick_"))
    if "adam" not in args.arms or any(a not in ARMS for a in args.arms):
        raise ValueError(f"--arms must include adam (its final PSNR is the target) and name arms of {ARMS}")
    check_scene_folder(args.data)
    if any(arm not in TUNED for arm in args.lr):
        raise ValueError(f"--lr names arms to skip tuning, from {TUNED}; got {sorted(args.lr)}")
    fixed: Dict[str, float] = {arm: float(value) for arm, value in args.lr.items()}
    args.tune_arms = [a for a in args.arms if a in TUNED and a not in fixed]

    start = time.perf_counter()
    log(
        f"gauss_esgd: {args.data.name} at 100 px, CPU preset, T={args.steps}, eval every {args.eval_every} steps on "
        f"every {args.view_every}th test view, seeds {args.seeds} (vanilla {args.vanilla_seeds}), arms {args.arms}, "
        f"tuning {args.tune_steps} steps on val (seed {args.tune_seed}), {args.jobs} job(s) x {args.threads} thread(s)"
    )
    tuning: Dict[str, Any] = {"val_psnr": {}, "best_lr": {}, "best_on_grid_edge": {}}
    if args.tune_arms:
        tuning = tune(args, log)
    best_lr = {**tuning["best_lr"], **fixed}
    tune_seconds = time.perf_counter() - start

    order = {arm: i for i, arm in enumerate(ARMS)}
    tasks = []
    for seed in args.seeds:
        for arm in sorted(args.arms, key=order.get):
            if arm == "vanilla" and seed not in args.vanilla_seeds:
                continue
            lr = None if arm == "vanilla" else best_lr[arm]
            tasks.append(dict(phase="test", arm=arm, lr=lr, seed=seed, steps=args.steps, split="test",
                              eval_every=args.eval_every, **_common(args)))  # fmt: skip
    results = run_all(tasks, args.jobs)
    runs: Dict[int, Dict[str, Dict[str, Any]]] = {}
    for r in results:
        runs.setdefault(r["seed"], {})[r["arm"]] = r["history"]
    per_seed = {seed: summarize_seed(seed_runs) for seed, seed_runs in runs.items()}

    # ------------------------------------------------------------------------------------------ tables
    n_curv = curvature_steps(args.steps)
    headers = ["seed", "arm", "lr", "final PSNR", "steps to Adam's final", "x Adam steps", "s to Adam's final"]
    headers += ["x Adam s", "train s", "median s/step", "double-backward steps"]
    rows = []
    for seed, row in per_seed.items():
        for arm in sorted(runs[seed], key=order.get):
            r = row[arm]
            lr = f"{VANILLA_LR:g} (RAdam)" if arm == "vanilla" else f"{best_lr[arm]:.3g}"
            rows.append([seed, arm, lr, r["final_psnr"], r["steps_to_target"], r["step_ratio"], r["seconds_to_target"],
                         r["time_ratio"], r["train_seconds"], r["median_step_seconds"],
                         n_curv if arm in ("esgd", "esgd-robust") else 0])  # fmt: skip
    log("")
    log(markdown_table(headers, rows))
    curve_rows = [[arm, seed, *[round(p, 2) for p in h["psnr"]]] for seed in runs for arm, h in runs[seed].items()]
    log("")
    first = next(iter(runs.values()))["adam"]
    log(markdown_table(["arm", "seed", *[str(s) for s in first["step"]]], curve_rows))

    # ------------------------------------------------------------------------------------------ summary
    seeds = list(per_seed)
    summary: Dict[str, Any] = {"best_lr": best_lr, "per_seed": per_seed}
    finals = {arm: [per_seed[s][arm]["final_psnr"] for s in seeds if arm in per_seed[s]] for arm in args.arms}
    comparisons = [("esgd", "adam"), ("esgd-robust", "adam"), ("esgd-g2", "adam"), ("esgd-robust", "esgd-g2")]
    lines = []
    for method, baseline in comparisons:
        if method in args.arms and baseline in args.arms:
            stats = paired_stats(finals[baseline], finals[method])
            stats["verdict"] = verdict(stats["mean"], stats["std"], True, what=method)
            summary[f"{method}_minus_{baseline}_final_psnr"] = stats
            diff = fmt_pm(stats["mean"], stats["std"])
            lines.append(f"final PSNR {method} - {baseline}: {diff} dB ({stats['verdict']})")
    parts = []
    for arm, label in (("esgd", "official ESGD"), ("esgd-robust", "robust ESGD")):
        if arm not in args.arms:
            continue
        step_ratios = [per_seed[s][arm]["step_ratio"] for s in seeds]
        time_ratios = [per_seed[s][arm]["time_ratio"] for s in seeds]
        reached = all(r is not None for r in step_ratios + time_ratios)
        met = reached and max(step_ratios) <= TARGET_STEP_RATIO and max(time_ratios) <= TARGET_TIME_RATIO
        key = arm.replace("-", "_")
        summary.update({f"{key}_step_ratio": step_ratios, f"{key}_time_ratio": time_ratios, f"{key}_target_met": met})
        verdict_txt = "met" if met else "MISSED"
        parts.append(
            f"{label} reaches Adam's final PSNR in: iterations {_ratio_text(step_ratios)}, wall-clock "
            f"{_ratio_text(time_ratios)} of Adam's (target <= {TARGET_STEP_RATIO}x / {TARGET_TIME_RATIO}x: "
            f"{verdict_txt})"
        )
    if "esgd-g2" in args.arms:
        g2_ratios = [per_seed[s]["esgd-g2"]["step_ratio"] for s in seeds]
        parts.append(f"g^2 ablation reaches it in: iterations {_ratio_text(g2_ratios)}")
    finals_txt = ", ".join(f"{arm} {fmt_pm(*mean_std(v))} dB" for arm, v in finals.items() if v)
    parts.append(f"finals {finals_txt}")
    if "vanilla" in args.arms:
        vs = [s for s in seeds if "vanilla" in per_seed[s]]
        gauss = ("adam", "esgd", "esgd-robust")
        beats = all(per_seed[s]["vanilla"]["final_psnr"] > max(per_seed[s][a]["final_psnr"] for a in gauss
                                                                if a in per_seed[s]) for s in vs)  # fmt: skip
        summary["vanilla_beats_adam_and_esgd"] = beats
        parts.append(f"vanilla ReLU-PE {'BEATS' if beats else 'does not beat'} every Gaussian arm (seeds {vs})")
    gains = [per_seed[s]["adam_plateau_gain_db"] for s in seeds]
    plateau = all(g < 0.1 for g in gains)
    summary["adam_at_plateau"] = plateau
    parts.append(f"Adam {'at' if plateau else 'NOT at'} a plateau ({', '.join(f'{g:+.2f}' for g in gains)} dB "
                 "over its last 20%)")  # fmt: skip
    control = image_control_summary()
    summary["image_control"] = control
    log("")
    lrs_txt = ", ".join(f"{a} {v:.3g}" for a, v in best_lr.items())
    log(f"lr (tuned on val unless given by --lr): {lrs_txt}; vanilla RAdam {VANILLA_LR:g}, not tuned")
    for line in lines:
        log(line)
    log(f"image positive control (benchmarks/esgd_image.py): {control or 'not run (no esgd_image.json)'}")
    summary_line = (
        f"SUMMARY gauss_esgd ({args.data.name} 100 px, T={args.steps}, {len(seeds)} seed(s)): "
        + "; ".join(parts)
        + "; shared machine."
    )
    results = {
        "tuning": {
            k: {a: {str(lr): s for lr, s in v.items()} if isinstance(v, dict) else v for a, v in d.items()}
            for k, d in tuning.items()
        },  # fmt: skip
        "tuning_seconds": tune_seconds,
        "runs": {str(seed): seed_runs for seed, seed_runs in runs.items()},
        "summary": summary,
    }
    return finish("gauss_esgd", args, results, summary_line, start=start)


if __name__ == "__main__":
    main(tyro.cli(GaussEsgdConfig))
