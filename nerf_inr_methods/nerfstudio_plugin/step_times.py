"""Exact per-step training times in a run's tensorboard log, for ``inr-compare``.

nerfstudio logs "Train Iter (time)" as a running mean over the last ``logging.max_buffer_size`` steps; recovering
the per-step durations from it (``compare.logs.unroll_running_mean``) needs every step logged and accumulates the
log's float32 rounding. :class:`StepTimer` logs the duration of every training iteration itself, under
:data:`STEP_SECONDS_TAG`; ``inr-compare`` reads it when present and unrolls the running mean otherwise (runs of
nerfstudio's own methods, older runs).
"""

from __future__ import annotations

import time
from typing import Callable, List

from nerfstudio.engine.callbacks import TrainingCallback, TrainingCallbackLocation
from nerfstudio.utils import writer

STEP_SECONDS_TAG = "Train Step (seconds)"
"""Tensorboard tag of the exact duration of each training iteration (s)."""


class StepTimer:
    """Times each training iteration (from the trainer's before- to its after-iteration callbacks: the forward,
    backward and optimizer step) and logs the duration under :data:`STEP_SECONDS_TAG` at the iteration's step."""

    def __init__(self, clock: Callable[[], float] = time.perf_counter) -> None:
        """Args: clock: seconds of a monotonic clock (``time.perf_counter``)."""
        self.clock = clock
        self._started: float | None = None

    def callbacks(self) -> List[TrainingCallback]:
        """The two nerfstudio training callbacks that start and stop the clock."""
        return [
            TrainingCallback([TrainingCallbackLocation.BEFORE_TRAIN_ITERATION], self._start),
            TrainingCallback([TrainingCallbackLocation.AFTER_TRAIN_ITERATION], self._stop),
        ]

    def _start(self, step: int) -> None:
        self._started = self.clock()

    def _stop(self, step: int) -> None:
        if self._started is None:
            return
        writer.put_scalar(name=STEP_SECONDS_TAG, scalar=self.clock() - self._started, step=step)
        self._started = None
