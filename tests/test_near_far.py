"""Near/far planes on scenes that are not Blender (issue 13).

Blender scenes keep vanilla NeRF's planes (2, 6). A capture read by nerfstudio's own ``nerfstudio-data`` parser
(instant-ngp / nerfstudio ``transforms.json``) gets planes from its cameras and scene box, unless the user sets
``--pipeline.model.collider-params``. The capture here is the synthetic scene photographed from 1.8 units, which
nerfstudio-data rescales so that the cameras sit about one unit from the centre: the whole scene lies before
Blender's near plane. Measured (iga-nerf, CPU preset, 64 px capture of 36 + 4 views, 900 steps): 13.34 dB held-out
PSNR with the planes from the cameras (0.029 / 2.86) vs 5.64 dB with Blender's 2 / 6.
"""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
CAPTURE_CAMERA_RADIUS = 1.8
"""Distance of the capture's cameras from the scene centre (world units, before nerfstudio-data's rescaling)."""
CAPTURE_ANGLE_X = 1.2
"""Horizontal field of view of the capture (radians): wide, so the close cameras see the whole scene."""


def _scene_module() -> Any:
    spec = importlib.util.spec_from_file_location(
        "make_synthetic_scene", REPO_ROOT / "data_scripts/make_synthetic_scene.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def make_close_capture(out_dir: Path, resolution: int = 32, n_views: int = 20, seed: int = 0) -> Path:
    """The synthetic scene as a capture in nerfstudio's ``transforms.json`` format (RGB on white, OpenGL poses),
    cameras on the upper hemisphere ``CAPTURE_CAMERA_RADIUS`` from the centre, looking at it."""
    import imageio.v2 as imageio

    scene = _scene_module()
    poses = scene.hemisphere_poses(n_views, np.random.default_rng(seed), radius=CAPTURE_CAMERA_RADIUS)
    rgba = scene.render_views(torch.from_numpy(poses), resolution, CAPTURE_ANGLE_X, samples_per_axis=2)
    rgb = rgba[..., :3] * rgba[..., 3:] + (1.0 - rgba[..., 3:])
    (out_dir / "images").mkdir(parents=True)
    focal = 0.5 * resolution / math.tan(0.5 * CAPTURE_ANGLE_X)
    frames = []
    for index, (pose, image) in enumerate(zip(poses, rgb, strict=True)):
        name = f"images/frame_{index:05d}.png"
        imageio.imwrite(out_dir / name, (image * 255).round().to(torch.uint8).numpy())
        frames.append({"file_path": name, "transform_matrix": pose.tolist()})
    meta = {"camera_model": "OPENCV", "fl_x": focal, "fl_y": focal, "cx": resolution / 2, "cy": resolution / 2}
    meta.update({"w": resolution, "h": resolution, "frames": frames})
    (out_dir / "transforms.json").write_text(json.dumps(meta, indent=2))
    return out_dir


@pytest.fixture(scope="module")
def close_capture(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_close_capture(tmp_path_factory.mktemp("capture") / "close")


def capture_config(method: str, capture: Path, output_dir: Path, steps: int, **overrides: Any) -> Any:
    """Our CPU-preset config of ``method`` reading ``capture`` with nerfstudio's nerfstudio-data parser."""
    from nerfstudio.data.dataparsers.nerfstudio_dataparser import NerfstudioDataParserConfig

    from nerf_inr_methods.nerfstudio_plugin.runs import prepare_config

    config = prepare_config(method, capture, output_dir, steps=steps, overrides=overrides)
    config.pipeline.datamanager.dataparser = NerfstudioDataParserConfig(data=capture)
    return config


def preflight_output(config: Any) -> str:
    from nerfstudio.utils.rich_utils import CONSOLE

    from nerf_inr_methods.nerfstudio_plugin.preflight import preflight

    with CONSOLE.capture() as capture:
        preflight(config)
    return capture.get()


def test_planes_cover_the_scene_box_from_every_camera() -> None:
    from nerf_inr_methods.nerfstudio_plugin.preflight import NEAR_FLOOR_FRACTION, near_far_from_cameras

    aabb = torch.tensor([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]])
    near, far = near_far_from_cameras(torch.tensor([[0.0, 0.0, 3.0], [0.0, 4.0, 0.0]]), aabb)
    assert near == pytest.approx(2.0)  # the closest camera is 2 units above the box
    assert far == pytest.approx(math.sqrt(1 + 25 + 1))  # the farthest corner seen from (0, 4, 0)
    near, far = near_far_from_cameras(torch.tensor([[0.5, 0.0, 0.0]]), aabb)  # inside the box
    assert far == pytest.approx(math.sqrt(1.5**2 + 2)) and near == pytest.approx(NEAR_FLOOR_FRACTION * far)


def test_blender_scenes_keep_near_2_far_6(tiny_scene: Path, tmp_path: Path) -> None:
    from nerf_inr_methods.nerfstudio_plugin.runs import prepare_config

    config = prepare_config("iga-nerf", tiny_scene, tmp_path, steps=1)
    lines = [line for line in preflight_output(config).splitlines() if "near/far" in line]
    assert dict(config.pipeline.model.collider_params) == {"near_plane": 2.0, "far_plane": 6.0}
    assert len(lines) == 1 and "2 / 6" in lines[0] and "Blender" in lines[0]


def test_close_capture_gets_planes_from_its_cameras(close_capture: Path, tmp_path: Path) -> None:
    from nerfstudio.data.dataparsers.nerfstudio_dataparser import NerfstudioDataParserConfig

    config = capture_config("iga-nerf", close_capture, tmp_path, steps=1)
    lines = [line for line in preflight_output(config).splitlines() if "near/far" in line]
    near, far = config.pipeline.model.collider_params["near_plane"], config.pipeline.model.collider_params["far_plane"]
    outputs = NerfstudioDataParserConfig(data=close_capture).setup().get_dataparser_outputs("train")
    # the scene ball (centre: world origin, radius 1.3) in the parser's coordinates (it centres, rotates and scales)
    centre = outputs.dataparser_scale * outputs.dataparser_transform[:, 3]
    radius = outputs.dataparser_scale * 1.3
    distances = (outputs.cameras.camera_to_worlds[:, :3, 3] - centre).norm(dim=-1)
    assert float(distances.max()) + radius < 2.0  # the whole scene lies before Blender's near plane: 2 / 6 miss it
    assert near < float(distances.min()) - radius  # the nearest surface is after the near plane
    assert far > float(distances.max()) + radius  # and the farthest before the far plane
    assert len(lines) == 1 and "nerfstudio-data" in lines[0] and f"{near:g} / {far:g}" in lines[0]


def test_user_planes_are_kept(close_capture: Path, tmp_path: Path) -> None:
    planes = {"near_plane": 0.2, "far_plane": 3.5}
    config = capture_config("iga-nerf", close_capture, tmp_path, steps=1, **{"pipeline.model.collider_params": planes})
    output = preflight_output(config)
    assert dict(config.pipeline.model.collider_params) == planes
    assert "0.2 / 3.5 from --pipeline.model.collider-params" in output
