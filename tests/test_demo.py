"""The demo's pictures and summary without training: view choice, turntable cameras, GIF, mesh drawing, schedule
text, the baseline beside the run.

The demo end to end (`./run.sh demo`) is `test_foundation.py::test_readme_demo_command_runs` (slow).
"""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from nerf_inr_methods import demo


def _camera_at(position: tuple[float, float, float], size: int = 32):
    """A nerfstudio pinhole camera at ``position`` looking at the origin, world z up (OpenGL convention)."""
    from nerfstudio.cameras.cameras import Cameras

    eye = torch.tensor(position, dtype=torch.float32)
    back = eye / eye.norm()  # the camera looks down -z
    right = torch.linalg.cross(torch.tensor([0.0, 0.0, 1.0]), back)
    right = right / right.norm()
    up = torch.linalg.cross(back, right)
    c2w = torch.stack([right, up, back, eye], dim=1)[None]
    focal = 0.5 * size / math.tan(0.5 * 0.69)
    return Cameras(camera_to_worlds=c2w, fx=focal, fy=focal, cx=size / 2, cy=size / 2, width=size, height=size)


def test_spread_indices() -> None:
    assert demo.spread_indices(3, 20) == [0, 6, 13]
    assert demo.spread_indices(3, 2) == [0, 1]
    with pytest.raises(ValueError, match="no views"):
        demo.spread_indices(3, 0)


def test_orbit_cameras_turn_about_z_and_keep_looking_at_the_origin() -> None:
    start = _camera_at((4.0, 0.0, 2.0))
    orbit = demo.orbit_cameras(start, 4)
    assert orbit.shape == (4,) and torch.equal(orbit.fx[:, 0], start.fx.expand(4, 1)[:, 0])
    positions = orbit.camera_to_worlds[:, :, 3]
    expected = torch.tensor([[4.0, 0.0, 2.0], [0.0, 4.0, 2.0], [-4.0, 0.0, 2.0], [0.0, -4.0, 2.0]])
    assert torch.allclose(positions, expected, atol=1e-5)
    looking = -orbit.camera_to_worlds[:, :, 2]  # viewing direction
    assert torch.allclose(looking, -positions / positions.norm(dim=-1, keepdim=True), atol=1e-5)


def test_save_gif_keeps_every_frame(tmp_path: Path) -> None:
    from PIL import Image, ImageSequence

    frames = [np.full((8, 8, 3), 40 * k, dtype=np.uint8) for k in range(5)]
    path = demo.save_gif(frames, tmp_path / "t.gif", fps=10)
    with Image.open(path) as gif:
        read = [np.asarray(f.convert("RGB")) for f in ImageSequence.Iterator(gif)]
    assert len(read) == 5 and [int(f[0, 0, 0]) for f in read] == [0, 40, 80, 120, 160]


def test_draw_mesh_shows_a_box_in_the_middle_of_the_view() -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import trimesh

    box = trimesh.creation.box(extents=(1.0, 1.0, 1.0))
    colors = np.tile([[0.8, 0.1, 0.1]], (len(box.faces), 1))
    fig, ax = plt.subplots(figsize=(2, 2), dpi=50)
    drawn = demo.draw_mesh(ax, np.asarray(box.vertices), np.asarray(box.faces), colors, _camera_at((3.0, 1.0, 2.0)), 1)
    ax.set_position((0, 0, 1, 1))
    fig.canvas.draw()
    image = np.asarray(fig.canvas.buffer_rgba())[..., :3].astype(float)
    plt.close(fig)
    assert drawn == 12
    red = (image[..., 0] > 100) & (image[..., 1] < 80)
    assert red[40:60, 40:60].mean() > 0.9 and red[:10].sum() == 0  # the box in the middle, sky above it
    # a box behind the camera: nothing drawn, nothing raised
    behind = np.asarray(box.vertices) + np.array([6.0, 2.0, 4.0])
    fig, ax = plt.subplots()
    assert demo.draw_mesh(ax, behind, np.asarray(box.faces), colors, _camera_at((3.0, 1.0, 2.0)), 1) == 0
    plt.close(fig)


def test_schedule_text() -> None:
    from nerfstudio.engine.optimizers import RAdamOptimizerConfig
    from nerfstudio.engine.schedulers import ExponentialDecaySchedulerConfig

    def config(scheduler):
        return SimpleNamespace(
            optimizers={"fields": {"optimizer": RAdamOptimizerConfig(lr=1e-3), "scheduler": scheduler}}
        )

    assert demo.schedule_text(config(None)) == "RAdam lr 0.001 (constant)"
    assert demo.schedule_text(config(ExponentialDecaySchedulerConfig())) == "RAdam lr 0.001 (constant)"
    decay = ExponentialDecaySchedulerConfig(lr_final=1e-5)
    assert demo.schedule_text(config(decay)) == "RAdam lr 0.001 -> 1e-05 (exponential decay)"


def test_schedule_of_an_optimizer_preset_is_described_and_repeatable() -> None:
    """A run trained with ``--optimizer adam`` is described by its preset, and the flags repeat that preset."""
    from nerfstudio.engine.optimizers import AdamOptimizerConfig, RAdamOptimizerConfig
    from nerfstudio.engine.schedulers import ExponentialDecaySchedulerConfig

    held = ExponentialDecaySchedulerConfig(lr_pre_warmup=1e-3, warmup_steps=600, lr_final=1e-4)
    config = SimpleNamespace(
        optimizer="adam",
        optimizers={"fields": {"optimizer": RAdamOptimizerConfig(lr=5e-4), "scheduler": None}},
        optimizer_presets={"adam": {"optimizer": AdamOptimizerConfig(lr=1e-3), "scheduler": held}},
    )
    assert demo.schedule_text(config) == "Adam lr 0.001 for 600 steps, then -> 0.0001 (exponential decay)"
    assert demo.schedule_flags(config) == (
        "--optimizer adam --optimizer-presets.adam.optimizer.lr 0.001 --optimizer-presets.adam.scheduler.lr-final "
        "0.0001 --optimizer-presets.adam.scheduler.warmup-steps 600 --optimizer-presets.adam.scheduler.lr-pre-warmup "
        "0.001"
    )
    config.optimizer = "configured"
    assert demo.schedule_flags(config) == "--optimizers.fields.optimizer.lr 0.0005"


def _view(index: int, value: float, psnr: float) -> demo.TestView:
    image = np.full((24, 32, 3), value)
    image[6:18, 8:24] = 1.0 - value  # a square, so the panel is not flat
    return demo.TestView(index=index, ground_truth=image, render=image * 0.9, psnr=psnr)


def test_test_views_beside_a_baseline(tmp_path: Path) -> None:
    """With the baseline's renders, each panel holds ground truth | run | baseline and is wider than without."""
    from PIL import Image

    views = [_view(0, 0.2, 26.0), _view(6, 0.4, 25.5)]
    baseline = [_view(0, 0.3, 25.0), _view(6, 0.5, 24.9)]
    alone = demo.save_test_views(views, tmp_path / "alone.png", "run")
    both = demo.save_test_views(views, tmp_path / "both.png", "run", baseline, ("int-map-nerf", "inr-nerf"))
    with Image.open(alone) as a, Image.open(both) as b:
        assert b.size[0] > 1.3 * a.size[0] and np.asarray(b.convert("RGB")).std() > 10.0


def _config(method: str = "int-map-nerf") -> SimpleNamespace:
    from nerfstudio.engine.optimizers import AdamOptimizerConfig
    from nerfstudio.engine.schedulers import ExponentialDecaySchedulerConfig

    held = ExponentialDecaySchedulerConfig(lr_pre_warmup=5e-3, warmup_steps=2160, lr_final=3e-4)
    return SimpleNamespace(
        method_name=method,
        experiment_name="synthetic-demo",
        output_dir=Path("outputs/demo"),
        optimizer="adam",
        optimizers={},
        optimizer_presets={"adam": {"optimizer": AdamOptimizerConfig(lr=5e-3), "scheduler": held}},
        pipeline=SimpleNamespace(
            datamanager=SimpleNamespace(data=Path("data/synthetic-demo"), train_num_rays_per_batch=256),
            model=SimpleNamespace(iga=False, num_coarse_samples=16, num_importance_samples=16),
        ),
    )


def test_next_commands_compare_the_trained_baseline_and_name_the_method() -> None:
    config = _config()
    trained = demo.next_commands(config, 3600, baseline_trained=True)
    assert not any(line.startswith("ns-train inr-nerf") for line in trained)
    assert any(line.startswith("inr-compare --runs outputs/demo/synthetic-demo") for line in trained)
    assert trained[-1].startswith("ns-train int-map-nerf ")
    untrained = demo.next_commands(config, 3600)
    assert any(line.startswith("ns-train inr-nerf") for line in untrained)


def test_summary_reports_both_runs_and_the_difference() -> None:
    baseline = {
        "method_name": "inr-nerf",
        "step": 3599,
        "schedule": "Adam lr 0.005 for 2160 steps, then -> 0.0003 (exponential decay)",
        "results": {"psnr": 25.10, "fine_ssim": 0.95},
        "train_seconds": 290.0,
    }
    files = {"test views": Path("outputs/demo/test_views.png")}
    metrics = {"psnr": 25.60, "psnr_std": 1.0, "fine_ssim": 0.955}
    text = demo.Demo(load_config=Path("c.yml")).summary(_config(), 3599, metrics, 300.0, 60.0, files, None, baseline)
    assert "PSNR 25.60 dB" in text and "inr-nerf, 3600 steps" in text and "PSNR 25.10 dB" in text
    assert "int-map-nerf +0.50 dB" in text
    assert text.splitlines()[-1].strip().endswith("outputs/demo/test_views.png")


def test_views_are_rendered_in_evaluation_mode_and_the_mode_is_restored() -> None:
    """nerfstudio's get_average_eval_image_metrics leaves the model training (jittered samples): the demo's renders
    switch it to evaluation mode for their own renders and back."""
    seen = []

    class Model(torch.nn.Module):
        device = torch.device("cpu")

        def get_outputs_for_camera(self, camera):
            seen.append(self.training)
            return {"rgb": torch.zeros(4, 4, 3)}

    model = Model()
    model.train()
    cameras = [_camera_at((3.0, 0.0, 1.0), size=4), _camera_at((0.0, 3.0, 1.0), size=4)]

    class Cameras:
        shape = (2,)

        def __getitem__(self, item):
            return cameras[item.start]

    frames = demo.render_frames(SimpleNamespace(model=model), Cameras())
    assert len(frames) == 2 and seen == [False, False] and model.training
