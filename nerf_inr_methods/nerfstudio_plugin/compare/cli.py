"""``inr-compare``: evaluate several nerfstudio runs on the same test views and tabulate, plot and judge them.

Given run folders (ours and nerfstudio's, e.g. vanilla-nerf), each run is loaded from its checkpoint and evaluated
on the same views of the test split with the model's own metrics (PSNR, SSIM, and LPIPS when its weights are
available: otherwise the metric is omitted, never faked). Training time and rays/s come from the run's tensorboard
event file, as the run logged them while training (``--vis tensorboard``):

- training seconds = the sum of the per-step training durations (evaluation and checkpointing excluded): logged
  exactly per step by this package's methods, recovered from nerfstudio's running mean for other runs.
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

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Dict, List, Tuple

import numpy as np

from nerf_inr_methods.cli import run_command
from nerf_inr_methods.nerfstudio_plugin.compare.discover import find_run_configs, group_labels, load_run_config
from nerf_inr_methods.nerfstudio_plugin.compare.evaluation import evaluate_run
from nerf_inr_methods.nerfstudio_plugin.compare.logs import read_training_log
from nerf_inr_methods.nerfstudio_plugin.compare.report import (
    build_report,
    plot_psnr_vs_time,
    plot_test_view,
    report_markdown,
)
from nerf_inr_methods.reporting import write_json


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
        from nerf_inr_methods.cli import check_output_dir

        check_output_dir(self.output_dir, "--output-dir")
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
        for number, (path, config, label) in enumerate(zip(configs_paths, configs, labels, strict=True), start=1):
            print(f"inr-compare: evaluating {path} [{label}]", flush=True)
            description = f"run {number}/{len(configs_paths)}"
            evaluation, indices = evaluate_run(path, self.views, self.image_view, description=description)
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
        report = build_report(runs, groups, baseline, self.views, reference[0])
        self.output_dir.mkdir(parents=True, exist_ok=True)
        files = {
            "markdown": self.output_dir / "comparison.md",
            "json": self.output_dir / "comparison.json",
            "psnr_vs_time": plot_psnr_vs_time(runs, groups, self.output_dir / "psnr_vs_time.png"),
            "test_view": plot_test_view(runs, images, truth, view, self.output_dir / "test_view.png"),
        }
        report["files"] = {k: str(v) for k, v in files.items()}
        markdown = report_markdown(report)
        files["markdown"].write_text(markdown + "\n")
        write_json(report, files["json"])
        print(markdown)
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


def entrypoint() -> None:
    """Console script ``inr-compare``."""
    run_command("inr-compare", Compare, __doc__)


if __name__ == "__main__":
    entrypoint()
