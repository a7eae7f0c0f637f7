"""What a run logged while training, read back from its tensorboard event file: step times, rays/s, PSNR curve.

- training seconds = the sum of the per-step training durations (each training iteration; evaluation and
  checkpointing excluded). Runs of this package log the exact duration of every step
  (:data:`~nerf_inr_methods.nerfstudio_plugin.step_times.STEP_SECONDS_TAG`); for other runs the per-step durations
  are recovered from nerfstudio's "Train Iter (time)", a running mean over the last ``logging.max_buffer_size``
  steps (:func:`unroll_running_mean`).
- rays/s = rays trained / training seconds over the steps nerfstudio logs "Train Rays / Sec" for (from step 2).
- the PSNR curve = the evaluations the run logged while training (nerfstudio's ``--steps-per-eval-all-images``,
  else ``--steps-per-eval-image``, else ``--steps-per-eval-batch``; on the run's eval split) against the
  cumulative training seconds at that step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

import numpy as np

from nerf_inr_methods.nerfstudio_plugin.step_times import STEP_SECONDS_TAG

EVAL_SOURCES: Tuple[Tuple[str, str], ...] = (
    ("Eval Images Metrics Dict (all images)/psnr", "all eval images"),
    ("Eval Images Metrics/psnr", "one eval image"),
    ("Eval Metrics Dict/psnr", "eval ray batch"),
)
"""nerfstudio's logged evaluation PSNRs, most to least representative."""

ITER_TIME = "Train Iter (time)"
RAYS_PER_SEC = "Train Rays / Sec"
TOTAL_TIME = "Train Total (time)"


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
    """"exact" (per-step durations logged or recovered), "approximate" (running means summed: steps missing) or
    "none"."""
    step_time_source: str | None = None
    """Where the per-step durations come from: "logged per step" (:data:`STEP_SECONDS_TAG`), "unrolled running mean"
    (nerfstudio's "Train Iter (time)"), "summed running means" (approximate) or None."""
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


def _contiguous(steps: Sequence[int]) -> bool:
    return bool(steps) and list(steps) == list(range(steps[0], steps[0] + len(steps)))


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
    contiguous = _contiguous(steps)
    # nerfstudio's own per-step durations: they turn its logged rays/s back into rays
    unrolled = [max(v, 0.0) for v in unroll_running_mean([v for _, v in iters], buffer_size)] if contiguous else None
    logged = dict(scalars.get(STEP_SECONDS_TAG, []))
    if set(steps) <= set(logged):
        durations = [max(logged[s], 0.0) for s in steps]
        log.timing, log.step_time_source = "exact", "logged per step"
    elif unrolled is not None:
        durations = unrolled
        log.timing, log.step_time_source = "exact", "unrolled running mean"
    else:
        durations = [v for _, v in iters]
        log.timing, log.step_time_source = "approximate", "summed running means"
        log.notes.append(f"'{ITER_TIME}' misses steps: training time approximated by summing running means")
    per_step = dict(zip(steps, durations, strict=True))
    log.steps_logged = len(steps)
    log.train_seconds = float(sum(durations))
    rays = scalars.get(RAYS_PER_SEC, [])
    if rays:
        rsteps = [s for s, _ in rays]
        if unrolled is not None and _contiguous(rsteps) and set(rsteps) <= set(per_step):
            nerfstudio_seconds = dict(zip(steps, unrolled, strict=True))
            rates = unroll_running_mean([v for _, v in rays], buffer_size)
            # nerfstudio logs rays / max(1 ms, its duration) per step
            total_rays = sum(r * max(0.001, nerfstudio_seconds[s]) for s, r in zip(rsteps, rates, strict=True))
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
