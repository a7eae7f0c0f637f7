"""Bad input for ``ns-train`` with our methods: one clear line naming the flag or file, before any long work (issue 13).

Each case is parsed exactly as ``ns-train`` parses its command line (tyro on nerfstudio's method union) and run
through nerfstudio's ``main``. The run must stop with an error our package raised (``offline.bad_input_message``:
what ``ns-train`` prints as ``ns-train: error: <message>``, exit status 2, no traceback) that names the culprit, and
before ``config.yml`` is written (i.e. before the config dump, the dataset cache and the model). Two cases also run
as real ``ns-train`` processes.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, List

import numpy as np
import pytest
import torch

SceneEdit = Callable[[Path], Path]
"""Edits a copy of the tiny Blender scene (or builds another dataset) and returns the --data path to use."""


def keep(scene: Path) -> Path:
    return scene


def delete_frame(scene: Path) -> Path:
    (scene / "train" / "r_5.png").unlink()
    return scene


def truncate_frame(scene: Path) -> Path:
    path = scene / "train" / "r_3.png"
    path.write_bytes(path.read_bytes()[:300])
    return scene


def garbage_frame(scene: Path) -> Path:
    (scene / "val" / "r_1.png").write_text("not an image")
    return scene


def missing_folder(scene: Path) -> Path:
    return scene.parent / "no-such-scene"


def empty_folder(scene: Path) -> Path:
    shutil.rmtree(scene)
    scene.mkdir()
    return scene


def no_val_split(scene: Path) -> Path:
    (scene / "transforms_val.json").unlink()
    return scene


def broken_json(scene: Path) -> Path:
    (scene / "transforms_train.json").write_text('{"camera_angle_x": 0.69, "frames": [')
    return scene


def no_frames_key(scene: Path) -> Path:
    (scene / "transforms_train.json").write_text(json.dumps({"camera_angle_x": 0.69}))
    return scene


def llff_without_poses(scene: Path) -> Path:
    root = scene.parent / "llff"
    (root / "images_2").mkdir(parents=True)
    return root


def llff_wrong_poses(scene: Path) -> Path:
    root = scene.parent / "llff"
    (root / "images_2").mkdir(parents=True)
    np.save(root / "poses_bounds.npy", np.ones((5, 15)))
    return root


def edit_transforms(split: str, edit: Callable[[dict], None]) -> SceneEdit:
    """A scene edit applying ``edit`` to the parsed ``transforms_<split>.json``."""

    def scene_edit(scene: Path) -> Path:
        path = scene / f"transforms_{split}.json"
        meta = json.loads(path.read_text())
        edit(meta)
        path.write_text(json.dumps(meta))  # NaN / Infinity as JSON's usual extension, as Python writes them
        return scene

    return scene_edit


def set_pose_entry(frame: int, row: int, column: int, value: float) -> Callable[[dict], None]:
    return lambda meta: meta["frames"][frame]["transform_matrix"][row].__setitem__(column, value)


def zero_pose(meta: dict) -> None:
    meta["frames"][4]["transform_matrix"] = [[0.0] * 4 for _ in range(4)]


def one_camera_position(meta: dict) -> None:
    for frame in meta["frames"]:
        frame["transform_matrix"] = meta["frames"][0]["transform_matrix"]


def resize_frame(scene: Path) -> Path:
    from PIL import Image

    path = scene / "train" / "r_2.png"
    Image.open(path).resize((40, 24)).save(path)
    return scene


def one_pixel_images(scene: Path) -> Path:
    from PIL import Image

    for path in scene.glob("*/*.png"):
        Image.open(path).resize((1, 1)).save(path)
    return scene


def nerfstudio_format(scene: Path, edit: Callable[[dict], None] = lambda meta: None) -> Path:
    """The tiny Blender scene's train and val frames as one nerfstudio-data transforms.json (then ``edit``-ed)."""
    frames, width = [], 32
    for split in ("train", "val"):
        meta = json.loads((scene / f"transforms_{split}.json").read_text())
        focal = 0.5 * width / np.tan(0.5 * meta["camera_angle_x"])
        frames += [{**f, "file_path": f["file_path"].replace("./", "") + ".png"} for f in meta["frames"]]
    meta = {"fl_x": focal, "fl_y": focal, "cx": width / 2, "cy": width / 2, "w": width, "h": width, "frames": frames}
    edit(meta)
    (scene / "transforms.json").write_text(json.dumps(meta))
    return scene


def llff_poses(edit: Callable[[np.ndarray], None]) -> SceneEdit:
    """An LLFF folder whose poses_bounds.npy holds 5 valid rows (identity rotations) changed by ``edit``."""

    def scene_edit(scene: Path) -> Path:
        root = scene.parent / "llff"
        (root / "images_2").mkdir(parents=True)
        poses = np.tile(np.concatenate([np.eye(3), np.zeros((3, 1)), [[32.0], [32.0], [30.0]]], axis=1), (5, 1, 1))
        poses[:, 2, 3] = np.arange(5)
        array = np.concatenate([poses.reshape(5, 15), np.tile([1.0, 5.0], (5, 1))], axis=1)
        edit(array)
        np.save(root / "poses_bounds.npy", array)
        return root

    return scene_edit


@dataclass
class Case:
    """One bad input: flags before the dataparser, the dataparser and its flags, the dataset, the expected words."""

    name: str
    expected: List[str]
    flags: List[str] = field(default_factory=list)
    method: str = "iga-nerf"
    parser: List[str] = field(default_factory=lambda: ["blender-data"])
    scene: SceneEdit = keep


CASES = [
    Case("negative iterations", ["--max-num-iterations", "-5", ">= 1"], ["--max-num-iterations", "-5"]),
    Case("zero iterations", ["--max-num-iterations", "0"], ["--max-num-iterations", "0"]),
    Case("zero rays", ["train-num-rays-per-batch", "0"], ["--pipeline.datamanager.train-num-rays-per-batch", "0"]),
    Case(
        "negative eval rays",
        ["eval-num-rays-per-batch", "-1"],
        ["--pipeline.datamanager.eval-num-rays-per-batch", "-1"],
    ),
    Case("zero scale", ["camera-res-scale-factor", "0"], ["--pipeline.datamanager.camera-res-scale-factor", "0"]),
    Case("no coarse samples", ["num-coarse-samples", "0"], ["--pipeline.model.num-coarse-samples", "0"]),
    Case("negative fine samples", ["num-importance-samples", "-3"], ["--pipeline.model.num-importance-samples", "-3"]),
    Case("zero width", ["base-mlp-layer-width", "0"], ["--pipeline.model.base-mlp-layer-width", "0"]),
    Case("negative head width", ["head-mlp-layer-width", "-2"], ["--pipeline.model.head-mlp-layer-width", "-2"]),
    Case("zero chunk", ["eval-num-rays-per-chunk", "0"], ["--pipeline.model.eval-num-rays-per-chunk", "0"]),
    Case(
        "near beyond far",
        ["collider-params", "near_plane < far_plane"],
        ["--pipeline.model.collider-params", "near_plane", "5", "far_plane", "1"],
    ),
    Case("iga end 0", ["--pipeline.model.iga-end", "0"], ["--pipeline.model.iga-end", "0"]),
    Case(
        "identity without iga",
        ["--pipeline.model.iga-identity True needs"],
        ["--pipeline.model.iga-identity", "True"],
        method="inr-nerf",
    ),
    Case(
        "zero sigma", ["--pipeline.model.gaussian-sigma", "0"], ["--pipeline.model.gaussian-sigma", "0"], "gauss-nerf"
    ),
    Case("negative lr", ["--optimizers.fields.optimizer.lr", "-0.001"], ["--optimizers.fields.optimizer.lr", "-0.001"]),
    Case(
        "negative decay ratio",
        ["--optimizer-presets.esgd.scheduler.lr-final-ratio", "-0.01"],
        ["--optimizer-presets.esgd.scheduler.lr-final-ratio", "-0.01"],
        "gauss-nerf",
    ),
    Case("negative save interval", ["--steps-per-save", "-1"], ["--steps-per-save", "-1"]),
    Case("unknown alpha colour", ["--alpha-color", "pink"], parser=["blender-data", "--alpha-color", "pink"]),
    Case("missing --data folder", ["--data", "no-such-scene", "no such file or folder"], scene=missing_folder),
    Case("folder without transforms json", ["transforms_train.json"], scene=empty_folder),
    Case("no val split", ["transforms_val.json"], scene=no_val_split),
    Case("broken transforms json", ["transforms_train.json", "not valid JSON"], scene=broken_json),
    Case("transforms json without frames", ["transforms_train.json", "frames"], scene=no_frames_key),
    Case("missing frame", ["r_5.png", "not found", "train split"], scene=delete_frame),
    Case("truncated frame", ["r_3.png", "not a readable image"], scene=truncate_frame),
    Case("garbage frame", ["r_1.png", "not a readable image"], scene=garbage_frame),
    Case("llff without poses", ["poses_bounds.npy", "not found"], parser=["llff-data"], scene=llff_without_poses),
    Case("llff wrong poses", ["poses_bounds.npy", "(N, 17)"], parser=["llff-data"], scene=llff_wrong_poses),
    Case("nerfstudio-data without json", ["transforms.json"], parser=["nerfstudio-data"], scene=empty_folder),
    # issue 40: poses and fields of view that trained a NaN or blind model without a word
    Case(
        "NaN pose",
        ["transforms_train.json", "frames[3] (./train/r_3)", "nan"],
        scene=edit_transforms("train", set_pose_entry(3, 0, 3, float("nan"))),
    ),
    Case(
        "Inf pose",
        ["transforms_val.json", "frames[1] (./val/r_1)", "inf"],
        scene=edit_transforms("val", set_pose_entry(1, 1, 1, float("inf"))),
    ),
    Case(
        "all-zero pose",
        ["transforms_train.json", "frames[4] (./train/r_4)", "not a rotation"],
        scene=edit_transforms("train", zero_pose),
    ),
    Case(
        "camera_angle_x 0",
        ["transforms_train.json", "camera_angle_x", "got 0"],
        scene=edit_transforms("train", lambda meta: meta.update(camera_angle_x=0)),
    ),
    Case(
        "camera_angle_x pi",
        ["transforms_val.json", "camera_angle_x", "3.14159"],
        scene=edit_transforms("val", lambda meta: meta.update(camera_angle_x=float(np.pi))),
    ),
    Case(
        "nerfstudio-data NaN pose",
        ["transforms.json", "frames[2] (train/r_2.png)", "nan"],
        parser=["nerfstudio-data"],
        scene=lambda scene: nerfstudio_format(scene, set_pose_entry(2, 2, 3, float("nan"))),
    ),
    Case(
        "nerfstudio-data all-zero pose",
        ["transforms.json", "frames[4] (train/r_4.png)", "not a rotation"],
        parser=["nerfstudio-data"],
        scene=lambda scene: nerfstudio_format(scene, zero_pose),
    ),
    Case(
        "nerfstudio-data cameras at one point",
        ["--data", "nerfstudio-data cannot read the train split", "ZeroDivisionError", "all at one point"],
        parser=["nerfstudio-data"],
        scene=lambda scene: nerfstudio_format(scene, one_camera_position),
    ),
    Case(
        "nerfstudio-data zero focal",
        ["transforms.json", "fl_x", "> 0"],
        parser=["nerfstudio-data"],
        scene=lambda scene: nerfstudio_format(scene, lambda meta: meta.update(fl_x=0.0)),
    ),
    Case(
        "llff NaN pose",
        ["poses_bounds.npy", "row 2", "nan", "finite"],
        parser=["llff-data"],
        scene=llff_poses(lambda a: a.__setitem__((2, 3), np.nan)),
    ),
    Case(
        "llff Inf bound",
        ["poses_bounds.npy", "row 1", "inf", "finite"],
        parser=["llff-data"],
        scene=llff_poses(lambda a: a.__setitem__((1, 16), np.inf)),
    ),
    Case(
        "llff all-zero pose",
        ["poses_bounds.npy", "row 3", "not orthonormal"],
        parser=["llff-data"],
        scene=llff_poses(lambda a: a[3, :15].reshape(3, 5)[:, :4].fill(0.0)),  # the 3x4 pose, hwf kept
    ),
    # issue 40: images the datamanager cannot load (were raw tracebacks)
    Case("images of two sizes", ["r_2.png", "40x24", "r_0.png", "32x32", "train split"], scene=resize_frame),
    Case(
        "1x1 images at scale 0.5",
        ["r_0.png", "1x1", "0x0", "--pipeline.datamanager.camera-res-scale-factor 0.5"],
        ["--pipeline.datamanager.camera-res-scale-factor", "0.5"],
        scene=one_pixel_images,
    ),
    Case("output dir under a file", ["--output-dir", "/dev/null"], ["--output-dir", "/dev/null/outputs"]),
    Case("missing load dir", ["--load-dir", "no such folder"], ["--load-dir", "/nonexistent/nerfstudio_models"]),
    Case(
        "missing load checkpoint", ["--load-checkpoint", "no such file"], ["--load-checkpoint", "/nonexistent/s.ckpt"]
    ),
]
if not torch.cuda.is_available():
    CASES.append(Case("cuda without a GPU", ["--machine.device-type cuda"], ["--machine.device-type", "cuda"]))


def ns_train_args(case: Case, data: Path, output_dir: Path) -> List[str]:
    """The command line after ``ns-train``: our CPU preset, 2 steps, tensorboard, then the case's flags."""
    from nerf_inr_methods.nerfstudio_plugin.presets import preset_flags

    args = [case.method, *preset_flags(), "--max-num-iterations", "2", "--vis", "tensorboard"]
    args += ["--output-dir", str(output_dir), *case.flags, *case.parser, "--data", str(data)]
    return args


def run_ns_train_in_process(args: List[str]) -> BaseException | None:
    """Parse ``args`` as ns-train does and run nerfstudio's main; the exception it ends with, or None."""
    import tyro
    from nerfstudio.configs.method_configs import AnnotatedBaseConfigUnion
    from nerfstudio.scripts.train import main
    from nerfstudio.utils.rich_utils import CONSOLE

    from nerf_inr_methods.nerfstudio_plugin.runs import own_event_writers

    config = tyro.cli(AnnotatedBaseConfigUnion, args=args)
    try:
        with own_event_writers(), CONSOLE.capture():
            main(config)
    except Exception as error:  # noqa: BLE001 - the test inspects it
        return error
    return None


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_bad_input_is_one_clear_line(case: Case, tiny_scene: Path, tmp_path: Path) -> None:
    from nerf_inr_methods.nerfstudio_plugin.offline import bad_input_message

    scene = tmp_path / "scene"
    shutil.copytree(tiny_scene, scene)
    data = case.scene(scene)
    output_dir = tmp_path / "outputs"
    error = run_ns_train_in_process(ns_train_args(case, data, output_dir))
    assert error is not None, "training ran instead of refusing the input"
    message = bad_input_message(error)
    assert message is not None, f"not reported as bad input (ns-train would print a traceback): {error!r}"
    for word in case.expected:
        assert word in message, f"{word!r} missing from: {message}"
    assert not list(output_dir.rglob("config.yml")), "refused only after the config was written"


def test_iga_end_above_the_batch_is_said_once(tiny_scene: Path, tmp_path: Path) -> None:
    from nerfstudio.utils.rich_utils import CONSOLE

    from nerf_inr_methods.nerfstudio_plugin.runs import prepare_config

    config = prepare_config("iga-nerf", tiny_scene, tmp_path, steps=1, overrides={"pipeline.model.iga_end": 300})
    with CONSOLE.capture() as capture:
        config.print_to_terminal()
    lines = [line for line in capture.get().splitlines() if "iga-end" in line]
    assert len(lines) == 1 and "300" in lines[0] and "255" in lines[0] and "clamped" in lines[0], lines
    config.pipeline.model.iga_end = 25
    with CONSOLE.capture() as capture:
        config.print_to_terminal()
    assert "iga-end" not in capture.get()


def test_bad_input_hook_keeps_tracebacks_of_other_errors() -> None:
    """Only ValueError / FileNotFoundError raised by our own code are bad input; anything else is a bug."""
    from nerf_inr_methods.nerfstudio_plugin import preflight
    from nerf_inr_methods.nerfstudio_plugin.offline import bad_input_message

    def raised(function: Callable[[], object]) -> BaseException:
        with pytest.raises(BaseException) as info:
            function()
        return info.value

    ours = raised(lambda: preflight.check_device("cuda" if not torch.cuda.is_available() else "mps-none"))
    assert bad_input_message(ours) is not None
    assert bad_input_message(raised(lambda: int("x"))) is None  # ValueError raised by Python itself
    assert bad_input_message(raised(lambda: torch.zeros(2).view(3))) is None  # RuntimeError inside torch
    assert bad_input_message(raised(lambda: preflight.near_far_from_cameras(torch.zeros(0, 3), None))) is None


@pytest.mark.slow
@pytest.mark.parametrize(
    ("case", "culprit"),
    [(CASES[0], "--max-num-iterations"), (next(c for c in CASES if c.name == "missing frame"), "r_5.png")],
    ids=["flag", "file"],
)
def test_ns_train_prints_one_line_and_exits_2(case: Case, culprit: str, tiny_scene: Path, tmp_path: Path) -> None:
    scene = tmp_path / "scene"
    shutil.copytree(tiny_scene, scene)
    command = [str(Path(sys.executable).parent / "ns-train"), *ns_train_args(case, case.scene(scene), tmp_path / "out")]
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=900, env={**os.environ, "OMP_NUM_THREADS": "1"}
    )
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr and "Traceback" not in result.stdout
    errors = [line for line in result.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and errors[0].startswith("ns-train: error: ") and culprit in errors[0], result.stderr
    assert "Config" not in result.stdout  # refused before nerfstudio's config dump


@pytest.mark.parametrize("cut", [5_000, 30_000, 66_000, 100_000])
def test_load_dir_skips_a_newest_checkpoint_cut_short(cut: int, tmp_path: Path) -> None:
    """--load-dir resumes from the newest checkpoint that loads: one cut to 5-66 KB (where torch's zip reader fails
    with "OSError: [Errno 22]") is skipped like longer cuts, with one warning naming it; alone, it is refused naming
    the folder and the file (issue 40)."""
    from nerfstudio.utils.rich_utils import CONSOLE

    from nerf_inr_methods.nerfstudio_plugin.checkpoints import newest_loadable_checkpoint
    from nerf_inr_methods.nerfstudio_plugin.offline import bad_input_message

    state = {"step": 2, "pipeline": {"w": torch.zeros(40_000)}, "optimizers": {}, "scalers": {}}
    torch.save(state, tmp_path / "step-000000002.ckpt")
    newest = tmp_path / "step-000000009.ckpt"
    newest.write_bytes((tmp_path / "step-000000002.ckpt").read_bytes()[:cut])
    with CONSOLE.capture() as capture:
        path, loaded = newest_loadable_checkpoint(tmp_path)
    assert path.name == "step-000000002.ckpt" and loaded["step"] == 2
    warnings = [line for line in capture.get().splitlines() if "warning" in line]
    assert len(warnings) == 1 and "skipping step-000000009.ckpt" in warnings[0], capture.get()

    (tmp_path / "step-000000002.ckpt").unlink()
    with pytest.raises(ValueError) as info:
        newest_loadable_checkpoint(tmp_path)
    message = bad_input_message(info.value)
    assert message is not None and f"--load-dir {tmp_path}" in message and str(newest) in message, message
