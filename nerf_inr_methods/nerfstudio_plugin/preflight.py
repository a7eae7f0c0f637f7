"""What ``ns-train`` does for our methods before nerfstudio prints and saves the config: check, then settle.

:func:`preflight` runs when our trainer config is about to be printed (``ESGDTrainerConfig.print_to_terminal``, the
first thing ``ns-train`` does after parsing the command line), so bad input fails in one line before any long work:

- **Flags** nerfstudio leaves unchecked (``--max-num-iterations -5`` used to end in ``KeyError: 'step'``, a batch of 0
  rays in a division by zero, ...): each error names the flag, the value and what is expected.
- **Data**: ``--data`` must exist; the dataparser reads the train and eval splits, and every image it lists must exist
  and be a readable image (a missing frame or a truncated PNG is named here instead of failing deep in the image
  cache), of one size per split and at least a pixel per side at ``--pipeline.datamanager.camera-res-scale-factor``.
  Camera poses that would train a NaN or blind model without a word (a NaN / Inf or all-zero ``transform_matrix``, a
  ``camera_angle_x`` outside (0, pi)) are refused naming the file and the frame, for Blender's
  ``transforms_<split>.json`` and nerfstudio-data's ``transforms.json`` (llff-data checks its ``poses_bounds.npy``).
- **Output and checkpoints**: ``--output-dir`` must be creatable, ``--load-dir`` / ``--load-checkpoint`` must exist;
  the run folder is claimed for this run (:mod:`run_folder`: another live run or a finished one there is refused).
- **Near/far planes**: Blender scenes keep vanilla NeRF's planes (2, 6); datasets whose dataparser reports planes
  (llff-data) use those; for other datasets, unless ``--pipeline.model.collider-params`` is set, the planes are taken
  from the training cameras and the scene box (:func:`near_far_from_cameras`) and written into the config (so
  ``config.yml``, ``ns-eval`` and ``ns-render`` use them too). One line says which planes the run uses.
- ``--pipeline.model.iga-end`` above the rays of a batch is clamped by IGA: one warning line says so.

Errors are ``ValueError`` / ``FileNotFoundError`` raised here; ``offline.install`` prints such errors of our package
as one line (``ns-train: error: ...``, exit status 2).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import os
from pathlib import Path
from typing import Any, Dict, Iterable, List, Tuple

import torch
from nerfstudio.data.datamanagers.base_datamanager import VanillaDataManagerConfig
from nerfstudio.data.dataparsers.blender_dataparser import BlenderDataParserConfig
from nerfstudio.data.dataparsers.nerfstudio_dataparser import NerfstudioDataParserConfig
from nerfstudio.utils.rich_utils import CONSOLE
from torch import Tensor

from nerf_inr_methods import cli
from nerf_inr_methods.nerfstudio_plugin.offline import raised_by_this_package
from nerf_inr_methods.nerfstudio_plugin.run_folder import claim_run_folder

BACKGROUND_COLORS = ("random", "last_sample", "black", "white")
"""Values of --pipeline.model.background-color (vanilla NeRF's choices)."""
DATA_ERRORS = (OSError, ValueError, KeyError, IndexError, AssertionError, ZeroDivisionError)
"""What dataparsers raise on a bad dataset (missing files, bad values or keys, nerfstudio's asserts, nerfstudio-data's
pose scaling when every camera sits at one point); reported as one line naming --data. Other exceptions are bugs and
keep their traceback."""
NEAR_FLOOR_FRACTION = 0.01
"""Near plane lower bound, as a fraction of the far plane, for cameras inside the scene box (distance 0)."""
ROTATION_TOLERANCE = 1e-2
"""Largest max |R^T R / s - I| of a camera pose's 3x3 block accepted as a rotation (Blender's mic: 2e-6)."""


def preflight(config: Any) -> None:
    """Check a TrainerConfig of our methods and settle its near/far planes (see the module docstring).

    Args:
        config: the ``ESGDTrainerConfig`` ns-train is about to print, save and train (its pipeline model and
            near/far planes may be updated in place).
    Raises:
        ValueError / FileNotFoundError naming the flag or file and what was expected.
    """
    check_flags(config)
    check_checkpoint_flags(config)
    train_outputs = check_dataset(config)
    choose_near_far(config, train_outputs)
    warn_iga_end_clamped(config)
    check_output_dir(config)


def warn(message: str) -> None:
    """One warning line on the console (never wrapped)."""
    CONSOLE.print(f"[bold yellow]warning:[/bold yellow] {message}", soft_wrap=True, highlight=False)


# ----------------------------------------------------------------------------------------------- flags
def _require(condition: bool, flag: str, value: Any, expected: str) -> None:
    if not condition:
        raise ValueError(f"{flag} must be {expected}, got {value!r}")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _positive_finite(value: Any) -> bool:
    return _finite_number(value) and value > 0


def _require_ints(owner: Any, prefix: str, names: Iterable[str], minimum: int) -> None:
    """Each attribute ``names`` of ``owner`` (when present) must be an integer >= ``minimum``."""
    expected = "an integer >= 1" if minimum == 1 else "an integer >= 0 (0: never)"
    for name in names:
        if hasattr(owner, name):
            value = getattr(owner, name)
            _require(_is_int(value) and value >= minimum, f"{prefix}{_dashes(name)}", value, expected)


def check_flags(config: Any) -> None:
    """Trainer, machine, optimizer, datamanager and model flags our methods need (no file access)."""
    _require_ints(config, "--", ["max_num_iterations"], minimum=1)
    steps = ["steps_per_save", "steps_per_eval_batch", "steps_per_eval_image", "steps_per_eval_all_images"]
    _require_ints(config, "--", steps, minimum=0)
    _require_ints(config.logging, "--logging.", ["steps_per_log"], minimum=0)
    check_device(config.machine.device_type)
    check_optimizers(config)
    datamanager = config.pipeline.datamanager
    prefix = "--pipeline.datamanager."
    _require_ints(datamanager, prefix, ["train_num_rays_per_batch", "eval_num_rays_per_batch", "patch_size"], 1)
    if hasattr(datamanager, "camera_res_scale_factor"):
        factor = datamanager.camera_res_scale_factor
        _require(_positive_finite(factor), f"{prefix}camera-res-scale-factor", factor, "a number > 0")
    check_model_flags(config.pipeline.model)


def check_model_flags(model: Any) -> None:
    """Sizes, sample counts, background colour and planes of an InrNeRFModelConfig."""
    prefix = "--pipeline.model."
    sizes = ["num_coarse_samples", "eval_num_rays_per_chunk", "iga_end", "iga_update_every"]
    sizes += ["base_mlp_num_layers", "base_mlp_layer_width", "head_mlp_num_layers", "head_mlp_layer_width"]
    if getattr(model, "hierarchical_sampling", True):
        sizes.append("num_importance_samples")
    _require_ints(model, prefix, sizes, minimum=1)
    background = getattr(model, "background_color", "white")
    _require(background in BACKGROUND_COLORS, f"{prefix}background-color", background, f"one of {BACKGROUND_COLORS}")
    if hasattr(model, "check_field_flags"):  # an InrNeRFModelConfig
        model.check_field_flags()
    if getattr(model, "iga_identity", False) and not getattr(model, "iga", False):
        raise ValueError(f"{prefix}iga-identity True needs {prefix}iga True")
    collider = model.collider_params
    if collider is not None:
        if not {"near_plane", "far_plane"} <= set(collider):
            raise ValueError(f"{prefix}collider-params must set near_plane and far_plane, got {dict(collider)!r}")
        near, far = collider["near_plane"], collider["far_plane"]
        if not (_finite_number(near) and _finite_number(far) and 0 <= near < far):
            raise ValueError(
                f"{prefix}collider-params must have 0 <= near_plane < far_plane, got near_plane {near!r} "
                f"far_plane {far!r}"
            )


def check_device(device_type: str) -> None:
    """--machine.device-type must name a device this machine has (:func:`nerf_inr_methods.cli.check_device`)."""
    cli.check_device(device_type, "--machine.device-type")


def check_optimizers(config: Any) -> None:
    """Learning rates (> 0) of the optimizer configs the run uses (--optimizers, or the --optimizer preset)."""
    choice = getattr(config, "optimizer", "configured")
    groups: Iterable[Tuple[str, Any]]
    if choice == "configured":
        groups = [(f"--optimizers.{name}", group) for name, group in config.optimizers.items()]
    else:
        presets = getattr(config, "optimizer_presets", {})
        groups = [(f"--optimizer-presets.{choice}", presets[choice])] if choice in presets else []
    for prefix, group in groups:
        optimizer = group.get("optimizer") if isinstance(group, dict) else None
        lr = getattr(optimizer, "lr", None)
        if lr is not None:
            _require(_positive_finite(lr), f"{prefix}.optimizer.lr", lr, "a number > 0")
        ratio = getattr(group.get("scheduler") if isinstance(group, dict) else None, "lr_final_ratio", None)
        if ratio is not None:
            _require(_positive_finite(ratio), f"{prefix}.scheduler.lr-final-ratio", ratio, "a number > 0")


# ----------------------------------------------------------------------------------------------- checkpoints, output
def check_checkpoint_flags(config: Any) -> None:
    """--load-dir (a folder of step-*.ckpt, with --load-step: that step's file) and --load-checkpoint must exist."""
    load_dir = config.load_dir
    if load_dir is not None:
        load_dir = Path(load_dir)
        if not load_dir.is_dir():
            raise FileNotFoundError(f"--load-dir {load_dir}: no such folder (expected a run's nerfstudio_models/)")
        if config.load_step is not None:
            path = load_dir / f"step-{int(config.load_step):09d}.ckpt"
            if not path.is_file():
                raise FileNotFoundError(f"--load-step {config.load_step}: {path} does not exist")
        elif not any(load_dir.glob("step-*.ckpt")):
            raise FileNotFoundError(f"--load-dir {load_dir}: no step-*.ckpt checkpoint in this folder")
    if config.load_checkpoint is not None and not Path(config.load_checkpoint).is_file():
        raise FileNotFoundError(f"--load-checkpoint {config.load_checkpoint}: no such file")


def check_output_dir(config: Any) -> None:
    """The run folder (--output-dir/<experiment>/<method>/<timestamp>) must be creatable; it is created here, as
    ns-train's save_config would right after, and claimed for this run (:func:`run_folder.claim_run_folder`: not in
    use by another live run, and holding no earlier run unless this one resumes it)."""
    base_dir = config.get_base_dir()
    try:
        base_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ValueError(
            f"--output-dir {config.output_dir}: cannot create the run folder {base_dir} ({error.strerror or error})"
        ) from None
    if not os.access(base_dir, os.W_OK | os.X_OK):
        raise ValueError(f"--output-dir {config.output_dir}: the run folder {base_dir} is not writable")
    claim_run_folder(config)


# ----------------------------------------------------------------------------------------------- data
def data_path(config: Any) -> Path:
    """The dataset path the run reads: --data (ns-train's alias), --pipeline.datamanager.data, or the dataparser's."""
    datamanager = config.pipeline.datamanager
    data = config.data or getattr(datamanager, "data", None) or datamanager.dataparser.data
    return Path(data)


def check_dataset(config: Any) -> Any:
    """Read the dataset as the datamanager will (train and eval splits) and check every image file it lists.

    Returns:
        The train split's DataparserOutputs.
    """
    data = data_path(config)
    if not data.exists():
        raise FileNotFoundError(f"--data {data}: no such file or folder")
    parser_config = copy.copy(config.pipeline.datamanager.dataparser)
    parser_config.data = data
    check_dataparser_flags(parser_config)
    if isinstance(parser_config, BlenderDataParserConfig):
        for split in ("train", "val"):
            check_blender_transforms(data / f"transforms_{split}.json")
    if isinstance(parser_config, NerfstudioDataParserConfig):
        check_nerfstudio_transforms(data)
    parser_name = dataparser_name(parser_config)
    parser = parser_config.setup()
    outputs = {}
    for split in ("train", "val"):
        try:
            with CONSOLE.capture():  # the datamanager reads the splits again right after: print its notes once
                outputs[split] = parser.get_dataparser_outputs(split=split)
        except DATA_ERRORS as error:
            if raised_by_this_package(error):
                raise  # our dataparsers' errors already name the file and what was expected
            hint = " (degenerate camera poses, e.g. all at one point?)" if isinstance(error, ZeroDivisionError) else ""
            raise ValueError(
                f"--data {data}: {parser_name} cannot read the {split} split: {type(error).__name__}: {error}{hint}"
            ) from error
        if not outputs[split].image_filenames:
            raise ValueError(f"--data {data}: {parser_name} found no images in the {split} split")
        listed = f"listed in the {split} split of {parser_name} --data {data}"
        sizes = [check_image_file(Path(path), f"image file ({listed})") for path in outputs[split].image_filenames]
        for path in outputs[split].mask_filenames or []:
            check_image_file(Path(path), f"mask file ({listed})")
        check_image_sizes(outputs[split].image_filenames, sizes, listed, config.pipeline.datamanager)
    return outputs["train"]


def check_image_sizes(files: List[Path], sizes: List[Tuple[int, int]], listed: str, datamanager: Any) -> None:
    """The images of one split, as the datamanager will load them: one size (nerfstudio's image cache stacks them) and
    at least one pixel per side after --pipeline.datamanager.camera-res-scale-factor (PIL refuses 0 pixels).

    Args:
        files: the split's image files; sizes: their (width, height); listed: where they are listed (for messages).
    """
    factor = float(getattr(datamanager, "camera_res_scale_factor", 1.0))
    flag = "--pipeline.datamanager.camera-res-scale-factor"
    for path, (width, height) in zip(files, sizes, strict=True):
        if int(width * factor) < 1 or int(height * factor) < 1:
            raise ValueError(
                f"{path}: a {width}x{height} image becomes {int(width * factor)}x{int(height * factor)} pixels at "
                f"{flag} {factor:g} ({listed}); use a larger factor or larger images"
            )
    if isinstance(datamanager, VanillaDataManagerConfig):
        for path, size in zip(files, sizes, strict=True):
            if size != sizes[0]:
                raise ValueError(
                    f"{path}: {size[0]}x{size[1]} pixels, but {files[0]} is {sizes[0][0]}x{sizes[0][1]} ({listed}); "
                    "every image of a split must have the same size"
                )


def check_blender_transforms(path: Path) -> None:
    """A Blender ``transforms_<split>.json``: valid JSON with a ``camera_angle_x`` in (0, pi) and a non-empty ``frames``
    list whose entries have a ``file_path`` and a 4x4 ``transform_matrix`` that is a camera pose
    (:func:`check_frame_poses`): what blender-data reads, which it would otherwise train on without a word."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not found (blender-data reads transforms_train.json and transforms_val.json)")
    meta = read_json(path)
    if not isinstance(meta, dict) or not _finite_number(meta.get("camera_angle_x")):
        raise ValueError(f"{path}: expected an object with a number 'camera_angle_x' (horizontal field of view)")
    angle = meta["camera_angle_x"]
    if not 0 < angle < math.pi:
        raise ValueError(
            f"{path}: camera_angle_x must be a horizontal field of view in radians, between 0 and pi (exclusive), "
            f"got {angle!r}"
        )
    check_frame_poses(path, meta.get("frames"))


def check_nerfstudio_transforms(data: Path) -> None:
    """nerfstudio-data's ``transforms.json`` (``--data`` is the file or its folder): every frame's
    ``transform_matrix`` is a camera pose (:func:`check_frame_poses`) and the focal lengths present are > 0.
    Other faults are left to the dataparser (reported by :func:`check_dataset`)."""
    path = data if data.suffix == ".json" else data / "transforms.json"
    if not path.is_file():
        return  # the dataparser names the missing file
    meta = read_json(path)
    if not isinstance(meta, dict):
        raise ValueError(f"{path}: expected a JSON object with a 'frames' list")
    frames = meta.get("frames")
    check_frame_poses(path, frames)
    for owner, where in [(meta, "")] + [(frame, f"{frame_label(frames, i)}: ") for i, frame in enumerate(frames)]:
        for key in ("fl_x", "fl_y"):
            if key in owner and not _positive_finite(owner[key]):
                raise ValueError(f"{path}: {where}{key} must be a focal length > 0 (pixels), got {owner[key]!r}")


def read_json(path: Path) -> Any:
    """The parsed JSON of ``path``; ValueError naming the file if it is not valid JSON."""
    try:
        return json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as error:
        raise ValueError(f"{path}: not valid JSON ({error})") from None


def frame_label(frames: list, index: int) -> str:
    """How messages name a frame of a transforms JSON: ``frames[3] (./train/r_3)``."""
    file_path = frames[index].get("file_path") if isinstance(frames[index], dict) else None
    return f"frames[{index}]" + (f" ({file_path})" if isinstance(file_path, str) else "")


def check_frame_poses(path: Path, frames: Any) -> None:
    """``frames`` of a transforms JSON: a non-empty list of objects with a ``file_path`` string and a 4x4
    ``transform_matrix`` of finite numbers whose 3x3 block is a rotation (up to a uniform scale). A NaN or Inf pose
    trains a NaN model and an all-zero one a model that sees nothing; both are refused naming the file and frame.

    Raises:
        ValueError naming ``path`` and the frame (index and file_path).
    """
    if not isinstance(frames, list) or not frames:
        raise ValueError(f"{path}: expected a non-empty list 'frames'")
    for index, frame in enumerate(frames):
        matrix = frame.get("transform_matrix") if isinstance(frame, dict) else None
        shape_ok = (
            isinstance(matrix, list) and len(matrix) == 4 and all(isinstance(r, list) and len(r) == 4 for r in matrix)
        )
        if not isinstance(frame, dict) or not isinstance(frame.get("file_path"), str) or not shape_ok:
            raise ValueError(f"{path}: frames[{index}] needs a 'file_path' string and a 4x4 'transform_matrix'")
        label = frame_label(frames, index)
        values = [value for row in matrix for value in row]
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            raise ValueError(f"{path}: {label}: transform_matrix must hold numbers only")
        if not all(math.isfinite(v) for v in values):
            bad = next(v for v in values if not math.isfinite(v))
            raise ValueError(f"{path}: {label}: transform_matrix holds {bad!r}; a camera pose must be finite")
        deviation = rotation_deviation(torch.tensor(matrix, dtype=torch.float64)[:3, :3])
        if deviation > ROTATION_TOLERANCE:
            raise ValueError(
                f"{path}: {label}: the 3x3 block of transform_matrix is not a rotation (an all-zero or degenerate "
                f"matrix? max |R^T R / s - I| = {deviation:.3g})"
            )


def rotation_deviation(rotation: Tensor) -> float:
    """How far a 3x3 matrix is from a rotation times a scale s > 0: max |R^T R / s - I| with s = trace(R^T R) / 3
    (infinity for a zero matrix).

    Args:
        rotation: (3, 3) matrix.
    """
    gram = rotation.T @ rotation
    scale = float(torch.trace(gram)) / 3
    if not scale > 0:
        return math.inf
    return float((gram / scale - torch.eye(3, dtype=gram.dtype)).abs().max())


def check_dataparser_flags(parser_config: Any) -> None:
    """Flags of nerfstudio's dataparsers that fail deep inside them (colour names, scale factors)."""
    name = dataparser_name(parser_config)
    alpha = getattr(parser_config, "alpha_color", None)
    if alpha is not None:
        from nerfstudio.utils.colors import COLORS_DICT

        if not (isinstance(alpha, str) and alpha.lower() in COLORS_DICT):
            raise ValueError(f"{name} --alpha-color must be one of {sorted(COLORS_DICT)} or None, got {alpha!r}")
    for field_name in ("scale_factor", "downscale_factor"):
        value = getattr(parser_config, field_name, None)
        if value is not None:
            _require(_positive_finite(value), f"{name} --{_dashes(field_name)}", value, "a number > 0")


def check_image_file(path: Path, description: str) -> Tuple[int, int]:
    """An image the dataset lists must exist and be a complete image file (PIL's header and checksum check).

    Returns:
        Its (width, height) in pixels.
    """
    from PIL import Image

    if not path.is_file():
        raise FileNotFoundError(f"{path}: {description} not found")
    try:
        with Image.open(path) as image:
            image.verify()
            return image.size
    except Exception as error:  # PIL raises OSError, SyntaxError, ValueError, struct.error... on broken files
        raise ValueError(f"{path}: not a readable image (truncated or corrupt?): {error}") from None


def dataparser_name(parser_config: Any) -> str:
    """ns-train's subcommand name of a dataparser config (e.g. ``blender-data``), or its class name."""
    try:
        from nerfstudio.configs.dataparser_configs import dataparsers

        for name, candidate in dataparsers.items():
            if type(candidate) is type(parser_config):
                return name
    except ImportError:  # pragma: no cover - nerfstudio always has it; never fail a message on it
        pass
    return type(parser_config).__name__


# ----------------------------------------------------------------------------------------------- near/far planes
def near_far_from_cameras(origins: Tensor, aabb: Tensor) -> Tuple[float, float]:
    """Near/far planes that cover a scene box from every camera.

    ``far`` is the largest distance from a camera centre to a corner of the box; ``near`` the smallest distance from a
    camera centre to the box (0 for a camera inside it), at least ``NEAR_FLOOR_FRACTION * far``.

    Args:
        origins: (n_cameras, 3) camera centres, world units.
        aabb: (2, 3) scene box ``[min corner, max corner]``.
    Returns:
        (near, far) in world units, ``0 < near < far``.
    """
    if origins.ndim != 2 or origins.shape[-1] != 3 or origins.shape[0] == 0 or tuple(aabb.shape) != (2, 3):
        raise ValueError(f"expected origins (n, 3) and aabb (2, 3), got {tuple(origins.shape)} and {tuple(aabb.shape)}")
    origins, aabb = origins.double(), aabb.double()
    low, high = aabb[0], aabb[1]
    corners = torch.stack(torch.meshgrid(*[torch.stack([low[i], high[i]]) for i in range(3)], indexing="ij"), -1)
    far = float(torch.cdist(origins, corners.reshape(-1, 3)).max())
    outside = torch.clamp(torch.maximum(low - origins, origins - high), min=0.0)
    near = max(float(outside.norm(dim=-1).min()), NEAR_FLOOR_FRACTION * far)
    return near, far


def default_collider_params(model: Any) -> Dict[str, float] | None:
    """The collider_params default of the model config's class (vanilla NeRF's Blender planes: 2, 6)."""
    for model_field in dataclasses.fields(model):
        if model_field.name == "collider_params":
            if model_field.default_factory is not dataclasses.MISSING:
                return dict(model_field.default_factory())
            return None if model_field.default is None else dict(model_field.default)
    return None


def choose_near_far(config: Any, train_outputs: Any) -> None:
    """Settle the model's near/far planes for this dataset and say which the run uses (one line); models with planes
    of their own (nerfacto's --pipeline.model.near-plane / far-plane, no collider_params) are left as configured."""
    model = config.pipeline.model
    if not hasattr(model, "use_dataparser_near_far"):
        return
    parser_config = config.pipeline.datamanager.dataparser
    parser_name = dataparser_name(parser_config)
    collider = dict(model.collider_params) if model.collider_params is not None else None
    metadata = train_outputs.metadata or {}
    use_dataparser = bool(getattr(model, "use_dataparser_near_far", False))
    if use_dataparser and {"near_plane", "far_plane"} <= set(metadata):
        near, far = float(metadata["near_plane"]), float(metadata["far_plane"])
        source = f"reported by {parser_name}"
    elif collider is None:
        return
    elif collider != default_collider_params(model):
        near, far = collider["near_plane"], collider["far_plane"]
        source = "from --pipeline.model.collider-params"
    elif isinstance(parser_config, BlenderDataParserConfig) or not use_dataparser:
        near, far = collider["near_plane"], collider["far_plane"]
        if isinstance(parser_config, BlenderDataParserConfig):
            source = "(vanilla NeRF's planes for Blender scenes)"
        else:
            source = "from --pipeline.model.collider-params (--pipeline.model.use-dataparser-near-far False)"
    else:
        origins = train_outputs.cameras.camera_to_worlds[:, :3, 3]
        near, far = near_far_from_cameras(origins, train_outputs.scene_box.aabb)
        near, far = round(near, 4), round(far, 4)
        model.collider_params = {"near_plane": near, "far_plane": far}
        source = (
            f"from the training cameras and scene box of {parser_name} (not Blender's 2 / 6; "
            "set --pipeline.model.collider-params near_plane N far_plane F to choose others)"
        )
    CONSOLE.print(f"near/far planes: {near:g} / {far:g} {source}", soft_wrap=True, highlight=False)


def warn_iga_end_clamped(config: Any) -> None:
    """One warning when --pipeline.model.iga-end asks for more eigenvalues than a batch's rays allow."""
    model = config.pipeline.model
    if not getattr(model, "iga", False) or getattr(model, "iga_identity", False):
        return
    batch = int(config.pipeline.datamanager.train_num_rays_per_batch)
    if int(model.iga_end) > batch - 1:
        warn(
            f"--pipeline.model.iga-end {model.iga_end} is above the rays of a batch "
            f"(--pipeline.datamanager.train-num-rays-per-batch {batch}): IGA balances at most {batch - 1} eigenvalues "
            "per step (clamped)"
        )


def _finite_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _dashes(name: str) -> str:
    return name.replace("_", "-")
