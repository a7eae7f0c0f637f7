"""The plugin foundation: entry points, offline LPIPS, checkpoint loading, ns-train/ns-eval round trip."""

from __future__ import annotations

import copy
import json
import math
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from nerf_inr_methods.nerfstudio_plugin import offline
from nerf_inr_methods.nerfstudio_plugin.presets import CPU_PRESET, apply_preset, preset_flags

BIN = Path(sys.executable).parent
DEMO_TEST_STEPS = "300"
"""Training steps of the demo in the test: enough for inr-mesh's default density level to find a surface."""
TINY = [
    "--pipeline.datamanager.train-num-rays-per-batch", "64",
    "--pipeline.model.num-coarse-samples", "8",
    "--pipeline.model.num-importance-samples", "8",
    "--pipeline.model.eval-num-rays-per-chunk", "1024",
]  # fmt: skip


def test_nerfstudio_discovers_our_methods() -> None:
    from nerfstudio.plugins.registry import discover_methods

    methods, descriptions = discover_methods()
    assert "inr-nerf" in methods and "inr-nerf" in descriptions
    assert methods["inr-nerf"].method_name == "inr-nerf"


def test_cpu_preset_applies_to_every_registered_method() -> None:
    from nerfstudio.models.nerfacto import NerfactoModelConfig
    from nerfstudio.plugins.registry import discover_methods

    from nerf_inr_methods.nerfstudio_plugin.presets import matching_preset

    methods, _ = discover_methods()
    for name, registered in methods.items():
        preset = "nerfacto-cpu" if isinstance(registered.pipeline.model, NerfactoModelConfig) else "cpu"
        config = apply_preset(copy.deepcopy(registered), preset)  # the registry's configs are process-wide
        assert (
            config.pipeline.datamanager.train_num_rays_per_batch
            == CPU_PRESET["pipeline.datamanager.train_num_rays_per_batch"]
        ), name
        assert matching_preset(config) == preset, name
    assert preset_flags()[:2] == ["--pipeline.datamanager.train-num-rays-per-batch", "256"]
    assert "--pipeline.model.num-proposal-samples-per-ray 64 32" in " ".join(preset_flags("nerfacto-cpu"))


def test_a_run_is_matched_to_the_preset_it_was_trained_with() -> None:
    from nerfstudio.plugins.registry import discover_methods

    from nerf_inr_methods.nerfstudio_plugin.presets import matching_preset

    registered = discover_methods()[0]["iga-nerf"]
    assert matching_preset(registered) is None  # the method's own sizes
    assert matching_preset(apply_preset(copy.deepcopy(registered))) == "cpu"
    demo = apply_preset(copy.deepcopy(registered), "demo")
    assert (matching_preset(demo), demo.pipeline.model.num_coarse_samples) == ("demo", 16)


def test_generated_scene_loads_through_blender_data(tiny_scene: Path) -> None:
    from nerfstudio.data.dataparsers.blender_dataparser import BlenderDataParserConfig

    parser = BlenderDataParserConfig(data=tiny_scene).setup()
    train, test = parser.get_dataparser_outputs("train"), parser.get_dataparser_outputs("test")
    assert len(train.image_filenames) == 12 and len(test.image_filenames) == 3
    assert int(train.cameras.width[0]) == 32 and int(train.cameras.height[0]) == 32
    meta = json.loads((tiny_scene / "transforms_train.json").read_text())
    expected_focal = 0.5 * 32 / math.tan(0.5 * meta["camera_angle_x"])
    assert float(train.cameras.fx[0]) == pytest.approx(expected_focal, rel=1e-5)


def test_lpips_fallback_warns_once_and_is_omitted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(offline, "_lpips_warned", False)
    monkeypatch.setenv("NIM_LPIPS", "off")
    metric = offline.LazyLPIPS(normalize=True)
    image = torch.rand(1, 3, 16, 16)
    with pytest.warns(UserWarning, match="LPIPS omitted"):
        value = metric(image, image)
    assert torch.isnan(value)
    assert offline.drop_unavailable_metrics({"psnr": 20.0, "fine_lpips": float(value)}) == {"psnr": 20.0}
    assert offline.drop_unavailable_metrics({"lpips": 0.1}) == {"lpips": 0.1}  # real values are kept
    assert "_metric" not in dict(metric.named_modules()) and not metric.state_dict()


def test_lpips_without_weights_or_network_does_not_crash(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No cached weights and no network: construction never touches the network, the first call degrades."""
    monkeypatch.setattr(offline, "_lpips_warned", False)
    monkeypatch.delenv("NIM_LPIPS", raising=False)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))

    def refuse(*args, **kwargs):
        raise OSError("network disabled in this test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    metric = offline.LazyLPIPS(normalize=True)  # what model construction does: must not raise
    with pytest.warns(UserWarning, match="LPIPS omitted"):
        assert torch.isnan(metric(torch.rand(1, 3, 16, 16), torch.rand(1, 3, 16, 16)))


def test_nerfstudio_models_use_lazy_lpips() -> None:
    import torchmetrics.image.lpip as lpip_module

    assert lpip_module.LearnedPerceptualImagePatchSimilarity is offline.LazyLPIPS


def test_checkpoint_with_numpy_scheduler_state_loads_with_weights_only(tmp_path: Path) -> None:
    """nerfstudio issue 3683: numpy floats in scheduler state vs torch.load(weights_only=True)."""
    state = {"schedulers": {"fields": {"_last_lr": [np.float64(1e-3)], "base_lrs": [np.float32(2.0)]}}, "step": 3}
    path = tmp_path / "step-000000003.ckpt"
    torch.save(state, path)
    loaded = torch.load(path, map_location="cpu")  # weights_only is the default in torch >= 2.6
    assert loaded["schedulers"]["fields"]["_last_lr"][0] == pytest.approx(1e-3)


def _run(args: list[str], cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "NIM_LPIPS": os.environ.get("NIM_LPIPS", "")}
    result = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)
    assert result.returncode == 0, f"{' '.join(args[:3])} failed:\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
    return result


@pytest.mark.slow
def test_vanilla_nerf_train_eval_resume_round_trip(tiny_scene: Path, tmp_path: Path) -> None:
    """nerfstudio's own vanilla-nerf, with our package installed, trains, evaluates and resumes on CPU offline."""
    common = ["--machine.device-type", "cpu", "--vis", "tensorboard", "--output-dir", str(tmp_path / "out")]
    common += ["--experiment-name", "tiny"]
    common += ["--steps-per-eval-batch", "0", "--steps-per-eval-image", "0", "--steps-per-eval-all-images", "1000"]
    _run(
        [str(BIN / "ns-train"), "vanilla-nerf", *TINY, *common, "--max-num-iterations", "4", "--steps-per-save", "2"]
        + ["--timestamp", "a", "blender-data", "--data", str(tiny_scene)],
        cwd=tmp_path,
    )
    run_dir = tmp_path / "out" / "tiny" / "vanilla-nerf" / "a"
    assert sorted(p.name for p in (run_dir / "nerfstudio_models").iterdir()) == ["step-000000003.ckpt"]
    eval_json = tmp_path / "eval.json"
    _run(
        [str(BIN / "ns-eval"), "--load-config", str(run_dir / "config.yml"), "--output-path", str(eval_json)], tmp_path
    )
    results = json.loads(eval_json.read_text())["results"]
    assert 0.0 < results["psnr"] < 60.0 and "fine_ssim" in results
    # resume from the checkpoint (torch.load under weights_only): nerfstudio trains max-num-iterations more steps
    _run(
        [str(BIN / "ns-train"), "vanilla-nerf", *TINY, *common, "--max-num-iterations", "2", "--steps-per-save", "2"]
        + ["--timestamp", "b", "--load-dir", str(run_dir / "nerfstudio_models")]
        + ["blender-data", "--data", str(tiny_scene)],
        cwd=tmp_path,
    )
    resumed = tmp_path / "out" / "tiny" / "vanilla-nerf" / "b" / "nerfstudio_models"
    assert [p.name for p in resumed.iterdir()] == ["step-000000005.ckpt"]


@pytest.mark.slow
def test_inr_nerf_trains_and_evaluates_in_process(tiny_scene: Path, tmp_path: Path) -> None:
    from nerf_inr_methods.nerfstudio_plugin.runs import evaluate, prepare_config, train

    config = prepare_config(
        "inr-nerf", tiny_scene, tmp_path, steps=6, overrides={"pipeline.model.num_coarse_samples": 8}
    )
    config_path = train(config)
    metrics = evaluate(config_path)
    assert set(metrics) >= {"psnr", "fine_psnr", "fine_ssim"} and math.isfinite(metrics["psnr"])


@pytest.mark.slow
def test_readme_demo_command_runs(tmp_path: Path) -> None:
    """`./run.sh demo` (the README's first command) end to end, with few steps and this venv as is: every file it
    announces exists and shows something (images not blank, a turntable that moves, a mesh inside the scene box)."""
    import trimesh
    from PIL import Image, ImageSequence

    root = Path(__file__).resolve().parents[1]
    env = dict(os.environ, NIM_VENV=sys.prefix, NIM_SKIP_SETUP="1", DEMO_STEPS=DEMO_TEST_STEPS)
    env.update(DEMO_SCENE=str(tmp_path / "scene"), DEMO_OUT=str(tmp_path / "out"))
    result = subprocess.run(["bash", str(root / "run.sh"), "demo"], env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out = tmp_path / "out"
    metrics = json.loads((out / "eval.json").read_text())["results"]
    assert 0.0 < metrics["psnr"] < 60.0
    names = ["test_views.png", "turntable.gif", "mesh.ply", "mesh_views.png", "summary.txt"]
    # the summary ends with the files' paths
    last_lines = result.stdout.strip().splitlines()[-len(names) :]
    for name in names:
        assert (out / name).is_file(), name
        assert any(line.strip().endswith(str(out / name)) for line in last_lines), (name, last_lines)
    for name in ("test_views.png", "mesh_views.png"):
        pixels = np.asarray(Image.open(out / name).convert("RGB"), dtype=np.float64)
        assert min(pixels.shape[:2]) >= 150 and pixels.std() > 10.0, (name, pixels.shape, pixels.std())
    with Image.open(out / "turntable.gif") as gif:
        frames = [np.asarray(frame.convert("RGB"), dtype=np.int16) for frame in ImageSequence.Iterator(gif)]
    assert len(frames) > 1 and frames[0].shape[:2] == (64, 64)  # the training resolution
    distinct = {frame.tobytes() for frame in frames}
    assert len(distinct) > 1 and max(np.abs(f - frames[0]).mean() for f in frames) > 1.0
    assert all(frame.std() > 5.0 for frame in frames)  # not blank
    mesh = trimesh.load(out / "mesh.ply", process=False, force="mesh")
    assert len(mesh.faces) > 100
    assert np.all(np.abs(mesh.vertices) <= 1.5 + 1e-3)  # the Blender scene box, [-1.5, 1.5]^3
