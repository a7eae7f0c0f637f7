"""Checkpoints of our trainer (``ESGDTrainer``): atomic writes, safe loads, and resume past a truncated newest file.

nerfstudio's Trainer writes ``step-XXXXXXXXX.ckpt`` in place, so a run killed during the write leaves a truncated
newest checkpoint, and its resume (``--load-dir``) then crashes on it. Our trainer instead

- writes each checkpoint to a temporary file next to the checkpoint folder and moves it into place with
  ``os.replace`` (atomic on one filesystem): a checkpoint is either complete or absent;
- loads with ``weights_only=True`` (:func:`nerf_inr_methods.safe_io.safe_torch_load`: tensors and plain values only);
- resumes from the newest checkpoint of ``--load-dir`` that loads, with one warning line naming the ones skipped
  (a checkpoint that would run code is refused, never skipped). ``--load-step`` and ``--load-checkpoint`` name one
  file, which must load.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Tuple

import torch
from nerfstudio.utils.rich_utils import CONSOLE

from nerf_inr_methods.safe_io import RefusedFileError, safe_torch_load

CHECKPOINT_NAME = re.compile(r"^step-(\d+)\.ckpt$")
"""nerfstudio's checkpoint file names."""
REQUIRED_KEYS = ("step", "pipeline", "optimizers", "scalers")
"""Entries of a nerfstudio trainer checkpoint that resuming reads."""


def checkpoint_files(folder: Path) -> List[Tuple[int, Path]]:
    """(step, path) of every ``step-*.ckpt`` in ``folder``, newest step first."""
    found = []
    for path in Path(folder).iterdir():
        match = CHECKPOINT_NAME.match(path.name)
        if match and path.is_file():
            found.append((int(match.group(1)), path))
    return sorted(found, reverse=True)


def load_trainer_checkpoint(path: Path) -> Dict[str, Any]:
    """A trainer checkpoint loaded with ``weights_only=True``; ValueError naming the file if it is not one."""
    state = safe_torch_load(path, map_location="cpu")
    if not isinstance(state, dict) or not all(key in state for key in REQUIRED_KEYS):
        keys = sorted(state) if isinstance(state, dict) else type(state).__name__
        raise ValueError(
            f"checkpoint {path} is not a nerfstudio trainer checkpoint (expected {REQUIRED_KEYS}, got {keys})"
        )
    return state


def newest_loadable_checkpoint(folder: Path) -> Tuple[Path, Dict[str, Any]]:
    """The newest checkpoint of ``folder`` that loads, with one warning line if newer ones were skipped.

    Raises:
        FileNotFoundError: no checkpoint in the folder.
        ValueError: none loads (each is truncated or not a checkpoint), or one would run code (RefusedFileError).
    """
    candidates = checkpoint_files(folder)
    if not candidates:
        raise FileNotFoundError(f"--load-dir {folder}: no step-*.ckpt checkpoint in this folder")
    skipped: List[Tuple[Path, ValueError]] = []
    for _, path in candidates:
        try:
            state = load_trainer_checkpoint(path)
        except RefusedFileError:
            raise
        except ValueError as error:
            skipped.append((path, error))
            continue
        if skipped:
            names = ", ".join(p.name for p, _ in skipped)
            CONSOLE.print(
                f"[bold yellow]warning:[/bold yellow] skipping {names} in {folder}: {skipped[0][1]}; "
                f"resuming from {path.name}",
                soft_wrap=True,
                highlight=False,
            )
        return path, state
    raise ValueError(f"--load-dir {folder}: none of its {len(candidates)} checkpoints loads ({skipped[0][1]})")


def resume_checkpoint(config: Any) -> Tuple[Path, Dict[str, Any]] | None:
    """The checkpoint a TrainerConfig resumes from (--load-dir [--load-step] or --load-checkpoint), or None."""
    if config.load_dir is not None:
        folder = Path(config.load_dir)
        if not folder.is_dir():
            raise FileNotFoundError(f"--load-dir {folder}: no such folder (expected a run's nerfstudio_models/)")
        if config.load_step is None:
            return newest_loadable_checkpoint(folder)
        path = folder / f"step-{int(config.load_step):09d}.ckpt"
        return path, load_trainer_checkpoint(path)
    if config.load_checkpoint is not None:
        path = Path(config.load_checkpoint)
        return path, load_trainer_checkpoint(path)
    return None


def restore_trainer(trainer: Any) -> None:
    """nerfstudio's ``Trainer._load_checkpoint`` with :func:`resume_checkpoint`: pipeline, optimizers, schedulers
    (unless --load-scheduler False), grad scaler and the start step."""
    resumed = resume_checkpoint(trainer.config)
    if resumed is None:
        CONSOLE.print("No Nerfstudio checkpoint to load, so training from scratch.")
        return
    path, state = resumed
    trainer._start_step = int(state["step"]) + 1
    trainer.pipeline.load_pipeline(state["pipeline"], state["step"])
    trainer.optimizers.load_optimizers(state["optimizers"])
    if "schedulers" in state and trainer.config.load_scheduler:
        trainer.optimizers.load_schedulers(state["schedulers"])
    trainer.grad_scaler.load_state_dict(state["scalers"])
    CONSOLE.print(f"Done loading Nerfstudio checkpoint from {path}")


def save_atomically(state: Dict[str, Any], path: Path) -> None:
    """``torch.save(state, path)`` through a temporary file in the parent of ``path``'s folder and ``os.replace``.

    The temporary file lives outside the checkpoint folder, whose every file nerfstudio parses as ``step-N.ckpt``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = tempfile.NamedTemporaryFile(
        dir=path.parent.parent, prefix=f".{path.name}.", suffix=".partial", delete=False
    )
    try:
        with handle:
            torch.save(state, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(handle.name, path)
    finally:
        if os.path.exists(handle.name):
            os.unlink(handle.name)


def save_trainer_checkpoint(trainer: Any, step: int) -> Path:
    """nerfstudio's ``Trainer.save_checkpoint`` written atomically (:func:`save_atomically`); with
    --save-only-latest-checkpoint the older checkpoints are deleted after the new one is in place."""
    path = Path(trainer.checkpoint_dir) / f"step-{step:09d}.ckpt"
    pipeline = trainer.pipeline.module if hasattr(trainer.pipeline, "module") else trainer.pipeline
    state = {
        "step": step,
        "pipeline": pipeline.state_dict(),
        "optimizers": {k: v.state_dict() for (k, v) in trainer.optimizers.optimizers.items()},
        "schedulers": {k: v.state_dict() for (k, v) in trainer.optimizers.schedulers.items()},
        "scalers": trainer.grad_scaler.state_dict(),
    }
    save_atomically(state, path)
    if trainer.config.save_only_latest_checkpoint:
        for _, older in checkpoint_files(path.parent):
            if older != path:
                older.unlink()
    return path
