"""``inr-compare``: evaluate several nerfstudio runs on the same test views and tabulate, plot and judge them.

Given run folders (ours and nerfstudio's, e.g. vanilla-nerf), each run is loaded from its checkpoint and evaluated
on the same views of the test split with the model's own metrics (PSNR, SSIM, and LPIPS when its weights are
available: otherwise the metric is omitted, never faked). Training time and rays/s come from the run's tensorboard
event file, as nerfstudio logged them while training (``--vis tensorboard``):

- training seconds = the sum of the per-step "Train Iter (time)" durations (each training iteration with its
  callbacks; evaluation and checkpointing excluded). nerfstudio logs a running mean over the last
  ``logging.max_buffer_size`` steps; the exact per-step durations are recovered from it.
- rays/s = rays trained / training seconds over the steps nerfstudio logs "Train Rays / Sec" for (from step 2).
- the PSNR curve = the evaluations the run logged while training (nerfstudio's ``--steps-per-eval-all-images``,
  else ``--steps-per-eval-image``, else ``--steps-per-eval-batch``; on the run's eval split) against the
  cumulative training seconds at that step. Runs that logged none are marked so in the plot and tables.

Runs are grouped by method: ``method_name`` plus the config values that differ between runs of that method
(seeds, timestamps, output folders and logging/viewer settings are ignored). For a group with >= 2 seeds the
tables give mean +- std, and each difference to the baseline group is called "better"/"worse" only when it
exceeds 2 std of the run-to-run noise (benchmarks.md), "not resolvable at this scale" otherwise:

- paired (both groups share >= 2 seeds): std of the per-seed differences over the shared seeds;
- unpaired: std of a single-run difference, ``sqrt(2)`` x the pooled per-run std of the groups with >= 2 seeds.

Outputs in ``--output-dir``: ``comparison.md``, ``comparison.json`` (every raw number), ``psnr_vs_time.png``
and ``test_view.png`` (ground truth + each run on one test view).

Example::

    inr-compare --runs outputs/mic/vanilla-nerf outputs/mic/inr-nerf --views every-10 --output-dir cmp/
"""

from __future__ import annotations

import gc
import json
import math
import os
import re
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, Dict, List, Sequence, Tuple

import numpy as np
import torch
import tyro

from nerf_inr_methods.cli import exit_on_bad_input
from nerf_inr_methods.nerfstudio_plugin.export_mesh import relocate
from nerf_inr_methods.nerfstudio_plugin.offline import LPIPS_MISSING_NOTE, drop_unavailable_metrics

NOT_RESOLVABLE = "not resolvable at this scale"
METRICS: Tuple[Tuple[str, str, bool], ...] = (
    ("psnr", "PSNR (dB)", True),
    ("ssim", "SSIM", True),
    ("lpips", "LPIPS", False),
    ("train_seconds", "train time (s)", False),
    ("rays_per_sec", "train rays/s", True),
)
"""(key, label, higher_is_better) of every compared quantity."""

EVAL_SOURCES: Tuple[Tuple[str, str], ...] = (
    ("Eval Images Metrics Dict (all images)/psnr", "all eval images"),
    ("Eval Images Metrics/psnr", "one eval image"),
    ("Eval Metrics Dict/psnr", "eval ray batch"),
)
"""nerfstudio's logged evaluation PSNRs, most to least representative."""

ITER_TIME = "Train Iter (time)"
RAYS_PER_SEC = "Train Rays / Sec"
TOTAL_TIME = "Train Total (time)"

IGNORED_KEYS = (
    "timestamp",
    "output_dir",
    "experiment_name",
    "project_name",
    "relative_model_dir",
    "load_dir",
    "load_step",
    "load_config",
    "load_checkpoint",
    "vis",
    "data",
    "steps_per_save",
    "steps_per_eval_batch",
    "steps_per_eval_image",
    "steps_per_eval_all_images",
    "save_only_latest_checkpoint",
    "machine.seed",
    "machine.dist_url",
    "machine.machine_rank",
    "pipeline.datamanager.data",
    "pipeline.datamanager.dataparser.data",
    "pipeline.datamanager.eval_num_rays_per_batch",
    "pipeline.model.eval_num_rays_per_chunk",
)
IGNORED_PREFIXES = ("viewer.", "logging.")


# ----------------------------------------------------------------------------------------------------------------
# Views


def parse_views(spec: str, n_views: int) -> List[int]:
    """Indices into a split of ``n_views`` views: "all", "every-K" (0, K, 2K, ...) or "i,j,k"."""
    spec = spec.strip().lower()
    if n_views < 1:
        raise ValueError("the test split has no views")
    if spec == "all":
        return list(range(n_views))
    match = re.fullmatch(r"every-(\d+)", spec)
    if match:
        step = int(match.group(1))
        if step < 1:
            raise ValueError(f"--views {spec}: K must be >= 1")
        return list(range(0, n_views, step))
    try:
        indices = [int(part) for part in spec.split(",") if part.strip()]
    except ValueError:
        indices = []
    if not indices:
        raise ValueError(f"--views {spec!r}: expected 'all', 'every-K' or comma-separated indices like '0,5,9'")
    bad = [i for i in indices if not 0 <= i < n_views]
    if bad:
        raise ValueError(f"--views {spec!r}: indices {bad} are outside the test split's 0..{n_views - 1}")
    return indices


# ----------------------------------------------------------------------------------------------------------------
# Run discovery and grouping


def find_run_configs(paths: Sequence[Path]) -> List[Path]:
    """``config.yml`` of each run: a config file, a run folder, or a folder searched recursively (sorted)."""
    found: List[Path] = []
    for path in paths:
        path = Path(path)
        if path.is_file():
            if path.suffix not in (".yml", ".yaml"):
                raise ValueError(f"--runs {path}: expected a run's config.yml or a folder containing runs")
            found.append(path)
        elif path.is_dir():
            configs = [path / "config.yml"] if (path / "config.yml").is_file() else sorted(path.rglob("config.yml"))
            if not configs:
                raise FileNotFoundError(f"--runs {path}: no config.yml in this folder or below")
            found += configs
        else:
            raise FileNotFoundError(f"--runs {path} does not exist")
    unique = list(dict.fromkeys(p.resolve() for p in found))
    return unique


def load_run_config(config_path: Path) -> Any:
    """The TrainerConfig saved in a run's config.yml (nerfstudio's own yaml format)."""
    import yaml

    config = yaml.load(Path(config_path).read_text(), Loader=yaml.Loader)
    if not hasattr(config, "method_name") or not hasattr(config, "pipeline"):
        raise ValueError(f"{config_path} is not a nerfstudio run config (no method_name / pipeline)")
    return config


def flatten_config(obj: Any, prefix: str = "") -> Dict[str, str]:
    """Dotted path -> printable value of every leaf of a (nested dataclass / dict) config."""
    out: Dict[str, str] = {}
    if is_dataclass(obj) and not isinstance(obj, type):
        for f in fields(obj):
            out.update(flatten_config(getattr(obj, f.name), f"{prefix}{f.name}."))
    elif isinstance(obj, dict):
        for key, value in obj.items():
            out.update(flatten_config(value, f"{prefix}{key}."))
    else:
        if isinstance(obj, type):
            value = f"{obj.__module__}.{obj.__qualname__}"
        elif isinstance(obj, Path):
            value = str(obj)
        elif isinstance(obj, torch.Tensor):
            value = repr(obj.tolist())
        else:
            value = repr(obj)
        out[prefix[:-1]] = value
    return out


def _ignored(key: str, extra: Sequence[str]) -> bool:
    leaf = key.rsplit(".", 1)[-1]
    is_seed = leaf == "seed" or leaf.endswith("_seed")  # e.g. ESGD's rademacher_seed: a seed, not a setting
    return (
        is_seed
        or key in IGNORED_KEYS
        or key.startswith(IGNORED_PREFIXES)
        or any(key == e or key.startswith(e) for e in extra)
    )


def _short_key(key: str) -> str:
    """A config path as a label: ``pipeline.model.iga`` -> ``iga``, ``pipeline.int_enabled`` -> ``int_enabled``."""
    for prefix in ("pipeline.model.", "pipeline."):
        if key.startswith(prefix):
            return key[len(prefix) :]
    return key


def group_labels(configs: Sequence[Any], ignore: Sequence[str] = ()) -> List[str]:
    """One group label per run: ``method_name`` + ``key=value`` for the config values that differ between runs
    of the same method (seeds, timestamps, paths, logging and the keys/prefixes in ``ignore`` excluded; keys under
    ``pipeline.model.`` / ``pipeline.`` shown without that prefix)."""
    flat = [flatten_config(c) for c in configs]
    labels = []
    for i, config in enumerate(configs):
        same_method = [j for j, c in enumerate(configs) if c.method_name == config.method_name]
        keys = sorted({k for j in same_method for k in flat[j]})
        varying = [
            k for k in keys if not _ignored(k, ignore) and len({flat[j].get(k, "<absent>") for j in same_method}) > 1
        ]
        parts = [f"{_short_key(k)}={flat[i].get(k, '<absent>')}" for k in varying]
        labels.append(config.method_name + (f" ({', '.join(parts)})" if parts else ""))
    return labels


# ----------------------------------------------------------------------------------------------------------------
# Tensorboard logs


def unroll_running_mean(averages: Sequence[float], buffer_size: int) -> List[float]:
    """Per-step values from the running means nerfstudio logs (``writer.put_time(avg_over_steps=True)``).

    ``averages[i]`` is the mean of the last ``min(i + 1, buffer_size)`` values; the values are recovered exactly
    (up to float32 rounding of the log): ``v_i = S_i - S_(i-1) + v_(i-B)`` with ``S_i = averages[i] * count_i``.
    """
    if buffer_size < 1:
        raise ValueError(f"buffer_size must be >= 1, got {buffer_size}")
    values: List[float] = []
    previous = 0.0
    for i, avg in enumerate(averages):
        total = float(avg) * min(i + 1, buffer_size)
        dropped = values[i - buffer_size] if i >= buffer_size else 0.0
        values.append(total - previous + dropped)
        previous = total
    return values


def _flush_live_writers() -> None:
    """Flush tensorboard writers of runs trained in this process (they buffer events for up to 2 minutes)."""
    from nerfstudio.utils import writer

    for event_writer in writer.EVENT_WRITERS:
        tb = getattr(event_writer, "tb_writer", None)
        if tb is not None:
            tb.flush()


def _event_file_order(path: Path) -> Tuple[int, int, str]:
    parts = path.name.split(".")
    created = int(parts[3]) if len(parts) > 3 and parts[3].isdigit() else 0
    return created, int(path.stat().st_mtime_ns), path.name


def read_scalars(event_file: Path) -> Tuple[Dict[str, List[Tuple[int, float]]], List[str]]:
    """Scalars of one training from a tensorboard event file: tag -> [(step, value)] in logged order, and notes.

    nerfstudio writers are process-wide: a run trained in a process that trained another run before also receives
    the later runs' events. The run's own events are those before "Train Iter (time)" first goes back in steps.
    """
    from tensorboard.backend.event_processing import event_accumulator

    accumulator = event_accumulator.EventAccumulator(
        str(event_file),
        size_guidance={event_accumulator.SCALARS: 0, event_accumulator.IMAGES: 1, event_accumulator.TENSORS: 1},
        purge_orphaned_data=False,
    )
    accumulator.Reload()
    tags = accumulator.Tags().get("scalars", [])
    events = {tag: accumulator.Scalars(tag) for tag in tags}
    notes: List[str] = []
    cutoff = math.inf
    iters = events.get(ITER_TIME, [])
    for previous, event in zip(iters[:-1], iters[1:], strict=True):
        if event.step <= previous.step:
            cutoff = event.wall_time
            notes.append(
                f"{event_file.name}: events from another training appended after step {previous.step} "
                "(several runs trained in one process); ignored"
            )
            break
    scalars = {tag: [(int(e.step), float(e.value)) for e in evs if e.wall_time < cutoff] for tag, evs in events.items()}
    return scalars, notes


@dataclass
class TrainingLog:
    """What a run logged while training (all times exclude evaluation unless said otherwise)."""

    event_file: str | None = None
    """The tensorboard event file read (None: none found)."""
    steps_logged: int = 0
    """Training iterations with a logged duration."""
    train_seconds: float | None = None
    """Sum of per-step training durations (s)."""
    wall_total_seconds: float | None = None
    """nerfstudio's "Train Total (time)": the whole training loop including evaluations and checkpoints (s)."""
    rays_per_sec: float | None = None
    """Rays trained per training second (steps with a logged "Train Rays / Sec")."""
    timing: str = "none"
    """"exact" (per-step durations recovered), "approximate" (running means summed: steps missing) or "none"."""
    curve_source: str | None = None
    """Which logged evaluation the curve uses (None: the run logged none)."""
    curve_tag: str | None = None
    """The tensorboard tag of that evaluation."""
    curve_step: List[int] = field(default_factory=list)
    """Training steps done at each logged evaluation."""
    curve_seconds: List[float] = field(default_factory=list)
    """Cumulative training seconds at each logged evaluation."""
    curve_psnr: List[float] = field(default_factory=list)
    """Logged PSNR (dB) at each logged evaluation."""
    notes: List[str] = field(default_factory=list)
    """Anything a reader should know about these numbers."""


def read_training_log(run_dir: Path, buffer_size: int = 20) -> TrainingLog:
    """Training time, rays/s and the logged PSNR curve of a run from its tensorboard event file.

    Args:
        run_dir: folder holding the run's ``events.out.tfevents.*`` (nerfstudio's ``logging.relative_log_dir``).
        buffer_size: nerfstudio's ``logging.max_buffer_size`` (length of its running means).
    """
    log = TrainingLog()
    files = sorted(Path(run_dir).glob("events.out.tfevents.*"), key=_event_file_order)
    if not files:
        log.notes.append(f"no tensorboard event file in {run_dir} (train with --vis tensorboard): no timings")
        return log
    if len(files) > 1:
        log.notes.append(f"{len(files)} event files in {run_dir}: using the newest, {files[-1].name}")
    _flush_live_writers()
    scalars, notes = read_scalars(files[-1])
    log.event_file, log.notes = str(files[-1]), log.notes + notes
    if scalars.get(TOTAL_TIME):
        log.wall_total_seconds = scalars[TOTAL_TIME][-1][1]
    iters = scalars.get(ITER_TIME, [])
    if not iters:
        log.notes.append(f"{files[-1].name} has no '{ITER_TIME}' scalars: no timings")
        return log
    steps = [s for s, _ in iters]
    contiguous = steps == list(range(steps[0], steps[0] + len(steps)))
    if contiguous:
        durations = [max(v, 0.0) for v in unroll_running_mean([v for _, v in iters], buffer_size)]
        log.timing = "exact"
    else:
        durations = [v for _, v in iters]
        log.timing = "approximate"
        log.notes.append(f"'{ITER_TIME}' misses steps: training time approximated by summing running means")
    per_step = dict(zip(steps, durations, strict=True))
    log.steps_logged = len(steps)
    log.train_seconds = float(sum(durations))
    rays = scalars.get(RAYS_PER_SEC, [])
    if rays:
        rsteps = [s for s, _ in rays]
        if contiguous and rsteps == list(range(rsteps[0], rsteps[0] + len(rsteps))) and set(rsteps) <= set(per_step):
            rates = unroll_running_mean([v for _, v in rays], buffer_size)
            # nerfstudio logs rays / max(1 ms, duration) per step
            total_rays = sum(r * max(0.001, per_step[s]) for s, r in zip(rsteps, rates, strict=True))
            seconds = sum(per_step[s] for s in rsteps)
            log.rays_per_sec = total_rays / seconds if seconds > 0 else None
        else:
            log.rays_per_sec = float(np.mean([v for _, v in rays]))
            log.notes.append("rays/s approximated by the mean of nerfstudio's running means")
    cumulative = np.cumsum(durations)
    position = {s: i for i, s in enumerate(steps)}
    for tag, label in EVAL_SOURCES:
        points = [(s, v) for s, v in scalars.get(tag, []) if s in position and math.isfinite(v)]
        if points:
            log.curve_source, log.curve_tag = label, tag
            log.curve_step = [s + 1 for s, _ in points]  # evaluation runs after training iteration s
            log.curve_seconds = [float(cumulative[position[s]]) for s, _ in points]
            log.curve_psnr = [v for _, v in points]
            break
    return log


# ----------------------------------------------------------------------------------------------------------------
# Evaluation


def _standard_metrics(metrics: Dict[str, float]) -> Dict[str, float]:
    """nerfstudio models' metric names -> psnr / ssim / lpips (vanilla NeRF reports the fine field's)."""
    out: Dict[str, float] = {}
    for name in ("psnr", "ssim", "lpips"):
        keys = (name, f"fine_{name}")
        for key in keys:
            if key in metrics and math.isfinite(float(metrics[key])):
                out[name] = float(metrics[key])
                break
    return out


@dataclass
class RunEvaluation:
    """A run evaluated on the chosen test views."""

    step: int
    """Checkpoint step loaded."""
    metrics: Dict[str, float]
    """Mean over the views of psnr / ssim / lpips (lpips absent when unavailable)."""
    per_view: List[Dict[str, float]]
    """Per view: index and the metrics."""
    view_files: List[str]
    """Image file of each evaluated view (checks that every run saw the same views)."""
    image: np.ndarray | None
    """(H, W, 3) float prediction on the image view."""
    ground_truth: np.ndarray | None
    """(H, W, 3) float ground truth (background blended as the model renders) on the image view."""
    image_metrics: Dict[str, float]
    """Metrics of the image view."""


def evaluate_run(config_path: Path, views: str, image_view: int | None) -> Tuple[RunEvaluation, List[int]]:
    """Load a run (checkpoint, test split) and evaluate the chosen views as ``ns-eval`` does per image."""
    from nerfstudio.data.utils.dataloaders import FixedIndicesEvalDataloader
    from nerfstudio.utils.eval_utils import eval_setup

    run_dir = Path(config_path).resolve().parent
    _, pipeline, _, step = eval_setup(Path(config_path), test_mode="test", update_config_callback=relocate(run_dir))
    try:
        model = pipeline.model
        dataset = pipeline.datamanager.eval_dataset
        indices = parse_views(views, len(dataset))
        if image_view is not None and not 0 <= image_view < len(dataset):
            raise ValueError(f"--image-view {image_view} is outside the test split's 0..{len(dataset) - 1}")
        shown = indices[0] if image_view is None else image_view
        render = indices if shown in indices else [*indices, shown]
        loader = FixedIndicesEvalDataloader(dataset, image_indices=tuple(render), device=model.device)
        per_view: List[Dict[str, float]] = []
        image = ground_truth = None
        image_metrics: Dict[str, float] = {}
        with torch.no_grad():
            for index, (camera, batch) in zip(render, loader, strict=True):
                outputs = model.get_outputs_for_camera(camera=camera)
                raw, _ = model.get_image_metrics_and_images(outputs, batch)
                metrics = _standard_metrics(drop_unavailable_metrics(dict(raw)))
                if index == shown:
                    image_metrics = metrics
                    rgb = outputs["rgb_fine"] if "rgb_fine" in outputs else outputs["rgb"]
                    target = batch["image"].to(rgb.device)
                    renderer = getattr(model, "renderer_rgb", None)
                    target = renderer.blend_background(target) if renderer is not None else target[..., :3]
                    image = rgb[..., :3].clamp(0, 1).float().cpu().numpy()
                    ground_truth = target[..., :3].clamp(0, 1).float().cpu().numpy()
                if len(per_view) < len(indices):
                    per_view.append({"view": index, **metrics})
        names = sorted({k for v in per_view for k in v if k != "view"})
        mean = {k: float(np.mean([v[k] for v in per_view])) for k in names if all(k in v for v in per_view)}
        files = [str(Path(dataset.image_filenames[i]).resolve()) for i in indices]
        result = RunEvaluation(step, mean, per_view, files, image, ground_truth, image_metrics)
        return result, indices
    finally:
        del pipeline
        gc.collect()


# ----------------------------------------------------------------------------------------------------------------
# Statistics


def _mean_std(values: Sequence[float]) -> Tuple[float, float]:
    """Mean and sample std (ddof=1; NaN for one value)."""
    arr = np.asarray(values, dtype=np.float64)
    return float(arr.mean()), (float(arr.std(ddof=1)) if len(arr) > 1 else math.nan)


def judge(difference: float, noise_std: float, higher_is_better: bool) -> str:
    """benchmarks.md rule: a difference is a verdict only when |difference| >= 2 x its noise std."""
    if not (math.isfinite(difference) and math.isfinite(noise_std)) or abs(difference) < 2.0 * noise_std:
        return NOT_RESOLVABLE
    return "better" if (difference > 0) == higher_is_better else "worse"


def compare_groups(
    baseline: Dict[int, float] | List[float],
    other: Dict[int, float] | List[float],
    higher_is_better: bool,
) -> Dict[str, Any]:
    """Difference ``other - baseline`` of one metric and its verdict.

    Args:
        baseline, other: seed -> value (pairs shared seeds) or plain lists (unpaired).
    Returns:
        dict with ``difference``, ``noise_std``, ``pairing`` ("paired n=..", "unpaired", "none") and ``verdict``.
    """
    b = baseline if isinstance(baseline, dict) else dict(enumerate(baseline))
    o = other if isinstance(other, dict) else dict(enumerate(other))
    shared = sorted(set(b) & set(o)) if isinstance(baseline, dict) and isinstance(other, dict) else []
    if len(shared) >= 2 and len(b) >= 2 and len(o) >= 2:
        diffs = [o[s] - b[s] for s in shared]
        mean, std = _mean_std(diffs)
        return {
            "difference": mean,
            "noise_std": std,
            "pairing": f"paired over {len(shared)} seeds",
            "verdict": judge(mean, std, higher_is_better),
        }
    difference = _mean_std(list(o.values()))[0] - _mean_std(list(b.values()))[0]
    groups = [list(g.values()) for g in (b, o) if len(g) >= 2]
    if not groups:
        return {"difference": difference, "noise_std": math.nan, "pairing": "none", "verdict": "single seed: no noise"}
    dof = sum(len(g) - 1 for g in groups)
    pooled = math.sqrt(sum((len(g) - 1) * _mean_std(g)[1] ** 2 for g in groups) / dof)
    noise = math.sqrt(2.0) * pooled
    return {
        "difference": difference,
        "noise_std": noise,
        "pairing": "unpaired",
        "verdict": judge(difference, noise, higher_is_better),
    }


# ----------------------------------------------------------------------------------------------------------------
# Output


def _fmt(key: str, value: float | None) -> str:
    if value is None or not math.isfinite(value):
        return "-"
    digits = {"psnr": 2, "ssim": 4, "lpips": 4, "train_seconds": 1, "rays_per_sec": 0}.get(key, 3)
    return f"{value:.{digits}f}"


def _fmt_pm(key: str, values: Sequence[float]) -> str:
    if not values:
        return "-"
    mean, std = _mean_std(values)
    return _fmt(key, mean) if len(values) < 2 else f"{_fmt(key, mean)} +- {_fmt(key, std)}"


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def plot_psnr_vs_time(runs: List[Dict[str, Any]], groups: List[str], path: Path) -> Path:
    """PSNR of each run's logged evaluations vs cumulative training seconds, plus the final test-view PSNR."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = plt.get_cmap("tab10")
    markers = "osd^vP"
    fig, ax = plt.subplots(figsize=(8, 5), layout="constrained")
    silent = []
    for run in runs:
        color = colors(groups.index(run["group"]) % 10)
        same_group = [r["config"] for r in runs if r["group"] == run["group"]]
        marker = markers[same_group.index(run["config"]) % len(markers)]
        log = run["training_log"]
        label = f"{run['group']} seed {run['seed']}"
        if log["curve_psnr"]:
            label += f" ({log['curve_source']})"
            ax.plot(log["curve_seconds"], log["curve_psnr"], "-", marker=marker, color=color, ms=4, label=label)
        else:
            silent.append(label)
            label += " (no logged evaluations)"
            ax.plot([], [], "-", marker=marker, color=color, label=label)
        if log["train_seconds"] is not None and "psnr" in run["metrics"]:
            ax.plot(log["train_seconds"], run["metrics"]["psnr"], "*", color=color, ms=12, mec="k")
    ax.plot([], [], "*", color="grey", ms=12, mec="k", label="final, test views (inr-compare)")
    ax.set_xlabel("training wall-clock (s, evaluation excluded)")
    ax.set_ylabel("PSNR (dB)")
    ax.set_title("PSNR vs training time (lines: evaluations logged during training)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    if silent:
        ax.text(0.01, 0.01, "no logged evaluations: " + "; ".join(silent), fontsize=7, transform=ax.transAxes)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_test_view(runs: List[Dict[str, Any]], images: List[np.ndarray], truth: np.ndarray, view: int, path: Path):
    """Side by side: ground truth of one test view, then each run's rendering of it (PSNR in the titles)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [(f"ground truth (test view {view})", truth)]
    for run, image in zip(runs, images, strict=True):
        psnr = run["image_view_metrics"].get("psnr")
        title = f"{run['group']}\nseed {run['seed']}" + (f": {psnr:.2f} dB" if psnr is not None else "")
        panels.append((title, image))
    cols = min(4, len(panels))
    rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 3.6 * rows), squeeze=False, layout="constrained")
    for ax in axes.ravel():
        ax.axis("off")
    for ax, (title, image) in zip(axes.ravel(), panels, strict=False):
        ax.imshow(np.clip(image, 0.0, 1.0))
        ax.set_title(title, fontsize=7)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


# ----------------------------------------------------------------------------------------------------------------
# CLI


@dataclass
class Compare:
    """Evaluate nerfstudio runs on the same test views; write Markdown/JSON tables, a PSNR-vs-time plot and images."""

    runs: Tuple[Path, ...]
    """Runs to compare: config.yml files, run folders, or folders searched recursively for config.yml."""
    output_dir: Path = Path("comparison")
    """Folder for comparison.md, comparison.json, psnr_vs_time.png and test_view.png."""
    views: str = "every-10"
    """Test views to evaluate: 'all', 'every-K' (views 0, K, 2K, ...) or indices like '0,5,9'."""
    image_view: int | None = None
    """Test view shown side by side (default: the first evaluated view)."""
    baseline: str | None = None
    """Baseline group: a group label or a method name (default: the single vanilla-nerf group, else the first run's)."""
    ignore: Tuple[str, ...] = ()
    """Extra config keys (or dotted prefixes) that do not define a method (besides seeds, paths and logging)."""

    def main(self) -> Dict[str, Any]:
        """Run the comparison; returns the JSON-able report."""
        configs_paths = find_run_configs(self.runs)
        if not configs_paths:
            raise ValueError("--runs: give at least one run (config.yml or run folder)")
        configs = [load_run_config(p) for p in configs_paths]
        labels = group_labels(configs, self.ignore)
        groups = list(dict.fromkeys(labels))
        baseline = self._baseline(configs, labels, groups)
        runs: List[Dict[str, Any]] = []
        images: List[np.ndarray] = []
        truth: np.ndarray | None = None
        reference: Tuple[List[int], List[str], str] | None = None
        for path, config, label in zip(configs_paths, configs, labels, strict=True):
            print(f"inr-compare: evaluating {path} [{label}]")
            evaluation, indices = evaluate_run(path, self.views, self.image_view)
            if reference is None:
                reference = (indices, evaluation.view_files, str(path))
            elif evaluation.view_files != reference[1]:
                raise ValueError(
                    f"{path} and {reference[2]} have different test views (datasets or splits differ): "
                    f"{evaluation.view_files[:2]} vs {reference[1][:2]}"
                )
            log = read_training_log(path.parent / config.logging.relative_log_dir, config.logging.max_buffer_size)
            runs.append(
                {
                    "config": str(path),
                    "method": config.method_name,
                    "group": label,
                    "seed": int(config.machine.seed),
                    "step": int(evaluation.step),
                    "max_num_iterations": int(config.max_num_iterations),
                    "metrics": evaluation.metrics,
                    "per_view": evaluation.per_view,
                    "image_view_metrics": evaluation.image_metrics,
                    "train_seconds": log.train_seconds,
                    "rays_per_sec": log.rays_per_sec,
                    "training_log": asdict(log),
                }
            )
            images.append(evaluation.image)
            truth = evaluation.ground_truth if truth is None else truth
        assert reference is not None and truth is not None
        view = self.image_view if self.image_view is not None else reference[0][0]
        report = self._report(runs, groups, baseline, reference[0])
        self.output_dir.mkdir(parents=True, exist_ok=True)
        files = {
            "markdown": self.output_dir / "comparison.md",
            "json": self.output_dir / "comparison.json",
            "psnr_vs_time": plot_psnr_vs_time(runs, groups, self.output_dir / "psnr_vs_time.png"),
            "test_view": plot_test_view(runs, images, truth, view, self.output_dir / "test_view.png"),
        }
        report["files"] = {k: str(v) for k, v in files.items()}
        files["markdown"].write_text(self._markdown(report) + "\n")
        files["json"].write_text(json.dumps(to_json(report), indent=1, allow_nan=False) + "\n")
        print(self._markdown(report))
        return report

    def _baseline(self, configs: List[Any], labels: List[str], groups: List[str]) -> str:
        if self.baseline is None:
            vanilla = sorted({lab for c, lab in zip(configs, labels, strict=True) if c.method_name == "vanilla-nerf"})
            return vanilla[0] if len(vanilla) == 1 else labels[0]
        if self.baseline in groups:
            return self.baseline
        matches = sorted({lab for c, lab in zip(configs, labels, strict=True) if c.method_name == self.baseline})
        if len(matches) != 1:
            raise ValueError(f"--baseline {self.baseline!r} matches {len(matches)} groups; expected one of {groups}")
        return matches[0]

    def _report(self, runs: List[Dict[str, Any]], groups: List[str], baseline: str, indices: List[int]):
        lpips_everywhere = all("lpips" in r["metrics"] for r in runs)
        keys = [k for k, _, _ in METRICS if k != "lpips" or lpips_everywhere]
        notes = [] if lpips_everywhere else [LPIPS_MISSING_NOTE]
        for run in runs:
            notes += [f"{run['config']}: {n}" for n in run["training_log"]["notes"]]
            if run["training_log"]["curve_source"] is None:
                notes.append(f"{run['config']}: no evaluations logged during training (no PSNR curve)")

        def value(run: Dict[str, Any], key: str) -> float | None:
            v = run["metrics"].get(key) if key in ("psnr", "ssim", "lpips") else run.get(key)
            return None if v is None or not math.isfinite(v) else float(v)

        group_rows = []
        for group in groups:
            members = [r for r in runs if r["group"] == group]
            stats = {}
            for key in keys:
                vals = [v for v in (value(r, key) for r in members) if v is not None]
                if vals:
                    mean, std = _mean_std(vals)
                    stats[key] = {"mean": mean, "std": std, "n": len(vals)}
            group_rows.append({"group": group, "seeds": [r["seed"] for r in members], "stats": stats})
        differences = []
        base_runs = [r for r in runs if r["group"] == baseline]
        for group in groups:
            if group == baseline:
                continue
            members = [r for r in runs if r["group"] == group]
            for key, _, higher in METRICS:
                if key not in keys:
                    continue
                b = _by_seed(base_runs, key, value)
                o = _by_seed(members, key, value)
                if not b or not o:
                    continue
                differences.append({"group": group, "metric": key, **compare_groups(b, o, higher)})
        try:
            load = list(os.getloadavg())
        except OSError:
            load = None
        return {
            "views": {"split": "test", "spec": self.views, "indices": indices},
            "baseline": baseline,
            "metrics": keys,
            "runs": runs,
            "groups": group_rows,
            "differences": differences,
            "notes": notes,
            "environment": {"torch": torch.__version__, "loadavg_at_comparison": load},
        }

    @staticmethod
    def _markdown(report: Dict[str, Any]) -> str:
        keys = report["metrics"]
        names = {k: label for k, label, _ in METRICS}
        views = report["views"]
        out = [
            "# inr-compare",
            "",
            f"Test split, views {views['spec']} ({len(views['indices'])} views: {views['indices']}). "
            "Training time and rays/s are the runs' own logs (taken while they trained, on whatever load the "
            "machine had then); evaluation is excluded from them.",
            "",
            "## Runs",
            "",
        ]
        rows = []
        for run in report["runs"]:
            log = run["training_log"]
            cells = [Path(run["config"]).parent.name, run["group"], str(run["seed"]), str(run["step"] + 1)]
            cells += [_fmt(k, run["metrics"].get(k) if k in ("psnr", "ssim", "lpips") else run.get(k)) for k in keys]
            cells.append(f"{len(log['curve_psnr'])} ({log['curve_source']})" if log["curve_source"] else "none logged")
            rows.append(cells)
        out.append(_table(["run", "group", "seed", "steps", *[names[k] for k in keys], "logged evals"], rows))
        out += ["", "## Groups (mean +- std over seeds)", ""]
        rows = []
        for group in report["groups"]:
            cells = [group["group"] + (" (baseline)" if group["group"] == report["baseline"] else "")]
            cells.append(str(len(group["seeds"])))
            for k in keys:
                stat = group["stats"].get(k)
                if stat is None:
                    cells.append("-")
                elif stat["n"] < 2:
                    cells.append(_fmt(k, stat["mean"]))
                else:
                    cells.append(f"{_fmt(k, stat['mean'])} +- {_fmt(k, stat['std'])}")
            rows.append(cells)
        out.append(_table(["group", "runs", *[names[k] for k in keys]], rows))
        out += ["", f"## Differences to the baseline ({report['baseline']})", ""]
        if report["differences"]:
            rows = [
                [d["group"], names[d["metric"]], _fmt(d["metric"], d["difference"]), _fmt(d["metric"], d["noise_std"])]
                + [d["pairing"], d["verdict"]]
                for d in report["differences"]
            ]
            out.append(_table(["group", "metric", "difference", "noise std", "noise from", "verdict"], rows))
            out += [
                "",
                "A difference is a verdict only when it exceeds 2 std of the run-to-run noise; "
                f'"{NOT_RESOLVABLE}" otherwise, and "single seed: no noise" when no group has 2 seeds.',
            ]
        else:
            out.append("Only one group: nothing to compare.")
        if report["notes"]:
            out += ["", "## Notes", ""] + [f"- {n}" for n in report["notes"]]
        return "\n".join(out)


def _by_seed(runs: List[Dict[str, Any]], key: str, value) -> Dict[int, float] | List[float]:
    """seed -> value when seeds are unique within the runs, else the plain list of values."""
    pairs = [(r["seed"], value(r, key)) for r in runs if value(r, key) is not None]
    seeds = [s for s, _ in pairs]
    return dict(pairs) if len(set(seeds)) == len(seeds) else [v for _, v in pairs]


def to_json(obj: Any) -> Any:
    """JSON-able copy: paths as strings, numpy scalars as numbers, NaN/inf as null (strict JSON)."""
    if isinstance(obj, dict):
        return {str(k): to_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_json(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, (np.floating, np.integer)):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def entrypoint() -> None:
    """Console script ``inr-compare``."""
    tyro.extras.set_accent_color("bright_yellow")
    command = tyro.cli(Compare, description=__doc__)
    exit_on_bad_input("inr-compare", command.main)


if __name__ == "__main__":
    entrypoint()
