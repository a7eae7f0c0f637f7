"""Checkpoints of our trainer: atomic writes and resume past a truncated newest checkpoint (issue 13)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from nerf_inr_methods.nerfstudio_plugin import checkpoints


class RunsCode:
    """Pickles to a call of ``print``: what a crafted checkpoint would do with a harmful function."""

    def __reduce__(self):
        return (print, ("code ran",))


def write_checkpoint(path: Path, step: int) -> None:
    torch.save({"step": step, "pipeline": {"w": torch.full((3,), float(step))}, "optimizers": {}, "scalers": {}}, path)


def test_newest_loadable_checkpoint_skips_truncated_ones(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    for step in (10, 20, 30):
        write_checkpoint(tmp_path / f"step-{step:09d}.ckpt", step)
    for step in (20, 30):  # killed while writing, twice
        path = tmp_path / f"step-{step:09d}.ckpt"
        path.write_bytes(path.read_bytes()[:100])
    path, state = checkpoints.newest_loadable_checkpoint(tmp_path)
    assert path.name == "step-000000010.ckpt" and state["step"] == 10
    lines = [line for line in capsys.readouterr().out.splitlines() if line.strip()]
    assert len(lines) == 1 and "warning" in lines[0] and "step-000000030.ckpt, step-000000020.ckpt" in lines[0]
    assert "resuming from step-000000010.ckpt" in lines[0]


def test_no_loadable_checkpoint_is_one_clear_error(tmp_path: Path) -> None:
    (tmp_path / "step-000000005.ckpt").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(ValueError, match=r"none of its 1 checkpoints loads .*step-000000005.ckpt"):
        checkpoints.newest_loadable_checkpoint(tmp_path)
    (tmp_path / "step-000000005.ckpt").unlink()
    with pytest.raises(FileNotFoundError, match="no step-\\*.ckpt checkpoint"):
        checkpoints.newest_loadable_checkpoint(tmp_path)


def test_a_checkpoint_that_runs_code_is_refused_not_skipped(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from nerf_inr_methods.safe_io import RefusedFileError

    write_checkpoint(tmp_path / "step-000000001.ckpt", 1)
    torch.save({"step": 2, "pipeline": RunsCode()}, tmp_path / "step-000000002.ckpt")
    with pytest.raises(RefusedFileError, match="step-000000002.ckpt"):
        checkpoints.newest_loadable_checkpoint(tmp_path)
    assert "code ran" not in capsys.readouterr().out


def test_save_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "nerfstudio_models"
    path = folder / "step-000000007.ckpt"
    checkpoints.save_atomically({"step": 7, "w": torch.ones(4)}, path)
    real_save = torch.save

    def killed_mid_write(state, handle) -> None:
        real_save(state, handle)
        handle.truncate(50)
        raise KeyboardInterrupt  # the process dies while writing

    monkeypatch.setattr(checkpoints.torch, "save", killed_mid_write)
    with pytest.raises(KeyboardInterrupt):
        checkpoints.save_atomically({"step": 7, "w": torch.zeros(4)}, path)
    monkeypatch.undo()
    assert torch.equal(torch.load(path, weights_only=True)["w"], torch.ones(4))  # the old file is intact
    assert sorted(p.name for p in folder.iterdir()) == ["step-000000007.ckpt"]  # nothing else in the folder
    assert not list(tmp_path.glob(".*.partial"))  # and no temporary file left behind


@pytest.mark.slow
def test_resume_falls_back_from_a_truncated_newest_checkpoint(tiny_scene: Path, tmp_path: Path) -> None:
    from nerfstudio.utils.rich_utils import CONSOLE

    from nerf_inr_methods.nerfstudio_plugin.runs import prepare_config, train

    first = prepare_config("inr-nerf", tiny_scene, tmp_path, steps=4, timestamp="first")
    first.steps_per_save = 2  # checkpoints at steps 2 and 3 (the end)
    first.save_only_latest_checkpoint = False
    with CONSOLE.capture():
        train(first)
    folder = first.get_checkpoint_dir()
    assert [p.name for p in sorted(folder.glob("*.ckpt"))] == ["step-000000002.ckpt", "step-000000003.ckpt"]
    newest = folder / "step-000000003.ckpt"
    newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 2])  # killed during nerfstudio's write

    resumed = prepare_config("inr-nerf", tiny_scene, tmp_path, steps=2, timestamp="resumed")
    resumed.load_dir = folder
    with CONSOLE.capture() as capture:
        train(resumed)
    warnings = [line for line in capture.get().splitlines() if "warning" in line]
    assert len(warnings) == 1 and "step-000000003.ckpt" in warnings[0] and "step-000000002.ckpt" in warnings[0]
    assert (resumed.get_checkpoint_dir() / "step-000000004.ckpt").is_file()  # trained steps 3 and 4
