"""Loading the files users give us without running code from them.

Two kinds of files reach our commands from elsewhere (a shared run folder, a downloaded checkpoint):

- checkpoints (``.pt`` / ``.ckpt``, torch's pickle-based format): :func:`safe_torch_load` loads them with
  ``torch.load(weights_only=True)``: tensors, containers and plain numbers only, plus the numpy scalar types
  nerfstudio's scheduler states hold (:data:`CHECKPOINT_SAFE_GLOBALS`). Anything else in the pickle (a
  ``__reduce__`` that calls a function) is refused with a :class:`RefusedFileError` naming the file.
- nerfstudio ``config.yml`` files (PyYAML's python tags): :func:`load_config_yaml` builds only the classes a
  genuine config holds (:class:`ConfigLoader`): dataclasses, enums and ``_target`` classes of nerfstudio, of this
  package and of installed nerfstudio plugins, torch optimizer classes, ``pathlib`` paths and plain values.
  ``!!python/object/apply:os.system`` and every other python tag outside that list are refused with one error
  naming the file, the tag and its line.

Framework-light: torch and yaml only; nerfstudio is never imported here (the classes a config names are
imported from their trusted packages while it is read).

Example::

    >>> import torch, tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "w.pt")
    >>> torch.save({"step": 3, "w": torch.zeros(2)}, path)
    >>> safe_torch_load(path)["step"]
    3
"""

from __future__ import annotations

import dataclasses
import enum
import importlib
import operator
import os
import pickle
import re
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

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
    """The informative line of torch's 'Weights only load failed' message (e.g. 'Unsupported global: ...')."""
    match = re.search(r"WeightsUnpickler error:\s*(.+?)(?:\. Please use|\n\n|$)", message, flags=re.S)
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
    except (RuntimeError, EOFError, KeyError, ValueError, IndexError, TypeError, AttributeError) as error:
        raise ValueError(f"checkpoint {path} is truncated or not a checkpoint ({_short(error)})") from None


def _short(error: BaseException) -> str:
    """'Type: first sentence of the message' (torch's messages go on for lines)."""
    text = " ".join(str(error).split()).split(". ")[0] or "no detail"
    return f"{type(error).__name__}: {text[:160]}"


# ------------------------------------------------------------------------------------------------ config.yml

TRUSTED_PACKAGES: tuple[str, ...] = ("nerfstudio", "nerf_inr_methods")
"""Top-level packages whose configuration classes a config.yml may build (installed nerfstudio plugins, found
through their entry points, are added by :func:`trusted_packages`)."""

_PLUGIN_GROUPS = ("nerfstudio.method_configs", "nerfstudio.dataparser_configs")
_PATH_CLASSES = {"PosixPath", "WindowsPath", "PurePosixPath", "PureWindowsPath", "Path", "PurePath"}
_BUILTIN_CLASSES = {"tuple", "list", "dict", "set", "frozenset", "complex", "int", "float", "str", "bool", "bytes"}
_plugin_packages: tuple[str, ...] | None = None


def trusted_packages() -> tuple[str, ...]:
    """:data:`TRUSTED_PACKAGES` plus the top-level packages of installed nerfstudio plugins (entry points of
    ``nerfstudio.method_configs`` / ``nerfstudio.dataparser_configs``: code the user installed and nerfstudio
    imports anyway). Read from the package metadata; nothing is imported."""
    global _plugin_packages
    if _plugin_packages is None:
        from importlib.metadata import entry_points

        found: list[str] = []
        for group in _PLUGIN_GROUPS:
            for entry in entry_points(group=group):
                found.append(entry.value.split(":")[0].split(".")[0])
        _plugin_packages = tuple(dict.fromkeys(found))
    return tuple(dict.fromkeys(TRUSTED_PACKAGES + _plugin_packages))


def _display_tag(tag: str) -> str:
    return tag.replace("tag:yaml.org,2002:", "!!")


class _Refused(yaml.constructor.ConstructorError):
    """A python tag outside the allow-list (carries the tag and the reason)."""

    def __init__(self, tag: str, reason: str, mark: Any) -> None:
        super().__init__(None, None, reason, mark)
        self.tag = tag
        self.reason = reason


class ConfigLoader(yaml.SafeLoader):
    """PyYAML loader for nerfstudio ``config.yml`` files that builds only allow-listed classes.

    Allowed python tags:

    - plain values: ``!!python/tuple``, ``/none``, ``/bool``, ``/str``, ``/unicode``, ``/bytes``, ``/int``,
      ``/long``, ``/float``, ``/complex``, ``/list``, ``/dict``;
    - ``!!python/object:C`` and ``!!python/object/new:C``: C a dataclass of a trusted package (state set
      attribute by attribute, no ``__init__``);
    - ``!!python/object/apply:C``: C a dataclass or an ``Enum`` of a trusted package, a ``pathlib`` path class,
      or ``_operator.getitem`` on trusted classes (a generic ``VanillaDataManager[DepthDataset]``);
    - ``!!python/name:N``: a class or function of a trusted package, or a torch optimizer / LR scheduler class
      (the ``_target`` of optimizer configs).

    Modules are imported only when they belong to a trusted package (or are ``torch.optim``), before any
    object is built. Everything else (``!!python/module``, ``os.system``, ``builtins.eval``, ``subprocess``, ...)
    raises an error naming the tag.
    """

    def _trusted(self, module_name: str) -> bool:
        return module_name.split(".")[0] in trusted_packages()

    def _find(self, tag: str, name: str, mark: Any) -> Any:
        """Import ``module.attr`` named by a tag, after checking the module is allowed."""
        if "." not in name:
            raise _Refused(tag, f"{name!r} is not in a trusted package", mark)
        module_name, attr = name.rsplit(".", 1)
        allowed_module = (
            self._trusted(module_name)
            or module_name == "pathlib"
            or module_name == "_operator"
            or module_name == "builtins"
            or module_name == "torch.optim"
            or module_name.startswith("torch.optim.")
        )
        if not allowed_module:
            raise _Refused(tag, f"module {module_name!r} is not in the allow-list", mark)
        try:
            module = importlib.import_module(module_name)
        except ImportError as error:
            raise _Refused(tag, f"cannot import {module_name!r} ({error})", mark) from None
        if not hasattr(module, attr):
            raise _Refused(tag, f"{module_name!r} has no attribute {attr!r}", mark)
        return getattr(module, attr)

    def _trusted_class(self, obj: Any) -> bool:
        return isinstance(obj, type) and self._trusted(getattr(obj, "__module__", "") or "")

    # ---- !!python/name:
    def construct_python_name(self, suffix: str, node: yaml.Node) -> Any:
        tag = node.tag
        if self.construct_scalar(node):  # type: ignore[arg-type]
            raise _Refused(tag, "a python name must have an empty value", node.start_mark)
        obj = self._find(tag, suffix, node.start_mark)
        module_name = suffix.rsplit(".", 1)[0]
        if self._trusted(module_name) and (isinstance(obj, type) or callable(obj)):
            if self._trusted(getattr(obj, "__module__", "") or ""):
                return obj
        if (
            module_name.startswith("torch.optim")
            and isinstance(obj, type)
            and issubclass(obj, (torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler))
        ):
            return obj
        raise _Refused(
            tag, "only classes and functions of nerfstudio / its plugins, and torch optimizers", node.start_mark
        )

    # ---- !!python/object: and !!python/object/new:
    def _dataclass(self, tag: str, suffix: str, mark: Any) -> type:
        cls = self._find(tag, suffix, mark)
        if not (self._trusted_class(cls) and dataclasses.is_dataclass(cls)):
            raise _Refused(tag, "only configuration dataclasses of nerfstudio / its plugins may be built", mark)
        return cls

    def construct_python_object(self, suffix: str, node: yaml.Node):  # noqa: ANN201 (generator)
        cls = self._dataclass(node.tag, suffix, node.start_mark)
        instance = cls.__new__(cls)
        yield instance
        state = self.construct_mapping(node, deep=False)  # type: ignore[arg-type]
        self._set_state(instance, state, node)

    def construct_python_object_new(self, suffix: str, node: yaml.Node) -> Any:
        cls = self._dataclass(node.tag, suffix, node.start_mark)
        args, kwds, state = self._apply_parts(node)
        instance = cls.__new__(cls, *args, **kwds)
        if state:
            self._set_state(instance, state, node)
        return instance

    def _set_state(self, instance: Any, state: Any, node: yaml.Node) -> None:
        if not isinstance(state, dict):
            raise _Refused(node.tag, "the state of a configuration object must be a mapping", node.start_mark)
        for key in state:
            if not isinstance(key, str) or (key.startswith("__") and key.endswith("__")):
                raise _Refused(node.tag, f"attribute {key!r} may not be set", node.start_mark)
        if hasattr(instance, "__dict__"):
            instance.__dict__.update(state)
        else:
            for key, value in state.items():
                object.__setattr__(instance, key, value)

    def _apply_parts(self, node: yaml.Node) -> tuple[list, dict, dict]:
        if isinstance(node, yaml.SequenceNode):
            return list(self.construct_sequence(node, deep=True)), {}, {}
        if isinstance(node, yaml.MappingNode):
            value = self.construct_mapping(node, deep=True)
            unknown = set(value) - {"args", "kwds", "state"}
            if unknown:
                raise _Refused(
                    node.tag, f"unsupported keys {sorted(unknown)} (listitems/dictitems call methods)", node.start_mark
                )
            return list(value.get("args", [])), dict(value.get("kwds", {})), dict(value.get("state", {}))
        raise _Refused(node.tag, "expected a list of arguments", node.start_mark)

    # ---- !!python/object/apply:
    def construct_python_object_apply(self, suffix: str, node: yaml.Node) -> Any:
        tag, mark = node.tag, node.start_mark
        target = self._find(tag, suffix, mark)
        args, kwds, state = self._apply_parts(node)
        if target is operator.getitem:  # a parametrised generic: VanillaDataManager[DepthDataset]
            if len(args) != 2 or kwds or state or not self._trusted_class(args[0]):
                raise _Refused(tag, "getitem is only allowed on nerfstudio classes", mark)
            params = args[1] if isinstance(args[1], tuple) else (args[1],)
            if not all(self._trusted_class(p) for p in params):
                raise _Refused(tag, "getitem is only allowed with nerfstudio classes", mark)
            return target(args[0], args[1])
        path_class = getattr(target, "__module__", "") == "pathlib" and getattr(target, "__name__", "") in _PATH_CLASSES
        builtin_class = suffix.startswith("builtins.") and suffix.split(".", 1)[1] in _BUILTIN_CLASSES
        trusted_value_class = self._trusted_class(target) and (
            dataclasses.is_dataclass(target) or issubclass(target, enum.Enum)
        )
        if not (path_class or builtin_class or trusted_value_class):
            raise _Refused(tag, "only paths, builtin values and nerfstudio dataclasses / enums may be built", mark)
        if path_class and not all(isinstance(a, str) for a in args):
            raise _Refused(tag, "path parts must be strings", mark)
        instance = target(*args, **kwds)
        if state:
            self._set_state(instance, state, node)
        return instance

    # ---- refused outright
    def construct_refused(self, suffix: str, node: yaml.Node) -> Any:
        raise _Refused(node.tag, "this kind of python tag is never allowed", node.start_mark)


# python/<tag> of plain values, built by PyYAML's own constructors: construct_python_<tag>, or construct_yaml_<kind>
_PLAIN_PYTHON_TAGS = ("str", "unicode", "bytes", "long", "complex", "tuple")
_PLAIN_YAML_KINDS = {"none": "null", "bool": "bool", "int": "int", "float": "float", "list": "seq", "dict": "map"}
for _tag, _name in [(tag, f"python_{tag}") for tag in _PLAIN_PYTHON_TAGS] + [
    (tag, f"yaml_{kind}") for tag, kind in _PLAIN_YAML_KINDS.items()
]:
    ConfigLoader.add_constructor(
        f"tag:yaml.org,2002:python/{_tag}", getattr(yaml.constructor.FullConstructor, f"construct_{_name}")
    )
ConfigLoader.add_multi_constructor("tag:yaml.org,2002:python/name:", ConfigLoader.construct_python_name)
ConfigLoader.add_multi_constructor("tag:yaml.org,2002:python/object:", ConfigLoader.construct_python_object)
ConfigLoader.add_multi_constructor("tag:yaml.org,2002:python/object/new:", ConfigLoader.construct_python_object_new)
ConfigLoader.add_multi_constructor("tag:yaml.org,2002:python/object/apply:", ConfigLoader.construct_python_object_apply)
ConfigLoader.add_multi_constructor("tag:yaml.org,2002:python/module:", ConfigLoader.construct_refused)
ConfigLoader.add_multi_constructor("tag:yaml.org,2002:python/", ConfigLoader.construct_refused)


def load_config_yaml(text: str, source: str | os.PathLike = "config.yml") -> Any:
    """Parse a nerfstudio ``config.yml`` with :class:`ConfigLoader`.

    Args:
        text: the file's contents.
        source: the file's name, for messages.

    Raises:
        RefusedFileError (a ValueError): a python tag outside the allow-list ("... would run code").
        ValueError: not valid YAML, or a tag the loader does not know.
    """
    try:
        return yaml.load(text, Loader=ConfigLoader)  # noqa: S506 (ConfigLoader is the restricted loader)
    except _Refused as error:
        line = f" (line {error.problem_mark.line + 1})" if error.problem_mark is not None else ""
        raise RefusedFileError(
            f"{source}: refused {_display_tag(error.tag)}{line}: {error.reason}; a config.yml may only build "
            "nerfstudio configuration classes, paths and plain values (this file would run other code)"
        ) from None
    except yaml.constructor.ConstructorError as error:
        line = f" (line {error.problem_mark.line + 1})" if error.problem_mark is not None else ""
        raise RefusedFileError(f"{source}: {error.problem}{line}; refusing to load it") from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise ValueError(f"{source} is not a valid config.yml (YAML error{where}: {problem})") from None


def load_config_file(path: str | os.PathLike) -> Any:
    """Read and parse a nerfstudio ``config.yml`` safely (:func:`load_config_yaml`).

    Raises:
        FileNotFoundError: no such file. ValueError: a folder, unreadable bytes, bad YAML, or refused tags.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist (expected a run's config.yml)")
    if path.is_dir():
        raise ValueError(f"{path} is a folder, expected a run's config.yml")
    try:
        text = path.read_text()
    except UnicodeDecodeError:
        raise ValueError(f"{path} is not a config.yml (not a text file)") from None
    return load_config_yaml(text, path)


def load_run_config(path: str | os.PathLike) -> Any:
    """A nerfstudio run's ``TrainerConfig`` from its ``config.yml``, loaded safely and checked to be one.

    Raises:
        FileNotFoundError / ValueError as :func:`load_config_file`; ValueError if the file holds something else.
    """
    config = load_config_file(path)
    if not (hasattr(config, "method_name") and hasattr(config, "pipeline")):
        raise ValueError(f"{path} is not a nerfstudio run config (no method_name / pipeline)")
    return config


# ------------------------------------------------------------------------------------------------ patching


UNSAFE_YAML_LOADERS: tuple[Any, ...] = tuple(
    getattr(yaml, name)
    for name in ("Loader", "UnsafeLoader", "FullLoader", "CLoader", "CUnsafeLoader", "CFullLoader")
    if hasattr(yaml, name)
)


def _config_name_from_caller(frame: Any) -> str:
    """The config file nerfstudio is reading (eval_setup's ``config_path``, train.py's ``config.load_config``)."""
    local = frame.f_locals
    if local.get("config_path") is not None:
        return str(local["config_path"])
    load_config = getattr(local.get("config"), "load_config", None)
    return str(load_config) if load_config is not None else "config.yml"


def install_safe_yaml_for_nerfstudio() -> None:
    """Make nerfstudio's own ``yaml.load(..., Loader=yaml.Loader)`` calls use :class:`ConfigLoader` (idempotent).

    nerfstudio reads config.yml with the unsafe loader in ``eval_setup`` (``ns-eval``, ``ns-render``,
    ``ns-viewer``, ``ns-export``) and in ``ns-train --load-config``. ``yaml.load`` is wrapped so that calls made
    from a ``nerfstudio.*`` module with an unsafe loader go through the restricted loader; every other caller
    gets PyYAML's behaviour unchanged. Installed by ``nerf_inr_methods.nerfstudio_plugin.offline.install``,
    which runs when nerfstudio discovers our entry points (before it reads any config).
    """
    if getattr(yaml.load, "_nerf_inr_methods_safe", False):
        return
    original = yaml.load

    def load(stream: Any, Loader: Any) -> Any:  # noqa: N803 (PyYAML's signature)
        caller = sys._getframe(1)
        if Loader in UNSAFE_YAML_LOADERS and str(caller.f_globals.get("__name__", "")).startswith("nerfstudio."):
            text = stream if isinstance(stream, str) else stream.read()
            if isinstance(text, bytes):
                text = text.decode()
            return load_config_yaml(text, _config_name_from_caller(caller))
        return original(stream, Loader)

    load._nerf_inr_methods_safe = True  # type: ignore[attr-defined]
    load._original = original  # type: ignore[attr-defined]
    load.__doc__ = original.__doc__
    yaml.load = load


__all__ = [
    "CHECKPOINT_SAFE_GLOBALS",
    "ConfigLoader",
    "RefusedFileError",
    "TRUSTED_PACKAGES",
    "allow_checkpoint_types",
    "install_safe_yaml_for_nerfstudio",
    "load_config_file",
    "load_config_yaml",
    "load_run_config",
    "safe_torch_load",
    "trusted_packages",
]
