"""Shared helpers for the benchmarks (protocol: ../shared/docs/benchmarks.md).

- :func:`paired_stats` / :func:`verdict`: paired-seed differences, mean +- std, and the protocol's rule
  "if |mean| < 2 std, the effect is not resolvable at this scale".
- :func:`time_to_target` / :func:`plateau_gain`: read a training curve (time-to-reach-target, plateau check).
- :func:`mean_std`, :func:`markdown_table`, :func:`fmt_pm`: summaries and printing.
- :func:`write_results`, :func:`environment_info`: JSON of all raw numbers in ``benchmarks/results/``.

Import as ``from benchmarks.common import ...`` from the repository root (``python -m benchmarks.<name>``);
scripts run as files put the repository root on ``sys.path`` first.
"""

from __future__ import annotations

import json
import math
import os
import platform
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

RESULTS_DIR = Path(__file__).resolve().parent / "results"
"""Where benchmarks write their JSON (``benchmarks/results/``)."""

NOT_RESOLVABLE = "not resolvable at this scale"


def paired_stats(baseline: Sequence[float], method: Sequence[float]) -> dict[str, Any]:
    """Paired differences ``method[i] - baseline[i]`` over seeds.

    Args:
        baseline: one value per seed.
        method: one value per seed, same seeds in the same order.

    Returns:
        Dict with ``diffs`` (list), ``mean``, ``std`` (sample std, ddof=1; nan for one seed) and ``n``.
        Non-finite values (e.g. a target never reached) propagate into mean and std.
    """
    if len(baseline) != len(method):
        raise ValueError(f"paired_stats: baseline has {len(baseline)} values, method has {len(method)}")
    if len(baseline) == 0:
        raise ValueError("paired_stats: need at least one paired value")
    diffs = [float(m) - float(b) for b, m in zip(baseline, method, strict=True)]
    mean = sum(diffs) / len(diffs)
    std = statistics.stdev(diffs) if len(diffs) > 1 and all(math.isfinite(d) for d in diffs) else math.nan
    if len(diffs) > 1 and not all(math.isfinite(d) for d in diffs):
        mean = math.nan
    return {"diffs": diffs, "mean": mean, "std": std, "n": len(diffs)}


def verdict(mean: float, std: float, higher_is_better: bool = True, n_std: float = 2.0, what: str = "method") -> str:
    """Protocol verdict on a paired difference (method - baseline).

    Returns ``"not resolvable at this scale"`` when |mean| < n_std * std (or when mean/std are not finite),
    else ``"<what> better"`` or ``"<what> worse"`` according to the sign and ``higher_is_better``.
    """
    if not (math.isfinite(mean) and math.isfinite(std)) or abs(mean) < n_std * std:
        return NOT_RESOLVABLE
    better = mean > 0 if higher_is_better else mean < 0
    return f"{what} better" if better else f"{what} worse"


def time_to_target(
    times: Sequence[float],
    values: Sequence[float],
    target: float,
    higher_is_better: bool = True,
    interpolate: bool = True,
) -> float | None:
    """First time a curve reaches ``target``.

    Args:
        times: increasing clock (or step / points) values of the curve's samples.
        values: metric at each sample (e.g. PSNR).
        target: level to reach (>= for higher_is_better, <= otherwise).
        interpolate: linearly interpolate between the last sample below target and the first at/above it
            (the curve is only known at samples; without interpolation the first reaching sample is returned,
            an upper bound).

    Returns:
        The time, or None if the curve never reaches the target.
    """
    if len(times) != len(values):
        raise ValueError(f"time_to_target: {len(times)} times but {len(values)} values")
    sign = 1.0 if higher_is_better else -1.0
    for i, (t, v) in enumerate(zip(times, values, strict=True)):
        if sign * v >= sign * target:
            if i == 0 or not interpolate:
                return float(t)
            t0, v0 = times[i - 1], values[i - 1]
            frac = (target - v0) / (v - v0) if v != v0 else 1.0
            return float(t0 + min(max(frac, 0.0), 1.0) * (t - t0))
    return None


def plateau_gain(steps: Sequence[float], values: Sequence[float], last_fraction: float = 0.2) -> float:
    """Gain of a curve over its last ``last_fraction`` of steps: final value minus the value at the first sample
    at or after ``(1 - last_fraction) * steps[-1]``. The protocol's plateau is a gain < 0.1 dB over the last 20%."""
    if len(steps) != len(values) or len(steps) < 2:
        raise ValueError("plateau_gain: need >= 2 samples with matching steps and values")
    start = (1.0 - last_fraction) * steps[-1]
    i = next(i for i, s in enumerate(steps) if s >= start)
    return float(values[-1] - values[i])


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample std (ddof=1; nan for a single value) of a non-empty sequence."""
    return statistics.mean(values), (statistics.stdev(values) if len(values) > 1 else math.nan)


def fmt_pm(mean: float, std: float, digits: int = 2) -> str:
    """``"mean +- std"`` with ``digits`` decimals (std omitted when not finite)."""
    if not math.isfinite(std):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} +- {std:.{digits}f}"


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub Markdown table (floats printed with 4 significant digits, None as "-")."""

    def cell(v: Any) -> str:
        if v is None:
            return "-"
        if isinstance(v, float):
            return f"{v:.4g}"
        return str(v)

    for r in rows:
        if len(r) != len(headers):
            raise ValueError(f"markdown_table: row {list(r)} has {len(r)} cells, expected {len(headers)}")
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in r) + " |" for r in rows]
    return "\n".join(lines)


def environment_info() -> dict[str, Any]:
    """Machine facts worth keeping next to timings (the CI/dev machine is shared: load matters)."""
    import torch

    info: dict[str, Any] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "platform": platform.platform(),
    }
    try:
        info["loadavg_1_5_15"] = list(os.getloadavg())
    except OSError:
        pass
    return info


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def _sanitize(obj: Any) -> Any:
    """Replace non-finite floats by None (strict JSON has no inf/nan)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): _sanitize(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_sanitize(v) for v in obj]
    return obj


def write_results(name: str, payload: dict[str, Any], results_dir: Path | None = None) -> Path:
    """Write ``payload`` to ``<results_dir>/<name>.json`` atomically (non-finite floats become null).

    Args:
        name: file stem, e.g. ``"int_image"`` (``"int_image_quick"`` for smoke runs).
        payload: JSON-able dict (numpy/torch arrays are converted with ``tolist()``).
        results_dir: defaults to ``benchmarks/results/``.

    Returns:
        The path written.
    """
    if not name or "/" in name or name.startswith("."):
        raise ValueError(f"write_results: name must be a plain file stem, got {name!r}")
    out_dir = Path(results_dir) if results_dir is not None else RESULTS_DIR
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{name}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(_sanitize(payload), indent=1, default=_json_default) + "\n")
    os.replace(tmp, path)
    return path


def command_line() -> str:
    """The command that produced this run (for the JSON)."""
    return " ".join([Path(sys.executable).name, *sys.argv])
