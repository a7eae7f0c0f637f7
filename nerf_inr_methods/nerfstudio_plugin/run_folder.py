"""One live run per run folder, and no finished run overwritten: ``ns-train``'s claim on ``--output-dir/<experiment>/
<method>/<timestamp>``.

nerfstudio writes ``config.yml``, checkpoints and event files into the run folder without looking: two runs with
the same ``--output-dir`` / ``--experiment-name`` / ``--timestamp`` (or two started in the same second) both exit 0
with one's files overwritten and the events mixed, and a new run silently overwrites a finished one.
:func:`claim_run_folder` (called by ``preflight``, before ``config.yml`` is written) refuses both:

- a lock file (``.ns-train.lock``, ``fcntl.flock``) taken in the run folder and held for the process's life (or
  until :func:`release_run_folder`): a second live run into the folder is refused naming the pid that holds it;
- a folder that already holds a run (``config.yml`` or a checkpoint) is refused, with how to resume it
  (``--load-dir <folder>/nerfstudio_models``) or to pick another ``--timestamp``. Resuming into its own folder
  (``--load-dir`` / ``--load-checkpoint`` inside it) is allowed.

Multi-process training: nerfstudio's ``main`` (and so the claim) runs once per machine, in the process that spawns the
per-GPU workers and waits for them; only machine rank 0 claims the folder (the other machines' ``main`` writes the same
config.yml by design). The lock is advisory (``flock``): on a network filesystem without flock support the claim is
skipped with a warning rather than refusing every run.
"""

from __future__ import annotations

import errno
import os
import socket
from pathlib import Path
from typing import IO, Any, Dict

try:
    import fcntl
except ImportError:  # Windows: no flock; the claim only checks for an earlier run there
    fcntl = None  # type: ignore[assignment]

LOCK_FILE_NAME = ".ns-train.lock"
"""Name of the lock file in a run folder (holds the owner's pid and host, for the refusal message)."""

_held_locks: Dict[Path, IO[str]] = {}
"""Run folders this process has claimed -> their open lock files (closing one releases its flock)."""


def claim_run_folder(config: Any) -> None:
    """Claim the run folder of a TrainerConfig for this process (see the module docstring).

    Raises:
        ValueError: another live process holds the folder, or it holds a run that this one does not resume; the
            message names the folder and what to do.
    """
    if int(getattr(config.machine, "machine_rank", 0)) != 0:
        return
    folder = config.get_base_dir().resolve()
    if folder not in _held_locks:
        _lock(folder)
    found = earlier_run(folder, config)
    if found and not resumes_in(folder, config):
        release_run_folder(folder)
        model_dir = folder / config.relative_model_dir
        if "checkpoint" in found:
            keep = f"resume it with --load-dir {model_dir} --timestamp {config.timestamp}"
        else:
            keep = "it has no checkpoint to resume from (delete the folder to start it over)"
        raise ValueError(
            f"the run folder {folder} already holds a run ({found}); {keep}, or pick another --timestamp (or "
            "--experiment-name / --output-dir) for a new run"
        )


def release_run_folder(folder: Path) -> None:
    """Release this process's claim on ``folder`` (no effect if it holds none)."""
    handle = _held_locks.pop(Path(folder).resolve(), None)
    if handle is not None:
        handle.close()


def earlier_run(folder: Path, config: Any) -> str:
    """What in ``folder`` shows an earlier run ("config.yml", "2 checkpoints"), or "" for none."""
    found = []
    if (folder / "config.yml").is_file():
        found.append("config.yml")
    model_dir = folder / config.relative_model_dir
    checkpoints = list(model_dir.glob("step-*.ckpt")) if model_dir.is_dir() else []
    if checkpoints:
        found.append(f"{len(checkpoints)} checkpoint{'s' * (len(checkpoints) != 1)} in {config.relative_model_dir}")
    return ", ".join(found)


def resumes_in(folder: Path, config: Any) -> bool:
    """Whether the run resumes from a checkpoint inside ``folder`` (--load-dir or --load-checkpoint)."""
    for source in (config.load_dir, config.load_checkpoint):
        if source is not None and Path(source).resolve().is_relative_to(folder):
            return True
    return False


def _lock(folder: Path) -> None:
    """Take the run folder's lock (non-blocking) and write this process's pid and host into it."""
    path = folder / LOCK_FILE_NAME
    handle = open(path, "a+", encoding="utf8")  # held open for the process's life
    try:
        if fcntl is None:
            raise OSError(errno.ENOSYS, "file locks (fcntl.flock) are not available on this platform")
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as error:
        handle.seek(0)
        owner = handle.read().strip() or "unknown pid"
        handle.close()
        if error.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            raise ValueError(
                f"the run folder {folder} is in use by another ns-train run ({owner}, lock {path}); wait for it to "
                "end, or pick another --timestamp (or --experiment-name / --output-dir)"
            ) from None
        from nerf_inr_methods.nerfstudio_plugin.preflight import warn

        warn(f"cannot lock the run folder {folder} ({error.strerror}); two runs into it would not be refused")
        return
    handle.seek(0)
    handle.truncate()
    handle.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
    handle.flush()
    _held_locks[folder] = handle
