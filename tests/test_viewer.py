"""nerfstudio's default viewer with our methods: start, train a few steps, render a frame (issue 13).

``ns-train <method> blender-data --data ...`` starts nerfstudio's viewer (``--vis viewer``). It reads every public
property of the pipeline and of its modules, and while training it renders through the model's
``get_outputs_for_camera`` and shows ``rgb`` and ``depth``. Each test runs the real Trainer with the viewer (quitting
on completion) and renders one frame through the viewer's own render code (``RenderStateMachine``), with a stand-in
for the browser client that receives the image.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any, List

import numpy as np
import pytest
import torch

METHODS = ("inr-nerf", "int-nerf", "int-map-nerf", "iga-nerf", "gauss-nerf")
REPO_ROOT = Path(__file__).resolve().parents[1]


class BrowserStandIn:
    """What the viewer's render thread uses of a connected browser: its camera's aspect and the image it is sent."""

    def __init__(self, aspect: float) -> None:
        self.camera = type("Camera", (), {"aspect": aspect})()
        self.scene = self
        self.images: List[np.ndarray] = []
        self.depths: List[Any] = []

    def set_background_image(self, image: np.ndarray, format: str, jpeg_quality: int, depth: Any) -> None:
        self.images.append(image)
        self.depths.append(depth)


def render_viewer_frame(viewer: Any, output_name: str) -> BrowserStandIn:
    """Render one frame from the first training camera with the viewer's render code and ``output_name`` shown."""
    from nerfstudio.cameras.cameras import CameraType
    from nerfstudio.viewer.render_state_machine import RenderStateMachine
    from nerfstudio.viewer.utils import CameraState
    from nerfstudio.viewer.viewer import VISER_NERFSTUDIO_SCALE_RATIO

    cameras = viewer.pipeline.datamanager.train_dataset.cameras
    aspect = float(cameras.width[0, 0]) / float(cameras.height[0, 0])
    fov = float(2 * torch.atan(cameras.height[0, 0] / (2 * cameras.fy[0, 0])))
    client = BrowserStandIn(aspect)
    machine = RenderStateMachine(viewer, VISER_NERFSTUDIO_SCALE_RATIO, client)
    state = CameraState(fov=fov, aspect=aspect, c2w=cameras.camera_to_worlds[0], camera_type=CameraType.PERSPECTIVE)
    outputs = machine._render_img(state)
    viewer.control_panel.update_output_options(list(outputs))
    viewer.control_panel._output_render.value = output_name
    machine.output_keys = set(outputs)
    machine._send_output_to_viewer(outputs, static_render=True)
    return client


@pytest.mark.slow
@pytest.mark.parametrize("method", METHODS)
def test_default_viewer_trains_and_renders(method: str, tiny_scene: Path, tmp_path: Path) -> None:
    from nerfstudio.utils.rich_utils import CONSOLE
    from nerfstudio.viewer.utils import parse_object
    from nerfstudio.viewer.viewer_elements import ViewerElement

    from nerf_inr_methods.nerfstudio_plugin.runs import own_event_writers, prepare_config

    config = prepare_config(method, tiny_scene, tmp_path, steps=3)
    config.vis = "viewer"  # ns-train's default (prepare_config picks tensorboard)
    config.viewer.quit_on_train_completion = True
    config.viewer.websocket_host = "127.0.0.1"
    with CONSOLE.capture():  # what ns-train's main does before its train_loop: our checks, the config dump, config.yml
        config.print_to_terminal()
        config.save_config()
    with own_event_writers():
        trainer = config.setup(local_rank=0, world_size=1)
        trainer.setup()  # the viewer reads every property of the pipeline here (INT's schedule before T is known)
        try:
            trainer.train()
            assert trainer.step == 2
            parse_object(trainer.pipeline, ViewerElement, "Custom Elements")  # again, T known
            lpips = trainer.pipeline.model.lpips  # no evaluation ran: reading properties must not have built it
            assert not lpips._metric and not lpips._unavailable
            with CONSOLE.capture():
                rgb = render_viewer_frame(trainer.viewer_state, "rgb")
                depth = render_viewer_frame(trainer.viewer_state, "depth")
        finally:
            trainer.shutdown()
    for client in (rgb, depth):
        image = client.images[-1]
        assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[-1] == 3 and image.shape[0] >= 30
        assert client.depths[-1] is not None  # "Composite depth" (on by default) needs the model's depth output
    assert not np.array_equal(rgb.images[-1], depth.images[-1])


@pytest.mark.slow
def test_ns_train_with_the_default_viewer(tiny_scene: Path, tmp_path: Path) -> None:
    """The README's plain ``ns-train iga-nerf blender-data --data ...`` (CPU preset), as a user runs it."""
    from nerf_inr_methods.nerfstudio_plugin.presets import preset_flags

    command = [str(Path(sys.executable).parent / "ns-train"), "iga-nerf", *preset_flags()]
    command += ["--max-num-iterations", "3", "--viewer.quit-on-train-completion", "True"]
    command += ["--viewer.websocket-host", "127.0.0.1", "--output-dir", str(tmp_path)]
    command += ["blender-data", "--data", str(tiny_scene)]
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, capture_output=True, text=True, timeout=900, env=environment, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    # known third-party warnings are filtered; torch.jit's is printed before any plugin is imported
    warning_lines = [line for line in result.stderr.splitlines() if "Warning: " in line]
    assert all("torch.jit.script" in line for line in warning_lines), warning_lines
    assert list(tmp_path.glob("*/iga-nerf/*/nerfstudio_models/step-000000002.ckpt"))
