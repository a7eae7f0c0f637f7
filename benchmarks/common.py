"""Shared helpers for the benchmarks (protocol: ../shared/docs/benchmarks.md).

The statistics, verdicts, tables and JSON writing live in :mod:`nerf_inr_methods.reporting` (also used by
``inr-compare`` and ``inr-shape``) and are re-exported here under the names the benchmarks import:

- :func:`paired_stats` / :func:`verdict`: paired-seed differences, mean +- std, and the protocol's rule
  "if |mean| < 2 std, the effect is not resolvable at this scale".
- :func:`time_to_target` / :func:`plateau_gain`: read a training curve (time-to-reach-target, plateau check).
- :func:`mean_std`, :func:`markdown_table`, :func:`fmt_pm`: summaries and printing.
- :func:`write_results`, :func:`environment_info`, :func:`command_line`: JSON of all raw numbers in
  ``benchmarks/results/``.

Import as ``from benchmarks.common import ...`` from the repository root (``python -m benchmarks.<name>``);
scripts run as files put the repository root on ``sys.path`` first.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from nerf_inr_methods.reporting import (
    NOT_RESOLVABLE,
    command_line,
    environment_info,
    fmt_pm,
    markdown_table,
    mean_std,
    paired_stats,
    plateau_gain,
    time_to_target,
    verdict,
    write_json,
)

__all__ = [
    "NOT_RESOLVABLE",
    "RESULTS_DIR",
    "command_line",
    "environment_info",
    "fmt_pm",
    "markdown_table",
    "mean_std",
    "paired_stats",
    "plateau_gain",
    "time_to_target",
    "verdict",
    "write_results",
]

RESULTS_DIR = Path(__file__).resolve().parent / "results"
"""Where benchmarks write their JSON (``benchmarks/results/``)."""


def write_results(name: str, payload: dict[str, Any], results_dir: Path | None = None) -> Path:
    """Write ``payload`` to ``<results_dir>/<name>.json`` atomically (strict JSON: non-finite floats become null).

    Args:
        name: file stem, e.g. ``"int_image"`` (``"int_image_quick"`` for smoke runs).
        payload: JSON-able dict (numpy/torch values are converted with ``tolist()``).
        results_dir: defaults to ``benchmarks/results/``.

    Returns:
        The path written.
    """
    if not name or "/" in name or name.startswith("."):
        raise ValueError(f"write_results: name must be a plain file stem, got {name!r}")
    return write_json(payload, Path(results_dir if results_dir is not None else RESULTS_DIR) / f"{name}.json")
