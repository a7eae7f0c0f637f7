"""Train and evaluate nerfstudio runs from Python, exactly as ``ns-train`` / ``ns-eval`` would.

Used by tests, benchmarks and ``inr-compare``. nerfstudio's method registry and eval utilities are imported
lazily (importing them at module level from a plugin module is circular).
"""

from __future__ import annotations

import contextlib
import copy
from pathlib import Path
from typing import Any, Dict, Iterator

from nerfstudio.engine.trainer import TrainerConfig

from nerf_inr_methods.nerfstudio_plugin.presets import apply_preset


def method_config(method: str) -> TrainerConfig:
    """A fresh copy of a registered method's config (ours via entry points, or nerfstudio's own)."""
    from nerfstudio.configs.method_configs import all_methods

    if method not in all_methods:
        raise ValueError(f"unknown method {method!r}; registered: {', '.join(sorted(all_methods))}")
    return copy.deepcopy(all_methods[method])


def prepare_config(
    method: str,
    data: Path,
    output_dir: Path,
    *,
    steps: int,
    preset: str | None = "cpu",
    seed: int = 42,
    timestamp: str = "run",
    experiment_name: str | None = None,
    overrides: Dict[str, Any] | None = None,
) -> TrainerConfig:
    """Config for a quiet, offline, CPU-friendly run of ``method`` on a dataset folder.

    Args:
        data: dataset folder for the method's dataparser (e.g. a Blender scene with transforms_*.json).
        steps: number of training iterations; one checkpoint is saved at the end.
        preset: name of a preset from ``presets.py`` (None for the method's own sizes).
        overrides: dotted config paths -> values, applied last, e.g. ``{"pipeline.model.iga_end": 10}``; a part
            naming a dict entry indexes it (``{"optimizer_presets.esgd.optimizer.lr": 0.3}``).
    """
    data = Path(data)
    if not data.exists():
        raise FileNotFoundError(f"dataset folder {data} does not exist")
    config = method_config(method)
    if preset is not None:
        apply_preset(config, preset)
    config.pipeline.datamanager.data = data
    config.output_dir = Path(output_dir)
    config.experiment_name = experiment_name or data.name
    config.timestamp = timestamp
    config.max_num_iterations = steps
    config.steps_per_save = steps
    config.steps_per_eval_batch = 0
    config.steps_per_eval_image = 0
    config.steps_per_eval_all_images = 10**9
    config.vis = "tensorboard"
    config.machine.seed = seed
    config.machine.device_type = _default_device()
    config.logging.local_writer.enable = False
    for path, value in (overrides or {}).items():
        *parents, leaf = path.split(".")
        target = config
        for part in parents:  # dict entries too, e.g. "optimizer_presets.esgd.optimizer.recipe"
            target = target[part] if isinstance(target, dict) else getattr(target, part)
        if not hasattr(target, leaf):
            raise AttributeError(f"override {path!r}: {type(target).__name__} has no field {leaf!r}")
        setattr(target, leaf, value)
    return config


def train(config: TrainerConfig) -> Path:
    """Run nerfstudio's training entry point in this process; returns the run's ``config.yml``. The run folder's claim
    (``run_folder``, held for the process's life under ``ns-train``) is released when the run ends."""
    from nerfstudio.scripts.train import main

    from nerf_inr_methods.nerfstudio_plugin.run_folder import release_run_folder

    try:
        with own_event_writers():
            main(config)
    finally:
        release_run_folder(config.get_base_dir())
    return config.get_base_dir() / "config.yml"


@contextlib.contextmanager
def own_event_writers() -> Iterator[None]:
    """Close and forget the event writers nerfstudio registers during the block.

    nerfstudio keeps its writers in a process-wide list: without this, every later run in the same process would
    also log into the earlier runs' (possibly deleted) tensorboard folders.
    """
    from nerfstudio.utils import writer

    n_before = len(writer.EVENT_WRITERS)
    try:
        yield
    finally:
        for event_writer in writer.EVENT_WRITERS[n_before:]:
            tb_writer = getattr(event_writer, "tb_writer", None)
            if tb_writer is not None:
                tb_writer.close()
        del writer.EVENT_WRITERS[n_before:]


def evaluate(config_path: Path, *, output_path: Path | None = None) -> Dict[str, float]:
    """Average test-split image metrics of a trained run, as ``ns-eval`` computes them."""
    from nerfstudio.utils.eval_utils import eval_setup

    _, pipeline, _, _ = eval_setup(Path(config_path), test_mode="test")
    return pipeline.get_average_eval_image_metrics(output_path=output_path, get_std=False)


def _default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"
