"""Bad input for our standalone tools (inr-shape, inr-mesh, inr-compare): one line naming the flag or file, exit
status 2, no traceback, before any long work. Table-driven: each case is a command line and the culprit the error
line must name. (ns-train's cases live in their own file.)"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Callable

import pytest
import torch
import trimesh
import yaml

from nerf_inr_methods import cli as cli_module
from nerf_inr_methods import mesh as meshlib


def _unwritable_folder() -> str | None:
    """A folder nobody (root included) can write in here, or None: /sys on Linux, else a read-only folder."""
    for candidate in ("/sys",):
        try:
            cli_module.check_output_dir(Path(candidate) / "nim-out", "--x")
        except ValueError:
            return candidate
    return None


UNWRITABLE = _unwritable_folder()


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Every input the cases need, made once: meshes good and bad, checkpoints good and bad, run folders."""
    from nerf_inr_methods.nerfstudio_plugin.runs import method_config
    from nerf_inr_methods.shapes.config import ShapeFitConfig
    from nerf_inr_methods.shapes.train import train_shape

    tmp = tmp_path_factory.mktemp("bad-input")
    torus = tmp / "torus.off"
    trimesh.creation.torus(2.0, 0.8, major_sections=24, minor_sections=12).export(torus)
    (tmp / "folder").mkdir()
    (tmp / "notes.txt").write_text("not a mesh\n")
    (tmp / "garbage.obj").write_bytes(bytes(range(256)) * 8)
    (tmp / "empty.ply").write_bytes(b"")
    trimesh.PointCloud(torch.rand(20, 3).numpy()).export(tmp / "points.ply")
    (tmp / "a-file").write_text("x")

    # a finished shape run, and one to resume (checkpoint at step 2 of 4, final.pt removed)
    tiny = dict(mesh=torus, output_dir=tmp / "shapes", width=8, depth=2, steps=4, batch_size=256, eval_every=0)
    tiny.update(iou_resolution=8, mesh_resolution=0, chamfer_samples=0, checkpoint_every=2, progress=False)
    done = train_shape(ShapeFitConfig(run_name="done", **tiny))
    train_shape(ShapeFitConfig(run_name="half", **tiny))
    (tmp / "shapes" / "half" / "checkpoints" / "final.pt").unlink()
    final = done.run_dir / "checkpoints" / "final.pt"
    (tmp / "truncated.pt").write_bytes(final.read_bytes()[:2000])
    (tmp / "text.pt").write_text("hello")
    torch.save({"w": torch.zeros(3)}, tmp / "other.pt")
    # a shape run whose only checkpoint is truncated
    broken = tmp / "shapes" / "broken" / "checkpoints"
    broken.mkdir(parents=True)
    (broken / "step_0000002.pt").write_bytes(final.read_bytes()[:2000])

    # a checkpoint of 160 KB cut to 5 KB and 40 KB: torch's zip reader fails with "OSError: [Errno 22]" (naming no
    # file) on cuts between ~5 and 66 KB, where shorter and longer cuts fail otherwise
    torch.save({"step": 2, "pipeline": {"w": torch.zeros(40_000)}, "optimizers": {}, "scalers": {}}, tmp / "big.pt")
    big = (tmp / "big.pt").read_bytes()
    (tmp / "truncated-5k.pt").write_bytes(big[:5_000])
    (tmp / "truncated-40k.pt").write_bytes(big[:40_000])
    broken_5k = tmp / "shapes" / "broken5k" / "checkpoints"
    broken_5k.mkdir(parents=True)
    (broken_5k / "step_0000002.pt").write_bytes(big[:5_000])

    # nerfstudio run folders: genuine config, truncated checkpoint / none / garbage / not a run / unknown method
    config = method_config("inr-nerf")
    config.pipeline.datamanager.data = tmp
    genuine = yaml.dump(config)
    runs = tmp / "runs"
    for name, text in (
        ("ok", genuine),
        ("nockpt", genuine),
        ("garbage", "this: [is not\n  yaml: at all"),
        ("notrun", "a: 1\n"),
        ("unknown", genuine.replace("method_name: inr-nerf", "method_name: no-such-method")),
        ("cut5k", genuine),
    ):
        (runs / name).mkdir(parents=True)
        (runs / name / "config.yml").write_text(text)
    (runs / "ok" / "nerfstudio_models").mkdir()
    (runs / "ok" / "nerfstudio_models" / "step-000000001.ckpt").write_bytes(final.read_bytes()[:2000])
    (runs / "cut5k" / "nerfstudio_models").mkdir()
    (runs / "cut5k" / "nerfstudio_models" / "step-000000001.ckpt").write_bytes(big[:5_000])
    (runs / "single" / "deep").mkdir(parents=True)
    (runs / "single" / "deep" / "config.yml").write_text(genuine)
    return {
        "tmp": str(tmp),
        "mesh": str(torus),
        "ckpt": str(final),
        "out": str(tmp / "shapes"),
        "runs": str(runs),
        "unwritable": UNWRITABLE or "",
    }


def _run_inr_shape() -> None:
    from nerf_inr_methods.shapes.cli import entrypoint

    entrypoint()


def _run_inr_mesh() -> None:
    from nerf_inr_methods.nerfstudio_plugin.export_mesh import entrypoint

    entrypoint()


def _run_inr_compare() -> None:
    from nerf_inr_methods.nerfstudio_plugin.compare import entrypoint

    entrypoint()


PROGRAMS: dict[str, Callable[[], None]] = {
    "inr-shape": _run_inr_shape,
    "inr-mesh": _run_inr_mesh,
    "inr-compare": _run_inr_compare,
}

FIT = ["fit", "--mesh", "{mesh}", "--output-dir", "{tmp}/fit-out", "--no-progress"]
EXTRACT = ["extract", "--checkpoint", "{ckpt}"]
MESH = ["--load-config", "{runs}/ok/config.yml"]

# (case id, program, arguments, culprit named by the error line); {name} = a path from the ``files`` fixture
CASES: list[tuple[str, str, list[str], str]] = [
    # inr-shape fit: files
    ("fit-missing-mesh", "inr-shape", ["fit", "--mesh", "{tmp}/missing.obj"], "{tmp}/missing.obj"),
    ("fit-mesh-is-folder", "inr-shape", ["fit", "--mesh", "{tmp}/folder"], "--mesh"),
    ("fit-mesh-not-a-mesh-suffix", "inr-shape", ["fit", "--mesh", "{tmp}/notes.txt"], "--mesh"),
    ("fit-mesh-garbage", "inr-shape", ["fit", "--mesh", "{tmp}/garbage.obj"], "{tmp}/garbage.obj"),
    ("fit-mesh-empty-file", "inr-shape", ["fit", "--mesh", "{tmp}/empty.ply"], "{tmp}/empty.ply"),
    ("fit-mesh-point-cloud", "inr-shape", ["fit", "--mesh", "{tmp}/points.ply"], "{tmp}/points.ply"),
    # inr-shape fit: sizes and steps
    ("fit-steps-zero", "inr-shape", [*FIT, "--steps", "0"], "--steps"),
    ("fit-steps-negative", "inr-shape", [*FIT, "--steps", "-5"], "--steps"),
    ("fit-batch-size-zero", "inr-shape", [*FIT, "--batch-size", "0"], "--batch-size"),
    ("fit-width-zero", "inr-shape", [*FIT, "--width", "0"], "--width"),
    ("fit-depth-negative", "inr-shape", [*FIT, "--depth", "-1"], "--depth"),
    ("fit-lr-negative", "inr-shape", [*FIT, "--lr", "-1"], "--lr"),
    ("fit-chunk-size-zero", "inr-shape", [*FIT, "--chunk-size", "0"], "--chunk-size"),
    ("fit-pool-size-zero", "inr-shape", [*FIT, "--points", "pool", "--pool-size", "0"], "--pool-size"),
    # inr-shape fit: memory, checked before training
    ("fit-mesh-resolution-5000", "inr-shape", [*FIT, "--mesh-resolution", "5000"], "--mesh-resolution"),
    ("fit-iou-resolution-huge", "inr-shape", [*FIT, "--iou-resolution", "100000"], "--iou-resolution"),
    (
        "fit-voxel-resolution-huge",
        "inr-shape",
        [*FIT, "--point-set", "voxels", "--points", "pool", "--voxel-resolution", "100000"],
        "--voxel-resolution",
    ),
    ("fit-pool-size-huge", "inr-shape", [*FIT, "--points", "pool", "--pool-size", "1000000000000"], "--pool-size"),
    # inr-shape: devices torch cannot use here (issue 40: were raw tracebacks)
    ("fit-device-cuda-7", "inr-shape", [*FIT, "--device", "cuda:7"], "--device cuda:7"),
    ("fit-device-unknown", "inr-shape", [*FIT, "--device", "banana"], "--device banana"),
    ("extract-device-cuda-7", "inr-shape", [*EXTRACT, "--device", "cuda:7"], "--device cuda:7"),
    # inr-shape fit: output folder, resume
    ("fit-output-dir-under-a-file", "inr-shape", [*FIT, "--output-dir", "{tmp}/a-file/out"], "--output-dir"),
    ("fit-output-dir-unwritable", "inr-shape", [*FIT, "--output-dir", "{unwritable}/out"], "--output-dir"),
    ("fit-resume-missing-run", "inr-shape", [*FIT, "--resume", "--run-name", "nope"], "--resume"),
    (
        "fit-resume-finished-run",
        "inr-shape",
        [*FIT, "--output-dir", "{out}", "--resume", "--run-name", "done"],
        "{out}/done",
    ),
    (
        "fit-resume-other-flags",
        "inr-shape",
        [*FIT, "--output-dir", "{out}", "--resume", "--run-name", "half", "--steps", "6"],
        "--steps 4 (now 6)",
    ),
    (
        "fit-resume-only-truncated-checkpoint",
        "inr-shape",
        [*FIT, "--output-dir", "{out}", "--resume", "--run-name", "broken"],
        "{out}/broken/checkpoints",
    ),
    (
        "fit-resume-checkpoint-cut-to-5k",
        "inr-shape",
        [*FIT, "--output-dir", "{out}", "--resume", "--run-name", "broken5k"],
        "{out}/broken5k/checkpoints/step_0000002.pt",
    ),
    # inr-shape extract
    ("extract-missing-checkpoint", "inr-shape", ["extract", "--checkpoint", "{tmp}/missing.pt"], "--checkpoint"),
    ("extract-checkpoint-is-folder", "inr-shape", ["extract", "--checkpoint", "{out}/done"], "final.pt"),
    ("extract-truncated-checkpoint", "inr-shape", ["extract", "--checkpoint", "{tmp}/truncated.pt"], "truncated.pt"),
    ("extract-text-checkpoint", "inr-shape", ["extract", "--checkpoint", "{tmp}/text.pt"], "{tmp}/text.pt"),
    ("extract-checkpoint-cut-to-5k", "inr-shape", ["extract", "--checkpoint", "{tmp}/truncated-5k.pt"], "5k.pt"),
    ("extract-checkpoint-cut-to-40k", "inr-shape", ["extract", "--checkpoint", "{tmp}/truncated-40k.pt"], "40k.pt"),
    ("extract-other-checkpoint", "inr-shape", ["extract", "--checkpoint", "{tmp}/other.pt"], "{tmp}/other.pt"),
    ("extract-resolution-100000", "inr-shape", [*EXTRACT, "--resolution", "100000"], "--resolution"),
    ("extract-resolution-one", "inr-shape", [*EXTRACT, "--resolution", "1"], "--resolution"),
    ("extract-resolution-negative", "inr-shape", [*EXTRACT, "--resolution", "-3"], "--resolution"),
    ("extract-chunk-size-zero", "inr-shape", [*EXTRACT, "--chunk-size", "0"], "--chunk-size"),
    ("extract-output-suffix", "inr-shape", [*EXTRACT, "--output", "{tmp}/mesh.xyz"], "--output"),
    ("extract-output-is-folder", "inr-shape", [*EXTRACT, "--output", "{tmp}/folder"], "--output"),
    ("extract-output-unwritable", "inr-shape", [*EXTRACT, "--output", "{unwritable}/m.ply"], "--output"),
    # inr-mesh
    ("mesh-missing-config", "inr-mesh", ["--load-config", "{tmp}/missing.yml"], "--load-config"),
    ("mesh-config-is-run-folder", "inr-mesh", ["--load-config", "{runs}/single"], "{runs}/single/deep/config.yml"),
    ("mesh-config-is-folder-of-runs", "inr-mesh", ["--load-config", "{runs}"], "--load-config {runs} is a folder"),
    ("mesh-garbage-config", "inr-mesh", ["--load-config", "{runs}/garbage/config.yml"], "{runs}/garbage/config.yml"),
    ("mesh-not-a-run-config", "inr-mesh", ["--load-config", "{runs}/notrun/config.yml"], "{runs}/notrun/config.yml"),
    ("mesh-unknown-method", "inr-mesh", ["--load-config", "{runs}/unknown/config.yml"], "no-such-method"),
    ("mesh-truncated-checkpoint", "inr-mesh", [*MESH], "step-000000001.ckpt"),
    ("mesh-no-checkpoint", "inr-mesh", ["--load-config", "{runs}/nockpt/config.yml"], "{runs}/nockpt"),
    ("mesh-checkpoint-cut-to-5k", "inr-mesh", ["--load-config", "{runs}/cut5k/config.yml"], "cut5k/nerfstudio_models"),
    ("mesh-resolution-zero", "inr-mesh", [*MESH, "--resolution", "0"], "--resolution"),
    ("mesh-resolution-100000", "inr-mesh", [*MESH, "--resolution", "100000"], "--resolution"),
    ("mesh-chunk-size-zero", "inr-mesh", [*MESH, "--chunk-size", "0"], "--chunk-size"),
    ("mesh-opacity-above-one", "inr-mesh", [*MESH, "--opacity", "1.5"], "--opacity"),
    ("mesh-threshold-and-occupancy", "inr-mesh", [*MESH, "--threshold", "1", "--occupancy", "0.1"], "--threshold"),
    ("mesh-occupancy-zero", "inr-mesh", [*MESH, "--occupancy", "0"], "--occupancy"),
    ("mesh-output-suffix", "inr-mesh", [*MESH, "--output-path", "{tmp}/m.xyz"], "--output-path"),
    ("mesh-output-unwritable", "inr-mesh", [*MESH, "--output-path", "{unwritable}/m.ply"], "--output-path"),
    ("mesh-output-under-a-file", "inr-mesh", [*MESH, "--output-path", "{tmp}/a-file/m.ply"], "--output-path"),
    # inr-compare
    ("compare-missing-runs", "inr-compare", ["--runs", "{tmp}/missing"], "--runs"),
    ("compare-no-config-below", "inr-compare", ["--runs", "{tmp}/folder"], "--runs"),
    ("compare-garbage-config", "inr-compare", ["--runs", "{runs}/garbage/config.yml"], "garbage/config.yml"),
    (
        "compare-checkpoint-cut-to-5k",
        "inr-compare",
        ["--runs", "{runs}/cut5k/config.yml", "--output-dir", "{tmp}/cmp"],
        "{runs}/cut5k/nerfstudio_models/step-000000001.ckpt",
    ),
    (
        "compare-truncated-checkpoint",
        "inr-compare",
        ["--runs", "{runs}/ok", "--output-dir", "{tmp}/cmp"],
        "{runs}/ok/nerfstudio_models/step-000000001.ckpt",
    ),
]


@pytest.mark.parametrize("case, program, args, culprit", CASES, ids=[c[0] for c in CASES])
def test_bad_input_gives_one_line_naming_the_culprit(
    files: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture,
    case: str,
    program: str,
    args: list[str],
    culprit: str,
) -> None:
    if "{unwritable}" in " ".join(args) and not files["unwritable"]:
        pytest.skip("no folder here is unwritable for this user")
    if "cuda:7" in args and torch.cuda.device_count() > 7:
        pytest.skip("this machine has a cuda:7")
    argv = [program] + [a.format(**files) for a in args]
    monkeypatch.setattr(sys, "argv", argv)
    monkeypatch.setenv("NIM_LPIPS", "off")
    with pytest.raises(SystemExit) as info:
        PROGRAMS[program]()
    err = capfd.readouterr().err
    assert info.value.code == 2, err
    assert "Traceback" not in err
    error_lines = [line for line in err.splitlines() if line.startswith(f"{program}: error:")]
    assert len(error_lines) == 1, err
    assert culprit.format(**files) in error_lines[0], error_lines[0]


def test_there_are_enough_cases() -> None:
    assert len(CASES) >= 25
    assert {c[1] for c in CASES} == set(PROGRAMS)


# --------------------------------------------------------------------------------------------- the shared handler


@pytest.mark.parametrize(
    "error, expected",
    [
        (ValueError("--x must be > 0"), "inr-x: error: --x must be > 0"),
        (FileNotFoundError("mesh m.obj not found"), "inr-x: error: mesh m.obj not found"),
        (PermissionError(13, "Permission denied", "/data/out.ply"), "inr-x: error: Permission denied: /data/out.ply"),
        (OSError(28, "No space left on device", "/data/big.pt"), "inr-x: error: No space left on device: /data/big.pt"),
        (IsADirectoryError(21, "Is a directory", "/data"), "inr-x: error: Is a directory: /data"),
        (ValueError("two\nlines"), "inr-x: error: two lines"),
    ],
)
def test_exit_on_bad_input_prints_one_line(capsys: pytest.CaptureFixture, error: Exception, expected: str) -> None:
    def run() -> None:
        raise error

    with pytest.raises(SystemExit) as info:
        cli_module.exit_on_bad_input("inr-x", run)
    assert info.value.code == 2
    assert capsys.readouterr().err == expected + "\n"


def test_check_output_dir_creates_nothing(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b"
    assert cli_module.check_output_dir(target, "--out") == target
    assert not (tmp_path / "a").exists() and list(tmp_path.iterdir()) == []
    if os.geteuid() != 0:  # root ignores permissions; /sys covers it in the table
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o555)
        with pytest.raises(ValueError, match="--out .*cannot write"):
            cli_module.check_output_dir(locked / "x", "--out")


def test_check_grid_memory_names_the_flag_and_the_largest_size_that_fits() -> None:
    assert meshlib.check_grid_memory(10, "--res", available=10**6) == 20_000
    with pytest.raises(ValueError, match=r"--res 100: .*19\.1 MiB.*use --res 36 or less"):
        meshlib.check_grid_memory(100, "--res", available=10**6)
    with pytest.raises(ValueError, match="--res must be an int >= 2"):
        meshlib.check_grid_memory(1, "--res")
