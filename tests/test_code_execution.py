"""Code-execution attempts through the files a user loads: no crafted config.yml, data file or checkpoint runs code.

A table of gadgets (crafted ``config.yml`` texts, data folders and checkpoints), each fed to every command that reads
it: the typed allow-list loader itself, ``inr-mesh``, ``inr-compare``, ``inr-shape``, and nerfstudio's own
``eval_setup`` (``ns-eval``, ``ns-render``, ``ns-viewer``, ``ns-export``) and ``ns-train --load-config`` with the
package installed. Every attempt creates a marker file if it runs; none may. Gadgets marked ``live`` are first shown
to run under PyYAML's unsafe loader (and, for routes that act later, nerfstudio's own call), so the refusal tests
something real. New gadgets go into these tables.
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import torch
import yaml

from nerf_inr_methods.nerfstudio_plugin import offline
from nerf_inr_methods.nerfstudio_plugin.config_loader import load_config_yaml
from nerf_inr_methods.safe_io import RefusedFileError, safe_numpy_load, safe_torch_load

BIN = Path(sys.executable).parent
BLENDER_TARGET = "_target: !!python/name:nerfstudio.data.dataparsers.blender_dataparser.Blender ''"
MODEL_TARGET = "_target: !!python/name:nerf_inr_methods.nerfstudio_plugin.inr_nerf.InrNeRFModel ''"
COLLATE = "collate_fn: !!python/name:nerfstudio.data.utils.nerfstudio_collate.nerfstudio_collate ''"
RADAM_TARGET = "_target: !!python/name:torch.optim.radam.RAdam ''"
ROOT_TAG = "!!python/object:nerf_inr_methods.nerfstudio_plugin.esgd_trainer.ESGDTrainerConfig"
RUN_COMMAND = "nerfstudio.utils.scripts.run_command"


@pytest.fixture(scope="module")
def genuine_text() -> str:
    """inr-nerf's config.yml as ns-train writes it (yaml.dump of its TrainerConfig)."""
    from nerf_inr_methods.nerfstudio_plugin.runs import method_config

    offline.install()
    return yaml.dump(method_config("inr-nerf"))


def extra_field(text: str, payload: str) -> str:
    """The genuine config with one more top-level field holding ``payload``."""
    return text.replace("method_name: inr-nerf", f"method_name: inr-nerf\nzz_note: {payload}", 1)


def swap(text: str, old: str, new: str) -> str:
    assert old in text, old
    return text.replace(old, new, 1)


@dataclass(frozen=True)
class Gadget:
    """A crafted config.yml: ``craft(genuine text, marker path)`` -> its text."""

    name: str
    craft: Callable[[str, Path], str]
    live: bool = False
    """Running it through PyYAML's unsafe loader creates the marker (checked)."""


TAG_PAYLOADS = {
    "os.system": "!!python/object/apply:os.system ['touch {m}']",
    "subprocess.call": "!!python/object/apply:subprocess.call [['touch', '{m}']]",
    "subprocess.Popen": "!!python/object/apply:subprocess.Popen [['touch', '{m}']]",
    "subprocess.Popen (object/new)": "!!python/object/new:subprocess.Popen [['touch', '{m}']]",
    "builtins.open": "!!python/object/apply:builtins.open ['{m}', 'w']",
    "builtins.exec": '!!python/object/apply:builtins.exec [\'open("{m}", "w")\']',
    "builtins.eval": '!!python/object/apply:builtins.eval [\'open("{m}", "w")\']',
    "run_command apply": f"!!python/object/apply:{RUN_COMMAND} ['touch {{m}}']",
    "path of os.system": "!!python/object/apply:pathlib.PosixPath [!!python/object/apply:os.system ['touch {m}']]",
    "name os.system": "!!python/name:os.system ''",
    "module os": "!!python/module:os ''",
    "object os.PathLike": "!!python/object:os.PathLike {{}}",
    "getitem of os.system": "!!python/object/apply:_operator.getitem [!!python/name:os.system '', 'x']",
    "path with listitems": "!!python/object/apply:pathlib.Path {{args: ['{m}'], listitems: [1]}}",
    "config with __class__": "!!python/object:nerfstudio.engine.trainer.TrainerConfig {{__class__: 1}}",
    "eval_utils.os": "!!python/name:nerfstudio.utils.eval_utils.os ''",
    "eval_setup apply": "!!python/object/apply:nerfstudio.utils.eval_utils.eval_setup ['{m}']",
    "torch optimizer apply": "!!python/object/apply:torch.optim.adam.Adam [[]]",
    "torch.load name": "!!python/name:torch.load ''",
    "bytes of a terabyte": "!!python/object/apply:builtins.bytes [1000000000000]",
    "functools.partial": "!!python/object/apply:functools.partial [!!python/name:os.system '', 'touch {m}']",
    "attrgetter": "!!python/object/apply:_operator.attrgetter ['system']",
    "enum with state": (
        "!!python/object/apply:nerfstudio.utils.writer.EventName {{args: ['Train Iter (time)'], state: {{a: 1}}}}"
    ),
    "images-to-dataset apply (route 2)": (
        "!!python/object/apply:nerfstudio.process_data.images_to_nerfstudio_dataset.ImagesToNerfstudioDataset "
        "{{kwds: {{data: /tmp, output_dir: /tmp/o, colmap_cmd: 'touch {m}; true'}}}}"
    ),
    "images-to-dataset object (route 2)": (
        "!!python/object:nerfstudio.process_data.images_to_nerfstudio_dataset.ImagesToNerfstudioDataset "
        "{{colmap_cmd: 'touch {m}; true'}}"
    ),
    "process-video object": "!!python/object:nerfstudio.scripts.process_data.ProcessVideo {{data: /tmp}}",
    "config shadowing its setup": (
        "!!python/object:nerfstudio.engine.optimizers.AdamOptimizerConfig {{setup: 'touch {m}'}}"
    ),
}
LIVE_TAGS = {"os.system", "subprocess.call", "subprocess.Popen", "builtins.open", "builtins.exec"}
LIVE_TAGS |= {"builtins.eval", "run_command apply", "path of os.system"}

GADGETS = [
    Gadget(f"tag: {name}", lambda t, m, p=payload: extra_field(t, p.format(m=m)), live=name in LIVE_TAGS)
    for name, payload in TAG_PAYLOADS.items()
] + [
    Gadget(  # route 1: nerfstudio calls _target(config); this function puts the config's text in a shell command
        "route 1: dataparser _target = get_num_frames_in_video",
        lambda t, m: swap(
            swap(
                t,
                BLENDER_TARGET,
                BLENDER_TARGET.replace(
                    "nerfstudio.data.dataparsers.blender_dataparser.Blender",
                    "nerfstudio.process_data.process_data_utils.get_num_frames_in_video",
                ),
            ),
            "alpha_color: white",
            f"alpha_color: '$(touch {m})'",
        ),
    ),
    Gadget(
        "dataparser _target = run_command",
        lambda t, m: swap(t, BLENDER_TARGET, f"_target: !!python/name:{RUN_COMMAND} ''"),
    ),
    Gadget(
        "dataparser _target = a registered target of another kind (Trainer)",
        lambda t, m: swap(t, BLENDER_TARGET, "_target: !!python/name:nerfstudio.engine.trainer.Trainer ''"),
    ),
    Gadget(
        "model _target = a dataparser class",
        lambda t, m: swap(t, MODEL_TARGET, BLENDER_TARGET),
    ),
    Gadget("collate_fn = run_command", lambda t, m: swap(t, COLLATE, f"collate_fn: !!python/name:{RUN_COMMAND} ''")),
    Gadget("collate_fn = builtins.eval", lambda t, m: swap(t, COLLATE, "collate_fn: !!python/name:builtins.eval ''")),
    Gadget(
        "optimizer _target = run_command",
        lambda t, m: swap(t, RADAM_TARGET, f"_target: !!python/name:{RUN_COMMAND} ''"),
    ),
    Gadget(
        "generic _target parametrised by a function",
        lambda t, m: swap(
            t,
            "_target: !!python/name:nerfstudio.data.datamanagers.base_datamanager.VanillaDataManager ''",
            "_target: !!python/object/apply:_operator.getitem [!!python/name:nerfstudio.data.datamanagers."
            f"base_datamanager.VanillaDataManager '', !!python/name:{RUN_COMMAND} '']",
        ),
    ),
    Gadget(  # route 3: the placeholder of an uninstalled method offers to pip-install the file's text
        "route 3: ExternalMethodDummyTrainerConfig root",
        lambda t, m: swap(
            t, ROOT_TAG, "!!python/object:nerfstudio.configs.external_methods.ExternalMethodDummyTrainerConfig"
        ).replace("method_name: inr-nerf", f"method_name: inr-nerf\npip_package: '--version; touch {m}'", 1),
    ),
    Gadget(
        "pipeline.model holds a dataparser config",
        lambda t, m: swap(
            t,
            "model: !!python/object:nerf_inr_methods.nerfstudio_plugin.inr_nerf.InrNeRFModelConfig",
            "model: !!python/object:nerfstudio.data.dataparsers.blender_dataparser.BlenderDataParserConfig",
        ),
    ),
]


def _crafted(tmp_path: Path, gadget: Gadget, genuine_text: str) -> tuple[Path, Path]:
    marker = tmp_path / "marker"
    config = tmp_path / "run" / "config.yml"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text(gadget.craft(genuine_text, marker))
    return config, marker


def _eval_setup(config: Path, tmp_path: Path) -> None:
    from nerfstudio.utils.eval_utils import eval_setup

    eval_setup(config, test_mode="inference")


def _ns_train_load_config(config: Path, tmp_path: Path) -> None:
    from nerfstudio.scripts import train as ns_train

    from nerf_inr_methods.nerfstudio_plugin.runs import method_config

    trainer = method_config("inr-nerf")
    trainer.load_config = config
    ns_train.main(trainer)


def _inr_mesh(config: Path, tmp_path: Path) -> None:
    from nerf_inr_methods.nerfstudio_plugin.export_mesh import ExportMesh

    ExportMesh(load_config=config, output_path=tmp_path / "m.ply", resolution=8, progress=False).main()


def _inr_compare(config: Path, tmp_path: Path) -> None:
    from nerf_inr_methods.nerfstudio_plugin.compare import Compare

    Compare(runs=(config,), output_dir=tmp_path / "cmp").main()


READERS = {
    "loader": lambda config, tmp_path: load_config_yaml(config.read_text(), config),
    "eval_setup (ns-eval/ns-render/ns-viewer/ns-export)": _eval_setup,
    "ns-train --load-config": _ns_train_load_config,
    "inr-mesh": _inr_mesh,
    "inr-compare": _inr_compare,
}


@pytest.mark.parametrize("reader", list(READERS))
@pytest.mark.parametrize("gadget", GADGETS, ids=[g.name for g in GADGETS])
def test_crafted_config_runs_nothing(tmp_path: Path, genuine_text: str, gadget: Gadget, reader: str) -> None:
    config, marker = _crafted(tmp_path, gadget, genuine_text)
    with pytest.raises(RefusedFileError) as info:
        READERS[reader](config, tmp_path)
    assert not marker.exists(), "the crafted config ran code"
    message = str(info.value)
    assert "\n" not in message and "refused" in message
    assert "config.yml" in message


@pytest.mark.parametrize("gadget", [g for g in GADGETS if g.live], ids=[g.name for g in GADGETS if g.live])
def test_tag_gadgets_are_live_under_the_unsafe_loader(tmp_path: Path, genuine_text: str, gadget: Gadget) -> None:
    config, marker = _crafted(tmp_path, gadget, genuine_text)
    try:
        yaml.load(config.read_text(), Loader=yaml.Loader)  # noqa: S506 (showing the gadget is real)
    except Exception:
        pass
    for _ in range(50):  # Popen runs its command in the background
        if marker.exists():
            break
        time.sleep(0.1)
    assert marker.exists()


def test_route_1_is_live_when_nerfstudio_instantiates_the_target(tmp_path: Path, genuine_text: str) -> None:
    """Loaded unsafely, nerfstudio's ``setup()`` calls ``_target(config)``, which shells out with the config's text."""
    gadget = next(g for g in GADGETS if g.name.startswith("route 1"))
    config, marker = _crafted(tmp_path, gadget, genuine_text)
    loaded = yaml.load(config.read_text(), Loader=yaml.Loader)  # noqa: S506
    with pytest.raises((SystemExit, ValueError, AssertionError)):  # no ffprobe, or no video: after the shell ran
        loaded.pipeline.datamanager.dataparser.setup()
    assert marker.exists()


def test_every_registered_method_config_round_trips(genuine_text: str) -> None:
    """What ns-train writes for every registered method and dataparser (nerfstudio's, ours, plugins') loads back
    identically: dataclasses, targets, generic targets, functions, enums, paths, tuples."""
    from nerfstudio.configs.dataparser_configs import all_dataparsers
    from nerfstudio.configs.external_methods import ExternalMethodDummyTrainerConfig
    from nerfstudio.configs.method_configs import all_methods

    assert "vanilla-nerf" in all_methods and "int-map-nerf" in all_methods
    for name, config in [*all_methods.items(), *all_dataparsers.items()]:
        if isinstance(config, ExternalMethodDummyTrainerConfig):
            continue
        text = yaml.dump(config)
        loaded = load_config_yaml(text, name)
        assert yaml.dump(loaded) == text, name
        assert loaded == yaml.load(text, Loader=yaml.Loader), name  # noqa: S506


# ------------------------------------------------------------------------------------ data files a config points to


class _TouchOnLoad:
    """Unpickling this object opens (creates) ``marker``: what a malicious ``__reduce__`` can do."""

    def __init__(self, marker: Path, call: Callable = open, args: tuple | None = None) -> None:
        self.call, self.args = call, args if args is not None else (str(marker), "w")

    def __reduce__(self):
        return (self.call, self.args)


def _minimal_parser_config(genuine_text: str, data: Path) -> str:
    """The genuine config with nerfstudio's minimal dataparser reading ``data`` (route 4)."""
    from nerfstudio.data.dataparsers.minimal_dataparser import MinimalDataParserConfig

    block = yaml.dump({"dataparser": MinimalDataParserConfig(data=data)}).splitlines()
    start = genuine_text.index("    dataparser: !!python/object:")
    end = genuine_text.index("    eval_image_indices:")
    return genuine_text[:start] + "\n".join("    " + line for line in block) + "\n" + genuine_text[end:]


def test_route_4_pickled_npz_is_refused_in_nerfstudio_dataparsers(tmp_path: Path, genuine_text: str) -> None:
    """A genuine config with the minimal dataparser, whose train.npz holds a crafted object array: nerfstudio reads
    it with np.load(allow_pickle=True); with the package installed the pickle is restricted to numpy data."""
    marker = tmp_path / "marker"
    data = tmp_path / "scene"
    data.mkdir()
    np.savez(data / "train.npz", image_filenames=np.array([_TouchOnLoad(marker)], dtype=object))
    np.load(data / "train.npz", allow_pickle=True)["image_filenames"]  # live: numpy's own loader runs it
    assert marker.exists()
    marker.unlink()
    config = tmp_path / "run" / "config.yml"
    (config.parent / "nerfstudio_models").mkdir(parents=True)
    torch.save({"step": 1, "pipeline": {}}, config.parent / "nerfstudio_models" / "step-000000001.ckpt")
    config.write_text(_minimal_parser_config(genuine_text, data))
    from nerfstudio.utils.eval_utils import eval_setup

    for read in (lambda: eval_setup(config, test_mode="inference"), lambda: _inr_mesh(config, tmp_path)):
        with pytest.raises(RefusedFileError, match=r"train\.npz\[image_filenames\]: refused the pickled object"):
            read()
        assert not marker.exists()


def test_route_4_through_ns_train_with_the_minimal_parser(tmp_path: Path) -> None:
    """``ns-train int-map-nerf ... minimal-parser --data DIR``: the dataparser runs inside nerfstudio's training
    set-up; the crafted train.npz is refused there too."""
    from nerfstudio.data.dataparsers.minimal_dataparser import MinimalDataParserConfig

    marker = tmp_path / "marker"
    np.savez(tmp_path / "train.npz", image_filenames=np.array([_TouchOnLoad(marker)], dtype=object))
    offline.install()
    with pytest.raises(RefusedFileError, match="refused the pickled object"):
        MinimalDataParserConfig(data=tmp_path).setup().get_dataparser_outputs("train")
    assert not marker.exists()


def test_safe_numpy_load_reads_numpy_data_in_object_arrays(tmp_path: Path) -> None:
    path = tmp_path / "ok.npz"
    cameras = {"fx": np.ones(3), "names": ["a", "b"], "n": 3}
    np.savez(path, cameras=np.array(cameras, dtype=object), names=np.array(["x.png"]), plain=np.arange(4))
    loaded = safe_numpy_load(path)
    assert loaded["cameras"].item()["names"] == ["a", "b"] and loaded["cameras"].item()["fx"].sum() == 3
    assert loaded["names"].tolist() == ["x.png"] and "plain" in loaded and loaded["plain"].sum() == 6
    np.save(tmp_path / "one.npy", np.array([{"a": 1}], dtype=object))
    assert safe_numpy_load(tmp_path / "one.npy")[0] == {"a": 1}


def test_nerfstudio_colmap_downscaling_runs_no_shell(tmp_path: Path) -> None:
    """COLMAP's image downscaling puts image paths in an ffmpeg shell command; a folder named ``$(touch FILE)``
    ran it. With the package installed the command runs without a shell: the name stays a name."""
    from nerfstudio.data.dataparsers import colmap_dataparser
    from nerfstudio.utils.scripts import run_command

    marker = tmp_path / "marker"
    folder = tmp_path / f"$(touch {marker})"
    command = f'ffmpeg -y -noautorotate -i "{folder}/a.png" -q:v 2 "{tmp_path}/b.png"'
    with pytest.raises(SystemExit):  # live: nerfstudio's run_command expands the name before ffmpeg fails
        run_command(command)
    assert marker.exists()
    marker.unlink()
    offline.install()
    with pytest.raises((SystemExit, FileNotFoundError)):  # no ffmpeg here, or ffmpeg fails on the missing file
        colmap_dataparser.run_command(command)
    assert not marker.exists()


# ------------------------------------------------------------------------------------ checkpoints


def _numpy_runstring() -> Callable:
    """numpy's test helper that ``exec``s a string: a classic gadget in pickles that allow numpy."""
    from numpy.testing._private.utils import runstring

    return runstring


CHECKPOINT_GADGETS = {
    "builtins.open": lambda m: _TouchOnLoad(m),
    "os.system": lambda m: _TouchOnLoad(m, os.system, (f"touch {m}",)),
    "subprocess.call": lambda m: _TouchOnLoad(m, subprocess.call, (["touch", str(m)],)),
    "builtins.eval": lambda m: _TouchOnLoad(m, eval, (f"open({str(m)!r}, 'w')",)),
    "builtins.exec": lambda m: _TouchOnLoad(m, exec, (f"open({str(m)!r}, 'w')",)),
    "numpy runstring": lambda m: _TouchOnLoad(m, _numpy_runstring(), (f"open({str(m)!r}, 'w')", {})),
    "nested pickle.loads": lambda m: _TouchOnLoad(m, pickle.loads, (pickle.dumps(_TouchOnLoad(m)),)),
}


def _crafted_checkpoint(path: Path, marker: Path, gadget: str, shape: bool) -> Path:
    payload = CHECKPOINT_GADGETS[gadget](marker)
    if shape:
        from nerf_inr_methods.shapes.train import CHECKPOINT_FORMAT

        state: dict = {"format": CHECKPOINT_FORMAT, "step": 1, "model": {}, "config": payload}
    else:
        state = {"step": 1, "pipeline": {}, "evil": payload}
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)
    return path


def _shape_extract(path: Path, tmp_path: Path) -> None:
    from nerf_inr_methods.shapes.cli import ExtractConfig, extract_main

    extract_main(ExtractConfig(checkpoint=path, output=tmp_path / "m.ply", resolution=8, progress=False))


def _nerfstudio_eval(path: Path, tmp_path: Path, scene: Path) -> None:
    """nerfstudio's eval_setup on a genuine config whose newest checkpoint is ``path``."""
    from nerfstudio.utils.eval_utils import eval_setup

    from nerf_inr_methods.nerfstudio_plugin.runs import prepare_config

    config = prepare_config("inr-nerf", scene, tmp_path / "out", steps=1)
    config.relative_model_dir = path.parent
    (tmp_path / "config.yml").write_text(yaml.dump(config))
    eval_setup(tmp_path / "config.yml", test_mode="inference")


@pytest.mark.parametrize("reader", ["safe_torch_load", "inr-shape extract", "nerfstudio eval_setup"])
@pytest.mark.parametrize("gadget", list(CHECKPOINT_GADGETS))
def test_crafted_checkpoint_runs_nothing(tmp_path: Path, tiny_scene: Path, gadget: str, reader: str) -> None:
    marker = tmp_path / "marker"
    name = "step-000000001.ckpt" if reader == "nerfstudio eval_setup" else "final.pt"
    path = _crafted_checkpoint(tmp_path / "ckpt" / name, marker, gadget, shape=reader == "inr-shape extract")
    read = {
        "safe_torch_load": lambda: safe_torch_load(path),
        "inr-shape extract": lambda: _shape_extract(path, tmp_path),
        "nerfstudio eval_setup": lambda: _nerfstudio_eval(path, tmp_path, tiny_scene),
    }[reader]
    with pytest.raises(RefusedFileError, match=f"{name} is not a plain-weights file"):
        read()
    assert not marker.exists()


def test_checkpoint_gadgets_are_live(tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    for gadget in CHECKPOINT_GADGETS:
        path = _crafted_checkpoint(tmp_path / f"{gadget}.pt", marker, gadget, shape=False)
        torch.load(path, weights_only=False)
        assert marker.exists(), gadget
        marker.unlink()


# ------------------------------------------------------------------------------------ nerfstudio's commands


@pytest.mark.slow  # subprocesses that import nerfstudio
@pytest.mark.parametrize(
    "command",
    [
        ["ns-train", "inr-nerf", "--load-config", "{config}"],
        ["ns-export", "pointcloud", "--load-config", "{config}", "--output-dir", "{out}"],
    ],
    ids=["ns-train --load-config", "ns-export"],
)
def test_nerfstudio_commands_refuse_route_1_with_one_line(tmp_path: Path, genuine_text: str, command: list) -> None:
    gadget = next(g for g in GADGETS if g.name.startswith("route 1"))
    config, marker = _crafted(tmp_path, gadget, genuine_text)
    _assert_refused_in_one_line(command, config, tmp_path, marker, str(config), "get_num_frames_in_video")


def _assert_refused_in_one_line(command: list, config: Path, tmp_path: Path, marker: Path, *words: str) -> None:
    """Run an installed command on ``config``: it fails, creates no marker, and its last line is one error naming
    ``words`` (no traceback)."""
    args = [str(BIN / command[0])] + [a.format(config=config, out=tmp_path / "out") for a in command[1:]]
    env = {**os.environ, "NIM_LPIPS": "off", "OMP_NUM_THREADS": "1"}
    result = subprocess.run(args, cwd=tmp_path, capture_output=True, text=True, timeout=600, env=env)
    assert not marker.exists()
    assert result.returncode != 0
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    last = result.stderr.strip().splitlines()[-1]
    assert "error:" in last and all(word in last for word in words), last


@pytest.mark.slow  # subprocesses that import nerfstudio and set up a pipeline
@pytest.mark.parametrize(
    "command",
    [
        ["ns-eval", "--load-config", "{config}", "--output-path", "{out}/e.json"],
        ["ns-render", "dataset", "--load-config", "{config}", "--output-path", "{out}"],
        ["ns-export", "pointcloud", "--load-config", "{config}", "--output-dir", "{out}"],
    ],
    ids=["ns-eval", "ns-render", "ns-export"],
)
def test_nerfstudio_commands_refuse_a_crafted_checkpoint_with_one_line(
    tmp_path: Path, tiny_scene: Path, command: list
) -> None:
    """nerfstudio's own checkpoint load, routed to safe_torch_load: one line naming the file and the refused global."""
    from nerf_inr_methods.nerfstudio_plugin.runs import prepare_config

    marker = tmp_path / "marker"
    checkpoint = _crafted_checkpoint(tmp_path / "models" / "step-000000001.ckpt", marker, "os.system", shape=False)
    config = prepare_config("inr-nerf", tiny_scene, tmp_path / "out", steps=1)
    config.relative_model_dir = checkpoint.parent
    (tmp_path / "config.yml").write_text(yaml.dump(config))
    words = (str(checkpoint), "not a plain-weights file", "system")  # the file and the refused global
    _assert_refused_in_one_line(command, tmp_path / "config.yml", tmp_path, marker, *words)
