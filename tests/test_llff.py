"""LLFF dataparser (``llff-data``): conventions, splits, resizing, bad input, and the real fern scene."""

from __future__ import annotations

import dataclasses
import importlib.metadata
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from nerf_inr_methods.nerfstudio_plugin.llff_dataparser import (
    LLFF,
    LLFFDataParserConfig,
    llff_holdout_split,
    llff_to_opengl,
)

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
FERN = SHARED_DATA / "llff" / "fern"
ENTRY_POINT = "nerf_inr_methods.nerfstudio_plugin.dataparser_specs:llff_dataparser"
needs_fern = pytest.mark.skipif(not (FERN / "poses_bounds.npy").is_file(), reason=f"{FERN} is absent")


# ---------------------------------------------------------------- a small synthetic scene in LLFF layout
def look_at_llff(position: np.ndarray, target: np.ndarray) -> np.ndarray:
    """(3, 4) LLFF camera-to-world [down, right, back | position] of a camera at position looking at target."""
    back = position - target
    back /= np.linalg.norm(back)
    right = np.cross([0.0, 1.0, 0.0], back)
    right /= np.linalg.norm(right)
    up = np.cross(back, right)
    return np.stack([-up, right, back, position], axis=1)


def make_scene(
    root: Path,
    num: int = 6,
    full_hw: tuple[int, int] = (24, 32),
    focal: float = 30.0,
    folders: tuple[str, ...] = ("images_2",),
    seed: int = 0,
) -> np.ndarray:
    """Write poses_bounds.npy and random PNGs; a small world rotation makes recentering non-trivial.

    Returns:
        (num, 17) array written to poses_bounds.npy.
    """
    rng = np.random.default_rng(seed)
    angle = 0.3
    world = np.array([[np.cos(angle), 0, np.sin(angle)], [0, 1, 0], [-np.sin(angle), 0, np.cos(angle)]])
    rows = []
    for i in range(num):
        position = np.array([0.4 * (i % 3) - 0.4, 0.2 * (i // 3), 0.0]) + rng.normal(0, 0.02, 3)
        pose = look_at_llff(position, np.array([0.0, 0.0, -5.0]))
        pose = np.concatenate([world @ pose[:, :3], (world @ pose[:, 3] + [1.0, 2.0, 3.0])[:, None]], axis=1)
        hwf = np.array([[full_hw[0]], [full_hw[1]], [focal]])
        bounds = [3.0 + 0.1 * i, 8.0 + 0.2 * i]
        rows.append(np.concatenate([np.concatenate([pose, hwf], axis=1).ravel(), bounds]))
    array = np.asarray(rows)
    root.mkdir(parents=True, exist_ok=True)
    np.save(root / "poses_bounds.npy", array)
    for folder in folders:
        factor = 1 if folder == "images" else int(folder.split("_")[1])
        (root / folder).mkdir()
        for i in range(num):
            pixels = rng.integers(0, 256, (full_hw[0] // factor, full_hw[1] // factor, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / folder / f"image{i:03d}.png")
    return array


def parse(root: Path, split: str = "train", **options):
    return LLFFDataParserConfig(data=root, **options).setup().get_dataparser_outputs(split)


def nerf_pytorch_reference(array: np.ndarray, bd_factor: float = 0.75) -> tuple[np.ndarray, np.ndarray]:
    """NeRF's load_llff_data without NDC, written as nerf-pytorch orders it: convert, scale, then recenter."""
    poses = array[:, :-2].reshape([-1, 3, 5]).transpose([1, 2, 0])
    bds = array[:, -2:].transpose([1, 0])
    poses = np.concatenate([poses[:, 1:2, :], -poses[:, 0:1, :], poses[:, 2:, :]], 1)
    poses = np.moveaxis(poses, -1, 0)
    bds = np.moveaxis(bds, -1, 0)
    sc = 1.0 / (bds.min() * bd_factor)
    poses[:, :3, 3] *= sc
    bds = bds * sc
    center = poses[:, :3, 3].mean(0)
    z = poses[:, :3, 2].sum(0)
    z /= np.linalg.norm(z)
    x = np.cross(poses[:, :3, 1].sum(0), z)
    x /= np.linalg.norm(x)
    c2w = np.eye(4)
    c2w[:3] = np.stack([x, np.cross(z, x), z, center], 1)
    bottom = np.tile(np.array([0, 0, 0, 1.0])[None, None], (poses.shape[0], 1, 1))
    recentered = np.linalg.inv(c2w) @ np.concatenate([poses[:, :3, :4], bottom], 1)
    return recentered[:, :3], bds


# ---------------------------------------------------------------- conventions
def test_poses_match_nerf_pytorch_processing(tmp_path: Path) -> None:
    array = make_scene(tmp_path)
    parser = LLFFDataParserConfig(data=tmp_path, downscale_factor=2).setup()
    scene = parser.load_scene()
    expected_poses, expected_bounds = nerf_pytorch_reference(array)
    np.testing.assert_allclose(scene.camera_to_worlds, expected_poses, atol=1e-9)
    np.testing.assert_allclose(scene.bounds, expected_bounds, atol=1e-9)
    assert scene.near_plane == pytest.approx(0.9 / 0.75)
    # right-handed rotations: a wrong axis conversion (e.g. a single sign flip) has determinant -1
    np.testing.assert_allclose(np.linalg.det(scene.camera_to_worlds[:, :, :3]), 1.0, atol=1e-9)


def test_transform_round_trip_recovers_file_poses(tmp_path: Path) -> None:
    array = make_scene(tmp_path)
    outputs = parse(tmp_path, downscale_factor=2, llffhold=0)
    original = outputs.transform_poses_to_original_space(outputs.cameras.camera_to_worlds, camera_convention="opengl")
    expected = llff_to_opengl(array[:, :15].reshape(-1, 3, 5))
    np.testing.assert_allclose(original.numpy(), expected, atol=1e-5)


def test_center_pixel_ray_points_along_minus_back_axis(tmp_path: Path) -> None:
    array = make_scene(tmp_path)
    outputs = parse(tmp_path, downscale_factor=2, llffhold=0)
    cameras = outputs.cameras
    centre = torch.tensor([[cameras.cy[0, 0].item(), cameras.cx[0, 0].item()]])
    rays = cameras.generate_rays(camera_indices=torch.tensor([[0]]), coords=centre)
    llff_back = outputs.dataparser_transform[:, :3] @ torch.from_numpy(array[0, :15].reshape(3, 5)[:, 2]).float()
    torch.testing.assert_close(rays.directions[0], -llff_back, atol=1e-5, rtol=0)


def test_intrinsics_scaled_to_loaded_images(tmp_path: Path) -> None:
    make_scene(tmp_path, full_hw=(24, 32), focal=30.0)
    cameras = parse(tmp_path, downscale_factor=2).cameras
    assert cameras.width.unique().tolist() == [16] and cameras.height.unique().tolist() == [12]
    torch.testing.assert_close(cameras.fx, torch.full_like(cameras.fx, 15.0))
    torch.testing.assert_close(cameras.fy, torch.full_like(cameras.fy, 15.0))
    torch.testing.assert_close(cameras.cx, torch.full_like(cameras.cx, 8.0))
    torch.testing.assert_close(cameras.cy, torch.full_like(cameras.cy, 6.0))


@pytest.mark.parametrize(("num", "hold", "expected_eval"), [(20, 8, [0, 8, 16]), (6, 2, [0, 2, 4]), (5, 0, None)])
def test_llffhold_split(num: int, hold: int, expected_eval: list[int] | None) -> None:
    train, held_out = llff_holdout_split(num, hold)
    if expected_eval is None:
        assert train.tolist() == held_out.tolist() == list(range(num))
    else:
        assert held_out.tolist() == expected_eval
        assert sorted(train.tolist() + held_out.tolist()) == list(range(num))


def test_splits_and_shared_world_frame(tmp_path: Path) -> None:
    make_scene(tmp_path, num=6)
    parser = LLFFDataParserConfig(data=tmp_path, downscale_factor=2, llffhold=3).setup()
    train, val, test = (parser.get_dataparser_outputs(s) for s in ("train", "val", "test"))
    assert [len(o.image_filenames) for o in (train, val, test)] == [4, 2, 2]
    assert [p.name for p in test.image_filenames] == ["image000.png", "image003.png"]
    assert torch.equal(train.scene_box.aabb, test.scene_box.aabb)
    assert train.metadata == test.metadata and set(train.metadata) == {"near_plane", "far_plane"}


def test_sampled_points_lie_in_scene_box(tmp_path: Path) -> None:
    make_scene(tmp_path)
    outputs = parse(tmp_path, downscale_factor=2, llffhold=0)
    rays = outputs.cameras.generate_rays(camera_indices=0, keep_shape=True)
    near, far = outputs.metadata["near_plane"], outputs.metadata["far_plane"]
    aabb = outputs.scene_box.aabb
    for distance in (near, far):
        points = (rays.origins + distance * rays.directions).reshape(-1, 3)
        assert torch.all(points >= aabb[0] - 1e-4) and torch.all(points <= aabb[1] + 1e-4)


# ---------------------------------------------------------------- resizing when images_<f>/ is missing
def test_resizes_from_full_resolution_into_scene_folder(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    make_scene(tmp_path, folders=("images",))
    outputs = parse(tmp_path, downscale_factor=2)
    assert "resizing 6 images" in capsys.readouterr().out.replace("\n", " ")
    assert all(p.parent == tmp_path / "images_2" for p in outputs.image_filenames)
    assert Image.open(outputs.image_filenames[0]).size == (16, 12)
    torch.testing.assert_close(outputs.cameras.fx, torch.full_like(outputs.cameras.fx, 15.0))
    # a second parse reuses the copies instead of rewriting them
    mtime = outputs.image_filenames[0].stat().st_mtime_ns
    parse(tmp_path, downscale_factor=2)
    assert outputs.image_filenames[0].stat().st_mtime_ns == mtime


def test_resizes_from_finer_folder_into_downscaled_dir(tmp_path: Path) -> None:
    scene = tmp_path / "scene"
    make_scene(scene, folders=("images_2",))
    outputs = parse(scene, downscale_factor=4, downscaled_dir=tmp_path / "cache")
    assert not (scene / "images_4").exists()
    assert all(p.parent == tmp_path / "cache" for p in outputs.image_filenames)
    assert Image.open(outputs.image_filenames[0]).size == (8, 6)
    torch.testing.assert_close(outputs.cameras.fx, torch.full_like(outputs.cameras.fx, 7.5))


def test_read_only_scene_resizes_into_user_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    scene = tmp_path / "scene"
    make_scene(scene, folders=("images",))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda path, mode: False if Path(path) == scene else real_access(path, mode))
    outputs = parse(scene, downscale_factor=2)
    assert not (scene / "images_2").exists()
    assert (tmp_path / "xdg" / "nerf_inr_methods" / "llff") in outputs.image_filenames[0].parents


# ---------------------------------------------------------------- bad input: a clear error naming the file
def write_poses(root: Path, array: np.ndarray) -> None:
    (root / "images_2").mkdir(parents=True, exist_ok=True)
    np.save(root / "poses_bounds.npy", array)


def test_missing_scene_folder(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="scene folder not found"):
        parse(tmp_path / "nope")


def test_missing_poses_file(tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    with pytest.raises(FileNotFoundError, match="poses_bounds.npy"):
        parse(tmp_path)


def test_unreadable_poses_file(tmp_path: Path) -> None:
    (tmp_path / "poses_bounds.npy").write_bytes(b"not a numpy file")
    with pytest.raises(ValueError, match=r"poses_bounds.npy: cannot be read"):
        parse(tmp_path)


@pytest.mark.parametrize("shape", [(5, 15), (17,), (0, 17), (2, 3, 17)])
def test_wrong_poses_shape(tmp_path: Path, shape: tuple[int, ...]) -> None:
    write_poses(tmp_path, np.ones(shape))
    with pytest.raises(ValueError, match=r"poses_bounds.npy: expected an \(N, 17\) array"):
        parse(tmp_path)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda a: a.__setitem__((1, 3), np.nan), "finite"),
        (lambda a: a.__setitem__((2, 16), 1.0), r"row 2 has bounds .* 0 < near < far"),
        (lambda a: a.__setitem__((0, 14), -5.0), "row 0 has H, W, focal"),
        (lambda a: a.__setitem__((3, 0), 2.0), "not orthonormal"),
    ],
)
def test_invalid_pose_values(tmp_path: Path, edit, message: str) -> None:
    array = make_scene(tmp_path)
    edit(array)
    np.save(tmp_path / "poses_bounds.npy", array)
    with pytest.raises(ValueError, match=message):
        parse(tmp_path, downscale_factor=2)


def test_image_count_disagrees_with_poses(tmp_path: Path) -> None:
    make_scene(tmp_path)
    (tmp_path / "images_2" / "image005.png").unlink()
    with pytest.raises(ValueError, match=r"images_2: found 5 images .* 6 rows"):
        parse(tmp_path, downscale_factor=2)


def test_image_size_disagrees_with_poses(tmp_path: Path) -> None:
    make_scene(tmp_path)
    Image.fromarray(np.zeros((12, 12, 3), np.uint8)).save(tmp_path / "images_2" / "image003.png")
    with pytest.raises(ValueError, match=r"image003.png: image is 12x12 .* row 3 .* 16.0x12.0 was expected"):
        parse(tmp_path, downscale_factor=2)


def test_unreadable_image(tmp_path: Path) -> None:
    make_scene(tmp_path)
    (tmp_path / "images_2" / "image002.png").write_bytes(b"\x89PNG broken")
    with pytest.raises(ValueError, match=r"image002.png: unreadable image"):
        parse(tmp_path, downscale_factor=2)


def test_truncated_image(tmp_path: Path) -> None:
    make_scene(tmp_path, full_hw=(240, 320))
    path = tmp_path / "images_2" / "image001.png"
    path.write_bytes(path.read_bytes()[:2000])
    with pytest.raises(ValueError, match=r"image001.png: unreadable image"):
        parse(tmp_path, downscale_factor=2)


def test_no_image_folder(tmp_path: Path) -> None:
    make_scene(tmp_path, folders=())
    with pytest.raises(FileNotFoundError, match=r"no image folder found; expected one of .*images_4.*images_2.*images"):
        parse(tmp_path, downscale_factor=4)


@pytest.mark.parametrize(
    ("options", "message"),
    [({"llffhold": 1}, "llffhold"), ({"llffhold": -2}, "llffhold"), ({"downscale_factor": 0}, "downscale_factor")],
)
def test_invalid_options(tmp_path: Path, options: dict, message: str) -> None:
    make_scene(tmp_path)
    with pytest.raises(ValueError, match=message):
        parse(tmp_path, **options)


def test_unknown_split(tmp_path: Path) -> None:
    make_scene(tmp_path)
    with pytest.raises(ValueError, match="unknown split 'holdout'"):
        parse(tmp_path, split="holdout", downscale_factor=2)


# ---------------------------------------------------------------- registration
def test_cli_flags_parse() -> None:
    import tyro

    config = tyro.cli(
        LLFFDataParserConfig,
        args=["--data", "scene", "--downscale-factor", "4", "--llffhold", "0", "--bd-factor", "None"],
    )
    assert (config.data, config.downscale_factor, config.llffhold, config.bd_factor) == (Path("scene"), 4, 0, None)


def registered_llff_config(monkeypatch: pytest.MonkeyPatch) -> LLFFDataParserConfig:
    """The config nerfstudio discovers for ``llff-data`` (through the plugin environment variable)."""
    from nerfstudio.plugins.registry_dataparser import discover_dataparsers

    monkeypatch.setenv("NERFSTUDIO_DATAPARSER_CONFIGS", f"llff-data={ENTRY_POINT}")
    configs, descriptions = discover_dataparsers()
    assert isinstance(configs["llff-data"], LLFFDataParserConfig) and descriptions["llff-data"]
    return dataclasses.replace(configs["llff-data"])


def test_entry_point_installed() -> None:
    entry_points = importlib.metadata.entry_points(group="nerfstudio.dataparser_configs")
    if "llff-data" not in entry_points.names:
        pytest.skip("package installed without the llff-data entry point")
    from nerfstudio.plugins.registry_dataparser import DataParserSpecification

    assert entry_points["llff-data"].value == ENTRY_POINT
    spec = entry_points["llff-data"].load()
    assert isinstance(spec, DataParserSpecification) and isinstance(spec.config, LLFFDataParserConfig)


@pytest.mark.slow
def test_registration_in_nerfstudio_import_order() -> None:
    """ns-train imports nerfstudio's dataparser list first, which imports our spec module mid-way through
    nerfstudio's own imports: the spec module and its package __init__ must not import nerfstudio modules
    that need that list (datamanagers, pipelines), or nerfstudio drops ``llff-data`` with an ImportError."""
    code = (
        "from nerfstudio.configs.dataparser_configs import all_dataparsers\n"
        "assert 'llff-data' in all_dataparsers, sorted(all_dataparsers)\n"
    )
    env = {**os.environ, "NERFSTUDIO_DATAPARSER_CONFIGS": f"llff-data={ENTRY_POINT}"}
    root = Path(__file__).resolve().parents[1]
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=root, capture_output=True, text=True, timeout=600, check=False
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0 and "Could not load" not in output, output[-3000:]


# ---------------------------------------------------------------- the real fern scene (../shared/data)
@pytest.fixture(scope="module")
def fern_array() -> np.ndarray:
    return np.load(FERN / "poses_bounds.npy")


@pytest.mark.shared_data
@needs_fern
def test_fern_through_registered_parser(monkeypatch: pytest.MonkeyPatch, fern_array: np.ndarray) -> None:
    config = registered_llff_config(monkeypatch)
    config.data = FERN
    parser = config.setup()
    assert isinstance(parser, LLFF)
    train, val, test = (parser.get_dataparser_outputs(split) for split in ("train", "val", "test"))
    assert (len(train.image_filenames), len(val.image_filenames), len(test.image_filenames)) == (17, 3, 3)
    assert [p.name for p in test.image_filenames] == ["image000.png", "image008.png", "image016.png"]
    assert all(p.parent.name == "images_8" for p in train.image_filenames + test.image_filenames)
    assert Image.open(train.image_filenames[0]).size == (504, 378)

    full_h, full_w, focal = fern_array[0, [4, 9, 14]]  # (H, W, focal) column of the 3x5 matrix
    assert (full_h, full_w) == (3024, 4032)
    for cameras in (train.cameras, test.cameras):
        assert cameras.width.unique().tolist() == [504] and cameras.height.unique().tolist() == [378]
        torch.testing.assert_close(cameras.fx, torch.full_like(cameras.fx, focal / 8))
        torch.testing.assert_close(cameras.fy, torch.full_like(cameras.fy, focal / 8))
        torch.testing.assert_close(cameras.cx, torch.full_like(cameras.cx, 252.0))
        torch.testing.assert_close(cameras.cy, torch.full_like(cameras.cy, 189.0))

    bounds = fern_array[:, 15:]
    scale = train.dataparser_scale
    assert scale == pytest.approx(1 / (bounds.min() * 0.75))
    assert train.metadata["near_plane"] == pytest.approx(0.9 * bounds.min() * scale)
    assert train.metadata["far_plane"] >= bounds.max() * scale


@pytest.mark.shared_data
@needs_fern
def test_fern_cameras_look_at_a_common_point() -> None:
    scene = LLFFDataParserConfig(data=FERN).setup().load_scene()
    origins, forward = scene.camera_to_worlds[:, :, 3], -scene.camera_to_worlds[:, :, 2]
    projectors = np.eye(3)[None] - forward[:, :, None] * forward[:, None, :]
    point = np.linalg.solve(projectors.sum(0), np.einsum("nij,nj->i", projectors, origins))
    distances = np.linalg.norm(np.einsum("nij,nj->ni", projectors, point - origins), axis=1)
    depth = -point[2]  # recentered: the average camera sits at the origin looking down -z
    assert scene.near_plane < depth < scene.far_plane
    assert distances.max() < 0.1 * depth
    cameras = zip(scene.camera_to_worlds, scene.fx, scene.fy, scene.width, scene.height, strict=True)
    for c2w, fx, fy, width, height in cameras:
        local = (point - c2w[:, 3]) @ c2w[:, :3]
        assert local[2] < 0  # in front of the camera
        u, v = fx * local[0] / -local[2] + width / 2, -fy * local[1] / -local[2] + height / 2
        assert 0.25 * width < u < 0.75 * width and 0.25 * height < v < 0.75 * height


def plane_sweep_error(scene, c2w: np.ndarray, ref: int, src: int, num_depths: int = 16, shrink: int = 2) -> float:
    """Mean over pixels of the best (over fronto-parallel depth planes) 5x5-averaged photometric error when
    warping view ``src`` into view ``ref`` at 1/shrink resolution: low only when poses and intrinsics are right."""

    def load(i: int) -> torch.Tensor:  # (3, H / shrink, W / shrink)
        image = torch.from_numpy(np.asarray(Image.open(scene.image_filenames[i]), np.float32) / 255)
        return F.avg_pool2d(image.permute(2, 0, 1)[None], shrink)[0]

    image_ref, image_src = load(ref), load(src)
    height, width = image_ref.shape[1:]
    fx, fy = (float(f[ref]) / shrink for f in (scene.fx, scene.fy))
    v, u = torch.meshgrid(torch.arange(height) + 0.5, torch.arange(width) + 0.5, indexing="ij")
    rays = torch.stack([(u - width / 2) / fx, -(v - height / 2) / fy, -torch.ones_like(u)], -1)
    rot_ref, rot_src = (torch.from_numpy(c2w[i, :, :3]).float() for i in (ref, src))
    pos_ref, pos_src = (torch.from_numpy(c2w[i, :, 3]).float() for i in (ref, src))
    errors = []
    for inverse_depth in torch.linspace(1 / scene.bounds.min(), 1 / scene.bounds.max(), num_depths):
        local = (pos_ref + rays @ rot_ref.T / inverse_depth - pos_src) @ rot_src
        us = fx * local[..., 0] / -local[..., 2] + width / 2
        vs = -fy * local[..., 1] / -local[..., 2] + height / 2
        grid = torch.stack([us / width * 2 - 1, vs / height * 2 - 1], -1)[None]
        warped = F.grid_sample(image_src[None], grid, align_corners=False, padding_mode="border")[0]
        errors.append(F.avg_pool2d((warped - image_ref).abs().mean(0)[None, None], 5, 1, 2)[0, 0])
    return float(torch.stack(errors).min(0).values[10:-10, 10:-10].mean())


@pytest.mark.shared_data
@needs_fern
def test_fern_geometry_is_photo_consistent() -> None:
    """Plane-sweep stereo between neighbouring views: the parsed cameras explain the images far better than
    the same cameras rolled by 180 degrees (what an up/down or left/right axis mistake produces)."""
    scene = LLFFDataParserConfig(data=FERN).setup().load_scene()
    rolled = scene.camera_to_worlds.copy()
    rolled[:, :, :2] *= -1
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small tensors: extra threads only contend on a shared CPU
    try:
        good = plane_sweep_error(scene, scene.camera_to_worlds, 0, 1)
        wrong = plane_sweep_error(scene, rolled, 0, 1)
    finally:
        torch.set_num_threads(threads)
    assert good < 0.75 * wrong, (good, wrong)


@pytest.mark.shared_data
@needs_fern
def test_fern_resized_from_images_8(tmp_path: Path, fern_array: np.ndarray) -> None:
    outputs = parse(FERN, downscale_factor=16, downscaled_dir=tmp_path / "images_16")
    assert len(outputs.image_filenames) == 17
    assert Image.open(outputs.image_filenames[0]).size == (252, 189)
    focal = fern_array[0, 14]
    torch.testing.assert_close(outputs.cameras.fx, torch.full_like(outputs.cameras.fx, focal / 16))


@pytest.mark.shared_data
@needs_fern
def test_fern_in_nerfstudio_datamanager() -> None:
    """The datamanager our methods use builds ray batches and eval images from the parser's outputs."""
    from nerfstudio.data.datamanagers.base_datamanager import VanillaDataManagerConfig

    config = VanillaDataManagerConfig(dataparser=LLFFDataParserConfig(data=FERN), train_num_rays_per_batch=64)
    datamanager = config.setup(device="cpu", test_mode="val")
    ray_bundle, batch = datamanager.next_train(0)
    assert ray_bundle.origins.shape == (64, 3) and batch["image"].shape == (64, 3)
    assert datamanager.train_dataset.metadata["near_plane"] == pytest.approx(1.2)
    _, eval_batch = datamanager.next_eval_image(0)
    assert eval_batch["image"].shape == (378, 504, 3)


def test_models_keep_the_data_near_plane_outside_training() -> None:
    """nerfstudio's collider samples from 0 in eval mode; with llff-data's bounds ours keep the near plane (the space
    in front of forward-facing cameras is never trained, and sampling it blurs every rendering)."""
    from nerfstudio.cameras.rays import RayBundle
    from nerfstudio.data.scene_box import SceneBox

    from nerf_inr_methods.nerfstudio_plugin.inr_nerf import InrNeRFModelConfig

    model = InrNeRFModelConfig(base_mlp_num_layers=2, base_mlp_layer_width=8, head_mlp_layer_width=8).setup(
        scene_box=SceneBox(aabb=torch.tensor([[-4.0] * 3, [4.0] * 3])),
        num_train_data=2,
        metadata={"near_plane": 1.2, "far_plane": 7.9},
    )
    bundle = RayBundle(
        origins=torch.zeros(3, 3),
        directions=torch.tensor([[0.0, 0.0, -1.0]] * 3),
        pixel_area=torch.ones(3, 1),
        camera_indices=torch.zeros(3, 1, dtype=torch.long),
    )
    for mode in (model.train, model.eval):
        mode()
        collided = model.collider(bundle)
        assert torch.allclose(collided.nears, torch.full((3, 1), 1.2)), mode
        assert torch.allclose(collided.fars, torch.full((3, 1), 7.9)), mode
