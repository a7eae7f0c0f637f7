"""``inr-shape``: fit an SDF/occupancy network to a mesh, or extract a mesh from a trained checkpoint.

Examples::

    inr-shape fit --mesh bunny.obj                                   # INT protocol: SIREN + Adam on SDF
    inr-shape fit --mesh bunny.obj --int-selection.enabled      # + INT example selection
    inr-shape fit --mesh bunny.obj --protocol esgd                    # Gaussian MLP + ESGD on occupancy (BCE)
    inr-shape fit --mesh bunny.obj --iga.enabled --points pool # + IGA on Morton groups of 256 points
    inr-shape fit --mesh bunny.obj --run-name b1 --resume       # continue run b1 from its latest checkpoint
    inr-shape extract --checkpoint outputs/inr-shape/<run>/checkpoints/final.pt --resolution 512

Bad input (a missing or unreadable file, a bad flag value, a grid larger than the memory, an unwritable output
folder) ends with one line naming the flag or file and exit status 2, before any long work.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import tyro

from nerf_inr_methods import mesh as meshlib
from nerf_inr_methods.cli import check_device, check_output_file, check_positive, exit_on_bad_input

from .config import ShapeFitConfig
from .metrics import voxel_center_bounds
from .train import load_checkpoint, run_fit


@dataclass
class ExtractConfig:
    """Extract a mesh from a trained shape checkpoint (vertices in the input mesh's coordinates)."""

    checkpoint: Path
    """Checkpoint written by 'inr-shape fit' (e.g. <run>/checkpoints/final.pt)."""
    output: Path | None = None
    """Output mesh (.ply, .obj, .off, .stl); None: mesh_<resolution>.ply next to the run's config."""
    resolution: int = 256
    """Marching-cubes grid resolution per axis."""
    level: float | None = None
    """Iso-level (None: the trained task's surface: 0 for SDF and occupancy logits, 0.5 for occupancy values)."""
    chunk_size: int = 1 << 17
    """Points per forward pass (bounds memory)."""
    device: str = "cpu"
    """Torch device."""
    space: Literal["input", "unit"] = "input"
    """Vertex coordinates: the input mesh's (default) or the normalised unit box's."""
    progress: bool | None = None
    """Progress bar with ETA of the grid evaluation (default: on a terminal)."""

    def output_path(self) -> Path:
        """--output, or mesh_<resolution>.ply in the run folder of the checkpoint."""
        if self.output is not None:
            return Path(self.output)
        return Path(self.checkpoint).resolve().parent.parent / f"mesh_{self.resolution}.ply"

    def check_flags(self) -> None:
        """Refuse bad flags, a missing checkpoint and an unwritable output before loading anything."""
        checkpoint = Path(self.checkpoint)
        if not checkpoint.exists():
            raise FileNotFoundError(f"--checkpoint {checkpoint} does not exist")
        if checkpoint.is_dir():
            final = sorted(checkpoint.rglob("final.pt"))
            hint = f"; did you mean --checkpoint {final[0]}?" if len(final) == 1 else ""
            raise ValueError(f"--checkpoint {checkpoint} is a folder, expected a checkpoint file{hint}")
        check_positive(self.resolution, "--resolution", 2)
        check_positive(self.chunk_size, "--chunk-size", 1)
        check_device(self.device, "--device")
        if self.level is not None and not math.isfinite(self.level):
            raise ValueError(f"--level must be a finite number, got {self.level}")
        meshlib.check_grid_memory(self.resolution, "--resolution")
        check_output_file(self.output_path(), "--output", meshlib.EXPORT_SUFFIXES)


def fit_main(cfg: ShapeFitConfig) -> dict:
    """Train and print the run's summary; returns the metrics."""
    metrics = run_fit(cfg)
    summary = {
        "run_dir": metrics.get("run_dir"),
        "protocol": metrics.get("protocol"),
        f"iou_{metrics.get('iou_resolution')}": metrics.get("iou"),
        "chamfer_l1": (metrics.get("chamfer") or {}).get("chamfer_l1"),
        "train_s": metrics.get("timings", {}).get("train_s"),
        "mesh": metrics.get("mesh_path"),
    }
    print(json.dumps(summary, indent=1))
    return metrics


def extract_main(cfg: ExtractConfig) -> Path:
    """Extract and export a mesh from a checkpoint; returns the written path."""
    cfg.check_flags()
    loaded = load_checkpoint(cfg.checkpoint, cfg.device)
    level = loaded.level if cfg.level is None else cfg.level
    lo, hi = voxel_center_bounds(cfg.resolution)
    transform = loaded.normalization.unit_to_input_matrix() if cfg.space == "input" else None
    mesh = meshlib.extract_mesh(
        meshlib.torch_field(loaded.model),
        lo,
        hi,
        cfg.resolution,
        level,
        loaded.inside,
        cfg.chunk_size,
        transform,
        progress=cfg.progress,
    )
    path = meshlib.export_mesh(mesh, cfg.output_path())
    print(f"wrote {path} ({len(mesh.vertices)} vertices, {len(mesh.faces)} faces)")
    return path


def entrypoint() -> None:
    """Console script ``inr-shape`` (subcommands ``fit`` and ``extract``)."""
    cfg = tyro.extras.subcommand_cli_from_dict({"fit": ShapeFitConfig, "extract": ExtractConfig}, description=__doc__)
    exit_on_bad_input("inr-shape", lambda: extract_main(cfg) if isinstance(cfg, ExtractConfig) else fit_main(cfg))


if __name__ == "__main__":
    entrypoint()
