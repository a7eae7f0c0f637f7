"""Tiny end-to-end runs of the shape trainer: each optimizer and switch, run folder, checkpoints, CLI, DDP."""

from __future__ import annotations

import json
import math
import shutil
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import trimesh

from nerf_inr_methods.core.esgd import ESGDConfig
from nerf_inr_methods.shapes import cli, train
from nerf_inr_methods.shapes.config import (
    DerivativeOptions,
    IgaOptions,
    IntOptions,
    ShapeFitConfig,
    config_to_dict,
    resolve_config,
)


@pytest.fixture(scope="module")
def torus_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    mesh = trimesh.creation.torus(2.0, 0.8, major_sections=32, minor_sections=16)
    mesh.apply_translation([5.0, 1.0, -3.0])
    path = tmp_path_factory.mktemp("mesh") / "torus.off"
    mesh.export(path)
    return path


def tiny(torus_path: Path, out: Path, **kw) -> ShapeFitConfig:
    """A run of a few steps of a 2x16 MLP on a few hundred points, evaluated at 16^3."""
    base = dict(mesh=torus_path, output_dir=out, run_name="run", progress=False, num_threads=1, chunk_size=1000)
    base |= dict(width=16, depth=2, steps=6, batch_size=512, pool_size=1024, eval_every=3, checkpoint_every=3)
    base |= dict(eval_iou_resolution=8, iou_resolution=16, mesh_resolution=16, chamfer_samples=500)
    base.update(kw)
    return ShapeFitConfig(**base)


def check_run(metrics: dict, run_dir: Path, steps: int = 6) -> None:
    assert 0.0 <= metrics["iou"] <= 1.0
    assert math.isfinite(metrics["final_loss"])
    assert metrics["protocol"] in ("int", "iga", "esgd")
    saved = json.loads((run_dir / "metrics.json").read_text())
    assert saved["iou"] == pytest.approx(metrics["iou"])
    assert json.loads((run_dir / "config.json").read_text())["steps"] == steps
    assert (run_dir / "checkpoints" / "final.pt").exists()


VARIANTS = {
    "adam-fresh": dict(),
    "adam-pool": dict(points="pool"),
    "esgd": dict(optimizer="esgd", activation="gaussian", points="pool"),
    "esgd-gradient-ablation": dict(optimizer="esgd", points="pool", esgd=ESGDConfig(hvp_source="gradient")),
    "lbfgs": dict(optimizer="lbfgs", points="full"),
    "int": dict(points="full", int_selection=IntOptions(enabled=True, max_interval=2)),
    "int-random": dict(points="full", int_selection=IntOptions(enabled=True, random_subset=True)),
    "int-fresh": dict(int_selection=IntOptions(enabled=True)),
    "iga-pool": dict(points="pool", iga=IgaOptions(enabled=True, group_size=32, groups_per_step=8, end=3)),
    "iga-pool-sorted": dict(points="pool", iga=IgaOptions(enabled=True, group_size=64, end=3, pool_groups="sorted")),
    "iga-fresh": dict(iga=IgaOptions(enabled=True, group_size=64, end=3)),
    "iga-identity-full": dict(points="full", iga=IgaOptions(enabled=True, group_size=128, identity=True)),
    "iga-esgd": dict(optimizer="esgd", points="pool", iga=IgaOptions(enabled=True, group_size=32, groups_per_step=8)),
    "eikonal": dict(derivative=DerivativeOptions(kind="eikonal", num_points=64)),
    "normal-ntk-trace": dict(
        derivative=DerivativeOptions(
            kind="normal", weight_from="ntk-trace", num_points=64, trace_points=8, trace_every=3
        )
    ),
    "relu-pe": dict(activation="relu", pe_frequencies=4, points="pool"),
    "protocol-iga": dict(
        protocol="iga", voxel_resolution=16, iga=IgaOptions(enabled=True, group_size=32, groups_per_step=4)
    ),
    "protocol-esgd": dict(protocol="esgd"),
    "lr-decay": dict(lr_final_factor=0.1, points="pool"),
}


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_each_optimizer_and_switch_runs(torus_path: Path, tmp_path: Path, name: str) -> None:
    cfg = tiny(torus_path, tmp_path, **VARIANTS[name])
    result = train.train_shape(cfg)
    check_run(result.metrics, result.run_dir)
    if name.startswith("int") and name != "int-random":
        assert result.metrics["points_scored"] > 0
        assert result.metrics["points_trained"] < 6 * (512 if name == "int-fresh" else 1024)
    if name == "int-random":
        assert result.metrics["points_scored"] == 0
    if name == "protocol-iga":
        assert result.metrics["task"] == "occupancy" and result.metrics["points_trained"] == 6 * 4 * 32


def test_iga_sorted_pool_batch_is_the_plain_batch_in_morton_order(torus_path: Path, tmp_path: Path) -> None:
    from nerf_inr_methods.shapes.data import morton_codes, prepare_shape

    shape = prepare_shape(torus_path)
    plain = resolve_config(tiny(torus_path, tmp_path, points="pool", pool_size=2048, batch_size=512))
    sorted_cfg = replace(plain, iga=IgaOptions(enabled=True, group_size=64, pool_groups="sorted"))
    contiguous_cfg = replace(plain, iga=IgaOptions(enabled=True, group_size=64, groups_per_step=8))
    x_plain, y_plain = train.PointSource(shape, plain).batch(0)
    x_sorted, y_sorted = train.PointSource(shape, sorted_cfg).batch(0)
    x_contig, _ = train.PointSource(shape, contiguous_cfg).batch(0)
    assert x_sorted.shape == x_plain.shape == x_contig.shape == (512, 3)
    # Same points and targets as the plain batch (same pool, same draw), in Morton order.
    key = lambda x: sorted(map(tuple, x.tolist()))  # noqa: E731
    assert key(x_sorted) == key(x_plain)
    torch.testing.assert_close(torch.sort(y_sorted.reshape(-1)).values, torch.sort(y_plain.reshape(-1)).values)
    codes = morton_codes(x_sorted.numpy(), sorted_cfg.iga.morton_bits)
    assert np.all(np.diff(codes.astype(np.int64)) >= 0)
    # Whole contiguous groups cover a smaller part of the box than a random batch.
    assert x_contig.std(0).mean() < x_sorted.std(0).mean()


def test_iga_identity_on_sorted_pool_batches_trains_like_adam(torus_path: Path, tmp_path: Path) -> None:
    kw = dict(points="pool", pool_size=2048, batch_size=512, steps=5, eval_every=0, mesh_resolution=0)
    plain = train.train_shape(tiny(torus_path, tmp_path / "plain", **kw))
    iga = IgaOptions(enabled=True, group_size=64, pool_groups="sorted", identity=True)
    same = train.train_shape(tiny(torus_path, tmp_path / "identity", iga=iga, **kw))
    for p, q in zip(plain.model.parameters(), same.model.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-5)


def test_run_folder_checkpoints_mesh_in_input_coordinates(torus_path: Path, tmp_path: Path) -> None:
    cfg = tiny(torus_path, tmp_path, steps=40, points="pool", lr=1e-3, mesh_resolution=24, iou_resolution=24)
    result = train.train_shape(cfg)
    run = result.run_dir
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == [
        "final.pt",
        *[f"step_{s:07d}.pt" for s in range(3, 40, 3)],
    ]
    assert not [p for p in run.rglob(".*")]  # no temporary files left
    curve = result.metrics["eval_curve"]
    assert [c["step"] for c in curve][:2] == [3, 6] and "iou_8" in curve[0]
    # Mesh exported in the input's coordinates (torus centred at (5, 1, -3), outer radius 2.8).
    exported = trimesh.load(result.metrics["mesh_path"], force="mesh")
    box = trimesh.load(torus_path, force="mesh").bounds
    assert np.all(exported.bounds[0] > box[0] - 1.0) and np.all(exported.bounds[1] < box[1] + 1.0)
    # Checkpoint restores the same network.
    loaded = train.load_checkpoint(run / "checkpoints" / "final.pt")
    x = torch.rand(50, 3) - 0.5
    torch.testing.assert_close(loaded.model(x), result.model(x))
    assert loaded.step == 40 and loaded.inside == "below" and loaded.level == 0.0


def test_failed_run_keeps_finished_checkpoints(torus_path: Path, tmp_path: Path, monkeypatch) -> None:
    cfg = tiny(torus_path, tmp_path, steps=9, points="pool")

    def boom(model, done):
        if done == 6:  # during the step-6 evaluation, before that step's checkpoint (written after it)
            raise RuntimeError("simulated crash")
        return {}

    cfg = replace(cfg, eval_every=0, checkpoint_every=2)
    with pytest.raises(RuntimeError, match="simulated crash"):
        train.train_shape(cfg, eval_callback=boom)
    ckpts = tmp_path / "run" / "checkpoints"
    names = sorted(p.name for p in ckpts.iterdir())
    assert names == ["interrupted.pt", "step_0000002.pt", "step_0000004.pt"]
    assert train.load_checkpoint(ckpts / "step_0000004.pt").step == 4
    assert train.load_checkpoint(ckpts / "interrupted.pt").step == 6
    # A crash while writing a checkpoint leaves the previous one intact and no partial file.
    real_save = torch.save

    def failing_save(obj, f, *a, **k):
        real_save(obj, f, *a, **k)
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", failing_save)
    with pytest.raises(OSError, match="disk full"):
        train.atomic_torch_save({"x": 1}, ckpts / "step_0000004.pt")
    monkeypatch.setattr(torch, "save", real_save)
    assert train.load_checkpoint(ckpts / "step_0000004.pt").step == 4
    assert not [p for p in ckpts.iterdir() if p.name.startswith(".")]


def test_config_errors_name_the_flag(torus_path: Path, tmp_path: Path) -> None:
    bad = {
        "--points full": dict(optimizer="lbfgs", points="pool"),
        "cannot be combined": dict(int_selection=IntOptions(enabled=True), iga=IgaOptions(enabled=True)),
        "--loss mse": dict(protocol="esgd", iga=IgaOptions(enabled=True)),
        "--task occupancy": dict(loss="bce"),
        "--point-set voxels": dict(point_set="voxels", points="fresh"),
        "sum to 1": dict(uniform_fraction=0.5),
        "--lr": dict(lr=-1.0),
        "ntk-trace": dict(derivative=DerivativeOptions(kind="eikonal", weight_from="ntk-trace")),
        "--num-processes": dict(optimizer="esgd", num_processes=2),
        "--steps": dict(steps=0),
        "random-subset": dict(int_selection=IntOptions(random_subset=True)),
        # choices given from Python (tyro refuses them on the command line)
        "--task must be one of sdf, occupancy": dict(task="volume"),
        "--iga.pool-groups must be one of": dict(iga=IgaOptions(pool_groups="shuffled")),
        "--esgd.hvp-source must be one of": dict(optimizer="esgd", esgd=ESGDConfig(hvp_source="fisher")),
    }
    for match, kw in bad.items():
        with pytest.raises(ValueError, match=match):
            resolve_config(tiny(torus_path, tmp_path, **kw))


def test_protocol_defaults_are_resolved(torus_path: Path, tmp_path: Path) -> None:
    int_cfg = resolve_config(ShapeFitConfig(mesh=torus_path))
    assert (int_cfg.task, int_cfg.loss, int_cfg.activation, int_cfg.optimizer, int_cfg.lr) == (
        "sdf",
        "mse",
        "siren",
        "adam",
        1e-4,
    )
    assert (int_cfg.noise, int_cfg.coarse_scale, int_cfg.fine_scale, int_cfg.batch_size) == (
        "laplace",
        0.1,
        1e-3,
        50_000,
    )
    esgd = resolve_config(ShapeFitConfig(mesh=torus_path, protocol="esgd"))
    assert (esgd.task, esgd.loss, esgd.activation, esgd.optimizer, esgd.lr, esgd.noise) == (
        "occupancy",
        "bce",
        "gaussian",
        "esgd",
        4.0,
        "gaussian",
    )
    official = ShapeFitConfig(mesh=torus_path, protocol="esgd", esgd=ESGDConfig(recipe="official"))
    assert resolve_config(official).lr == 0.15, "the official recipe keeps the paper's lr"
    iga = resolve_config(ShapeFitConfig(mesh=torus_path, protocol="iga", activation="relu"))
    assert (iga.point_set, iga.iga.end, iga.batch_size) == ("voxels", 7, 512 * 256)


def test_cli_fit_extract_and_bad_input(torus_path: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    args = ["inr-shape", "fit", "--mesh", str(torus_path), "--output-dir", str(tmp_path), "--run-name", "cli"]
    args += ["--width", "16", "--depth", "2", "--steps", "3", "--batch-size", "256", "--iou-resolution", "12"]
    args += ["--mesh-resolution", "12", "--chamfer-samples", "200", "--eval-every", "0", "--no-progress"]
    args += ["--int-selection.enabled", "--mesh-format", "obj"]
    monkeypatch.setattr(sys, "argv", args)
    cli.entrypoint()
    out = capsys.readouterr().out
    assert '"protocol": "int"' in out and (tmp_path / "cli" / "mesh.obj").exists()
    ckpt = tmp_path / "cli" / "checkpoints" / "final.pt"
    monkeypatch.setattr(sys, "argv", ["inr-shape", "extract", "--checkpoint", str(ckpt), "--resolution", "10"])
    cli.entrypoint()
    assert (tmp_path / "cli" / "mesh_10.ply").exists()
    for bad_args, message in (
        (["fit", "--mesh", str(tmp_path / "missing.obj"), "--output-dir", str(tmp_path)], "missing.obj does not exist"),
        (
            ["fit", "--mesh", str(tmp_path / "cli" / "config.json"), "--output-dir", str(tmp_path)],
            "unknown mesh format",
        ),
        (["extract", "--checkpoint", str(tmp_path / "cli" / "config.json")], "not a checkpoint"),
        (["extract", "--checkpoint", str(tmp_path / "nope.pt")], "nope.pt does not exist"),
    ):
        monkeypatch.setattr(sys, "argv", ["inr-shape", *bad_args])
        with pytest.raises(SystemExit) as exc:
            cli.entrypoint()
        assert exc.value.code == 2
        assert message in capsys.readouterr().err
    empty = tmp_path / "empty.obj"
    empty.write_text("# nothing\n")
    monkeypatch.setattr(sys, "argv", ["inr-shape", "fit", "--mesh", str(empty), "--output-dir", str(tmp_path)])
    with pytest.raises(SystemExit):
        cli.entrypoint()
    assert "empty" in capsys.readouterr().err


@pytest.mark.slow
def test_ddp_two_cpu_processes(torus_path: Path, tmp_path: Path) -> None:
    cfg = tiny(torus_path, tmp_path, num_processes=2, points="pool", steps=4, lr=1e-3)
    metrics = train.run_fit(cfg)
    assert metrics["world_size"] == 2
    run = Path(metrics["run_dir"])
    check_run(metrics, run, steps=4)
    # Gradients were averaged: the result differs from a single process trained on rank 0's points only.
    single = train.train_shape(replace(cfg, num_processes=1, run_name="single"))
    loaded = train.load_checkpoint(run / "checkpoints" / "final.pt")
    x = torch.rand(20, 3) - 0.5
    assert not torch.allclose(loaded.model(x), single.model(x))


# ------------------------------------------------------------------------------------------- resume, run folders
RESUME_VARIANTS = {
    "adam-fresh": dict(),
    "int-full": dict(points="full", int_selection=IntOptions(enabled=True, max_interval=2)),
    "iga-pool": dict(points="pool", iga=IgaOptions(enabled=True, group_size=32, groups_per_step=8, end=3)),
    "esgd-lr-decay": dict(optimizer="esgd", activation="gaussian", points="pool", lr_final_factor=0.1),
}


@pytest.mark.parametrize("name", sorted(RESUME_VARIANTS))
def test_resume_continues_exactly(torus_path: Path, tmp_path: Path, name: str, monkeypatch) -> None:
    """N steps in one go == N/2 steps, interrupted, then --resume for the rest (same seed): same weights, losses,
    evaluations; optimizer, LR schedule, sampler, IGA state and random streams all carry on."""
    from nerf_inr_methods import coordfit

    kw = dict(RESUME_VARIANTS[name], steps=6, eval_every=2, checkpoint_every=4)
    straight = train.train_shape(tiny(torus_path, tmp_path / "a", **kw))
    real_step = coordfit.fit_step

    def interrupted_step(*args, **kwargs):
        if kwargs["step"] == 3:  # Ctrl-C as step 3 starts: interrupted.pt holds the state after 3 steps
            raise KeyboardInterrupt
        return real_step(*args, **kwargs)

    monkeypatch.setattr(coordfit, "fit_step", interrupted_step)
    with pytest.raises(KeyboardInterrupt):
        train.train_shape(tiny(torus_path, tmp_path / "b", **kw))
    monkeypatch.setattr(coordfit, "fit_step", real_step)
    assert sorted(p.name for p in (tmp_path / "b" / "run" / "checkpoints").iterdir()) == ["interrupted.pt"]
    resumed = train.train_shape(tiny(torus_path, tmp_path / "b", resume=True, **kw))
    assert resumed.run_dir == tmp_path / "b" / "run"
    for key, value in straight.model.state_dict().items():
        torch.testing.assert_close(resumed.model.state_dict()[key], value, rtol=0, atol=0)
    assert resumed.history.loss == straight.history.loss
    assert resumed.history.points_trained == straight.history.points_trained
    assert resumed.history.points_scored == straight.history.points_scored
    curve = {c["step"]: c.get("iou_8") for c in resumed.metrics["eval_curve"]}
    assert curve == {c["step"]: c.get("iou_8") for c in straight.metrics["eval_curve"]}
    assert resumed.metrics["iou"] == straight.metrics["iou"]
    assert len(resumed.cpu_time) == 6 and resumed.cpu_time == sorted(resumed.cpu_time)
    saved = json.loads((resumed.run_dir / "metrics.json").read_text())
    assert saved["steps"] == 6 and len(saved["loss_curve"]["loss"]) == 6
    assert train.load_checkpoint(resumed.run_dir / "checkpoints" / "step_0000004.pt").step == 4


def test_resume_from_a_step_checkpoint_skips_a_truncated_newer_one(torus_path: Path, tmp_path: Path) -> None:
    kw = dict(points="pool", steps=6, eval_every=0, checkpoint_every=2)
    straight = train.train_shape(tiny(torus_path, tmp_path / "a", **kw))
    run = tmp_path / "b" / "run"
    shutil.copytree(straight.run_dir, run)
    (run / "checkpoints" / "final.pt").unlink()
    newest = run / "checkpoints" / "step_0000004.pt"
    newest.write_bytes(newest.read_bytes()[:1000])  # killed while copying, say
    with pytest.warns(UserWarning, match="skipping .*step_0000004.pt"):
        resumed = train.train_shape(tiny(torus_path, tmp_path / "b", resume=True, **kw))
    for key, value in straight.model.state_dict().items():
        torch.testing.assert_close(resumed.model.state_dict()[key], value, rtol=0, atol=0)
    assert resumed.history.loss == straight.history.loss


def test_resume_refuses_other_flags_and_finished_runs(torus_path: Path, tmp_path: Path) -> None:
    done = train.train_shape(tiny(torus_path, tmp_path, steps=4, checkpoint_every=2))
    with pytest.raises(ValueError, match="already finished"):
        train.train_shape(tiny(torus_path, tmp_path, steps=4, resume=True))
    (done.run_dir / "checkpoints" / "final.pt").unlink()
    with pytest.raises(ValueError, match=r"--steps 4 \(now 8\).*--width 16 \(now 32\)"):
        train.train_shape(tiny(torus_path, tmp_path, steps=8, width=32, resume=True))
    with pytest.raises(FileNotFoundError, match="--resume: .*other.* is not a run folder"):
        train.train_shape(tiny(torus_path, tmp_path, run_name="other", resume=True))


def test_resume_check_counts_a_flag_added_later_at_its_default(torus_path: Path, tmp_path: Path) -> None:
    """A run stored before a flag existed (here --int-selection.error-power) resumes when that flag is at its default,
    and is refused when it is set to another value."""
    cfg = resolve_config(tiny(torus_path, tmp_path, int_selection=IntOptions(enabled=True)))
    stored = json.loads(json.dumps(config_to_dict(cfg)))
    del stored["int_selection"]["error_power"]
    train.check_resume_config(stored, cfg, tmp_path)
    other = replace(cfg, int_selection=replace(cfg.int_selection, error_power=2.0))
    with pytest.raises(ValueError, match=r"--int-selection.error-power 1.0 \(now 2.0\)"):
        train.check_resume_config(stored, other, tmp_path)


def test_a_second_fit_never_mixes_run_folders(torus_path: Path, tmp_path: Path, capfd) -> None:
    first = train.train_shape(tiny(torus_path, tmp_path, steps=3))
    first_metrics = (first.run_dir / "metrics.json").read_text()
    second = train.train_shape(tiny(torus_path, tmp_path, steps=3, seed=1))
    assert first.run_dir == tmp_path / "run" and second.run_dir == tmp_path / "run-2"
    assert "already holds a run; writing this one to" in capfd.readouterr().err
    assert (first.run_dir / "metrics.json").read_text() == first_metrics  # untouched
    assert json.loads((second.run_dir / "config.json").read_text())["seed"] == 1
    (tmp_path / "empty").mkdir()  # an empty folder is used as it is
    assert train.train_shape(tiny(torus_path, tmp_path, steps=3, run_name="empty")).run_dir == tmp_path / "empty"


def test_checkpoints_load_with_weights_only(torus_path: Path, tmp_path: Path) -> None:
    result = train.train_shape(tiny(torus_path, tmp_path, steps=4, checkpoint_every=2))
    for path in sorted((result.run_dir / "checkpoints").iterdir()):
        state = torch.load(path, weights_only=True)  # no allow-list needed: plain containers, tensors, numbers
        assert state["format"] == train.CHECKPOINT_FORMAT and state["step"] in (2, 4)
