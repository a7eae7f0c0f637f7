"""Tests of nerf_inr_methods.mesh: chunked grid evaluation, marching cubes, transforms, colours, export."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import trimesh

from nerf_inr_methods import mesh as meshlib

RADIUS = 0.3


def sphere_sdf(points: np.ndarray) -> np.ndarray:
    """Signed distance to a sphere of radius RADIUS at the origin (negative inside)."""
    return np.linalg.norm(points, axis=-1) - RADIUS


def test_sphere_sdf_extracts_sphere_with_right_radius() -> None:
    mesh = meshlib.extract_mesh(sphere_sdf, resolution=48, level=0.0, inside="below", chunk_size=5000)
    radii = np.linalg.norm(mesh.vertices, axis=-1)
    assert abs(radii.mean() - RADIUS) < 2e-3
    assert radii.max() - radii.min() < 5e-3
    assert mesh.is_watertight
    # Outward normals: positive enclosed volume close to the ball's.
    assert mesh.volume == pytest.approx(4.0 / 3.0 * np.pi * RADIUS**3, rel=0.02)


def test_inside_above_gives_same_surface_and_orientation() -> None:
    below = meshlib.extract_mesh(sphere_sdf, resolution=24, inside="below")
    above = meshlib.extract_mesh(lambda p: -sphere_sdf(p), resolution=24, inside="above")
    assert above.volume > 0
    assert above.volume == pytest.approx(below.volume, rel=1e-6)


def test_level_selects_iso_surface() -> None:
    mesh = meshlib.extract_mesh(sphere_sdf, resolution=32, level=0.1)
    assert np.linalg.norm(mesh.vertices, axis=-1).mean() == pytest.approx(RADIUS + 0.1, abs=3e-3)


def test_chunk_size_does_not_change_volume() -> None:
    calls: list[int] = []

    def fn(p: np.ndarray) -> np.ndarray:
        calls.append(len(p))
        return sphere_sdf(p)

    small = meshlib.evaluate_grid(fn, resolution=(10, 11, 12), chunk_size=97)
    assert max(calls) <= 97 and sum(calls) == 10 * 11 * 12
    big = meshlib.evaluate_grid(sphere_sdf, resolution=(10, 11, 12), chunk_size=10**6)
    np.testing.assert_array_equal(small, big)
    ax = meshlib.grid_axes(resolution=(10, 11, 12))
    assert small[3, 4, 5] == pytest.approx(sphere_sdf(np.array([ax[0][3], ax[1][4], ax[2][5]])), abs=1e-6)


def test_box_and_transform_map_vertices() -> None:
    center = np.array([1.0, -2.0, 0.5])
    fn = lambda p: np.linalg.norm(p - center, axis=-1) - 0.2  # noqa: E731
    mesh = meshlib.extract_mesh(fn, center - 0.3, center + 0.3, resolution=32)
    assert np.linalg.norm(mesh.vertices - center, axis=-1).mean() == pytest.approx(0.2, abs=2e-3)
    mat = np.diag([2.0, 2.0, 2.0, 1.0])
    mat[:3, 3] = [5.0, 0.0, 0.0]
    out = meshlib.extract_mesh(sphere_sdf, resolution=32, transform=mat)
    assert np.linalg.norm(out.vertices - [5.0, 0.0, 0.0], axis=-1).mean() == pytest.approx(2 * RADIUS, abs=4e-3)
    mirrored = meshlib.extract_mesh(sphere_sdf, resolution=24, transform=np.diag([-1.0, 1.0, 1.0, 1.0]))
    assert mirrored.volume > 0  # faces flipped with the mirror


def test_vertex_colors_callback_in_box_coordinates() -> None:
    seen: list[np.ndarray] = []

    def color(p: np.ndarray) -> np.ndarray:
        seen.append(p)
        return np.clip(p + 0.5, 0, 1)

    mesh = meshlib.extract_mesh(sphere_sdf, resolution=16, vertex_color_fn=color, transform=np.diag([3.0, 3, 3, 1]))
    cols = np.asarray(mesh.visual.vertex_colors)
    assert cols.shape == (len(mesh.vertices), 4) and cols.dtype == np.uint8
    assert np.abs(np.concatenate(seen)).max() <= 0.5 + 1e-6  # called with box (not transformed) coordinates
    with pytest.raises(ValueError, match="vertex_color_fn"):
        meshlib.extract_mesh(sphere_sdf, resolution=16, vertex_color_fn=lambda p: np.zeros((len(p), 2)))


def test_torch_field_and_torch_outputs() -> None:
    net = torch.nn.Linear(3, 1)
    with torch.no_grad():
        net.weight.copy_(torch.tensor([[1.0, 0.0, 0.0]]))
        net.bias.zero_()
    mesh = meshlib.extract_mesh(meshlib.torch_field(net), resolution=8, inside="below")
    np.testing.assert_allclose(mesh.vertices[:, 0], 0.0, atol=1e-6)  # plane x = 0
    vol = meshlib.evaluate_grid(lambda p: torch.from_numpy(p[:, 1:2]), resolution=4)  # torch (n, 1) output
    assert vol.shape == (4, 4, 4)


def test_export_roundtrip_and_errors(tmp_path) -> None:
    mesh = meshlib.extract_mesh(sphere_sdf, resolution=16)
    for suffix in (".ply", ".obj"):
        path = meshlib.export_mesh(mesh, tmp_path / f"sphere{suffix}")
        back = trimesh.load(path, force="mesh")
        assert len(back.faces) == len(mesh.faces)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary leftovers
    with pytest.raises(ValueError, match="unsupported mesh format"):
        meshlib.export_mesh(mesh, tmp_path / "sphere.xyz")
    with pytest.raises(ValueError, match="empty"):
        meshlib.export_mesh(trimesh.Trimesh(), tmp_path / "empty.ply")


def test_bad_arguments_raise_clear_errors() -> None:
    with pytest.raises(ValueError, match="never crosses"):
        meshlib.extract_mesh(lambda p: np.ones(len(p)), resolution=8)
    with pytest.raises(ValueError, match="resolution"):
        meshlib.extract_mesh(sphere_sdf, resolution=1)
    with pytest.raises(ValueError, match="bounds_max"):
        meshlib.extract_mesh(sphere_sdf, (0, 0, 0), (1, -1, 1), resolution=8)
    with pytest.raises(ValueError, match="one value per point"):
        meshlib.evaluate_grid(lambda p: np.zeros(3), resolution=4)
    with pytest.raises(ValueError, match="inside"):
        meshlib.extract_mesh(sphere_sdf, resolution=8, inside="outside")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="transform"):
        meshlib.extract_mesh(sphere_sdf, resolution=8, transform=np.eye(3))
    with pytest.raises(ValueError, match="chunk_size"):
        meshlib.evaluate_grid(sphere_sdf, resolution=4, chunk_size=0)


def test_grid_progress_bar_with_eta_only_when_asked_or_on_a_terminal(capfd) -> None:
    volume = meshlib.evaluate_grid(sphere_sdf, resolution=16, chunk_size=512, progress=True, description="grid")
    err = capfd.readouterr().err
    assert "grid:" in err and "/4.10k" in err and "<" in err  # tqdm: done/total points, elapsed<remaining (ETA)
    quiet = meshlib.evaluate_grid(sphere_sdf, resolution=16, chunk_size=512, progress=False)
    auto = meshlib.evaluate_grid(sphere_sdf, resolution=16, chunk_size=512)  # stderr is not a terminal here
    assert capfd.readouterr().err == ""
    np.testing.assert_array_equal(quiet, volume)
    np.testing.assert_array_equal(auto, volume)


def test_grids_larger_than_the_memory_are_refused_before_any_work() -> None:
    calls = []
    with pytest.raises(ValueError, match=r"resolution 100000: the grid needs about .* PiB"):
        meshlib.extract_mesh(lambda p: calls.append(1) or sphere_sdf(p), resolution=100000)
    assert calls == []
