"""The comparison report: per-group statistics and verdicts, its Markdown, and the two figures."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Dict, List, Sequence, Tuple

import numpy as np

from nerf_inr_methods.nerfstudio_plugin.offline import LPIPS_MISSING_NOTE
from nerf_inr_methods.reporting import NOT_RESOLVABLE, compare_groups, environment_info, markdown_table, mean_std

METRICS: Tuple[Tuple[str, str, bool], ...] = (
    ("psnr", "PSNR (dB)", True),
    ("ssim", "SSIM", True),
    ("lpips", "LPIPS", False),
    ("train_seconds", "train time (s)", False),
    ("rays_per_sec", "train rays/s", True),
)
"""(key, label, higher_is_better) of every compared quantity."""
IMAGE_METRICS = ("psnr", "ssim", "lpips")
"""The quantities measured on the test views (the others come from the training log)."""


def run_value(run: Dict[str, Any], key: str) -> float | None:
    """A run's finite value of one compared quantity, or None."""
    v = run["metrics"].get(key) if key in IMAGE_METRICS else run.get(key)
    return None if v is None or not math.isfinite(v) else float(v)


def _by_seed(runs: List[Dict[str, Any]], key: str) -> Dict[int, float] | List[float]:
    """seed -> value when seeds are unique within the runs, else the plain list of values."""
    pairs = [(r["seed"], run_value(r, key)) for r in runs if run_value(r, key) is not None]
    seeds = [s for s, _ in pairs]
    return dict(pairs) if len(set(seeds)) == len(seeds) else [v for _, v in pairs]  # type: ignore[misc]


def build_report(
    runs: List[Dict[str, Any]], groups: List[str], baseline: str, views_spec: str, indices: List[int]
) -> Dict[str, Any]:
    """The JSON-able report: runs, per-group mean +- std, differences to the baseline group with verdicts, notes.

    Args:
        runs: one dict per run (config, method, group, seed, step, metrics, per_view, training_log, ...).
        groups: group labels in display order.  baseline: the baseline group.
        views_spec: the ``--views`` given.  indices: the test views evaluated.
    """
    lpips_everywhere = all("lpips" in r["metrics"] for r in runs)
    keys = [k for k, _, _ in METRICS if k != "lpips" or lpips_everywhere]
    notes = [] if lpips_everywhere else [LPIPS_MISSING_NOTE]
    for run in runs:
        notes += [f"{run['config']}: {n}" for n in run["training_log"]["notes"]]
        if run["training_log"]["curve_source"] is None:
            notes.append(f"{run['config']}: no evaluations logged during training (no PSNR curve)")

    group_rows = []
    for group in groups:
        members = [r for r in runs if r["group"] == group]
        stats = {}
        for key in keys:
            vals = [v for v in (run_value(r, key) for r in members) if v is not None]
            if vals:
                mean, std = mean_std(vals)
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
            b, o = _by_seed(base_runs, key), _by_seed(members, key)
            if b and o:
                differences.append({"group": group, "metric": key, **compare_groups(b, o, higher)})
    return {
        "views": {"split": "test", "spec": views_spec, "indices": indices},
        "baseline": baseline,
        "metrics": keys,
        "runs": runs,
        "groups": group_rows,
        "differences": differences,
        "notes": notes,
        "environment": environment_info(),
    }


def _fmt(key: str, value: float | None) -> str:
    if value is None or not math.isfinite(value):
        return "-"
    digits = {"psnr": 2, "ssim": 4, "lpips": 4, "train_seconds": 1, "rays_per_sec": 0}.get(key, 3)
    return f"{value:.{digits}f}"


def report_markdown(report: Dict[str, Any]) -> str:
    """``comparison.md``: runs, groups (mean +- std over seeds), differences to the baseline with verdicts, notes."""
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
        cells += [_fmt(k, run["metrics"].get(k) if k in IMAGE_METRICS else run.get(k)) for k in keys]
        cells.append(f"{len(log['curve_psnr'])} ({log['curve_source']})" if log["curve_source"] else "none logged")
        rows.append(cells)
    out.append(markdown_table(["run", "group", "seed", "steps", *[names[k] for k in keys], "logged evals"], rows))
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
    out.append(markdown_table(["group", "runs", *[names[k] for k in keys]], rows))
    out += ["", f"## Differences to the baseline ({report['baseline']})", ""]
    if report["differences"]:
        rows = [
            [d["group"], names[d["metric"]], _fmt(d["metric"], d["difference"]), _fmt(d["metric"], d["noise_std"])]
            + [d["pairing"], d["verdict"]]
            for d in report["differences"]
        ]
        out.append(markdown_table(["group", "metric", "difference", "noise std", "noise from", "verdict"], rows))
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


def _pyplot() -> Any:
    """matplotlib.pyplot on the Agg backend (files only, no display)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    _pyplot().close(fig)
    return path


def plot_psnr_vs_time(runs: List[Dict[str, Any]], groups: List[str], path: Path) -> Path:
    """PSNR of each run's logged evaluations vs cumulative training seconds, plus the final test-view PSNR."""
    plt = _pyplot()
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
    return _save(fig, path)


def plot_test_view(
    runs: List[Dict[str, Any]], images: Sequence[np.ndarray], truth: np.ndarray, view: int, path: Path
) -> Path:
    """Side by side: ground truth of one test view, then each run's rendering of it (PSNR in the titles)."""
    plt = _pyplot()
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
    return _save(fig, path)
