"""Every NeRF method against vanilla NeRF on Blender mic at 100 px (CPU preset), compared by ``inr-compare``.

One command trains, per paired seed, the arms below through ``ns-train``'s own entry point (``runs.train``: real
run folders with ``config.yml``, checkpoint and tensorboard log), then runs :class:`inr-compare <Compare>` on all
of them: the Markdown/JSON table, the PSNR-vs-time plot and the side-by-side test view land in ``--output-dir``
(and copies of the table and plots in ``benchmarks/results/nerf_all*``, shown in the README).

Arms (every one is a registered method or inr-nerf's switches; CPU preset: 256 rays/step, widths 64/32):

- ``vanilla``: inr-nerf with every switch off = nerfstudio's vanilla NeRF (coarse + fine NeRFField, 32 + 32 samples);
- ``int``: int-nerf (INT ray selection, step ratio 0.2 -> 0.92, incremental interval up to 10);
- ``iga``: iga-nerf (IGA on the fine field, end 6 = 2.5 % of 256 rays, the paper's 25 of 1024);
- ``gauss``: gauss-nerf (Gaussian field sigma 0.1, no PE, single field on 32 stratified samples, ESGD);
- ``int+iga``: vanilla NeRF with INT and IGA (both switches of inr-nerf);
- ``all``: gauss-nerf + INT + IGA (every switch on; ESGD's curvature on the true MSE);
- optional (``--arms``): ``gauss+int``, ``gauss+iga``, ``gauss-adam`` (gauss-nerf's Adam control).

Learning rates are the winners of the per-method benchmarks' tuning on the val split (not re-tuned here):
RAdam 1e-3 for the ReLU-PE arms (``iga_nerf.py``: best for vanilla and IGA on {2.5e-4, 5e-4, 1e-3}), ESGD 0.333
decaying to 1/100 for the Gaussian arms and Adam 4.5e-3 decaying to 1/5 for ``gauss-adam`` (``gauss_esgd.py``).

Clocks (benchmarks.md): nerfstudio's own per-iteration timer (every cost of a step: INT scoring, eNTK + eigh,
ESGD's double backward; evaluation and checkpointing excluded). During training each run evaluates every
``--eval-every`` steps on every ``--view-every``-th test view (``--pipeline.training-eval-image-stride``), the
same views ``inr-compare`` evaluates at the end; the PSNR-vs-time curves and "time to reach vanilla's final PSNR"
come from those evaluations. With ``--jobs 2`` two runs train at once (1 torch thread each), in seed order, so
paired arms see similar load.

Run from the repository root: ``python -m benchmarks.nerf_all`` (about 40 min on 2 cores) or ``--quick``.
"""

from __future__ import annotations

import math
import shutil
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any, Dict, List, Literal, Sequence, Tuple

import tyro

from benchmarks import common
from benchmarks.common import fmt_pm, mean_std, paired_stats, time_to_target, verdict
from benchmarks.nerf_common import MIC, MIC_100PX

IGA_END = 6
RELU_LR = 1e-3
ESGD_LR, ESGD_FINAL_RATIO = 1.0 / 3.0, 0.01
ADAM_LR, ADAM_FINAL_RATIO = 4.5e-3, 0.2
_INT = {"pipeline.int_enabled": True}
_IGA = {"pipeline.model.iga": True, "pipeline.model.iga_end": IGA_END}
ARMS: Dict[str, Tuple[str, Dict[str, Any]]] = {
    "vanilla": ("inr-nerf", {}),
    "int": ("int-nerf", {}),
    "iga": ("iga-nerf", dict(_IGA)),
    "gauss": ("gauss-nerf", {}),
    "all": ("gauss-nerf", {**_INT, **_IGA}),
    "int+iga": ("inr-nerf", {**_INT, **_IGA}),
    "gauss+int": ("gauss-nerf", dict(_INT)),
    "gauss+iga": ("gauss-nerf", dict(_IGA)),
    "gauss-adam": ("gauss-nerf", {"optimizer": "adam"}),
}
"""arm -> (registered method, config overrides). Runs keep the registered method name (``ns-eval`` needs it);
inr-compare labels each group by its method and the settings that differ from the method's other runs."""
DEFAULT_ARMS = ("vanilla", "int", "iga", "gauss", "int+iga", "all")
ArmName = Literal["all", "gauss", "gauss+iga", "gauss+int", "gauss-adam", "iga", "int", "int+iga", "vanilla"]
"""The keys of :data:`ARMS` (the --arms choices)."""


def arm_config(arm: str, seed: int, args: NerfAllConfig):
    """The TrainerConfig of one arm and seed: CPU preset, mic at 100 px, logged evaluations on the fixed views."""
    from nerf_inr_methods.nerfstudio_plugin.runs import prepare_config

    method, overrides = ARMS[arm]
    config = prepare_config(
        method,
        args.data,
        args.output_dir / "runs",
        steps=args.steps,
        seed=seed,
        timestamp=f"{arm}-seed{seed}",
        experiment_name=args.data.name,
        overrides={**MIC_100PX, **overrides, "pipeline.training_eval_image_stride": args.view_every},
    )
    config.steps_per_eval_all_images = args.eval_every
    optimizer = getattr(config, "optimizer", "configured")
    if optimizer == "configured":
        config.optimizers["fields"]["optimizer"].lr = RELU_LR
    elif optimizer == "esgd":
        preset = config.optimizer_presets["esgd"]
        preset["optimizer"].lr, preset["scheduler"].lr_final = ESGD_LR, ESGD_LR * ESGD_FINAL_RATIO
        preset["optimizer"].rademacher_seed = seed
    else:
        preset = config.optimizer_presets["adam"]
        preset["optimizer"].lr, preset["scheduler"].lr_final = ADAM_LR, ADAM_LR * ADAM_FINAL_RATIO
    return config


def train_task(task: Dict[str, Any]) -> Dict[str, Any]:
    """Train one arm/seed in this (fresh) process; returns the task with its config.yml and wall seconds."""

    from nerf_inr_methods.nerfstudio_plugin.runs import train

    task["args"].use_threads()
    config = arm_config(task["arm"], task["seed"], task["args"])
    start = time.perf_counter()
    config_path = train(config)
    print(f"  [{task['arm']} seed {task['seed']}] done in {time.perf_counter() - start:.0f} s", flush=True)
    return {"arm": task["arm"], "seed": task["seed"], "config": str(config_path)}


def train_all(tasks: List[Dict[str, Any]], jobs: int) -> List[Dict[str, Any]]:
    """Each task in its own process (nerfstudio's writers and profiler are process-global)."""
    with ProcessPoolExecutor(max_workers=jobs, mp_context=get_context("spawn"), max_tasks_per_child=1) as pool:
        return list(pool.map(train_task, tasks))


# ------------------------------------------------------------------------------------------------- analysis
def run_curve(run: Dict[str, Any]) -> Tuple[List[float], List[float], List[float]]:
    """(steps, training seconds, PSNR) of a run: its logged evaluations plus inr-compare's final one (same views)."""
    log = run["training_log"]
    steps, seconds, psnr = list(log["curve_step"]), list(log["curve_seconds"]), list(log["curve_psnr"])
    final_step = run["step"] + 1
    if log["train_seconds"] is not None and (not steps or steps[-1] < final_step):
        steps.append(final_step)
        seconds.append(log["train_seconds"])
        psnr.append(run["metrics"]["psnr"])
    return steps, seconds, psnr


def late_gain(steps: Sequence[float], values: Sequence[float], fraction: float = 0.2) -> Tuple[float, List[float]]:
    """Gain of a curve from its last sample at or before ``(1 - fraction)`` of the run to its end, and that window
    (steps). With sparse evaluations the window is longer than ``fraction``: never shorter, so "at a plateau" (gain
    < 0.1 dB) is never claimed on a window that holds only the final point."""
    start = (1.0 - fraction) * steps[-1]
    earlier = [i for i, s in enumerate(steps) if s <= start]
    i = earlier[-1] if earlier else 0
    return float(values[-1] - values[i]), [float(steps[i]), float(steps[-1])]


def analyse(
    report: Dict[str, Any], trained: List[Dict[str, Any]], arms: Sequence[str], seeds: Sequence[int]
) -> Dict[str, Any]:
    """Per arm and seed: final PSNR, training time, time/steps to vanilla's final PSNR; paired stats vs vanilla."""
    arm_of = {str(Path(t["config"]).resolve()): (t["arm"], t["seed"]) for t in trained}
    by_key = {arm_of[str(Path(r["config"]).resolve())]: r for r in report["runs"]}
    per_seed: Dict[int, Dict[str, Any]] = {}
    for seed in seeds:
        base = by_key[("vanilla", seed)]
        base_steps, base_seconds_curve, base_psnr_curve = run_curve(base)
        target = base["metrics"]["psnr"]
        row: Dict[str, Any] = {"target_psnr": target, "vanilla_plateau_gain_db": None}
        if len(base_steps) >= 2:
            row["vanilla_plateau_gain_db"], row["vanilla_plateau_window_steps"] = late_gain(base_steps, base_psnr_curve)
        base_to_target = time_to_target(base_seconds_curve, base_psnr_curve, target)
        for arm in arms:
            run = by_key[(arm, seed)]
            steps, seconds, psnr = run_curve(run)
            to_target = time_to_target(seconds, psnr, target)
            row[arm] = {
                "final_psnr": run["metrics"]["psnr"],
                "final_ssim": run["metrics"].get("ssim"),
                "train_seconds": run["train_seconds"],
                "seconds_per_step": (run["train_seconds"] or math.nan) / (run["step"] + 1),
                "seconds_to_vanilla_final": to_target,
                "steps_to_vanilla_final": time_to_target(steps, psnr, target),
                "time_ratio_to_vanilla_final": (
                    to_target / base_to_target if to_target is not None and base_to_target else None
                ),
            }
        per_seed[seed] = row
    stats: Dict[str, Any] = {}
    for arm in arms:
        if arm == "vanilla":
            continue
        finals = paired_stats(
            [per_seed[s]["vanilla"]["final_psnr"] for s in seeds], [per_seed[s][arm]["final_psnr"] for s in seeds]
        )
        finals["verdict"] = verdict(finals["mean"], finals["std"], True, what=arm)
        step_time = [per_seed[s][arm]["seconds_per_step"] / per_seed[s]["vanilla"]["seconds_per_step"] for s in seeds]
        ratios = [per_seed[s][arm]["time_ratio_to_vanilla_final"] for s in seeds]
        stats[arm] = {"final_psnr_minus_vanilla": finals, "step_time_ratio": step_time, "time_ratio_to_target": ratios}
    return {"per_seed": per_seed, "vs_vanilla": stats}


def combination_notes(stats: Dict[str, Any], per_seed: Dict[int, Dict[str, Any]], seeds: Sequence[int]) -> List[str]:
    """Does stacking help or interfere? Each combination against each of its parts (final PSNR, paired over seeds)."""
    parts = {
        "all": ("int", "iga", "gauss"),
        "int+iga": ("int", "iga"),
        "gauss+int": ("gauss", "int"),
        "gauss+iga": ("gauss", "iga"),
    }
    notes = []
    for combo, singles in parts.items():
        if combo not in stats or not all(s in stats for s in singles):
            continue
        parts_text = []
        for part in singles:
            diff = paired_stats(
                [per_seed[s][part]["final_psnr"] for s in seeds], [per_seed[s][combo]["final_psnr"] for s in seeds]
            )
            word = verdict(diff["mean"], diff["std"], True, what=combo)
            parts_text.append(f"- {part} {fmt_pm(diff['mean'], diff['std'])} dB ({word})")
        notes.append(f"{combo} " + ", ".join(parts_text))
    return notes


@dataclass
class NerfAllConfig(common.BenchmarkOptions):
    """Every method on Blender mic at 100 px (CPU preset) in one command, with inr-compare's report (--quick: 12 steps,
    1 seed, 1 view)."""

    data: Path = MIC
    """Blender scene folder."""
    arms: List[ArmName] = field(default_factory=lambda: list(DEFAULT_ARMS))
    """Arms (vanilla required)."""
    steps: int | None = None
    """Training steps per run (default 1000; quick 12)."""
    eval_every: int | None = None
    """Logged evaluation period (default 250; quick 6)."""
    view_every: int | None = None
    """Evaluate every n-th test view (default 20; quick 200)."""
    seeds: List[int] | None = None
    """Paired seeds (default 0 1 2; quick 0)."""
    jobs: int = 2
    """Runs trained at once (separate processes)."""
    output_dir: Path | None = None
    """Run folders and comparison (default outputs/nerf_all)."""
    reuse_runs: bool = False
    """Keep finished runs in --output-dir (same settings) and only compare."""


def main(argv: Sequence[str] | None = None) -> Dict[str, Any]:
    """Parse ``argv`` (default: the command line), train every arm, compare, write the JSON; returns its payload."""
    args = tyro.cli(NerfAllConfig, args=argv)
    q = args.quick
    args.steps = args.steps or (12 if q else 1000)
    args.eval_every = args.eval_every or (6 if q else 250)
    args.view_every = args.view_every or (200 if q else 20)
    args.seeds = args.seeds if args.seeds is not None else ([0] if q else [0, 1, 2])
    args.out = args.results_stem("nerf_all")
    root = Path(__file__).resolve().parents[1]
    args.output_dir = (args.output_dir or root / "outputs" / args.out).resolve()
    if "vanilla" not in args.arms:
        raise ValueError(f"--arms must include vanilla (the baseline), got {args.arms}")
    if not (args.data / "transforms_test.json").is_file():
        raise FileNotFoundError(f"--data {args.data}: expected a Blender scene with transforms_test.json (e.g. mic)")
    if (args.output_dir / "runs").exists() and not args.reuse_runs:
        shutil.rmtree(args.output_dir / "runs")  # a comparison of this run's runs only
    start = time.perf_counter()
    print(
        f"nerf_all: {args.data.name} at 100 px, CPU preset, T={args.steps}, arms {args.arms}, seeds {args.seeds}, "
        f"evaluations every {args.eval_every} steps on every {args.view_every}th test view, "
        f"{args.jobs} job(s) x {args.threads} thread(s); runs in {args.output_dir}",
        flush=True,
    )
    tasks = [{"arm": arm, "seed": seed, "args": args} for seed in args.seeds for arm in args.arms]
    trained, todo = [], []
    for task in tasks:
        config = arm_config(task["arm"], task["seed"], args)
        done = config.get_base_dir() / "config.yml"
        if args.reuse_runs and done.is_file() and any((done.parent / "nerfstudio_models").glob("*.ckpt")):
            trained.append({"arm": task["arm"], "seed": task["seed"], "config": str(done), "reused": True})
        else:
            todo.append(task)
    if trained:
        print(f"reusing {len(trained)} finished run(s) (--reuse-runs): their logged timings stand", flush=True)
    trained += train_all(todo, args.jobs) if todo else []
    order = {(t["arm"], t["seed"]): i for i, t in enumerate(tasks)}
    trained.sort(key=lambda t: order[(t["arm"], t["seed"])])
    train_wall = time.perf_counter() - start

    from nerf_inr_methods.nerfstudio_plugin.compare import Compare, group_labels, load_run_config

    compare_dir = args.output_dir / "comparison"
    paths = [Path(t["config"]) for t in trained]
    labels = group_labels([load_run_config(p) for p in paths])
    groups = {t["arm"]: label for t, label in zip(trained, labels, strict=True)}
    print("groups: " + "; ".join(f"{arm} = {label}" for arm, label in groups.items()), flush=True)
    report = Compare(
        runs=tuple(paths), output_dir=compare_dir, views=f"every-{args.view_every}", baseline=groups["vanilla"]
    ).main()
    analysis = analyse(report, trained, args.arms, args.seeds)
    analysis["groups"] = groups
    per_seed, stats = analysis["per_seed"], analysis["vs_vanilla"]

    lines = []
    for arm, s in stats.items():
        f = s["final_psnr_minus_vanilla"]
        ratios = [r for r in s["time_ratio_to_target"] if r is not None]
        reach = (
            f"reaches vanilla's final in {fmt_pm(*mean_std(ratios))}x its time ({len(ratios)}/{len(args.seeds)} seeds)"
            if ratios
            else f"never reaches vanilla's final (0/{len(args.seeds)} seeds)"
        )
        lines.append(
            f"{arm}: final PSNR - vanilla {fmt_pm(f['mean'], f['std'])} dB ({f['verdict']}); step time "
            f"{fmt_pm(*mean_std(s['step_time_ratio']))}x vanilla's; {reach}"
        )
    combos = combination_notes(stats, per_seed, args.seeds)
    gains = [per_seed[s]["vanilla_plateau_gain_db"] for s in args.seeds]
    window = per_seed[args.seeds[0]].get("vanilla_plateau_window_steps") or [math.nan, math.nan]
    plateau = all(g is not None and g < 0.1 for g in gains)
    finals = [per_seed[s]["vanilla"]["final_psnr"] for s in args.seeds]
    print("")
    for line in lines + combos:
        print(line)
    summary_line = (
        f"SUMMARY nerf_all ({args.data.name} 100 px, CPU preset, T={args.steps}, {len(args.seeds)} paired seed(s)): "
        f"vanilla {fmt_pm(*mean_std(finals))} dB ({'at' if plateau else 'NOT at'} a plateau: "
        + ", ".join("n/a" if g is None else f"{g:+.2f}" for g in gains)
        + f" dB from step {window[0]:.0f} to {window[1]:.0f}); "
        + "; ".join(lines + combos)
        + "; shared machine."
    )
    payload = {
        "benchmark": "nerf_all",
        "command": common.command_line(),
        "config": common.config_dict(args),
        "learning_rates": {"relu_pe_radam": RELU_LR, "gauss_esgd": ESGD_LR, "gauss_adam": ADAM_LR},
        "environment": common.environment_info(),
        "analysis": analysis,
        "combinations": combos,
        "comparison": report,
        "train_wall_seconds": train_wall,
        "reused_runs": sum(1 for t in trained if t.get("reused")),
        "benchmark_wall_seconds": time.perf_counter() - start,
        "summary_line": summary_line,
    }
    path = common.write_results(args.out, payload, args.results_dir)
    for name in ("comparison.md", "psnr_vs_time.png", "test_view.png"):
        shutil.copyfile(compare_dir / name, path.parent / f"{args.out}_{name}")
    print("")
    print(summary_line)
    print(f"(raw numbers: {path}; comparison: {compare_dir}; wall-clock {payload['benchmark_wall_seconds']:.0f} s)")
    return payload


if __name__ == "__main__":
    main()
