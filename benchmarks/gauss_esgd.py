"""Gaussian-activation NeRF trained with ESGD vs Adam on Blender mic at 100 px (CPU preset), with the g^2 ablation
and vanilla ReLU-PE NeRF as a reference.

Arms (each trains one nerfstudio TrainerConfig through nerfstudio's Trainer, ``benchmarks.nerf_common.train_arm``):

- ``esgd``: gauss-nerf (GARF-style Gaussian field, sigma 0.1, no PE, one field on stratified samples), ESGD with the
  official INR defaults (betas (0.9, 0.999), eps 1e-4, d_warmup 50, update_d_every 100), lr decaying exponentially
  to ``lr / 100`` over the run (the default 1 -> 0.01, scaled with the tuned lr);
- ``adam``: the same method with ``--optimizer adam``: Adam, lr decaying exponentially to ``lr / 5`` (BARF/GARF's
  5e-4 -> 1e-4, scaled with the tuned lr);
- ``esgd-g2``: the ablation, ESGD with ``hvp_source="gradient"`` ((Hv)^2 replaced by g^2) on the identical curvature
  and lr schedules (its own tuned lr: g^2 and (Hv)^2 have different scales);
- ``vanilla``: inr-nerf = nerfstudio's vanilla-nerf (ReLU + PE, coarse + fine fields), RAdam 5e-4 constant, not tuned
  (a reference: "does the Gaussian field pay off at all at this scale?").

Protocol (../shared/docs/benchmarks.md): each tuned arm's lr is chosen on its own x3-spaced grid of 3 values around
its default (extended by x3 while the best is on an edge, ``--max-extensions`` times), by the PSNR on every
``--view-every``-th *val* view after ``--tune-steps`` steps (seed ``--tune-seed``, not a test seed; the lr decays over
the tuning run's length). Then every arm trains ``--steps`` steps at its best lr for each of ``--seeds``: arms share the
seed, hence the initialisation of the Gaussian field and, since ESGD draws its Rademacher vectors from a private
generator, the ray batches. PSNR is measured every ``--eval-every`` steps on every ``--view-every``-th *test* view
(full image, white background as trained). The clock counts training only (ESGD's double backward included,
evaluation excluded); torch uses ``--threads`` threads. With ``--jobs 2`` two runs train at once (in order: the
seed's adam and esgd together, then esgd-g2 and vanilla), so paired arms see the same machine load.

Reported per seed: each arm's final test PSNR (last evaluation), and the iterations and training seconds each arm
needs to first reach the Adam run's final PSNR (linear interpolation between evaluations; Adam's own first crossing
for Adam). Targets (issue 6): ESGD <= 0.6x Adam's iterations and <= 0.8x its wall-clock. The image positive control
is ``benchmarks/esgd_image.py``; its saved summary is printed when ``benchmarks/results/esgd_image.json`` exists.

Run from the repository root: ``python benchmarks/gauss_esgd.py`` (about 15 min on 2 shared cores) or ``--quick``
(a smoke run written to ``gauss_esgd_quick.json``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any, Callable, Dict, List, Sequence

if __package__ in (None, ""):  # run as a file: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import (  # noqa: E402
    RESULTS_DIR,
    command_line,
    environment_info,
    fmt_pm,
    markdown_table,
    mean_std,
    paired_stats,
    plateau_gain,
    time_to_target,
    verdict,
    write_results,
)
from benchmarks.nerf_common import MIC, MIC_100PX  # noqa: E402

ARMS = ("adam", "esgd", "esgd-g2", "vanilla")
TUNED = ("adam", "esgd", "esgd-g2")
DEFAULT_LR = {"adam": 5e-4, "esgd": 1.0, "esgd-g2": 5e-4}
"""Centre of each tuned arm's grid: Adam's BARF/GARF lr, ESGD's NeRF lr, and Adam's for the (Adam-like) g^2 ablation."""
LR_FINAL_RATIO = {"adam": 0.2, "esgd": 0.01, "esgd-g2": 0.01}
"""lr_final / lr of each arm's exponential decay (Adam 5e-4 -> 1e-4; ESGD 1 -> 0.01, the ablation on ESGD's)."""
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
        preset["optimizer"].hvp_source = "gradient" if arm == "esgd-g2" else "hessian"
        preset["optimizer"].rademacher_seed = seed
    return config


def run_task(task: Dict[str, Any]) -> Dict[str, Any]:
    """Train one arm (in this process or a pool worker) and return its history plus the task description."""
    import torch

    from benchmarks.nerf_common import train_arm

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
def tune(args: argparse.Namespace, log: Callable[[str], None]) -> Dict[str, Any]:
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


def _common(args: argparse.Namespace) -> Dict[str, Any]:
    return dict(data=str(args.data), view_every=args.view_every, threads=args.threads)


# ------------------------------------------------------------------------------------------------- analysis
def summarize_seed(runs: Dict[str, Dict[str, Any]]) -> Dict[str, Any]:
    """Per seed: every arm's final PSNR and its iterations / seconds to first reach the Adam run's final PSNR."""
    adam = runs["adam"]
    target = adam["psnr"][-1]
    row: Dict[str, Any] = {"target_psnr": target, "adam_plateau_gain_db": plateau_gain(adam["step"], adam["psnr"])}
    for arm, h in runs.items():
        steps = time_to_target(h["step"], h["psnr"], target)
        seconds = time_to_target(h["train_seconds"], h["psnr"], target)
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


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument("--quick", action="store_true", help="smoke run: 30 steps, 1 seed, 10 tuning steps, 1 view")
    p.add_argument("--data", type=Path, default=MIC, help="Blender scene folder")
    p.add_argument("--steps", type=int, default=None, help="training steps per run (default 500; quick 30)")
    p.add_argument("--eval-every", type=int, default=None, help="test evaluation period (default 50; quick 10)")
    p.add_argument("--view-every", type=int, default=None, help="evaluate every n-th view (default 100; quick 200)")
    p.add_argument("--seeds", type=int, nargs="+", default=None, help="paired seeds (default 0 1 2; quick 0)")
    p.add_argument("--vanilla-seeds", type=int, nargs="*", default=None, help="seeds of the vanilla arm (default 0)")
    p.add_argument("--arms", nargs="+", choices=ARMS, default=list(ARMS), help="arms (adam is required)")
    p.add_argument("--tune-steps", type=int, default=None, help="steps of each lr-tuning run (default 200; quick 10)")
    p.add_argument("--tune-seed", type=int, default=1000, help="seed of the tuning runs (not a test seed)")
    p.add_argument("--max-extensions", type=int, default=None, help="grid extensions per arm (default 2; quick 0)")
    p.add_argument("--lr", nargs="*", default=[], metavar="ARM=LR", help="skip tuning an arm, e.g. esgd=1 adam=2e-3")
    p.add_argument("--jobs", type=int, default=2, help="runs trained at once (separate processes)")
    p.add_argument("--threads", type=int, default=1, help="torch threads per run (1: steadier clocks when shared)")
    p.add_argument("--out", type=str, default=None, help="results file stem (default gauss_esgd[_quick])")
    return p


def main(argv: List[str] | None = None) -> Dict[str, Any]:
    args = build_parser().parse_args(argv)
    q = args.quick
    args.steps = args.steps or (30 if q else 500)
    args.eval_every = args.eval_every or (10 if q else 50)
    args.view_every = args.view_every or (200 if q else 100)
    args.seeds = args.seeds if args.seeds is not None else ([0] if q else [0, 1, 2])
    args.vanilla_seeds = args.vanilla_seeds if args.vanilla_seeds is not None else [args.seeds[0]]
    args.tune_steps = args.tune_steps or (10 if q else 200)
    args.max_extensions = args.max_extensions if args.max_extensions is not None else (0 if q else 2)
    args.out = args.out or ("gauss_esgd_quick" if q else "gauss_esgd")
    if "adam" not in args.arms:
        raise ValueError(f"--arms must include adam (its final PSNR is the target), got {args.arms}")
    if not args.data.is_dir():
        raise FileNotFoundError(f"--data {args.data} is not a directory (expected a Blender scene such as mic)")
    fixed: Dict[str, float] = {}
    for item in args.lr:
        arm, _, value = item.partition("=")
        if arm not in TUNED or not value:
            raise ValueError(f"--lr expects ARM=LR with ARM in {TUNED}, got {item!r}")
        fixed[arm] = float(value)
    args.tune_arms = [a for a in args.arms if a in TUNED and a not in fixed]

    def log(msg: str) -> None:
        print(msg, flush=True)

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

    order = {"adam": 0, "esgd": 1, "esgd-g2": 2, "vanilla": 3}
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
                         n_curv if arm == "esgd" else 0])  # fmt: skip
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
    comparisons = [("esgd", "adam"), ("esgd-g2", "adam"), ("esgd", "esgd-g2")]
    lines = []
    for method, baseline in comparisons:
        if method in args.arms and baseline in args.arms:
            stats = paired_stats(finals[baseline], finals[method])
            stats["verdict"] = verdict(stats["mean"], stats["std"], True, what=method)
            summary[f"{method}_minus_{baseline}_final_psnr"] = stats
            diff = fmt_pm(stats["mean"], stats["std"])
            lines.append(f"final PSNR {method} - {baseline}: {diff} dB ({stats['verdict']})")
    parts = []
    met = None
    if "esgd" in args.arms:
        step_ratios = [per_seed[s]["esgd"]["step_ratio"] for s in seeds]
        time_ratios = [per_seed[s]["esgd"]["time_ratio"] for s in seeds]
        reached = all(r is not None for r in step_ratios)
        met = reached and max(step_ratios) <= TARGET_STEP_RATIO and max(time_ratios) <= TARGET_TIME_RATIO
        summary.update(esgd_step_ratio=step_ratios, esgd_time_ratio=time_ratios, esgd_target_met=met)
        verdict_txt = "met" if met else "MISSED"
        parts.append(
            f"ESGD reaches Adam's final PSNR in: iterations {_ratio_text(step_ratios)}, wall-clock "
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
        beats = all(per_seed[s]["vanilla"]["final_psnr"] > max(per_seed[s][a]["final_psnr"] for a in ("adam", "esgd")
                                                                if a in per_seed[s]) for s in vs)  # fmt: skip
        summary["vanilla_beats_adam_and_esgd"] = beats
        parts.append(f"vanilla ReLU-PE {'BEATS' if beats else 'does not beat'} both Gaussian arms (seeds {vs})")
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
    payload = {
        "benchmark": "gauss_esgd",
        "command": command_line(),
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "environment": environment_info(),
        "tuning": {
            k: {a: {str(lr): s for lr, s in v.items()} if isinstance(v, dict) else v for a, v in d.items()}
            for k, d in tuning.items()
        },  # fmt: skip
        "tuning_seconds": tune_seconds,
        "runs": {str(seed): seed_runs for seed, seed_runs in runs.items()},
        "summary": summary,
        "summary_line": summary_line,
        "benchmark_wall_seconds": time.perf_counter() - start,
    }
    path = write_results(args.out, payload)
    log("")
    log(summary_line)
    log(f"(raw numbers: {path}; benchmark wall-clock {payload['benchmark_wall_seconds']:.0f} s)")
    return payload


if __name__ == "__main__":
    main()
