"""nerfstudio dataparser for scenes in the original LLFF layout (``llff-data``), e.g. ``nerf_llff_data/fern``.

Layout read::

    <scene>/poses_bounds.npy   (N, 17): per image a 3x5 matrix [R | t | (H, W, focal)] at full resolution,
                               camera axes [down, right, back], then the near and far depth bounds
    <scene>/images/            full-resolution images (sorted by name = the order of the rows)
    <scene>/images_<f>/        the same images downscaled by f (NeRF uses images_8: 504 x 378 for fern)

Processing follows NeRF's ``load_llff_data`` (nerf-pytorch) for the non-NDC path: axes converted to
nerfstudio's OpenGL camera axes (right, up, back), positions and bounds scaled so the nearest bound is
``1 / bd_factor``, poses recentered on the average pose (which becomes the identity: looking down -z, +y up),
every ``llffhold``-th image held out for val/test.

NDC is not supported: nerfstudio's cameras, samplers and colliders work in Euclidean space and have no NDC
warp. Forward-facing scenes are reconstructed in Euclidean space instead (NeRF's ``--no_ndc``): rays are
sampled between the near and far planes this parser derives from the bounds and returns in
``DataparserOutputs.metadata`` (see :class:`LLFFDataParserConfig`; models must use them, e.g.
``--pipeline.model.collider-params near_plane <near> far_plane <far>``, which the parser prints).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Sequence, Tuple, Type

import numpy as np
import torch
from nerfstudio.cameras.cameras import Cameras, CameraType
from nerfstudio.data.dataparsers.base_dataparser import DataParser, DataParserConfig, DataparserOutputs
from nerfstudio.data.scene_box import SceneBox
from nerfstudio.utils.rich_utils import CONSOLE
from PIL import Image

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")
"""Image files LLFF folders hold (case-insensitive), as nerf-pytorch's loader accepts."""


def load_poses_bounds(path: Path) -> Tuple[np.ndarray, np.ndarray]:
    """Read and validate an LLFF ``poses_bounds.npy``.

    Args:
        path: the ``poses_bounds.npy`` file.
    Returns:
        poses: (N, 3, 5) float64, columns [down, right, back, position, (H, W, focal)], full resolution.
        bounds: (N, 2) float64, near and far scene depth per image (file units).
    """
    if not path.is_file():
        raise FileNotFoundError(f"{path}: LLFF poses file not found (expected an (N, 17) array saved by LLFF)")
    try:
        array = np.load(path, allow_pickle=False)
    except Exception as error:  # numpy raises ValueError, OSError, EOFError, UnpicklingError... on bad files
        raise ValueError(f"{path}: cannot be read as a .npy array ({error})") from error
    if array.ndim != 2 or array.shape[1] != 17 or array.shape[0] == 0:
        raise ValueError(
            f"{path}: expected an (N, 17) array (3x5 pose + 2 bounds per image, N >= 1), got shape {array.shape}"
        )
    if not np.issubdtype(array.dtype, np.number):
        raise ValueError(f"{path}: expected an array of numbers, got dtype {array.dtype}")
    if not np.all(np.isfinite(array)):
        row, column = (int(i) for i in np.argwhere(~np.isfinite(array))[0])
        raise ValueError(
            f"{path}: row {row} (image {row} in name order) holds {array[row, column]} in column {column}; "
            "expected finite numbers (a non-finite pose trains a NaN model)"
        )
    array = array.astype(np.float64)
    poses = array[:, :15].reshape(-1, 3, 5)
    bounds = array[:, 15:]
    hwf = poses[:, :, 4]
    if np.any(hwf <= 0):
        row = int(np.nonzero(np.any(hwf <= 0, axis=1))[0][0])
        raise ValueError(f"{path}: row {row} has H, W, focal = {hwf[row].tolist()}; expected positive values")
    if np.any(bounds[:, 0] <= 0) or np.any(bounds[:, 1] <= bounds[:, 0]):
        row = int(np.nonzero((bounds[:, 0] <= 0) | (bounds[:, 1] <= bounds[:, 0]))[0][0])
        raise ValueError(f"{path}: row {row} has bounds {bounds[row].tolist()}; expected 0 < near < far")
    rotations = poses[:, :, :3]
    errors = np.abs(rotations.transpose(0, 2, 1) @ rotations - np.eye(3)).max(axis=(1, 2))
    if errors.max() > 1e-3:
        row = int(np.argmax(errors > 1e-3))
        raise ValueError(
            f"{path}: row {row} (image {row} in name order): the 3x3 rotation block is not orthonormal "
            f"(max |R^T R - I| = {errors[row]:.3g}; an all-zero pose?)"
        )
    return poses, bounds


def llff_to_opengl(poses: np.ndarray) -> np.ndarray:
    """Convert LLFF camera-to-world matrices (axes [down, right, back]) to OpenGL axes [right, up, back].

    Args:
        poses: (N, 3, >=4) LLFF matrices; only the first 4 columns are used.
    Returns:
        (N, 3, 4) camera-to-world matrices in nerfstudio's convention.
    """
    return np.concatenate([poses[:, :, 1:2], -poses[:, :, 0:1], poses[:, :, 2:4]], axis=2)


def average_pose(c2w: np.ndarray) -> np.ndarray:
    """NeRF's ``poses_avg``: mean position, summed back (z) and up (y) axes, re-orthonormalized.

    Args:
        c2w: (N, 3, 4) OpenGL camera-to-world matrices.
    Returns:
        (3, 4) average camera-to-world matrix.
    """
    center = c2w[:, :, 3].mean(axis=0)
    back = c2w[:, :, 2].sum(axis=0)
    back = back / np.linalg.norm(back)
    up = c2w[:, :, 1].sum(axis=0)
    right = np.cross(up, back)
    right = right / np.linalg.norm(right)
    up = np.cross(back, right)
    return np.stack([right, up, back, center], axis=1)


def recenter_transform(c2w: np.ndarray) -> np.ndarray:
    """World transform that maps the average pose to the identity (NeRF's ``recenter_poses``).

    Args:
        c2w: (N, 3, 4) OpenGL camera-to-world matrices.
    Returns:
        (3, 4) transform T; the recentered poses are T @ [c2w; 0 0 0 1].
    """
    average = np.concatenate([average_pose(c2w), [[0.0, 0.0, 0.0, 1.0]]], axis=0)
    return np.linalg.inv(average)[:3]


def apply_transform(transform: np.ndarray, c2w: np.ndarray) -> np.ndarray:
    """Apply a world transform to camera-to-world matrices.

    Args:
        transform: (3, 4) rigid world transform [R | t].
        c2w: (N, 3, 4) camera-to-world matrices.
    Returns:
        (N, 3, 4) matrices [R @ rotation | R @ position + t].
    """
    rotation, translation = transform[:, :3], transform[:, 3]
    return np.concatenate([rotation @ c2w[:, :, :3], (c2w[:, :, 3] @ rotation.T + translation)[:, :, None]], axis=2)


def llff_holdout_split(num_images: int, llffhold: int) -> Tuple[np.ndarray, np.ndarray]:
    """NeRF's LLFF split: images 0, llffhold, 2 llffhold, ... are held out; llffhold 0 uses all for both.

    Returns:
        (train indices, eval indices), int64 arrays.
    """
    if llffhold < 0 or llffhold == 1:
        raise ValueError(f"llffhold must be 0 (no hold-out) or >= 2, got {llffhold}")
    indices = np.arange(num_images)
    if llffhold == 0:
        return indices, indices
    held_out = indices % llffhold == 0
    return indices[~held_out], indices[held_out]


def frustum_corner_cos(width: np.ndarray, height: np.ndarray, focal: np.ndarray) -> np.ndarray:
    """Cosine of the angle between the optical axis and the ray through an image corner.

    Args:
        width, height, focal: (N,) image sizes and focal lengths in the same pixel units.
    Returns:
        (N,) cosines in (0, 1].
    """
    return focal / np.sqrt(focal**2 + (width / 2) ** 2 + (height / 2) ** 2)


def sampled_region_aabb(
    c2w: np.ndarray, width: np.ndarray, height: np.ndarray, focal: np.ndarray, near: float, far: float, grid: int = 5
) -> np.ndarray:
    """Axis-aligned box around every point rays sample: pixel rays at distances in [near, far] from the camera.

    Args:
        c2w: (N, 3, 4) OpenGL camera-to-world matrices.
        width, height, focal: (N,) image sizes and focal lengths (pixels, any common resolution).
        near, far: sampling range along unit-length ray directions (world units).
        grid: pixel positions per image axis on which rays are cast (corners and edges included).
    Returns:
        (2, 3) [min, max] corners.
    """
    u = np.linspace(-0.5, 0.5, grid)
    uu, vv = np.meshgrid(u, u, indexing="ij")
    points = []
    for i in range(c2w.shape[0]):
        directions = np.stack(
            [uu.ravel() * width[i] / focal[i], vv.ravel() * height[i] / focal[i], -np.ones(uu.size)], axis=1
        )
        directions /= np.linalg.norm(directions, axis=1, keepdims=True)
        world = directions @ c2w[i, :, :3].T
        for distance in (near, far):
            points.append(c2w[i, :, 3] + distance * world)
    stacked = np.concatenate(points, axis=0)
    return np.stack([stacked.min(axis=0), stacked.max(axis=0)])


def list_images(folder: Path) -> List[Path]:
    """Image files of an LLFF folder sorted by name (the order of the poses_bounds.npy rows)."""
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)


def downscaled_size(width: int, height: int, factor: float) -> Tuple[int, int]:
    """Size of an image downscaled by ``factor``, rounded like ImageMagick's ``-resize <100/f>%`` (LLFF's tool)."""
    return max(1, int(np.floor(width / factor + 0.5))), max(1, int(np.floor(height / factor + 0.5)))


def write_downscaled_images(sources: Sequence[Path], destination: Path, factor: float) -> List[Path]:
    """Write ``<destination>/<stem>.png`` copies of images downscaled by ``factor`` (Lanczos, alpha kept).

    Existing outputs of the right size are kept, so an interrupted run resumes; each file is written to a
    temporary name first and renamed, so a crash never leaves a truncated PNG under the final name.

    Args:
        sources: images to downscale.
        destination: output folder, created if needed.
        factor: downscale factor (> 1 shrinks).
    Returns:
        The written (or kept) paths, in the order of ``sources``.
    """
    if factor <= 0:
        raise ValueError(f"downscale factor must be positive, got {factor}")
    destination.mkdir(parents=True, exist_ok=True)
    outputs = []
    for source in sources:
        try:
            with Image.open(source) as header:  # reads the size only
                size = downscaled_size(header.width, header.height, factor)
        except OSError as error:
            raise ValueError(f"{source}: unreadable image ({error})") from error
        target = destination / (source.stem + ".png")
        if target.is_file():
            try:
                with Image.open(target) as existing:
                    if existing.size == size:
                        outputs.append(target)
                        continue
            except OSError:
                pass  # unreadable leftover of an interrupted run: rewrite it
        image = open_image(source)
        if image.mode not in ("RGB", "RGBA", "L", "LA"):
            image = image.convert("RGBA" if "A" in image.getbands() else "RGB")
        temporary = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        image.resize(size, resample=Image.Resampling.LANCZOS).save(temporary, format="PNG")
        os.replace(temporary, target)
        outputs.append(target)
    return outputs


def open_image(path: Path) -> Image.Image:
    """Open and fully decode an image, raising ValueError naming the file if it cannot be read."""
    try:
        image = Image.open(path)
        image.load()
    except (OSError, SyntaxError, ValueError) as error:  # PIL's UnidentifiedImageError is an OSError
        raise ValueError(f"{path}: unreadable image ({error})") from error
    return image


def default_cache_dir(scene: Path, factor: int) -> Path:
    """Cache folder for resized copies of a scene whose folder is read-only."""
    root = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "nerf_inr_methods" / "llff"
    digest = hashlib.sha1(str(scene.resolve()).encode()).hexdigest()[:8]
    return root / f"{scene.name}-{digest}" / f"images_{factor}"


@dataclass
class LLFFScene:
    """A parsed LLFF scene in nerfstudio's world frame (all images, before the split)."""

    image_filenames: List[Path]
    """Images actually loaded (images_<f>/ or resized copies), one per poses_bounds.npy row."""
    camera_to_worlds: np.ndarray
    """(N, 3, 4) OpenGL camera-to-world matrices, recentered and scaled."""
    fx: np.ndarray
    """(N,) focal length along x in pixels of the loaded images."""
    fy: np.ndarray
    """(N,) focal length along y in pixels of the loaded images."""
    width: np.ndarray
    """(N,) loaded image width in pixels."""
    height: np.ndarray
    """(N,) loaded image height in pixels."""
    bounds: np.ndarray
    """(N, 2) near/far depth bounds in world units (after scaling)."""
    near_plane: float
    """Near sampling distance along unit ray directions (world units)."""
    far_plane: float
    """Far sampling distance along unit ray directions (world units)."""
    aabb: np.ndarray
    """(2, 3) box around the sampled region."""
    transform: np.ndarray
    """(3, 4) world transform applied to the file's poses (before scaling)."""
    scale: float
    """Scale applied to positions and bounds after the transform."""


@dataclass
class LLFFDataParserConfig(DataParserConfig):
    """LLFF forward-facing scene (poses_bounds.npy + images_<f>/), processed as NeRF does without NDC."""

    _target: Type = field(default_factory=lambda: LLFF)
    """target class to instantiate"""
    data: Path = Path("data/nerf_llff_data/fern")
    """Scene folder holding poses_bounds.npy and images/ or images_<downscale-factor>/."""
    downscale_factor: int = 8
    """Load images_<factor>/ (NeRF's LLFF setting is 8: 504 x 378 for fern); 1 loads images/. If the folder is
    missing, a finer images_<k>/ (k divides factor) or images/ is resized (Lanczos) and the parser says so."""
    downscaled_dir: Path | None = None
    """Where resized copies go when images_<factor>/ is missing. Default: <data>/images_<factor>/, or a folder
    under $XDG_CACHE_HOME (~/.cache)/nerf_inr_methods/llff/ when <data> is read-only."""
    bd_factor: float | None = 0.75
    """Scale the scene so the nearest bound becomes 1 / bd_factor (NeRF: 0.75); None keeps the file's units."""
    scale_factor: float = 1.0
    """Extra scale applied to positions, bounds and near/far after bd_factor."""
    recenter: bool = True
    """Move the world so the average camera pose is the identity (NeRF's recenter_poses)."""
    llffhold: int = 8
    """Images 0, llffhold, 2*llffhold, ... are the val/test views (NeRF: 8); 0 trains and evaluates on all."""
    near_factor: float = 0.9
    """Near plane = near_factor * smallest bound (NeRF without NDC: 0.9)."""
    far_factor: float = 1.0
    """Far plane = far_factor * largest bound (NeRF without NDC: 1.0), stretched so corner rays reach it."""


@dataclass
class LLFF(DataParser):
    """LLFF dataparser. ``metadata`` holds ``near_plane`` and ``far_plane``: distances along unit-length rays
    (nerfstudio normalizes ray directions) between which every pixel's ray covers the scene's depth bounds."""

    config: LLFFDataParserConfig

    def __init__(self, config: LLFFDataParserConfig):
        super().__init__(config=config)
        self._scene: LLFFScene | None = None

    def _generate_dataparser_outputs(self, split: str = "train", **kwargs: Dict | None) -> DataparserOutputs:
        scene = self.load_scene()
        train_indices, eval_indices = llff_holdout_split(len(scene.image_filenames), self.config.llffhold)
        if split == "train":
            indices = train_indices
        elif split in ("val", "test"):
            indices = eval_indices
        else:
            raise ValueError(f"unknown split {split!r}; expected 'train', 'val' or 'test'")

        def column(values: np.ndarray, dtype: torch.dtype) -> torch.Tensor:
            return torch.from_numpy(values[indices]).to(dtype)[:, None]

        cameras = Cameras(
            camera_to_worlds=torch.from_numpy(scene.camera_to_worlds[indices]).float(),
            fx=column(scene.fx, torch.float32),
            fy=column(scene.fy, torch.float32),
            cx=column(scene.width / 2.0, torch.float32),
            cy=column(scene.height / 2.0, torch.float32),
            width=column(scene.width, torch.int64),
            height=column(scene.height, torch.int64),
            camera_type=CameraType.PERSPECTIVE,
        )
        return DataparserOutputs(
            image_filenames=[scene.image_filenames[i] for i in indices],
            cameras=cameras,
            alpha_color=None,
            scene_box=SceneBox(aabb=torch.from_numpy(scene.aabb).float()),
            metadata={"near_plane": scene.near_plane, "far_plane": scene.far_plane},
            dataparser_transform=torch.from_numpy(scene.transform).float(),
            dataparser_scale=scene.scale,
        )

    def load_scene(self) -> LLFFScene:
        """Parse and validate the scene once (all splits share it)."""
        if self._scene is None:
            self._scene = self._parse_scene()
        return self._scene

    def _parse_scene(self) -> LLFFScene:
        config = self.config
        if config.downscale_factor < 1:
            raise ValueError(f"downscale_factor must be an integer >= 1, got {config.downscale_factor}")
        if config.bd_factor is not None and config.bd_factor <= 0:
            raise ValueError(f"bd_factor must be positive or None, got {config.bd_factor}")
        if config.scale_factor <= 0 or config.near_factor <= 0 or config.far_factor <= 0:
            raise ValueError("scale_factor, near_factor and far_factor must be positive")
        if not config.data.is_dir():
            raise FileNotFoundError(f"{config.data}: LLFF scene folder not found (expected poses_bounds.npy + images)")
        llff_holdout_split(1, config.llffhold)  # validates llffhold before any work

        poses, bounds = load_poses_bounds(config.data / "poses_bounds.npy")
        image_filenames = self._image_filenames(num_poses=poses.shape[0])
        width, height = self._check_image_sizes(image_filenames, poses[:, :, 4])
        full_height, full_width, focal = poses[:, 0, 4], poses[:, 1, 4], poses[:, 2, 4]
        fx = focal * width / full_width
        fy = focal * height / full_height

        c2w = llff_to_opengl(poses)
        transform = recenter_transform(c2w) if config.recenter else np.eye(4)[:3]
        c2w = apply_transform(transform, c2w)
        scale = (1.0 if config.bd_factor is None else 1.0 / (bounds.min() * config.bd_factor)) * config.scale_factor
        c2w[:, :, 3] *= scale
        bounds = bounds * scale

        near = config.near_factor * float(bounds.min())
        far_depth = config.far_factor * float(bounds.max())
        if near >= far_depth:
            raise ValueError(f"near plane {near:.4g} >= far plane {far_depth:.4g}: check near_factor and far_factor")
        # Bounds are depths along the optical axis; a corner ray reaches depth `far_depth` at a longer distance.
        far = far_depth / float(frustum_corner_cos(full_width, full_height, focal).min())
        aabb = sampled_region_aabb(c2w, full_width, full_height, focal, near, far)

        CONSOLE.log(
            f"LLFF {config.data.name}: {len(image_filenames)} images {int(width[0])}x{int(height[0])} from "
            f"{image_filenames[0].parent}, near {near:.3f} far {far:.3f} (scene units). Models that take near/far "
            f"from their config need: --pipeline.model.collider-params near_plane {near:.3f} far_plane {far:.3f}"
        )
        return LLFFScene(
            image_filenames=image_filenames,
            camera_to_worlds=c2w,
            fx=fx,
            fy=fy,
            width=width,
            height=height,
            bounds=bounds,
            near_plane=near,
            far_plane=far,
            aabb=aabb,
            transform=transform,
            scale=float(scale),
        )

    def _image_filenames(self, num_poses: int) -> List[Path]:
        """The images to load for the configured factor, resizing a finer folder when images_<f>/ is missing."""
        data, factor = self.config.data, self.config.downscale_factor
        wanted = data / ("images" if factor == 1 else f"images_{factor}")
        if wanted.is_dir():
            return self._checked_listing(wanted, num_poses)
        # images_<k> with k dividing the factor, coarsest first; images/ (k = 1) is the last resort.
        sources = [(k, data / f"images_{k}") for k in range(factor - 1, 1, -1) if factor % k == 0]
        sources.append((1, data / "images"))
        destination = self._downscaled_destination()
        for k, folder in sources:
            if folder.is_dir():
                source_files = self._checked_listing(folder, num_poses)
                CONSOLE.log(
                    f"[yellow]{wanted} not found: resizing {len(source_files)} images from {folder} by "
                    f"{factor // k} (Lanczos) into {destination} (kept for later runs)"
                )
                return write_downscaled_images(source_files, destination, factor / k)
        if destination.is_dir() and list_images(destination):
            CONSOLE.log(f"[yellow]{wanted} not found: using the resized copies in {destination}")
            return self._checked_listing(destination, num_poses)
        expected = ", ".join(str(folder) for folder in [wanted] + [folder for _, folder in sources])
        raise FileNotFoundError(f"{data}: no image folder found; expected one of {expected}")

    def _downscaled_destination(self) -> Path:
        if self.config.downscaled_dir is not None:
            return self.config.downscaled_dir
        data = self.config.data
        if os.access(data, os.W_OK):
            return data / f"images_{self.config.downscale_factor}"
        return default_cache_dir(data, self.config.downscale_factor)

    @staticmethod
    def _checked_listing(folder: Path, num_poses: int) -> List[Path]:
        files = list_images(folder)
        if len(files) != num_poses:
            raise ValueError(
                f"{folder}: found {len(files)} images ({'/'.join(IMAGE_EXTENSIONS)}) but poses_bounds.npy has "
                f"{num_poses} rows; expected one image per row"
            )
        return files

    def _check_image_sizes(self, files: List[Path], hwf: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """Decode every image once; each must be its row's full-resolution size / factor (+-1 px for rounding).

        Returns:
            (N,) widths and (N,) heights of the loaded images, float64.
        """
        factor = self.config.downscale_factor
        sizes = []
        for row, path in enumerate(files):
            with open_image(path) as image:
                width, height = image.size
            expected_w, expected_h = hwf[row, 1] / factor, hwf[row, 0] / factor
            if abs(width - expected_w) > 1.0 or abs(height - expected_h) > 1.0:
                raise ValueError(
                    f"{path}: image is {width}x{height} (WxH) but poses_bounds.npy row {row} gives "
                    f"{hwf[row, 1]:.0f}x{hwf[row, 0]:.0f} at full resolution, so {expected_w:.1f}x{expected_h:.1f} "
                    f"was expected for downscale_factor {factor}"
                )
            sizes.append((width, height))
        array = np.asarray(sizes, dtype=np.float64)
        return array[:, 0], array[:, 1]
