"""int-map-nerfacto (issue 43): nerfacto's RGB loss takes the error map's weights; the method trains end to end with
ns-train on CPU, and the viewer, ns-eval, ns-render and inr-mesh work on its run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict

import pytest
import torch
from nerf_helpers import rays_toward_origin

BIN = Path(sys.executable).parent
SMALL_NERFACTO: Dict[str, Any] = dict(
    implementation="torch",
    log2_hashmap_size=10,
    num_levels=4,
    max_res=64,
    num_proposal_samples_per_ray=(16, 8),
    num_nerf_samples_per_ray=8,
    proposal_net_args_list=[
        {"hidden_dim": 8, "log2_hashmap_size": 8, "num_levels": 2, "max_res": 32, "use_linear": False},
        {"hidden_dim": 8, "log2_hashmap_size": 8, "num_levels": 2, "max_res": 64, "use_linear": False},
    ],
    near_plane=2.0,
    far_plane=6.0,
    background_color="white",
)
"""A small torch-implementation InrNerfactoModel on Blender's planes."""


def small_nerfacto():
    """A small InrNerfactoModel in training mode (seed 0)."""
    from nerfstudio.data.scene_box import SceneBox

    from nerf_inr_methods.nerfstudio_plugin.inr_nerfacto import InrNerfactoModelConfig

    torch.manual_seed(0)
    model = InrNerfactoModelConfig(**SMALL_NERFACTO).setup(
        scene_box=SceneBox(aabb=torch.tensor([[-1.5] * 3, [1.5] * 3])), num_train_data=4, metadata={}
    )
    return model.train()


def losses_of(model, weights: torch.Tensor | None, num_rays: int = 32) -> tuple[Dict[str, torch.Tensor], ...]:
    """(our loss dict, nerfstudio's NerfactoModel.get_loss_dict, the outputs, the batch) on the same outputs and
    batch."""
    from nerfstudio.models.nerfacto import NerfactoModel

    rays, _ = rays_toward_origin(num_rays, seed=1)
    outputs = model(rays)
    batch: Dict[str, torch.Tensor] = {"image": torch.rand(num_rays, 3, generator=torch.Generator().manual_seed(2))}
    metrics = model.get_metrics_dict(outputs, batch)
    reference = NerfactoModel.get_loss_dict(model, outputs, batch, dict(metrics))
    if weights is not None:
        batch["ray_loss_weights"] = weights
    return model.get_loss_dict(outputs, batch, dict(metrics)), reference, outputs, batch


def test_weights_reach_nerfactos_rgb_loss() -> None:
    model = small_nerfacto()
    ours, reference, _, _ = losses_of(model, None)
    assert set(ours) == set(reference) >= {"rgb_loss", "interlevel_loss", "distortion_loss"}
    assert all(torch.equal(ours[k], reference[k]) for k in reference), "without weights: nerfacto's loss, bit for bit"

    ours, reference, _, _ = losses_of(model, torch.ones(32))
    torch.testing.assert_close(ours["rgb_loss"], reference["rgb_loss"], rtol=1e-6, atol=0.0)
    assert all(torch.equal(ours[k], reference[k]) for k in reference if k != "rgb_loss")

    weights = torch.zeros(32)
    weights[:4] = 8.0  # mean 1, all of the loss on the first 4 rays
    ours, reference, outputs, batch = losses_of(model, weights)
    expected = 8.0 * ((outputs["rgb"][:4] - batch["image"][:4]) ** 2).mean(dim=1).sum() / 32
    torch.testing.assert_close(ours["rgb_loss"], expected, rtol=1e-5, atol=1e-7)
    assert all(torch.equal(ours[k], reference[k]) for k in reference if k != "rgb_loss"), "other terms unweighted"

    # the weights carry gradients to the field only through the rays they weigh
    model.zero_grad()
    ours["rgb_loss"].backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.field.parameters())


def test_a_model_that_does_not_take_weights_is_refused(tiny_scene: Path, tmp_path: Path) -> None:
    from nerfstudio.models.nerfacto import NerfactoModelConfig

    from nerf_inr_methods.nerfstudio_plugin.runs import prepare_config

    config = prepare_config("int-map-nerfacto", tiny_scene, tmp_path, steps=2, preset="nerfacto-cpu")
    config.pipeline.datamanager.dataparser = _blender()
    config.pipeline.model = NerfactoModelConfig(**SMALL_NERFACTO)  # nerfstudio's: its loss ignores the weights
    with pytest.raises(ValueError, match="int-alpha 0.*takes_ray_loss_weights|takes_ray_loss_weights"):
        config.pipeline.setup(device="cpu", test_mode="val")


def test_error_map_pipeline_keeps_the_method_and_sets_the_map() -> None:
    from nerfstudio.configs.method_configs import all_methods

    from nerf_inr_methods.nerfstudio_plugin.int_pipeline import ERROR_MAP_SETTINGS, error_map_pipeline

    nerfacto = all_methods["inr-nerfacto"].pipeline
    mapped = error_map_pipeline(nerfacto, int_error_map_cell=8)
    assert mapped.model is nerfacto.model and mapped.datamanager is nerfacto.datamanager
    assert all(getattr(mapped, k) == v for k, v in ERROR_MAP_SETTINGS.items())
    assert mapped.int_error_map_cell == 8 and not nerfacto.int_enabled
    registered = all_methods["int-map-nerfacto"]
    assert registered.pipeline.int_enabled and registered.pipeline.int_sampler == "error-map"
    assert type(registered).__name__ == "ESGDTrainerConfig"  # our trainer: checkpoints and resume as our methods'
    assert set(registered.optimizers) == {"proposal_networks", "fields", "camera_opt"}
    assert all_methods["int-map-nerf"].pipeline.int_pool_batches == ERROR_MAP_SETTINGS["int_pool_batches"]


def _blender():
    from nerfstudio.data.dataparsers.blender_dataparser import BlenderDataParserConfig

    return BlenderDataParserConfig()


@pytest.fixture(scope="module")
def ns_train_run(tiny_scene: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """config.yml of ``ns-train int-map-nerfacto`` (nerfacto-cpu preset, 4 steps) on the tiny scene, as a user runs
    it (viewer off: it is checked separately)."""
    from nerf_inr_methods.nerfstudio_plugin.presets import preset_flags

    out = tmp_path_factory.mktemp("nerfacto_runs")
    command = [str(BIN / "ns-train"), "int-map-nerfacto", *preset_flags("nerfacto-cpu")]
    command += ["--max-num-iterations", "4", "--vis", "tensorboard", "--output-dir", str(out)]
    command += ["--timestamp", "run", "--pipeline.model.near-plane", "2", "--pipeline.model.far-plane", "6"]
    command += ["--pipeline.model.background-color", "white", "--pipeline.model.disable-scene-contraction", "True"]
    command += ["blender-data", "--data", str(tiny_scene)]
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, capture_output=True, text=True, timeout=900, env=environment, cwd=out)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    configs = list(out.glob("*/int-map-nerfacto/run/config.yml"))
    assert len(configs) == 1 and list(configs[0].parent.glob("nerfstudio_models/step-000000003.ckpt"))
    return configs[0]


@pytest.mark.slow
def test_ns_train_int_map_nerfacto_then_ns_eval_ns_render_inr_mesh(ns_train_run: Path, tmp_path: Path) -> None:
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = ns_train_run.parent
    checkpoint = torch.load(next(run.glob("nerfstudio_models/*.ckpt")), map_location="cpu", weights_only=False)
    extra = checkpoint["pipeline"]["_extra_state"]  # the error map's state, for a resume
    assert extra["format"] == "inr-pipeline-int-v1" and extra["sampler"]

    eval_json = tmp_path / "eval.json"
    result = subprocess.run(
        [str(BIN / "ns-eval"), "--load-config", str(ns_train_run), "--output-path", str(eval_json)],
        capture_output=True,
        text=True,
        timeout=900,
        env=environment,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(eval_json.read_text())["results"]["psnr"] > 0

    render_dir = tmp_path / "renders"
    command = [str(BIN / "ns-render"), "dataset", "--load-config", str(ns_train_run), "--output-path", str(render_dir)]
    command += ["--split", "test", "--rendered-output-names", "rgb", "depth", "--image-format", "png"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=900, env=environment)
    assert result.returncode == 0, result.stderr[-3000:]
    assert len(list((render_dir / "test" / "rgb").glob("*.png"))) == 3

    mesh = tmp_path / "mesh.ply"
    command = [str(BIN / "inr-mesh"), "--load-config", str(ns_train_run), "--output-path", str(mesh)]
    command += ["--resolution", "32", "--occupancy", "0.05"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=900, env=environment)
    assert result.returncode == 0, result.stderr[-3000:]
    assert mesh.stat().st_size > 0


@pytest.mark.slow
def test_the_viewer_trains_and_renders_int_map_nerfacto(tiny_scene: Path, tmp_path: Path) -> None:
    import numpy as np
    from nerfstudio.utils.rich_utils import CONSOLE
    from test_viewer import render_viewer_frame

    from nerf_inr_methods.nerfstudio_plugin.runs import own_event_writers, prepare_config

    config = prepare_config("int-map-nerfacto", tiny_scene, tmp_path, steps=3, preset="nerfacto-cpu")
    config.pipeline.datamanager.dataparser = _blender()
    config.pipeline.model.near_plane, config.pipeline.model.far_plane = 2.0, 6.0
    config.vis = "viewer"
    config.viewer.quit_on_train_completion = True
    config.viewer.websocket_host = "127.0.0.1"
    with CONSOLE.capture():
        config.print_to_terminal()
        config.save_config()
    with own_event_writers():
        trainer = config.setup(local_rank=0, world_size=1)
        trainer.setup()
        try:
            trainer.train()
            assert trainer.step == 2
            with CONSOLE.capture():
                rgb = render_viewer_frame(trainer.viewer_state, "rgb")
        finally:
            trainer.shutdown()
    image = rgb.images[-1]
    assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[-1] == 3


@pytest.mark.slow
def test_nerfacto_plateau_quick_writes_the_required_layout(tiny_scene: Path, tmp_path: Path) -> None:
    from benchmarks.nerfacto_plateau import NerfactoPlateauConfig, main

    config = NerfactoPlateauConfig(quick=True, output_dir=tmp_path / "out", synthetic_data=tiny_scene, jobs=1)
    payload = main(config)
    results = json.loads((tmp_path / "out" / "nerfacto_plateau_quick.json").read_text())
    assert results["benchmark"] == "nerfacto_plateau"
    assert {r["arm"] for r in results["runs"]} == {"nerfacto", "int-map-nerfacto"}
    for run in results["runs"]:
        assert run["scene"] == "synthetic" and run["seed"] == 0 and run["commit"] and run["finished"]
        assert [p["step"] for p in run["curve"]] == [0, 100, 200]
        assert all({"step", "train_seconds", "psnr"} <= set(p) for p in run["curve"])
    assert payload is not None and payload["summary_line"].startswith("SUMMARY nerfacto_plateau: synthetic")
    assert "### synthetic" in (tmp_path / "out" / "nerfacto_plateau_quick.md").read_text()


def test_paper_profile_is_nerfactos_own_sizes_at_full_resolution(shared_data: Path, tmp_path: Path) -> None:
    from benchmarks.nerf_plateau import plateau_specs, run_dir_of, trainer_config
    from benchmarks.nerfacto_plateau import NerfactoPlateauConfig, resolved

    config = resolved(NerfactoPlateauConfig(profile="paper", scenes=("mic",), output_dir=tmp_path))
    assert config.arms == ("nerfacto-paper", "int-map-nerfacto-paper") and config.baseline == "nerfacto-paper"
    spec = plateau_specs(config)[1]
    trainer = trainer_config(spec, run_dir_of(spec, tmp_path))
    model, datamanager = trainer.pipeline.model, trainer.pipeline.datamanager
    assert datamanager.train_num_rays_per_batch == 4096 and datamanager.camera_res_scale_factor == 1.0
    assert (model.log2_hashmap_size, model.num_nerf_samples_per_ray, model.implementation) == (19, 48, "tcnn")
    assert (
        trainer.pipeline.int_sampler == "error-map" and trainer.optimizers["proposal_networks"]["optimizer"].lr == 1e-2
    )
