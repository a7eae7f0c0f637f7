"""Two runs never share a run folder, and a finished run is never overwritten silently (issue 40).

``ns-train`` with the same ``--output-dir/--experiment-name/--timestamp`` twice used to exit 0 both times with one run's
checkpoints and config overwritten and the event files mixed. Now the run folder is claimed before ``config.yml`` is
written (``run_folder.claim_run_folder``, called by preflight): a folder another live run holds, or one holding an
earlier run that this one does not resume, is refused in one line.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import List

import pytest
import torch

TINY_FLAGS = [
    "--pipeline.datamanager.train-num-rays-per-batch",
    "64",
    "--pipeline.model.num-coarse-samples",
    "8",
    "--pipeline.model.num-importance-samples",
    "8",
    "--pipeline.model.base-mlp-num-layers",
    "2",
    "--vis",
    "tensorboard",
]


def ns_train_command(scene: Path, output_dir: Path, steps: int) -> List[str]:
    """A tiny inr-nerf run of ``steps`` steps into ``output_dir/exp/inr-nerf/same``."""
    from nerf_inr_methods.nerfstudio_plugin.presets import preset_flags

    command = [str(Path(sys.executable).parent / "ns-train"), "inr-nerf", *preset_flags(), *TINY_FLAGS]
    command += ["--max-num-iterations", str(steps), "--steps-per-save", str(steps), "--steps-per-eval-batch", "0"]
    command += ["--steps-per-eval-image", "0", "--steps-per-eval-all-images", "1000000"]
    command += ["--output-dir", str(output_dir), "--experiment-name", "exp", "--timestamp", "same"]
    return command + ["blender-data", "--data", str(scene)]


def error_lines(stderr: str) -> List[str]:
    return [line for line in stderr.splitlines() if "error:" in line]


@pytest.mark.slow
def test_two_ns_train_runs_started_at_once_one_is_refused(tiny_scene: Path, tmp_path: Path) -> None:
    """Two real processes into one run folder: one trains, the other exits 2 naming the folder and the owner; once the
    first has ended, a third run into the folder is refused as holding an earlier run."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "NIM_LPIPS": "off"}
    command = ns_train_command(tiny_scene, tmp_path / "out", steps=100_000)
    runs = [
        subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
        for _ in range(2)
    ]
    try:
        deadline = time.monotonic() + 600
        while all(run.poll() is None for run in runs) and time.monotonic() < deadline:
            time.sleep(0.5)
        refused = next(run for run in runs if run.poll() is not None)
        owner = next(run for run in runs if run is not refused)
        stderr = refused.stderr.read()
        assert refused.returncode == 2, stderr[-3000:]
        assert "Traceback" not in stderr
        folder = (tmp_path / "out" / "exp" / "inr-nerf" / "same").resolve()
        lines = error_lines(stderr)
        assert len(lines) == 1 and lines[0].startswith("ns-train: error: "), stderr
        assert str(folder) in lines[0] and f"pid {owner.pid}" in lines[0] and "--timestamp" in lines[0], lines[0]
        time.sleep(2)
        assert owner.poll() is None, "the run that owns the folder stopped"
    finally:
        for run in runs:
            if run.poll() is None:
                run.kill()
            run.wait()
            run.stderr.close()

    config_before = (folder / "config.yml").read_text()
    third = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)
    assert third.returncode == 2, third.stderr[-3000:]
    lines = error_lines(third.stderr)
    assert len(lines) == 1 and "already holds a run (config.yml" in lines[0], lines
    assert "no checkpoint to resume from" in lines[0] and "another --timestamp" in lines[0], lines  # killed before one
    assert (folder / "config.yml").read_text() == config_before


def _tiny_config(tiny_scene: Path, output_dir: Path, steps: int):
    from nerf_inr_methods.nerfstudio_plugin.runs import prepare_config

    overrides = {"pipeline.datamanager.train_num_rays_per_batch": 64, "pipeline.model.num_coarse_samples": 8}
    overrides |= {"pipeline.model.num_importance_samples": 8, "pipeline.model.base_mlp_num_layers": 2}
    return prepare_config("inr-nerf", tiny_scene, output_dir, steps=steps, timestamp="same", overrides=overrides)


def test_a_finished_run_is_refused_unless_resumed_in_its_folder(tiny_scene: Path, tmp_path: Path) -> None:
    from nerfstudio.utils.rich_utils import CONSOLE

    from nerf_inr_methods.nerfstudio_plugin import run_folder
    from nerf_inr_methods.nerfstudio_plugin.runs import train

    with CONSOLE.capture():
        config_path = train(_tiny_config(tiny_scene, tmp_path, steps=2))
    folder = config_path.parent.resolve()
    before = config_path.read_text()

    again = _tiny_config(tiny_scene, tmp_path, steps=2)
    with CONSOLE.capture(), pytest.raises(ValueError) as info:
        train(again)
    message = str(info.value)
    assert str(folder) in message and "config.yml, 1 checkpoint" in message
    assert f"--load-dir {folder / 'nerfstudio_models'} --timestamp same" in message and "another --timestamp" in message
    assert config_path.read_text() == before

    for checkpoint in (folder / "nerfstudio_models").iterdir():
        checkpoint.unlink()  # a run that ended before its first checkpoint: nothing to resume
    with CONSOLE.capture(), pytest.raises(ValueError, match=r"\(config.yml\); it has no checkpoint to resume from"):
        train(_tiny_config(tiny_scene, tmp_path, steps=2))
    assert config_path.read_text() == before
    torch.save({}, folder / "nerfstudio_models" / "step-000000001.ckpt")  # preflight only looks for the file

    resumed = _tiny_config(tiny_scene, tmp_path, steps=3)
    resumed.load_dir = folder / "nerfstudio_models"
    try:
        with CONSOLE.capture():
            resumed.print_to_terminal()  # preflight: resuming into its own folder is allowed
    finally:
        run_folder.release_run_folder(folder)


def test_the_claim_is_a_lock_another_process_cannot_take(tiny_scene: Path, tmp_path: Path) -> None:
    from nerf_inr_methods.nerfstudio_plugin import run_folder

    config = _tiny_config(tiny_scene, tmp_path, steps=1)
    folder = config.get_base_dir()
    folder.mkdir(parents=True)
    probe = (
        "import fcntl, sys\n"
        "handle = open(sys.argv[1])\n"
        "try:\n    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)\nexcept OSError:\n    sys.exit(3)\n"
    )
    lock = str(folder / run_folder.LOCK_FILE_NAME)
    run_folder.claim_run_folder(config)
    try:
        run_folder.claim_run_folder(config)  # the same process again (e.g. a second print_to_terminal): allowed
        assert f"pid {os.getpid()}" in Path(lock).read_text()
        assert subprocess.run([sys.executable, "-c", probe, lock]).returncode == 3
    finally:
        run_folder.release_run_folder(folder)
    assert subprocess.run([sys.executable, "-c", probe, lock]).returncode == 0


def test_only_machine_rank_0_claims(tiny_scene: Path, tmp_path: Path) -> None:
    """Other machines of a multi-machine run write into the same folder by design (nerfstudio's main on each)."""
    from nerf_inr_methods.nerfstudio_plugin import run_folder

    config = _tiny_config(tiny_scene, tmp_path, steps=1)
    config.machine.machine_rank = 1
    config.get_base_dir().mkdir(parents=True)
    (config.get_base_dir() / "config.yml").write_text("written by machine 0\n")
    run_folder.claim_run_folder(config)
    assert not (config.get_base_dir() / run_folder.LOCK_FILE_NAME).exists()
