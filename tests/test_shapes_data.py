"""Tests of the shape trainer's data preparation and metrics (nerf_inr_methods.shapes.data / metrics)."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import trimesh

from nerf_inr_methods.shapes import data, metrics


@pytest.fixture
def torus_path(tmp_path: Path) -> Path:
    """A watertight, non-convex mesh away from the origin and not unit-sized (input coordinates matter)."""
    mesh = trimesh.creation.torus(3.0, 1.0, major_sections=48, minor_sections=24)
    mesh.apply_translation([10.0, -4.0, 2.0])
    path = tmp_path / "torus.obj"
    mesh.export(path)
    return path


def test_signs_agree_with_trimesh_contains_on_watertight_mesh(torus_path: Path) -> None:
    shape = data.prepare_shape(torus_path)
    assert shape.watertight
    rng = np.random.default_rng(0)
    pts = data.sample_points(shape.sdf, 4000, data.SamplingConfig(), rng)
    sdf = shape.sdf.signed_distance(pts)
    inside = shape.unit_mesh.contains(pts)
    far = np.abs(sdf) > 1e-4  # ray tests are ill-posed for points on the surface itself
    assert far.mean() > 0.8
    assert np.mean((sdf[far] < 0) == inside[far]) > 0.999
    assert np.all(shape.sdf.contains(pts[far]) == (sdf[far] < 0))
    assert 0.05 < inside.mean() < 0.95  # both signs present


def test_signed_distance_magnitude_matches_trimesh(torus_path: Path) -> None:
    shape = data.prepare_shape(torus_path)
    pts = (np.random.default_rng(1).random((300, 3)) - 0.5).astype(np.float32)
    ours = shape.sdf.signed_distance(pts)
    ref = -trimesh.proximity.signed_distance(shape.unit_mesh, pts)  # trimesh: positive inside
    np.testing.assert_allclose(ours, ref, atol=1e-5)


def test_normalization_roundtrip_and_unit_box(torus_path: Path) -> None:
    shape = data.prepare_shape(torus_path, fill=0.9)
    lo, hi = shape.unit_mesh.bounds
    assert (hi - lo).max() == pytest.approx(0.9)
    np.testing.assert_allclose((lo + hi) / 2, 0.0, atol=1e-9)
    norm = shape.normalization
    np.testing.assert_allclose(norm.from_unit(shape.unit_mesh.vertices), shape.mesh.vertices, atol=1e-9)
    mat = norm.unit_to_input_matrix()
    homog = np.c_[shape.unit_mesh.vertices, np.ones(len(shape.unit_mesh.vertices))]
    np.testing.assert_allclose((homog @ mat.T)[:, :3], shape.mesh.vertices, atol=1e-9)


def test_sample_points_mixture_and_determinism(torus_path: Path) -> None:
    shape = data.prepare_shape(torus_path)
    cfg = data.SamplingConfig(0.25, 0.5, 0.25, "gaussian", 0.1, 0.001)
    a = data.sample_points(shape.sdf, 1000, cfg, np.random.default_rng(3))
    b = data.sample_points(shape.sdf, 1000, cfg, np.random.default_rng(3))
    np.testing.assert_array_equal(a, b)
    assert a.shape == (1000, 3) and a.dtype == np.float32
    assert np.all(a >= -0.5) and np.all(a < 0.5)
    assert cfg.counts(1000) == (250, 500, 250)
    fine = np.abs(shape.sdf.signed_distance(a[250:750]))
    assert np.median(fine) < 0.005  # fine noise stays near the surface
    with pytest.raises(ValueError, match="sum to 1"):
        data.SamplingConfig(0.5, 0.5, 0.5)
    with pytest.raises(ValueError, match="noise"):
        data.SamplingConfig(noise="uniform")  # type: ignore[arg-type]


def test_outward_normals(torus_path: Path) -> None:
    shape = data.prepare_shape(torus_path)
    pts, face = shape.sdf.sample_surface_with_faces(500, np.random.default_rng(0))
    nrm = shape.sdf.outward_normals()[face]
    assert np.mean(shape.sdf.signed_distance(pts + 0.01 * nrm) > 0) > 0.99


def test_morton_groups_are_spatially_contiguous() -> None:
    pts = data.voxel_centers(8)  # 512 points
    order = data.morton_order(pts, bits=3)
    assert sorted(order.tolist()) == list(range(512))
    groups = pts[order].reshape(-1, 8, 3)  # consecutive runs of 8 = 2x2x2 blocks
    extents = groups.max(axis=1) - groups.min(axis=1)
    np.testing.assert_allclose(extents, 1.0 / 8, atol=1e-6)
    with pytest.raises(ValueError, match="bits"):
        data.morton_codes(pts, bits=0)


def test_missing_file_raises(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nope.obj"):
        data.load_mesh(tmp_path / "nope.obj")


def test_unknown_format_raises(tmp_path: Path) -> None:
    path = tmp_path / "shape.xyz"
    path.write_text("0 0 0\n")
    with pytest.raises(ValueError, match=r"unknown mesh format '\.xyz'.*\.obj"):
        data.load_mesh(path)


def test_empty_mesh_raises(tmp_path: Path) -> None:
    path = tmp_path / "empty.obj"
    path.write_text("# no geometry\n")
    with pytest.raises(ValueError, match="empty"):
        data.load_mesh(path)
    points_only = tmp_path / "points.obj"
    points_only.write_text("v 0 0 0\nv 1 0 0\nv 0 1 0\n")
    with pytest.raises(ValueError, match="empty|triangle"):
        data.load_mesh(points_only)


def test_corrupt_file_raises(tmp_path: Path) -> None:
    path = tmp_path / "bad.ply"
    path.write_bytes(b"ply\nformat binary_little_endian 1.0\nelement vertex 10\n\x00\x01garbage")
    with pytest.raises(ValueError, match="bad.ply"):
        data.load_mesh(path)


def test_non_watertight_warns_or_errors(tmp_path: Path) -> None:
    mesh = trimesh.creation.icosphere(subdivisions=2)
    mesh.update_faces(np.arange(len(mesh.faces)) != 0)  # punch a hole
    path = tmp_path / "holey.ply"
    mesh.export(path)
    with pytest.warns(data.NonWatertightMeshWarning, match="not watertight"):
        shape = data.prepare_shape(path)
    assert not shape.watertight
    # Fallback: robust ray-casting vote still finds the centre inside and far points outside.
    assert shape.sdf.contains(np.array([[0.0, 0.0, 0.0], [0.49, 0.49, 0.49]])).tolist() == [True, False]
    with pytest.raises(ValueError, match="not watertight"):
        data.prepare_shape(path, non_watertight="error")


def test_iou_and_chamfer(torus_path: Path) -> None:
    a = np.zeros((4, 4, 4), bool)
    b = np.zeros((4, 4, 4), bool)
    a[:2] = True
    b[1:3] = True
    assert metrics.iou(a, b) == pytest.approx(16 / 48)
    assert metrics.iou(a, a) == 1.0
    with pytest.raises(ValueError, match="same shape"):
        metrics.iou(a, b[:2])
    small = trimesh.creation.icosphere(subdivisions=4, radius=0.3)
    large = trimesh.creation.icosphere(subdivisions=4, radius=0.32)
    assert metrics.chamfer_distance(small, small, 2000)["chamfer_l1"] < 1e-6
    assert metrics.chamfer_distance(small, large, 2000)["chamfer_l1"] == pytest.approx(0.02, rel=0.05)
    shape = data.prepare_shape(torus_path)
    truth = metrics.reference_inside_grid(shape.sdf, 16)
    assert truth.shape == (16, 16, 16)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        inside = metrics.inside_grid(lambda p: shape.sdf.signed_distance(p) < 0, 16)
    assert metrics.iou(inside, truth) > 0.99
