"""nerfstudio's tools on our runs: output names, ns-render with depth, ns-export pointcloud, quiet console (issue 13).

``ns-render`` and ``ns-export`` are run through their own classes (what the commands call after parsing flags).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch
from nerf_helpers import rays_toward_origin, small_model


@pytest.fixture(scope="module")
def trained_run(tiny_scene: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """config.yml of a 2-step iga-nerf run (CPU preset) on the tiny scene."""
    from nerfstudio.utils.rich_utils import CONSOLE

    from nerf_inr_methods.nerfstudio_plugin.runs import prepare_config, train

    config = prepare_config("iga-nerf", tiny_scene, tmp_path_factory.mktemp("runs"), steps=2)
    with CONSOLE.capture():
        return train(config)


@pytest.mark.parametrize("single_field", [False, True])
def test_outputs_carry_the_names_nerfstudio_tools_read(single_field: bool) -> None:
    model = small_model(hierarchical_sampling=not single_field).eval()
    rays, _ = rays_toward_origin(5, seed=0)
    with torch.no_grad():
        outputs = model(rays)
    assert list(outputs)[:3] == ["rgb", "accumulation", "depth"]  # the viewer shows the first output by default
    for name in ("rgb", "accumulation", "depth"):
        assert torch.equal(outputs[name], outputs[f"{name}_fine"])
        assert f"{name}_coarse" in outputs


@pytest.mark.slow
def test_ns_render_depth(trained_run: Path, tmp_path: Path) -> None:
    from nerfstudio.scripts.render import DatasetRender

    names = ["rgb", "depth", "depth_fine", "accumulation"]
    DatasetRender(
        load_config=trained_run, output_path=tmp_path, split="test", rendered_output_names=names, image_format="png"
    ).main()
    for name in names:
        assert len(list((tmp_path / "test" / name).glob("*.png"))) == 3, name


@pytest.mark.slow
def test_ns_export_pointcloud(trained_run: Path, tmp_path: Path) -> None:
    try:
        import open3d  # noqa: F401
    except (ImportError, OSError) as error:  # OSError: a system library it links (libusb-1.0.so.0) is missing
        pytest.skip(f"open3d cannot be imported ({error}); ./run.sh setup installs libusb-1.0-0 where it may")
    from nerfstudio.scripts.exporter import ExportPointCloud

    ExportPointCloud(
        load_config=trained_run,
        output_dir=tmp_path,
        num_points=500,
        num_rays_per_batch=1024,
        normal_method="open3d",
        remove_outliers=False,
    ).main()
    assert (tmp_path / "point_cloud.ply").stat().st_size > 0


def test_known_third_party_warnings_are_filtered_and_ours_kept() -> None:
    from nerf_inr_methods.nerfstudio_plugin.warning_filters import filter_third_party_warnings

    message = "`torch.cuda.amp.GradScaler(args...)` is deprecated. Please use `torch.amp.GradScaler('cuda', args...)`"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        filter_third_party_warnings()
        for module in ("nerfstudio.engine.trainer", "nerf_inr_methods.nerfstudio_plugin.esgd_trainer"):
            warnings.warn_explicit(message, FutureWarning, f"{module}.py", 1, module=module)
        warnings.warn_explicit("our own note", UserWarning, "preflight.py", 1, module="nerf_inr_methods.x")
    assert [str(w.filename) for w in caught] == ["nerf_inr_methods.nerfstudio_plugin.esgd_trainer.py", "preflight.py"]
