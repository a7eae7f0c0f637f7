"""Loading the files users give us without running code from them.

Two kinds of files reach our commands from elsewhere (a shared run folder, a downloaded checkpoint):

- checkpoints (``.pt`` / ``.ckpt``, torch's pickle-based format): :func:`safe_torch_load` loads them with
  ``torch.load(weights_only=True)``: tensors, containers and plain numbers only, plus the numpy scalar types
  nerfstudio's scheduler states hold (:data:`CHECKPOINT_SAFE_GLOBALS`). Anything else in the pickle (a
  ``__reduce__`` that calls a function) is refused with a :class:`RefusedFileError` naming the file.
- numpy files whose object arrays are pickles (nerfstudio's minimal dataparser reads ``train.npz`` with
  ``allow_pickle=True``): :func:`safe_numpy_load` unpickles numpy arrays, strings, numbers, lists and dicts only.

nerfstudio ``config.yml`` files are read by :mod:`nerf_inr_methods.nerfstudio_plugin.config_loader` (a typed
allow-list of the registered configs' classes). Framework-free: torch and numpy only.

Example::

    >>> import torch, tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "w.pt")
    >>> torch.save({"step": 3, "w": torch.zeros(2)}, path)
    >>> safe_torch_load(path)["step"]
    3
"""

from __future__ import annotations

import os
import pickle
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

# ------------------------------------------------------------------------------------------------ checkpoints


class RefusedFileError(ValueError):
    """A file we were asked to load would run code (or build objects outside our allow-list) when loaded."""


def _numpy_scalar_types() -> list[Any]:
    """What pickled numpy scalars need: the ``scalar`` reconstructor, ``np.dtype`` and the dtype classes."""
    try:  # numpy >= 2 moved the module; 1.x keeps np.core
        from numpy._core.multiarray import scalar  # type: ignore[import-not-found]
    except ImportError:  # pragma: no cover - depends on the numpy version
        from numpy.core.multiarray import scalar  # type: ignore[no-redef]
    kinds = (np.float64, np.float32, np.float16, np.int64, np.int32, np.int16, np.int8, np.uint8, np.bool_)
    return [np.dtype, scalar] + [type(np.dtype(t)) for t in kinds]


CHECKPOINT_SAFE_GLOBALS: list[Any] = _numpy_scalar_types()
"""Globals allowed in checkpoints besides torch's defaults: numpy scalars and dtypes (nerfstudio's scheduler
states hold numpy floats, nerfstudio issue 3683). Nothing here runs code: each builds a number or a dtype."""

_allowed = False


def allow_checkpoint_types() -> None:
    """Add :data:`CHECKPOINT_SAFE_GLOBALS` to torch's process-wide allow-list (idempotent).

    ``torch.load`` (``weights_only=True``, the default since torch 2.6) then loads nerfstudio checkpoints whose
    scheduler state holds numpy floats, in nerfstudio's own code paths too (``ns-eval``, ``ns-render``, resume).
    """
    global _allowed
    if not _allowed:
        torch.serialization.add_safe_globals(CHECKPOINT_SAFE_GLOBALS)
        _allowed = True


def _weights_only_detail(message: str) -> str:
    """The informative line of torch's 'Weights only load failed' message: 'Unsupported global: GLOBAL ...' (torch
    2.6-2.8) or 'Trying to load unsupported GLOBAL posix.system whose module posix is blocked' (later)."""
    match = re.search(r"WeightsUnpickler error:\s*(.+?)(?:\. Please use|\n\n|$)", message, flags=re.S)
    match = match or re.search(r"^(Trying to load unsupported .+?)\.?$", message, flags=re.M)
    match = match or re.search(r"^(.*(?:GLOBAL|Unsupported).+?)\.?$", message, flags=re.M)
    detail = match.group(1) if match else message.splitlines()[0]
    return " ".join(detail.split())[:200]


def safe_torch_load(path: str | os.PathLike, map_location: Any = "cpu") -> Any:
    """``torch.load(path, weights_only=True)`` with the numpy scalar types allowed and one clear error per fault.

    Args:
        path: checkpoint file.
        map_location: as ``torch.load`` (default: CPU).

    Returns:
        The loaded object (dicts, lists, tensors, numbers, strings).

    Raises:
        FileNotFoundError: no such file.
        ValueError: a folder, an empty / truncated / non-checkpoint file ("... is truncated or not a checkpoint").
        RefusedFileError (a ValueError): the pickle references code or types outside the allow-list ("...
            is not a plain-weights file (it would run code: ...)").
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint {path} not found")
    if path.is_dir():
        raise ValueError(f"checkpoint {path} is a folder, expected a checkpoint file")
    if path.stat().st_size == 0:
        raise ValueError(f"checkpoint {path} is truncated or not a checkpoint (the file is empty)")
    allow_checkpoint_types()
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        message = str(error)
        if "Weights only load failed" in message and re.search(
            r"Unsupported global|GLOBAL |Unsupported class", message
        ):
            raise RefusedFileError(
                f"checkpoint {path} is not a plain-weights file (it would run code: {_weights_only_detail(message)}); "
                "refusing to load it"
            ) from None
        raise ValueError(f"checkpoint {path} is truncated or not a checkpoint ({_short(error)})") from None
    except (RuntimeError, EOFError, KeyError, ValueError, IndexError, TypeError, AttributeError, OSError) as error:
        # OSError: torch reads a zip cut inside its central directory as "[Errno 22] Invalid argument"
        raise ValueError(f"checkpoint {path} is truncated or not a checkpoint ({_short(error)})") from None


def _short(error: BaseException) -> str:
    """'Type: first sentence of the message' (torch's messages go on for lines)."""
    text = " ".join(str(error).split()).split(". ")[0] or "no detail"
    return f"{type(error).__name__}: {text[:160]}"


# ------------------------------------------------------------------------------------------------ numpy files

_NUMPY_PICKLE_GLOBALS = frozenset(
    f"{module}.{name}"
    for module in ("numpy.core.multiarray", "numpy._core.multiarray")
    for name in ("_reconstruct", "scalar")
) | {"numpy.ndarray", "numpy.dtype", "builtins.set", "builtins.frozenset", "builtins.complex", "builtins.slice"}
"""What a pickled numpy object array may reference: numpy's array and scalar reconstructors, dtypes and builtin
containers. Strings, numbers, lists, tuples and dicts need no global at all."""


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickles numpy object arrays holding arrays, strings, numbers, lists and dicts; refuses every other global."""

    source = "file"

    def find_class(self, module: str, name: str) -> Any:
        if f"{module}.{name}" in _NUMPY_PICKLE_GLOBALS or (module == "numpy.dtypes" and name.endswith("DType")):
            return super().find_class(module, name)
        raise RefusedFileError(
            f"{self.source}: refused the pickled object {module}.{name} (an object array may only hold numpy arrays, "
            "strings, numbers, lists and dicts; this file would run code)"
        )


def _read_object_array(fp: Any, source: str) -> np.ndarray:
    """One ``.npy`` stream, object arrays unpickled by :class:`_NumpyOnlyUnpickler`."""
    version = np.lib.format.read_magic(fp)
    if version == (1, 0):
        _, _, dtype = np.lib.format.read_array_header_1_0(fp)
    elif version == (2, 0):
        _, _, dtype = np.lib.format.read_array_header_2_0(fp)
    else:
        raise ValueError(f"{source}: unsupported .npy format version {version}")
    if not dtype.hasobject:
        raise ValueError(f"{source}: expected an object array")
    unpickler = _NumpyOnlyUnpickler(fp, encoding="ASCII")
    unpickler.source = source
    try:
        array = unpickler.load()
    except RefusedFileError:
        raise
    except Exception as error:  # a truncated or corrupt pickle
        raise ValueError(f"{source} is truncated or not a numpy file ({_short(error)})") from None
    if not isinstance(array, np.ndarray):
        raise ValueError(f"{source}: expected a numpy array, found {type(array).__name__}")
    return array


class SafeNpzFile:
    """``np.load``'s ``NpzFile`` whose object arrays are read by :func:`safe_numpy_load`'s restricted unpickler."""

    def __init__(self, npz: Any, source: str) -> None:
        self._npz, self._source = npz, source
        self.files = npz.files

    def __getitem__(self, key: str) -> np.ndarray:
        try:
            return self._npz[key]
        except ValueError as error:
            if "allow_pickle" not in str(error):
                raise
        member = key if key in self._npz.zip.namelist() else f"{key}.npy"
        with self._npz.zip.open(member) as fp:
            return _read_object_array(fp, f"{self._source}[{key}]")

    def keys(self) -> list[str]:
        return list(self.files)

    def __contains__(self, key: object) -> bool:
        return key in self.files

    def __iter__(self) -> Any:
        return iter(self.files)

    def __len__(self) -> int:
        return len(self.files)

    def close(self) -> None:
        self._npz.close()

    def __enter__(self) -> SafeNpzFile:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def safe_numpy_load(
    file: Any,
    mmap_mode: Any = None,
    allow_pickle: bool = True,
    fix_imports: bool = True,
    encoding: str = "ASCII",
    **kwargs: Any,
) -> Any:
    """``np.load(file, allow_pickle=True)`` without running code: object arrays may hold numpy arrays, strings,
    numbers, lists and dicts only (:class:`_NumpyOnlyUnpickler`); anything else raises :class:`RefusedFileError`.

    Args:
        file: a ``.npy`` / ``.npz`` path or open binary file, as ``np.load``.
        mmap_mode, fix_imports, encoding, kwargs: as ``np.load``; ``allow_pickle`` is accepted for its signature only
            (pickles are always restricted).

    Returns:
        An array, or a :class:`SafeNpzFile` for ``.npz`` archives (members read on access, as ``NpzFile``).

    Example::

        >>> import tempfile, os
        >>> path = os.path.join(tempfile.mkdtemp(), "a.npz")
        >>> np.savez(path, names=np.array([{"a": 1}], dtype=object))
        >>> safe_numpy_load(path)["names"][0]
        {'a': 1}
    """
    load = getattr(np.load, "_original", np.load)
    source = str(getattr(file, "name", file))
    start = file.tell() if hasattr(file, "tell") else None
    try:
        loaded = load(
            file, mmap_mode=mmap_mode, allow_pickle=False, fix_imports=fix_imports, encoding=encoding, **kwargs
        )
    except ValueError as error:
        if "allow_pickle" not in str(error):
            raise
        if start is None:
            with open(file, "rb") as fp:
                return _read_object_array(fp, source)
        file.seek(start)
        return _read_object_array(file, source)
    return SafeNpzFile(loaded, source) if isinstance(loaded, np.lib.npyio.NpzFile) else loaded


__all__ = [
    "CHECKPOINT_SAFE_GLOBALS",
    "RefusedFileError",
    "allow_checkpoint_types",
    "safe_numpy_load",
    "safe_torch_load",
]
