"""Shared helpers for the benchmarks (protocol: ../shared/docs/benchmarks.md).

The statistics, verdicts, tables and JSON writing live in :mod:`nerf_inr_methods.reporting` (also used by
``inr-compare`` and ``inr-shape``) and are re-exported here under the names the benchmarks import:

- :func:`paired_stats` / :func:`verdict`: paired-seed differences, mean +- std, and the protocol's rule
  "if |mean| < 2 std, the effect is not resolvable at this scale".
- :func:`time_to_target` / :func:`plateau_gain`: read a training curve (time-to-reach-target, plateau check).
- :func:`mean_std`, :func:`markdown_table`, :func:`fmt_pm`: summaries and printing.
- :func:`write_results`, :func:`environment_info`, :func:`command_line`: JSON of all raw numbers in
  ``benchmarks/results/``.

Benchmark-side helpers shared by the scripts:

- :class:`BenchmarkOptions`: the options every benchmark has (``--quick``, ``--threads``, ``--out``,
  ``--results-dir``), the base of each benchmark's tyro Config dataclass (the flags stay flat);
  :func:`parse`: a benchmark's options from the command line, resolved, threads set.
- :func:`log`: a progress line, flushed at once.
- :func:`finish`: the results epilogue of every benchmark (payload header, JSON, summary line, where it went).
- :func:`config_dict`: a run's options (tyro dataclass) as a JSON-able dict.
- :func:`load_image` / :func:`pixel_grid`: the scikit-image sample photos of the image benchmarks, pixel grids.
- :func:`eigen_bands` / :func:`band_energy`: IGA's mechanism probe (residual energy left in eNTK eigen-bands).

The benchmarks are modules of the ``benchmarks`` package: run them from the repository root as
``python -m benchmarks.<name>`` and import shared code as ``from benchmarks.common import ...``.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
import tyro
from torch import Tensor

from nerf_inr_methods.reporting import (
    NOT_RESOLVABLE,
    command_line,
    fmt_pm,
    git_commit,
    markdown_table,
    mean_std,
    paired_stats,
    plateau_gain,
    time_to_target,
    verdict,
    write_json,
)
from nerf_inr_methods.reporting import environment_info as _machine_info

__all__ = [
    "NOT_RESOLVABLE",
    "QUICK_RESULTS_DIR",
    "RESULTS_DIR",
    "BenchmarkOptions",
    "band_energy",
    "command_line",
    "config_dict",
    "eigen_bands",
    "environment_info",
    "finish",
    "fmt_pm",
    "load_image",
    "log",
    "lr_beyond_edge",
    "search_lr",
    "markdown_table",
    "mean_std",
    "paired_stats",
    "parse",
    "pixel_grid",
    "plateau_gain",
    "time_to_target",
    "verdict",
    "write_results",
]

RESULTS_DIR = Path(__file__).resolve().parent / "results"
"""Where benchmarks write their JSON (``benchmarks/results/``)."""

QUICK_RESULTS_DIR = Path(__file__).resolve().parents[1] / "outputs" / "benchmarks_quick"
"""Where ``--quick`` smoke runs write their results when no folder is given (``outputs/`` is not tracked)."""


Options = TypeVar("Options", bound="BenchmarkOptions")
"""A benchmark's Config class (a :class:`BenchmarkOptions`)."""


@dataclass
class BenchmarkOptions:
    """Options of every benchmark: the smoke switch, torch threads and where the results JSON goes.

    Each benchmark's Config dataclass derives from this one, so the flags stay flat (``--quick``, ``--threads``,
    ``--out``, ``--results-dir``); what ``--quick`` shrinks is said in the Config's description."""

    quick: bool = False
    """Smoke run of a few minutes at small sizes (see the description above)."""
    threads: int = 1
    """torch intra-op threads per training process (1: far steadier clocks on a shared machine; 0: torch's)."""
    out: str | None = None
    """Results file stem (default: the benchmark's name, with _quick for --quick)."""
    results_dir: Path | None = None
    """Folder of the results JSON (default benchmarks/results/; with --quick outputs/benchmarks_quick/)."""

    def resolved(self: Options) -> Options:
        """A copy with the defaults of the full or quick run filled in and the inputs checked (benchmarks override
        this; here: the options as given)."""
        return self

    def with_run_defaults(self: Options, benchmark: str, **defaults: tuple[Any, Any]) -> Options:
        """A copy with ``--out`` resolved (:meth:`results_stem`) and each option left at None set to its default.

        Args:
            benchmark: the benchmark's name (the default results stem).
            defaults: ``name=(full run's value, quick run's value)``.
        """
        chosen = {
            name: pair[1] if self.quick else pair[0] for name, pair in defaults.items() if getattr(self, name) is None
        }
        return dataclasses.replace(self, out=self.results_stem(benchmark), **chosen)

    def results_stem(self, benchmark: str) -> str:
        """``--out``, or the default stem: ``benchmark`` (``<benchmark>_quick`` with --quick)."""
        return self.out or (f"{benchmark}_quick" if self.quick else benchmark)

    def use_threads(self) -> None:
        """Set this process's torch intra-op threads to ``--threads`` (0: leave torch's default)."""
        if self.threads < 0:
            raise ValueError(f"--threads must be >= 0 (0: torch's default), got {self.threads}")
        if self.threads:
            torch.set_num_threads(self.threads)


def parse(config_class: type[Options], argv: Sequence[str] | None = None, description: str | None = None) -> Options:
    """A benchmark's options from ``argv`` (default: the command line), resolved, with torch's threads set.

    Args:
        config_class: the benchmark's Config dataclass (a :class:`BenchmarkOptions`).
        argv: the arguments (None: ``sys.argv[1:]``).
        description: the ``--help`` description (None: the class docstring).
    """
    options = tyro.cli(config_class, args=argv, description=description).resolved()
    if options.quick and options.results_dir is None:  # smoke outputs stay out of the tracked results
        options = dataclasses.replace(options, results_dir=QUICK_RESULTS_DIR)
    options.use_threads()
    return options


COMMIT_AT_START = git_commit()
"""The commit of the code this benchmark process runs, read when it starts (on import): a long benchmark must not be
tagged with a commit made while it ran (a JSON written at the end used to name the commit current then)."""


def environment_info() -> dict[str, Any]:
    """Machine facts (:func:`nerf_inr_methods.reporting.environment_info`) with ``commit`` = :data:`COMMIT_AT_START`."""
    return {**_machine_info(), "commit": COMMIT_AT_START}


def log(message: str) -> None:
    """Print a progress line at once (benchmarks run for minutes, often with their output sent to a file)."""
    print(message, flush=True)


def write_results(name: str, payload: dict[str, Any], results_dir: Path | None = None) -> Path:
    """Write ``payload`` to ``<results_dir>/<name>.json`` atomically (strict JSON: non-finite floats become null).

    Args:
        name: file stem, e.g. ``"int_image"`` (``"int_image_quick"`` for smoke runs).
        payload: JSON-able dict (numpy/torch values are converted with ``tolist()``).
        results_dir: defaults to ``benchmarks/results/``, or :data:`QUICK_RESULTS_DIR` for a ``*_quick`` stem (a
            smoke run's output is not tracked).

    Returns:
        The path written.
    """
    if not name or "/" in name or name.startswith("."):
        raise ValueError(f"write_results: name must be a plain file stem, got {name!r}")
    if results_dir is None:
        results_dir = QUICK_RESULTS_DIR if name.endswith("_quick") else RESULTS_DIR
    return write_json(payload, Path(results_dir) / f"{name}.json")


def config_dict(config: Any) -> dict[str, Any]:
    """A run's options as a JSON-able dict: the attributes of a (tyro) dataclass, including the ones its ``main``
    derived and stored on it (e.g. gauss_esgd's ``tune_arms``), paths as strings."""
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(config).items()}


def finish(
    benchmark: str,
    config: BenchmarkOptions,
    results: dict[str, Any],
    summary_line: str,
    *,
    start: float | None = None,
) -> dict[str, Any]:
    """The epilogue of a benchmark: assemble the payload, write the JSON, print the summary line and the path.

    The payload is ``benchmark``, ``command``, ``config`` (:func:`config_dict`), ``environment``, then
    ``results`` in their order, ``summary_line`` and, when ``start`` (a ``time.perf_counter()`` value) is given,
    ``benchmark_wall_seconds``. It goes to ``<config.results_dir>/<config.results_stem(benchmark)>.json``.

    Args:
        benchmark: the benchmark's name (e.g. ``"int_nerf"``).
        config: the resolved options of the run.
        results: the benchmark's own entries (runs, statistics, summary).
        summary_line: the one-line ``SUMMARY <benchmark> ...`` verdict.
        start: ``time.perf_counter()`` at the start of the benchmark (None: no wall-clock entry).

    Returns:
        The payload written.
    """
    payload: dict[str, Any] = {
        "benchmark": benchmark,
        "command": command_line(),
        "config": config_dict(config),
        "environment": environment_info(),
        **results,
        "summary_line": summary_line,
    }
    wall = ""
    if start is not None:
        payload["benchmark_wall_seconds"] = time.perf_counter() - start
        wall = f"; benchmark wall-clock {payload['benchmark_wall_seconds']:.0f} s"
    path = write_results(config.results_stem(benchmark), payload, config.results_dir)
    log("")
    log(summary_line)
    log(f"(raw numbers: {path}{wall})")
    return payload


# ------------------------------------------------------------------------------------------ image benchmarks
def lr_beyond_edge(scores: Mapping[float, float], factor: float = 3.0) -> float | None:
    """The next lr to try when the best of a grid search sits on an edge: one ``factor`` step beyond that edge, or
    None when the best is inside the grid (the search is done).

    Example: ``lr_beyond_edge({5e-4: 25.0, 1.5e-3: 28.0})`` is ``4.5e-3``;
    ``lr_beyond_edge({1e-3: 1.0, 3e-3: 2.0, 9e-3: 1.5})`` is None.

    Args:
        scores: {lr: score, higher is better} of the lrs tried so far (non-finite scores count as the worst).
    """
    grid = sorted(scores)
    best = max(grid, key=lambda lr: scores[lr] if math.isfinite(scores[lr]) else -math.inf)
    if len(grid) > 1 and best == grid[0]:
        return grid[0] / factor
    if len(grid) > 1 and best == grid[-1]:
        return grid[-1] * factor
    return None


def search_lr(score: Callable[[float], float], grid: Sequence[float], max_extensions: int) -> dict[float, float]:
    """Grid search of an lr: ``score`` every lr of ``grid``, then, while the best sits on an edge
    (:func:`lr_beyond_edge`), one more lr beyond it, ``max_extensions`` times at most.

    Example: ``search_lr(lambda lr: -abs(lr - 1.0), (0.01, 0.03, 0.1), 2)`` tries 0.01, 0.03, 0.1, 0.3, 0.9.

    Returns:
        {lr: score} of every lr tried, in increasing lr.
    """
    scores = {lr: score(lr) for lr in grid}
    for _ in range(max_extensions):
        beyond = lr_beyond_edge(scores)
        if beyond is None:
            break
        scores[beyond] = score(beyond)
    return dict(sorted(scores.items()))


def load_image(name: str, size: int) -> Tensor:
    """A scikit-image sample photograph, centre-cropped to a square and resized (anti-aliased).

    Args:
        name: a colour photo of ``skimage.data``, e.g. ``"astronaut"`` (512 x 512) or ``"chelsea"``.
        size: output side in pixels (>= 2).

    Returns:
        (size, size, 3) float32 in [0, 1].
    """
    import skimage.data
    from skimage.transform import resize

    if size < 2:
        raise ValueError(f"--size must be >= 2, got {size}")
    img = getattr(skimage.data, name)()
    if img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"image {name!r}: expected an RGB image, got shape {img.shape}")
    h, w = img.shape[:2]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    img = resize(img[top : top + side, left : left + side], (size, size), anti_aliasing=True)  # float64 in [0, 1]
    return torch.from_numpy(np.ascontiguousarray(img)).float()


def pixel_grid(size: int) -> Tensor:
    """Row-major pixel coordinates in [-1, 1]^2 (corner pixels at +-1): (size^2, 2), (row, col)."""
    lin = torch.linspace(-1.0, 1.0, size)
    return torch.stack(torch.meshgrid(lin, lin, indexing="ij"), dim=-1).reshape(-1, 2)


# ------------------------------------------------------------------------------------- IGA mechanism probe
def eigen_bands(m: int, end: int) -> list[tuple[int, int]]:
    """Eigen-index bands [a, b) of an (m, m) probe eNTK: top direction, the next ``end``, up to ~4 end, the tail."""
    edges = sorted({0, 1, min(end + 1, m), min(max(4 * end, end + 2), m), m})
    return [(a, b) for a, b in zip(edges[:-1], edges[1:], strict=True) if b > a]


def band_energy(vectors: Tensor, residual: Tensor, bands: list[tuple[int, int]]) -> list[float]:
    """Residual energy ``||V_b^T r||^2`` per eigen-index band; vectors (m, m) descending, residual (m, C)."""
    coeff = vectors.T @ residual.double().to(vectors.device)  # (m, C)
    energy = (coeff**2).sum(dim=1)
    return [float(energy[a:b].sum()) for a, b in bands]
