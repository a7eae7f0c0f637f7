"""Reporting shared by the benchmarks, ``inr-compare`` and ``inr-shape``: statistics, verdicts, tables, strict JSON.

- :func:`mean_std`, :func:`paired_stats`: summaries over seeds; :func:`noise_verdict` / :func:`verdict`: the rule of
  ../shared/docs/benchmarks.md, "a difference is a verdict only when it exceeds 2 std of the run-to-run noise",
  with the noise from paired seeds or from the groups' spread (:func:`compare_groups`).
- :func:`time_to_target`, :func:`plateau_gain`: reading a training curve.
- :func:`fmt_pm`, :func:`markdown_table`: printing.
- :func:`to_strict_json`, :func:`write_json`: JSON files every parser reads (non-finite floats as null, paths as
  strings, numpy/torch values as numbers), written atomically (:func:`atomic_target`, also used for meshes and
  checkpoints); :func:`environment_info`, :func:`command_line`, :func:`git_commit`: what to keep next to timings.

Plain Python (numpy and torch only where a value is one); no nerfstudio import.

Example:
    >>> stats = paired_stats([20.0, 21.0, 19.5], [21.0, 22.1, 20.4])
    >>> round(stats["mean"], 3), verdict(stats["mean"], stats["std"], what="IGA")
    (1.0, 'IGA better')
"""

from __future__ import annotations

import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path, PurePath
from typing import Any

NOT_RESOLVABLE = "not resolvable at this scale"
"""The verdict on a difference smaller than 2 std of its noise (benchmarks.md)."""
NO_NOISE = "single seed: no noise"
"""The verdict of :func:`compare_groups` when no group has two runs to measure the noise with."""


# ------------------------------------------------------------------------------------------------ statistics


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample std (ddof=1; NaN for a single value) of a non-empty sequence."""
    if len(values) == 0:
        raise ValueError("mean_std: need at least one value")
    return statistics.mean(values), (statistics.stdev(values) if len(values) > 1 else math.nan)


def paired_stats(baseline: Sequence[float], method: Sequence[float]) -> dict[str, Any]:
    """Paired differences ``method[i] - baseline[i]`` over seeds.

    Args:
        baseline: one value per seed.
        method: one value per seed, same seeds in the same order.

    Returns:
        Dict with ``diffs`` (list), ``mean``, ``std`` (sample std, ddof=1; NaN for one seed) and ``n``.
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
    """Protocol verdict on a difference (method - baseline) and the std of its noise.

    Returns :data:`NOT_RESOLVABLE` when ``|mean| < n_std * std`` (or when mean/std are not finite), else
    ``"<what> better"`` or ``"<what> worse"`` according to the sign and ``higher_is_better`` (``what=""``: just
    ``"better"`` / ``"worse"``).
    """
    if not (math.isfinite(mean) and math.isfinite(std)) or abs(mean) < n_std * std:
        return NOT_RESOLVABLE
    better = mean > 0 if higher_is_better else mean < 0
    word = "better" if better else "worse"
    return f"{what} {word}" if what else word


def compare_groups(
    baseline: Mapping[int, float] | Sequence[float],
    other: Mapping[int, float] | Sequence[float],
    higher_is_better: bool,
) -> dict[str, Any]:
    """Difference ``other - baseline`` of one metric between two groups of runs, with its noise and verdict.

    The noise is measured where it can be: paired (both groups map >= 2 shared seeds to values) as the std of the
    per-seed differences; otherwise unpaired as the std of a single-run difference, ``sqrt(2)`` x the pooled per-run
    std of the groups with >= 2 runs; with no such group there is no noise (:data:`NO_NOISE`).

    Args:
        baseline, other: seed -> value (pairs shared seeds) or plain sequences of values (unpaired).
        higher_is_better: whether a positive difference is an improvement.

    Returns:
        dict with ``difference``, ``noise_std``, ``pairing`` ("paired over n seeds", "unpaired", "none") and
        ``verdict`` ("better", "worse", :data:`NOT_RESOLVABLE` or :data:`NO_NOISE`).
    """
    b = dict(baseline) if isinstance(baseline, Mapping) else dict(enumerate(baseline))
    o = dict(other) if isinstance(other, Mapping) else dict(enumerate(other))
    paired = isinstance(baseline, Mapping) and isinstance(other, Mapping)
    shared = sorted(set(b) & set(o)) if paired else []
    if len(shared) >= 2 and len(b) >= 2 and len(o) >= 2:
        mean, std = mean_std([o[s] - b[s] for s in shared])
        return {
            "difference": mean,
            "noise_std": std,
            "pairing": f"paired over {len(shared)} seeds",
            "verdict": verdict(mean, std, higher_is_better, what=""),
        }
    difference = mean_std(list(o.values()))[0] - mean_std(list(b.values()))[0]
    groups = [list(g.values()) for g in (b, o) if len(g) >= 2]
    if not groups:
        return {"difference": difference, "noise_std": math.nan, "pairing": "none", "verdict": NO_NOISE}
    dof = sum(len(g) - 1 for g in groups)
    pooled = math.sqrt(sum((len(g) - 1) * mean_std(g)[1] ** 2 for g in groups) / dof)
    noise = math.sqrt(2.0) * pooled
    return {
        "difference": difference,
        "noise_std": noise,
        "pairing": "unpaired",
        "verdict": verdict(difference, noise, higher_is_better, what=""),
    }


# ------------------------------------------------------------------------------------------------ curves


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
    return float(values[-1] - values[plateau_start(steps, last_fraction)])


def plateau_start(steps: Sequence[float], last_fraction: float = 0.2) -> int:
    """Index of the first sample at or after ``(1 - last_fraction) * steps[-1]``: where :func:`plateau_gain`'s
    last ``last_fraction`` of a curve starts (e.g. 4 for steps ``[0, 4, 8, 12, 16, 20]``)."""
    start = (1.0 - last_fraction) * steps[-1]
    return next(i for i, s in enumerate(steps) if s >= start)


# ------------------------------------------------------------------------------------------------ printing


def fmt_pm(mean: float, std: float, digits: int = 2) -> str:
    """``"mean +- std"`` with ``digits`` decimals (std omitted when not finite)."""
    if not math.isfinite(std):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} +- {std:.{digits}f}"


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub Markdown table (floats printed with 4 significant digits, None as "-", strings as they are)."""

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


# ------------------------------------------------------------------------------------------------ strict JSON


def to_strict_json(obj: Any) -> Any:
    """A copy of ``obj`` that strict JSON can hold: dict keys as strings, tuples as lists, paths as strings,
    numpy/torch scalars and arrays as numbers and lists (``tolist()``), non-finite floats as None.

    Raises:
        TypeError: for any other object (as ``json.dumps`` would).
    """
    if isinstance(obj, Mapping):
        return {str(k): to_strict_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_strict_json(v) for v in obj]
    if isinstance(obj, float):  # also numpy float64, a float subclass
        return float(obj) if math.isfinite(obj) else None
    if obj is None or isinstance(obj, (str, bool, int)):
        return obj
    if isinstance(obj, PurePath):
        return str(obj)
    if hasattr(obj, "tolist"):  # numpy scalars and arrays, torch tensors
        return to_strict_json(obj.tolist())
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def write_json(obj: Any, path: str | os.PathLike) -> Path:
    """Write ``obj`` as strict JSON (:func:`to_strict_json`, indent 1) to ``path`` atomically: a temporary file in
    the same folder, then a rename, so readers never see a half-written file. Creates the folder. Returns the path.
    """
    path = Path(path)
    text = json.dumps(to_strict_json(obj), indent=1, allow_nan=False) + "\n"
    with atomic_target(path) as tmp, open(tmp, "w") as handle:
        handle.write(text)
    return path


@contextmanager
def atomic_target(path: str | os.PathLike, suffix: str = ".tmp") -> Iterator[str]:
    """The name of an empty temporary file in ``path``'s folder (created with the folder) to write instead of
    ``path``: renamed onto ``path`` when the block ends, removed if it raises, so readers never see a half-written
    file. ``suffix``: the temporary file's (for writers that choose the format from it)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    os.close(fd)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def environment_info() -> dict[str, Any]:
    """Machine facts worth keeping next to timings (the CI/dev machine is shared: load matters)."""
    import torch

    info: dict[str, Any] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "platform": platform.platform(),
        "commit": git_commit(),
    }
    try:
        info["loadavg_1_5_15"] = list(os.getloadavg())
    except OSError:
        pass
    return info


def git_commit(paths: Sequence[str] = ("nerf_inr_methods", "benchmarks")) -> str:
    """The commit of this package's checkout (``+dirty`` when ``paths`` have uncommitted changes), or ``unknown``.

    Example: ``"bd77107a1c"``, ``"bd77107a1c+dirty"``; ``"unknown"`` outside a git checkout (an installed wheel).
    """
    root = Path(__file__).resolve().parent.parent
    if not (root / "pyproject.toml").is_file():
        return "unknown"
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short=10", "HEAD"], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(["git", "diff", "--quiet", "HEAD", "--", *paths], cwd=root, capture_output=True)
        return commit + ("+dirty" if dirty.returncode else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def command_line() -> str:
    """The command that produced this run (for the JSON)."""
    return " ".join([os.path.basename(sys.executable), *sys.argv])
