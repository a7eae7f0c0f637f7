"""No file a user loads runs code: crafted checkpoints and config.yml files against every command that reads them.

Each crafted file is checked to be live first (the unsafe loader it targets really creates the marker file), then
fed to our loaders and commands: the marker is never created, the error names the file, the exit status is not 0.
"""

from __future__ import annotations

import copy
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from nerf_inr_methods.safe_io import RefusedFileError, safe_torch_load

BIN = Path(sys.executable).parent


class _TouchOnLoad:
    """Unpickling this object opens (creates) ``marker``: what a malicious ``__reduce__`` can do."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def crafted_checkpoint(path: Path, marker: Path, shape_checkpoint: bool = False) -> Path:
    """A torch checkpoint whose unpickling creates ``marker`` (shaped like an inr-shape checkpoint if asked)."""
    payload: dict = {"step": 1, "pipeline": {}, "evil": _TouchOnLoad(marker)}
    if shape_checkpoint:
        from nerf_inr_methods.shapes.train import CHECKPOINT_FORMAT

        payload = {"format": CHECKPOINT_FORMAT, "step": 1, "model": {}, "config": _TouchOnLoad(marker)}
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(payload, path)
    return path


def payload_tag(marker: Path) -> str:
    return f"!!python/object/apply:os.system ['touch {marker}']"


def genuine_config_text(method: str = "inr-nerf", data: Path | None = None) -> str:
    """A config.yml as ns-train writes it (yaml.dump of the method's TrainerConfig)."""
    from nerf_inr_methods.nerfstudio_plugin.runs import method_config

    config = method_config(method)
    if data is not None:
        config.pipeline.datamanager.data = data
    return yaml.dump(config)


def crafted_config(path: Path, marker: Path, data: Path | None = None) -> Path:
    """A genuine config.yml with one more field whose value runs ``touch marker``."""
    text = genuine_config_text(data=data).replace(
        "method_name: inr-nerf", "method_name: inr-nerf\nzz_note: " + payload_tag(marker), 1
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def run_command(args: list[str], cwd: Path, timeout: int = 900) -> subprocess.CompletedProcess:
    env = {**os.environ, "NIM_LPIPS": "off", "OMP_NUM_THREADS": "1"}
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)


def assert_refused(result: subprocess.CompletedProcess, marker: Path, culprit: str) -> None:
    assert not marker.exists(), "the crafted file ran code"
    assert result.returncode != 0
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    last = result.stderr.strip().splitlines()[-1]
    assert "error:" in last and culprit in last, last


# --------------------------------------------------------------------------------------------- the crafted files


def test_crafted_files_are_live(tmp_path: Path) -> None:
    """Sanity: the unsafe loaders the files target run their payload (so the other tests test something)."""
    marker = tmp_path / "marker"
    path = crafted_checkpoint(tmp_path / "evil.pt", marker)
    torch.load(path, weights_only=False)
    assert marker.exists()
    marker.unlink()
    yaml.load(f"a: !!python/object/apply:builtins.open ['{marker}', 'w']", Loader=yaml.Loader)
    assert marker.exists()


def test_safe_torch_load_refuses_code_and_names_the_file(tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    for name, data in (("zip.pt", None), ("legacy.pkl", "legacy")):
        path = tmp_path / name
        if data is None:
            crafted_checkpoint(path, marker)
        else:
            path.write_bytes(pickle.dumps({"evil": _TouchOnLoad(marker)}, protocol=2))
        with pytest.raises(RefusedFileError, match=f"{name} is not a plain-weights file"):
            safe_torch_load(path)
        assert not marker.exists()


def test_safe_torch_load_loads_plain_weights_and_numpy_scalars(tmp_path: Path) -> None:
    import numpy as np

    path = tmp_path / "ok.ckpt"
    torch.save({"w": torch.ones(2), "schedulers": {"_last_lr": [np.float64(1e-3)]}, "step": 3}, path)
    state = safe_torch_load(path)
    assert state["step"] == 3 and state["schedulers"]["_last_lr"][0] == pytest.approx(1e-3)


@pytest.mark.parametrize(
    "content, expected",
    [
        (None, "is a folder"),
        (b"", "truncated or not a checkpoint"),
        (b"hello, not a checkpoint", "truncated or not a checkpoint"),
        ("half", "truncated or not a checkpoint"),
    ],
)
def test_safe_torch_load_bad_files(tmp_path: Path, content, expected: str) -> None:
    path = tmp_path / "x.pt"
    if content is None:
        path.mkdir()
    elif content == "half":
        torch.save({"w": torch.zeros(1000)}, path)
        path.write_bytes(path.read_bytes()[:1500])
    else:
        path.write_bytes(content)
    with pytest.raises(ValueError, match=expected) as info:
        safe_torch_load(path)
    assert str(path) in str(info.value)
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        safe_torch_load(tmp_path / "missing.pt")


# --------------------------------------------------------------------------------------------- our commands


def test_inr_shape_extract_refuses_a_crafted_checkpoint(tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    evil = crafted_checkpoint(tmp_path / "run" / "checkpoints" / "final.pt", marker, shape_checkpoint=True)
    result = run_command([str(BIN / "inr-shape"), "extract", "--checkpoint", str(evil)], tmp_path)
    assert_refused(result, marker, str(evil))
    assert "not a plain-weights file" in result.stderr


def test_inr_shape_resume_refuses_a_crafted_checkpoint(tmp_path: Path) -> None:
    import trimesh

    from nerf_inr_methods.shapes.config import ShapeFitConfig
    from nerf_inr_methods.shapes.train import train_shape

    mesh = tmp_path / "box.off"
    trimesh.creation.box().export(mesh)
    marker = tmp_path / "marker"
    evil = crafted_checkpoint(tmp_path / "out" / "r" / "checkpoints" / "step_0000004.pt", marker, shape_checkpoint=True)
    cfg = ShapeFitConfig(mesh=mesh, output_dir=tmp_path / "out", run_name="r", resume=True, steps=8, progress=False)
    with pytest.raises(RefusedFileError, match="step_0000004.pt is not a plain-weights file"):
        train_shape(cfg)
    assert not marker.exists()
    result = run_command(
        [str(BIN / "inr-shape"), "fit", "--mesh", str(mesh), "--output-dir", str(tmp_path / "out")]
        + ["--run-name", "r", "--resume", "--steps", "8"],
        tmp_path,
    )
    assert_refused(result, marker, str(evil))


@pytest.mark.slow  # a subprocess that imports nerfstudio
def test_inr_mesh_refuses_a_crafted_config(tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    config = crafted_config(tmp_path / "run" / "config.yml", marker, data=tmp_path)
    result = run_command([str(BIN / "inr-mesh"), "--load-config", str(config)], tmp_path)
    assert_refused(result, marker, str(config))
    assert "os.system" in result.stderr


def test_inr_mesh_refuses_a_crafted_checkpoint(tmp_path: Path) -> None:
    """A genuine config whose newest checkpoint is crafted: refused before the pipeline is built."""
    from nerf_inr_methods.nerfstudio_plugin.export_mesh import ExportMesh

    marker = tmp_path / "marker"
    config = tmp_path / "run" / "config.yml"
    config.parent.mkdir()
    config.write_text(genuine_config_text(data=tmp_path))
    evil = crafted_checkpoint(tmp_path / "run" / "nerfstudio_models" / "step-000000002.ckpt", marker)
    with pytest.raises(RefusedFileError, match="step-000000002.ckpt is not a plain-weights file"):
        ExportMesh(load_config=config, output_path=tmp_path / "m.ply", resolution=8, progress=False).main()
    assert not marker.exists() and evil.exists()


@pytest.mark.slow  # a subprocess that imports nerfstudio
def test_inr_compare_refuses_a_crafted_config(tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    good = tmp_path / "runs" / "a" / "config.yml"
    good.parent.mkdir(parents=True)
    good.write_text(genuine_config_text(data=tmp_path))
    evil = crafted_config(tmp_path / "runs" / "b" / "config.yml", marker, data=tmp_path)
    result = run_command(
        [str(BIN / "inr-compare"), "--runs", str(tmp_path / "runs"), "--output-dir", str(tmp_path / "cmp")], tmp_path
    )
    assert_refused(result, marker, str(evil.resolve()))
    assert not (tmp_path / "cmp").exists()


# --------------------------------------------------------------------------------------------- nerfstudio's own code


def test_nerfstudio_eval_setup_and_load_config_read_configs_safely(tmp_path: Path) -> None:
    """nerfstudio's eval_setup (ns-eval, ns-render, ns-viewer, ns-export) and ns-train --load-config call
    yaml.load(..., Loader=yaml.Loader); with our plugin loaded they go through the restricted loader."""
    from nerfstudio.scripts import train as ns_train
    from nerfstudio.utils.eval_utils import eval_setup

    from nerf_inr_methods.nerfstudio_plugin import offline

    offline.install()
    marker = tmp_path / "marker"
    evil = crafted_config(tmp_path / "run" / "config.yml", marker, data=tmp_path)
    with pytest.raises(RefusedFileError, match=f"{evil}: refused !!python/object/apply:os.system"):
        eval_setup(evil)
    from nerf_inr_methods.nerfstudio_plugin.runs import method_config

    config = method_config("inr-nerf")
    config.load_config = evil
    with pytest.raises(RefusedFileError, match="config.yml: refused"):
        ns_train.main(config)
    assert not marker.exists()
    # other callers keep PyYAML's own behaviour (our wrapper only routes nerfstudio's calls)
    assert yaml.load("!!python/tuple [1, 2]", Loader=yaml.Loader) == (1, 2)
    assert getattr(yaml.load, "_nerf_inr_methods_safe", False)


@pytest.mark.slow
def test_nerfstudio_refuses_crafted_checkpoints_in_eval_and_resume(tiny_scene: Path, tmp_path: Path) -> None:
    """ns-eval's checkpoint loading and ns-train --load-dir (resume) on a crafted checkpoint: torch's weights_only
    loader (our allow-list adds numpy scalars only) refuses it, nothing runs."""
    from nerfstudio.utils.eval_utils import eval_setup

    from nerf_inr_methods.nerfstudio_plugin.runs import prepare_config, train

    marker = tmp_path / "marker"
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    config = prepare_config("inr-nerf", tiny_scene, tmp_path / "out", steps=1)
    config.relative_model_dir = run_dir / "nerfstudio_models"
    (run_dir / "config.yml").write_text(yaml.dump(config))
    crafted_checkpoint(run_dir / "nerfstudio_models" / "step-000000001.ckpt", marker)
    with pytest.raises(Exception, match="(?i)weights only load failed|plain-weights"):
        eval_setup(run_dir / "config.yml", test_mode="inference")
    assert not marker.exists()
    resume = copy.deepcopy(config)
    resume.relative_model_dir = Path("nerfstudio_models")
    resume.load_dir = run_dir / "nerfstudio_models"
    with pytest.raises(Exception, match="(?i)weights only load failed|plain-weights"):
        train(resume)
    assert not marker.exists()


@pytest.mark.slow
def test_ns_eval_command_refuses_a_crafted_config(tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    evil = crafted_config(tmp_path / "run" / "config.yml", marker, data=tmp_path)
    result = run_command([str(BIN / "ns-eval"), "--load-config", str(evil), "--output-path", "e.json"], tmp_path)
    assert not marker.exists()
    assert result.returncode != 0
    assert "refused !!python/object/apply:os.system" in result.stderr
