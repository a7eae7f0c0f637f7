"""Guards on what nerfstudio's own code does with the checkpoints, files and folders a run points to.

nerfstudio loads checkpoints with ``torch.load`` (``weights_only=True`` by default since torch 2.6), which refuses a
crafted pickle with a page-long ``UnpicklingError`` that names no file. :func:`install_safe_torch_load_for_nerfstudio`
routes nerfstudio's ``torch.load`` calls to :func:`nerf_inr_methods.safe_io.safe_torch_load` (the same check, plus
nerfstudio's numpy scalars), whose one-line error names the file and the refused global.

A config that loads safely (:mod:`config_loader`) still names a data folder, and two of nerfstudio's dataparsers do
more with its contents than read them:

- ``MinimalDataParser`` opens ``<data>/train.npz`` with ``np.load(allow_pickle=True)``: a crafted object array runs
  code. :func:`install_safe_numpy_for_nerfstudio` routes ``np.load(..., allow_pickle=True)`` calls made from
  ``nerfstudio.*`` modules to :func:`nerf_inr_methods.safe_io.safe_numpy_load` (numpy arrays, strings, numbers,
  lists and dicts only); every other caller keeps numpy's behaviour.
- ``ColmapDataParser`` downscales images by running ``ffmpeg -i "<image path>" ...`` through a shell: a folder
  named ``$(touch FILE)`` under the data folder runs a command. :func:`install_shell_free_colmap_downscale` makes
  that module run its command without a shell (the same arguments, split by ``shlex``).
"""

from __future__ import annotations

import shlex
import subprocess
import sys
from os import PathLike
from typing import Any, Callable

import numpy as np
import torch

from nerf_inr_methods import safe_io
from nerf_inr_methods.nerfstudio_plugin.config_loader import called_from_nerfstudio, replace_once


def install_safe_numpy_for_nerfstudio() -> None:
    """Route nerfstudio's ``np.load(..., allow_pickle=True)`` to :func:`safe_io.safe_numpy_load` (idempotent)."""

    def wrap(original: Callable[..., Any]) -> Callable[..., Any]:
        def load(file: Any, mmap_mode: Any = None, allow_pickle: bool = False, *args: Any, **kwargs: Any) -> Any:
            if allow_pickle and called_from_nerfstudio() is not None:
                return safe_io.safe_numpy_load(file, mmap_mode, True, *args, **kwargs)
            return original(file, mmap_mode, allow_pickle, *args, **kwargs)

        return load

    replace_once(np, "load", wrap)


def install_safe_torch_load_for_nerfstudio() -> None:
    """Route nerfstudio's ``torch.load`` calls to :func:`safe_io.safe_torch_load` (idempotent); a call asking for
    ``weights_only=False`` (none in nerfstudio 1.1.5) and every other caller keep torch's behaviour."""

    def wrap(original: Callable[..., Any]) -> Callable[..., Any]:
        def load(f: Any, map_location: Any = None, *args: Any, **kwargs: Any) -> Any:
            plain = not args and kwargs.get("weights_only") is not False and isinstance(f, (str, PathLike))
            if plain and called_from_nerfstudio() is not None:
                return safe_io.safe_torch_load(f, map_location=map_location)
            return original(f, map_location, *args, **kwargs)

        return load

    replace_once(torch, "load", wrap)


def run_without_shell(cmd: str, verbose: bool = False) -> str | None:
    """nerfstudio's ``run_command`` (same output and exit on failure) without a shell: ``$(...)``, backticks and
    ``;`` in a file name stay part of the name.

    Raises:
        ValueError: the command cannot be split (a file name with an unbalanced quote).
    """
    try:
        args = shlex.split(cmd)
    except ValueError:
        raise ValueError(f"refusing to run {cmd[:200]!r}: a file name in it has an unbalanced quote") from None
    out = subprocess.run(args, capture_output=not verbose, check=False)
    if out.returncode != 0:
        print(f"Error running command: {cmd}", file=sys.stderr)
        if out.stderr:
            print(out.stderr.decode("utf-8", "replace"), file=sys.stderr)
        sys.exit(1)
    return out.stdout.decode("utf-8") if out.stdout is not None else None


def install_shell_free_colmap_downscale() -> None:
    """Make nerfstudio's COLMAP dataparser run its ffmpeg downscaling without a shell (idempotent)."""
    from nerfstudio.data.dataparsers import colmap_dataparser

    colmap_dataparser.run_command = run_without_shell  # type: ignore[attr-defined]


def install() -> None:
    """The three guards (idempotent)."""
    install_safe_torch_load_for_nerfstudio()
    install_safe_numpy_for_nerfstudio()
    install_shell_free_colmap_downscale()
