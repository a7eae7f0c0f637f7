"""inr-mesh: density meshes from nerfstudio fields (analytic balls) and from a tiny trained run."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import trimesh
from nerfstudio.field_components.field_heads import FieldHeadNames
from nerfstudio.fields.base_field import Field

from nerf_inr_methods.nerfstudio_plugin import export_mesh as em

CENTER = (0.1, -0.2, 0.05)
RADIUS = 0.5


class BallField(Field):
    """Analytic nerfstudio field: density ``peak`` inside a ball (hard step, or a sigmoid of width ``width``) and
    colour ``(d + 1) / 2`` of the view direction ``d``, so the colour shows which way the point was looked at."""

    def __init__(self, peak: float = 1e4, width: float | None = None) -> None:
        super().__init__()
        self.peak, self.width = peak, width
        self.register_buffer("center", torch.tensor(CENTER))

    def get_density(self, ray_samples):
        dist = (ray_samples.frustums.get_positions() - self.center).norm(dim=-1, keepdim=True)
        if self.width is None:
            density = torch.where(dist < RADIUS, self.peak, 0.0)
        else:
            density = self.peak * torch.sigmoid((RADIUS - dist) / self.width)
        return density, torch.zeros_like(dist)

    def get_outputs(self, ray_samples, density_embedding=None):
        return {FieldHeadNames.RGB: (ray_samples.frustums.directions + 1.0) / 2.0}


def test_point_samples_put_positions_exactly_at_points() -> None:
    points = torch.rand(7, 3)
    samples = em.point_samples(points)
    assert torch.equal(samples.frustums.get_positions(), points)
    assert samples.camera_indices.shape == (7, 1) and samples.frustums.starts.shape == (7, 1)


def test_ball_density_gives_sphere_within_one_voxel() -> None:
    result = em.extract_field_mesh(BallField(), (-1, -1, -1), (1, 1, 1), resolution=41, chunk_size=5000)
    voxel = 2.0 / 40
    assert result.resolution == (41, 41, 41) and result.voxel == pytest.approx(voxel)
    assert result.threshold == pytest.approx(math.log(2.0) / voxel)  # default: one voxel 50% opaque
    radii = np.linalg.norm(result.mesh.vertices - np.asarray(CENTER), axis=-1)
    assert np.abs(radii - RADIUS).max() <= voxel
    assert abs(radii.mean() - RADIUS) < 0.5 * voxel
    assert result.mesh.is_watertight and result.mesh.volume > 0  # closed, outward normals


def test_vertex_colours_view_the_surface_along_the_normal() -> None:
    field = BallField(width=0.01)
    result = em.extract_field_mesh(field, (-1, -1, -1), (1, 1, 1), resolution=25, vertex_colors=True)
    verts = result.mesh.vertices
    outward = (verts - np.asarray(CENTER)) / np.linalg.norm(verts - np.asarray(CENTER), axis=-1, keepdims=True)
    expected = (1.0 - outward) / 2.0  # view direction = -normal
    colours = np.asarray(result.mesh.visual.vertex_colors)[:, :3] / 255.0
    assert np.abs(colours - expected).max() < 2.0 / 255.0


def test_threshold_choices_and_errors() -> None:
    assert em.opacity_threshold(0.1) == pytest.approx(math.log(2.0) / 0.1)
    assert em.opacity_threshold(0.1, 0.9) == pytest.approx(math.log(10.0) / 0.1)
    field = BallField(width=0.05)
    fixed = em.extract_field_mesh(field, (-1, -1, -1), (1, 1, 1), resolution=17, threshold=5e3)
    assert fixed.threshold == 5e3  # sigmoid = 0.5: the ball's radius
    radii = np.linalg.norm(fixed.mesh.vertices - np.asarray(CENTER), axis=-1)
    assert abs(radii.mean() - RADIUS) < 2.0 / 16
    occupancy = em.extract_field_mesh(field, (-1, -1, -1), (1, 1, 1), resolution=17, occupancy=0.1)
    assert occupancy.occupied_fraction == pytest.approx(0.1, abs=0.01)
    with pytest.raises(ValueError, match="at most one"):
        em.extract_field_mesh(field, (-1, -1, -1), (1, 1, 1), resolution=9, threshold=1.0, occupancy=0.1)
    with pytest.raises(ValueError, match="opacity"):
        em.opacity_threshold(0.1, 1.0)
    with pytest.raises(ValueError, match="never crosses.*--occupancy"):
        em.extract_field_mesh(field, (-1, -1, -1), (1, 1, 1), resolution=9, threshold=1e5)


def test_cubic_resolution_keeps_voxels_cubic() -> None:
    assert em.cubic_resolution((0, 0, 0), (2, 1, 0.5), 21) == (21, 11, 6)
    res = em.cubic_resolution((0, 0, 0), (2, 1, 0.5), 21)
    assert em.voxel_size((0, 0, 0), (2, 1, 0.5), res) == pytest.approx(0.1)
    with pytest.raises(ValueError, match="resolution"):
        em.cubic_resolution((0, 0, 0), (1, 1, 1), 1)


def test_original_coordinates_invert_the_dataparser_transform(tmp_path: Path) -> None:
    angle = 0.7
    rot = np.array([[math.cos(angle), -math.sin(angle), 0], [math.sin(angle), math.cos(angle), 0], [0, 0, 1.0]])
    transform = np.concatenate([rot, [[0.3], [-1.0], [2.0]]], axis=1)
    scale = 0.25
    path = tmp_path / "dataparser_transforms.json"
    path.write_text(json.dumps({"transform": transform.tolist(), "scale": scale}))
    matrix = em.original_from_nerfstudio(path)
    original = np.random.default_rng(0).normal(size=(5, 3))
    model = scale * (original @ transform[:, :3].T + transform[:, 3])  # what the dataparser did
    np.testing.assert_allclose(model @ matrix[:3, :3].T + matrix[:3, 3], original, atol=1e-12)
    # a ball of radius RADIUS in model units is a ball of radius RADIUS / scale in the dataset's units
    result = em.extract_field_mesh(BallField(), (-1, -1, -1), (1, 1, 1), resolution=33, transform=matrix)
    center = (matrix @ np.append(CENTER, 1.0))[:3]
    radii = np.linalg.norm(result.mesh.vertices - center, axis=-1)
    assert np.abs(radii - RADIUS / scale).max() <= (2.0 / 32) / scale
    assert result.mesh.volume > 0
    path.write_text(json.dumps({"transform": transform.tolist()}))
    with pytest.raises(ValueError, match="scale"):
        em.original_from_nerfstudio(path)


def test_field_of_prefers_the_fine_field() -> None:
    model = torch.nn.Module()
    model.field_coarse, model.field_fine = BallField(), BallField()
    assert em.field_of(model) is model.field_fine
    assert em.field_of(model, "field_coarse") is model.field_coarse
    single = torch.nn.Module()
    single.field = BallField()
    assert em.field_of(single) is single.field
    with pytest.raises(ValueError, match="'nope'.*\\['field'\\]"):
        em.field_of(single, "nope")


def test_cli_help_and_missing_config(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    import tyro

    with pytest.raises(SystemExit):
        tyro.cli(em.ExportMesh, args=["--help"])
    help_text = capsys.readouterr().out
    assert "--load-config" in help_text and "--opacity" in help_text and "--occupancy" in help_text
    with pytest.raises(FileNotFoundError, match="load-config"):
        em.ExportMesh(load_config=tmp_path / "missing.yml").main()


@pytest.mark.slow
def test_mesh_from_tiny_trained_run(tiny_scene: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from nerf_inr_methods.nerfstudio_plugin.runs import prepare_config, train

    monkeypatch.setenv("NIM_LPIPS", "off")
    overrides = {
        "pipeline.model.num_coarse_samples": 8,
        "pipeline.model.num_importance_samples": 8,
        "pipeline.datamanager.train_num_rays_per_batch": 64,
    }
    config_path = train(prepare_config("inr-nerf", tiny_scene, tmp_path / "out", steps=3, overrides=overrides))
    assert (config_path.parent / "dataparser_transforms.json").is_file()
    out = tmp_path / "mesh.ply"
    # A 3-step run's density is nearly flat: the occupancy rule still gives a surface (the default may not).
    command = em.ExportMesh(load_config=config_path, output_path=out, resolution=20, occupancy=0.05, chunk_size=2000)
    assert command.main() == out
    mesh = trimesh.load(out, process=False)
    assert len(mesh.faces) > 0 and len(mesh.vertices) > 0
    assert np.all(mesh.vertices >= -1.5 - 1e-6) and np.all(mesh.vertices <= 1.5 + 1e-6)  # Blender scene box
    colours = np.asarray(mesh.visual.vertex_colors)
    assert colours.shape == (len(mesh.vertices), 4) and colours.dtype == np.uint8


def test_uniformly_sampled_models_set_the_opacity_segment() -> None:
    """gauss-nerf renders from 32 uniform samples over near 2 .. far 6: its walls are opaque over 0.125, not over a
    128-grid voxel, so the default level is ln 2 / 0.125; hierarchical models keep the voxel."""
    from types import SimpleNamespace

    def model(**config):
        return SimpleNamespace(config=SimpleNamespace(collider_params={"near_plane": 2.0, "far_plane": 6.0}, **config))

    assert em.uniform_sample_interval(model(hierarchical_sampling=False, num_coarse_samples=32)) == 0.125
    assert em.uniform_sample_interval(model(hierarchical_sampling=True, num_coarse_samples=32)) is None
    assert em.uniform_sample_interval(model(num_coarse_samples=64)) is None  # vanilla-nerf: no such switch
    field = BallField(width=0.05, peak=20.0)  # densities below the voxel rule's ln 2 / (2 / 16) = 5.5 ... 20
    coarse = em.extract_field_mesh(field, (-1, -1, -1), (1, 1, 1), resolution=17, sample_interval=1.0)
    assert coarse.threshold == pytest.approx(math.log(2.0)) and coarse.segment == 1.0
    assert em.extract_field_mesh(field, (-1, -1, -1), (1, 1, 1), resolution=17, sample_interval=0.01).threshold == (
        pytest.approx(math.log(2.0) / coarse.voxel)
    )
