"""Everything installing this package changes in nerfstudio, in one list, each item switchable off.

nerfstudio imports our method configs through its entry points (``ns-train``, ``ns-eval``, ``ns-render``,
``ns-viewer``, ``ns-export``, and any script that imports ``nerfstudio.configs.method_configs``); that import
installs :data:`PATCHES` (:func:`install`). ``NIM_PATCHES_OFF=lpips,warnings`` (names, comma-separated; ``all``)
leaves items out. Switching off ``safe-config``, ``safe-checkpoints``, ``safe-numpy`` or ``shell-free-colmap``
reopens the route to running code from a crafted file that the item closes (``tests/test_code_execution.py``).

=================== ========================================================================================
name                what changes in the process
=================== ========================================================================================
safe-config         ``yaml.load`` called by a ``nerfstudio.*`` module with an unsafe loader (``eval_setup``,
                    ``ns-train --load-config``) reads by the typed allow-list (:mod:`config_loader`)
safe-checkpoints    ``torch.load`` called by a ``nerfstudio.*`` module goes through
                    :func:`nerf_inr_methods.safe_io.safe_torch_load` (weights only; one-line refusal naming the file)
numpy-scalars       torch's safe globals gain numpy's scalar types (nerfstudio's scheduler states hold them, issue 3683)
safe-numpy          ``np.load(..., allow_pickle=True)`` called by a ``nerfstudio.*`` module unpickles numpy data only
shell-free-colmap   the COLMAP dataparser's ffmpeg downscaling runs without a shell
lpips               torchmetrics' LPIPS is built lazily and omitted (one warning) without its AlexNet weights;
                    ``VanillaPipeline``'s two eval-metric methods drop it then
one-line-errors     ``sys.excepthook`` prints this package's bad-input errors as ``<program>: error: ...`` (exit 2)
warnings            a few known third-party warnings are filtered (:mod:`warning_filters`)
=================== ========================================================================================
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable

from nerf_inr_methods import safe_io
from nerf_inr_methods.nerfstudio_plugin import config_loader, file_guards, offline
from nerf_inr_methods.nerfstudio_plugin.warning_filters import filter_third_party_warnings

OFF_VARIABLE = "NIM_PATCHES_OFF"


@dataclass(frozen=True)
class Patch:
    """One change this package makes in nerfstudio's process."""

    name: str
    install: Callable[[], None]
    """Idempotent."""


PATCHES: tuple[Patch, ...] = (
    Patch("safe-config", config_loader.install_safe_yaml_for_nerfstudio),
    Patch("safe-checkpoints", file_guards.install_safe_torch_load_for_nerfstudio),
    Patch("numpy-scalars", safe_io.allow_checkpoint_types),
    Patch("safe-numpy", file_guards.install_safe_numpy_for_nerfstudio),
    Patch("shell-free-colmap", file_guards.install_shell_free_colmap_downscale),
    Patch("lpips", offline.install_lazy_lpips),
    Patch("one-line-errors", offline.install_bad_input_hook),
    Patch("warnings", filter_third_party_warnings),
)


def switched_off() -> set[str]:
    """Names in ``NIM_PATCHES_OFF`` (``all``: every patch).

    Raises:
        ValueError: a name that is not a patch.
    """
    names = {n.strip() for n in os.environ.get(OFF_VARIABLE, "").split(",") if n.strip()}
    if "all" in names:
        return {patch.name for patch in PATCHES}
    unknown = names - {patch.name for patch in PATCHES}
    if unknown:
        raise ValueError(
            f"{OFF_VARIABLE}: unknown patch {', '.join(sorted(unknown))} "
            f"(known: {', '.join(p.name for p in PATCHES)}, all)"
        )
    return names


def install() -> list[str]:
    """Install every patch not switched off (idempotent); returns the names installed."""
    off = switched_off()
    installed = []
    for patch in PATCHES:
        if patch.name not in off:
            patch.install()
            installed.append(patch.name)
    return installed
