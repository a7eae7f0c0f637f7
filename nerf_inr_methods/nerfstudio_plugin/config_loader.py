"""Reading nerfstudio ``config.yml`` files by a typed allow-list: what a registered method's config holds, nothing else.

A ``config.yml`` is ``yaml.dump`` of a ``TrainerConfig``: python tags that name classes, functions and enums. PyYAML's
unsafe loader builds whatever they name, so a crafted file runs code. :class:`ConfigAllowList` is built from the
configs nerfstudio has registered (every method of ``ns-train --help``, nerfstudio's and installed plugins', and every
dataparser), by walking their instances and their fields' type hints. The loader (:func:`load_config_yaml`) then
builds only:

- configuration dataclasses reachable from those trees (``!!python/object:C``): the object is made with ``__new__``
  and its fields set one by one, so no ``__init__`` / ``__post_init__`` runs; a field holding another dataclass or an
  enum must match the field's type hint;
- for a config's ``_target``: a class some registered config declares as a target, and a subclass of the one *this*
  config class declares (``VanillaDataManager[DepthDataset]`` when both parts qualify);
- in any other field, a class or function only if a registered config holds that very object in a field of that
  name (``collate_fn: nerfstudio_collate``);
- enums reachable from the trees (``EventName('Train Iter (time)')``), ``pathlib`` paths of strings and plain values
  (``!!python/tuple``, numbers, strings, lists, dicts).

Everything else is refused before anything is built, naming the file, the tag and its line: ``!!python/object/apply``
of any callable but an enum, a path or a generic alias (no ``os.system``, no ``builtins.bytes [10**12]``, no
dataclass whose ``__post_init__`` acts), ``!!python/object/new``, ``!!python/module``, any name outside the lists.
Names are looked up in the allow-list, never imported. nerfstudio's ``ExternalMethodDummyTrainerConfig`` (the
placeholders of methods that are not installed, whose ``pip_package`` nerfstudio offers to run) is not a root.

Example::

    >>> load_config_yaml("a: !!python/tuple [1, 2]", "x.yml")
    {'a': (1, 2)}
"""

from __future__ import annotations

import dataclasses
import enum
import operator
import os
import pathlib
import sys
import types
import typing
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

import yaml

from nerf_inr_methods.safe_io import RefusedFileError

_PATH_CLASSES = (pathlib.PosixPath, pathlib.WindowsPath, pathlib.PurePosixPath, pathlib.PureWindowsPath)
_PLAIN = (str, int, float, bool, complex, bytes, type(None), pathlib.PurePath)


def qualified_name(obj: Any) -> str:
    """``module.name`` as PyYAML writes it in ``!!python/name:`` and ``!!python/object:`` tags."""
    return f"{obj.__module__}.{obj.__name__}"


def _origin(value: Any) -> Any:
    """The class of a generic alias (``VanillaDataManager`` of ``VanillaDataManager[DepthDataset]``), else the value."""
    return typing.get_origin(value) or value


def _unwrap(value: Any) -> Any:
    """The function of a ``staticmethod`` (nerfstudio keeps ``collate_fn`` as one; YAML holds the function)."""
    return value.__func__ if isinstance(value, staticmethod) else value


def _classes_in(hint: Any) -> list[type]:
    """The classes a type hint names (``Optional[Dict[str, A]]`` -> ``[A, str, NoneType]``)."""
    if isinstance(hint, type) and not typing.get_args(hint):
        return [hint]
    found: list[type] = []
    origin = typing.get_origin(hint)
    if isinstance(origin, type) and origin not in (type, tuple, list, dict, set, frozenset):
        found.append(origin)
    for arg in typing.get_args(hint):
        if arg is not Ellipsis and not isinstance(arg, (str, int, float, bool, enum.Enum)):
            found.extend(_classes_in(arg))
    return found


def field_hints(cls: type) -> dict[str, Any]:
    """Type hints of a dataclass's fields (the unresolvable ones left out)."""
    try:
        return typing.get_type_hints(cls)
    except Exception:  # a forward reference nerfstudio only imports under TYPE_CHECKING
        return {f.name: f.type for f in dataclasses.fields(cls) if not isinstance(f.type, str)}


def declared_target(cls: type) -> Any:
    """The ``_target`` a config class declares (its default), or None."""
    fields = {f.name: f for f in dataclasses.fields(cls)} if dataclasses.is_dataclass(cls) else {}
    target = fields.get("_target")
    if target is None:
        return None
    if target.default is not dataclasses.MISSING:
        return _unwrap(target.default)
    if target.default_factory is not dataclasses.MISSING:
        try:
            return target.default_factory()
        except Exception:
            return None
    return None


@dataclass(frozen=True)
class ConfigAllowList:
    """What a ``config.yml`` may build: the classes and values of the registered configs' trees."""

    config_classes: dict[str, type]
    """``!!python/object:`` dataclasses, by qualified name."""
    enums: dict[str, type]
    """Enum classes, by qualified name."""
    targets: dict[str, Any]
    """Classes registered configs declare or hold as ``_target`` (generic aliases by their origin), by name."""
    generic_args: dict[str, type]
    """Classes that parametrise a generic ``_target`` (``DepthDataset``), by qualified name."""
    field_values: dict[str, tuple[Any, ...]]
    """Field name -> the classes and functions registered configs hold there (other than ``_target``)."""
    held_targets: dict[str, tuple[Any, ...]]
    """Config class name -> the ``_target`` classes registered instances of it hold (mipnerf's ``VanillaModelConfig``
    targets ``MipNerfModel``, not a ``NeRFModel``)."""

    def name(self, name: str) -> Any:
        """The class or function a ``!!python/name:`` may resolve to, or None."""
        for table in (self.targets, self.generic_args):
            if name in table:
                return table[name]
        for values in self.field_values.values():
            for value in values:
                if qualified_name(value) == name:
                    return value
        return None


def allow_list_from_roots(roots: Iterable[Any]) -> ConfigAllowList:
    """Walk config instances and classes (their fields' values and type hints) into a :class:`ConfigAllowList`.

    Args:
        roots: configuration dataclass instances or classes (e.g. every registered ``TrainerConfig``).
    """
    classes: dict[str, type] = {}
    enums: dict[str, type] = {}
    targets: dict[str, Any] = {}
    generic_args: dict[str, type] = {}
    field_values: dict[str, dict[int, Any]] = defaultdict(dict)
    held_targets: dict[str, dict[int, Any]] = defaultdict(dict)
    seen: set[int] = set()

    def add_target(value: Any) -> None:
        if value is None:
            return
        targets[qualified_name(_origin(value))] = _origin(value)
        for arg in typing.get_args(value):
            if isinstance(arg, type):
                generic_args[qualified_name(arg)] = arg

    def add_class(cls: type) -> None:
        if isinstance(cls, type) and issubclass(cls, enum.Enum):
            enums[qualified_name(cls)] = cls
        if not (isinstance(cls, type) and dataclasses.is_dataclass(cls)) or qualified_name(cls) in classes:
            return
        classes[qualified_name(cls)] = cls
        add_target(declared_target(cls))
        for hint in field_hints(cls).values():
            for inner in _classes_in(hint):
                add_class(inner)

    def add_value(value: Any, field_name: str) -> None:
        value = _unwrap(value)
        if isinstance(value, (str, int, float, bool, type(None))) or id(value) in seen:
            return
        seen.add(id(value))
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            add_class(type(value))
            target = _origin(getattr(value, "_target", None))
            if target is not None:
                held_targets[qualified_name(type(value))][id(target)] = target
            for name, item in vars(value).items():
                add_value(item, name)
        elif isinstance(value, enum.Enum):
            add_class(type(value))
        elif isinstance(value, dict):
            for item in value.values():
                add_value(item, field_name)
        elif isinstance(value, (list, tuple, set, frozenset)):
            for item in value:
                add_value(item, field_name)
        elif field_name == "_target":
            add_target(value)
        elif isinstance(value, type) or isinstance(value, types.FunctionType):
            field_values[field_name][id(value)] = value

    for root in roots:
        if isinstance(root, type):
            add_class(root)
        else:
            add_value(root, "")
    return ConfigAllowList(
        config_classes=classes,
        enums=enums,
        targets=targets,
        generic_args=generic_args,
        field_values={name: tuple(values.values()) for name, values in field_values.items()},
        held_targets={name: tuple(values.values()) for name, values in held_targets.items()},
    )


_registered: list[ConfigAllowList] = []


def registered_allow_list() -> ConfigAllowList:
    """The allow-list of every config nerfstudio has registered here (methods and dataparsers, plugins included).

    Built once per process; imports nerfstudio's registries (all methods' modules) the first time.
    """
    if not _registered:
        from nerfstudio.configs.dataparser_configs import all_dataparsers
        from nerfstudio.configs.external_methods import ExternalMethodDummyTrainerConfig
        from nerfstudio.configs.method_configs import all_methods
        from nerfstudio.engine.trainer import TrainerConfig

        methods = [c for c in all_methods.values() if not isinstance(c, ExternalMethodDummyTrainerConfig)]
        _registered.append(allow_list_from_roots([TrainerConfig, *methods, *all_dataparsers.values()]))
    return _registered[0]


# ------------------------------------------------------------------------------------------------ the loader


def _display_tag(tag: str) -> str:
    return tag.replace("tag:yaml.org,2002:", "!!")


class _Refused(yaml.constructor.ConstructorError):
    """A python tag or value outside the allow-list (carries the tag and the reason)."""

    def __init__(self, tag: str, reason: str, mark: Any) -> None:
        super().__init__(None, None, reason, mark)
        self.tag = tag
        self.reason = reason


class ConfigLoader(yaml.SafeLoader):
    """PyYAML loader that builds only what :attr:`allow` lists (see the module's docstring); set ``allow`` first."""

    allow: ConfigAllowList

    def _lookup(self, table: dict[str, Any], tag: str, suffix: str, what: str, mark: Any) -> Any:
        if suffix not in table:
            raise _Refused(tag, f"{suffix!r} is not {what} of a registered nerfstudio method", mark)
        return table[suffix]

    # ---- !!python/name:
    def construct_python_name(self, suffix: str, node: yaml.Node) -> Any:
        if self.construct_scalar(node):  # type: ignore[arg-type]
            raise _Refused(node.tag, "a python name must have an empty value", node.start_mark)
        value = self.allow.name(suffix)
        if value is None:
            raise _Refused(
                node.tag, "only the classes and functions registered configs hold may be named", node.start_mark
            )
        return value

    # ---- !!python/object:
    def construct_python_object(self, suffix: str, node: yaml.Node):  # noqa: ANN201 (a generator, as PyYAML's)
        cls = self._lookup(self.allow.config_classes, node.tag, suffix, "a configuration class", node.start_mark)
        instance = cls.__new__(cls)  # no __init__ / __post_init__
        yield instance
        state = self.construct_mapping(node, deep=True)  # type: ignore[arg-type]
        self._set_state(cls, instance, state, node)

    def _set_state(self, cls: type, instance: Any, state: dict, node: yaml.Node) -> None:
        fields = {f.name for f in dataclasses.fields(cls)}
        hints = field_hints(cls)
        for key, value in state.items():
            if not isinstance(key, str) or key.startswith("__"):
                raise _Refused(node.tag, f"attribute {key!r} may not be set", node.start_mark)
            if key not in fields and (hasattr(cls, key) or not _is_plain(value)):  # no method or property shadowed
                raise _Refused(node.tag, f"{key!r} is not a field of {cls.__name__}", node.start_mark)
            if key == "_target":
                self._check_target(cls, value, node)
            elif key in fields:
                self._check_field(cls, key, value, hints.get(key), node)
            object.__setattr__(instance, key, value)

    def _check_target(self, cls: type, value: Any, node: yaml.Node) -> None:
        """``_target``: a class registered configs target, and this config class's declared target or a subclass of
        it, or a class a registered instance of this config class holds."""
        origin, declared = _origin(value), _origin(declared_target(cls))
        known = isinstance(origin, type) and self.allow.targets.get(qualified_name(origin)) is origin
        fits = known and (
            (isinstance(declared, type) and issubclass(origin, declared))
            or any(origin is held for held in self.allow.held_targets.get(qualified_name(cls), ()))
        )
        if not fits:
            raise _Refused(
                node.tag,
                f"{cls.__name__}._target must be {getattr(declared, '__name__', 'its declared class')} or a subclass "
                "that a registered config targets",
                node.start_mark,
            )

    def _check_field(self, cls: type, key: str, value: Any, hint: Any, node: yaml.Node) -> None:
        """A dataclass or enum in a field must fit its type hint; a class or function must be one registered configs
        hold in a field of that name."""
        if dataclasses.is_dataclass(value) or isinstance(value, enum.Enum):
            classes = tuple(_classes_in(hint)) if hint is not None and hint is not Any else ()
            if classes and not isinstance(value, classes):
                raise _Refused(
                    node.tag, f"{cls.__name__}.{key} holds a {type(value).__name__}, not a {hint}", node.start_mark
                )
        for item in _leaves(value):
            if _is_code(item) and not any(item is allowed for allowed in self.allow.field_values.get(key, ())):
                raise _Refused(node.tag, f"{cls.__name__}.{key} may not hold {qualified_name(item)}", node.start_mark)

    # ---- !!python/object/apply: enums, paths, generic aliases
    def construct_python_object_apply(self, suffix: str, node: yaml.Node) -> Any:
        tag, mark = node.tag, node.start_mark
        if not isinstance(node, yaml.SequenceNode):
            raise _Refused(tag, "expected a plain list of arguments (no kwds, state or items)", mark)
        args = self.construct_sequence(node, deep=True)
        if suffix == "_operator.getitem":
            return self._generic_alias(args, tag, mark)
        if suffix in self.allow.enums:
            if len(args) != 1 or not isinstance(args[0], (str, int, float)):
                raise _Refused(tag, "an enum takes one plain value", mark)
            return self.allow.enums[suffix](args[0])
        path_class = next((c for c in _PATH_CLASSES if qualified_name(c) == suffix), None)
        if path_class is not None:
            if not all(isinstance(a, str) for a in args):
                raise _Refused(tag, "path parts must be strings", mark)
            return path_class(*args)
        raise _Refused(tag, "only enums, paths and generic targets of registered configs may be built", mark)

    def _generic_alias(self, args: list, tag: str, mark: Any) -> Any:
        params = args[1] if len(args) == 2 and isinstance(args[1], tuple) else args[1:]
        origin_ok = len(args) == 2 and any(args[0] is t for t in self.allow.targets.values())
        if not origin_ok or not all(any(p is g for g in self.allow.generic_args.values()) for p in params):
            raise _Refused(tag, "getitem is only allowed on the generic targets of registered configs", mark)
        return operator.getitem(args[0], args[1])

    # ---- refused outright
    def construct_refused(self, suffix: str, node: yaml.Node) -> Any:
        raise _Refused(node.tag, "this kind of python tag is never allowed", node.start_mark)


def _leaves(value: Any) -> Iterable[Any]:
    """The value, or the items of the dicts / lists / tuples it nests."""
    if isinstance(value, dict):
        for item in value.values():
            yield from _leaves(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _leaves(item)
    else:
        yield value


def _is_code(value: Any) -> bool:
    """A class, a function or a generic alias (what ``!!python/name`` and ``getitem`` build)."""
    return isinstance(value, (type, types.FunctionType)) or typing.get_origin(value) is not None


def _is_plain(value: Any) -> bool:
    return all(isinstance(item, _PLAIN) for item in _leaves(value))


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
ConfigLoader.add_multi_constructor("tag:yaml.org,2002:python/object/apply:", ConfigLoader.construct_python_object_apply)
ConfigLoader.add_multi_constructor("tag:yaml.org,2002:python/", ConfigLoader.construct_refused)


def load_config_yaml(text: str, source: str | os.PathLike = "config.yml", allow: ConfigAllowList | None = None) -> Any:
    """Parse a nerfstudio ``config.yml`` with :class:`ConfigLoader`.

    Args:
        text: the file's contents.
        source: the file's name, for messages.
        allow: what may be built (default: :func:`registered_allow_list`, built on first use).

    Raises:
        RefusedFileError (a ValueError): a python tag or value outside the allow-list ("... refused ...").
        ValueError: not valid YAML.
    """
    loader = ConfigLoader(text)
    loader.allow = allow if allow is not None else registered_allow_list()
    try:
        return loader.get_single_data()
    except _Refused as error:
        line = f" (line {error.problem_mark.line + 1})" if error.problem_mark is not None else ""
        raise RefusedFileError(
            f"{source}: refused {_display_tag(error.tag)}{line}: {error.reason}; a config.yml may only hold the "
            "configuration classes of registered nerfstudio methods, paths and plain values"
        ) from None
    except yaml.constructor.ConstructorError as error:
        line = f" (line {error.problem_mark.line + 1})" if error.problem_mark is not None else ""
        raise RefusedFileError(f"{source}: {error.problem}{line}; refusing to load it") from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise ValueError(f"{source} is not a valid config.yml (YAML error{where}: {problem})") from None
    except (TypeError, ValueError) as error:  # an enum value or a path that does not build
        raise ValueError(f"{source} is not a valid config.yml ({type(error).__name__}: {error})"[:300]) from None
    finally:
        loader.dispose()


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
    from nerfstudio.engine.trainer import TrainerConfig

    config = load_config_file(path)
    if not isinstance(config, TrainerConfig):
        raise ValueError(f"{path} is not a nerfstudio run config (expected a TrainerConfig)")
    return config


# ------------------------------------------------------------------------------------------------ nerfstudio's calls


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


def called_from_nerfstudio(depth: int = 2) -> Any:
    """The calling frame ``depth`` levels up if its module is part of nerfstudio, else None."""
    frame = sys._getframe(depth)
    return frame if str(frame.f_globals.get("__name__", "")).startswith("nerfstudio.") else None


def replace_once(owner: Any, name: str, wrap: Callable[[Callable[..., Any]], Callable[..., Any]]) -> None:
    """Replace ``owner.name`` by ``wrap(original)`` unless already replaced (idempotent); the replacement keeps the
    original as ``_original`` and its docstring."""
    original = getattr(owner, name)
    if getattr(original, "_nerf_inr_methods_safe", False):
        return
    replacement = wrap(original)
    replacement._nerf_inr_methods_safe = True  # type: ignore[attr-defined]
    replacement._original = original  # type: ignore[attr-defined]
    replacement.__doc__ = original.__doc__
    setattr(owner, name, replacement)


def install_safe_yaml_for_nerfstudio() -> None:
    """Make nerfstudio's own ``yaml.load(..., Loader=yaml.Loader)`` calls use :class:`ConfigLoader` (idempotent).

    nerfstudio reads config.yml with the unsafe loader in ``eval_setup`` (``ns-eval``, ``ns-render``,
    ``ns-viewer``, ``ns-export``) and in ``ns-train --load-config``. ``yaml.load`` is wrapped so that calls made
    from a ``nerfstudio.*`` module with an unsafe loader go through the restricted loader; every other caller
    gets PyYAML's behaviour unchanged.
    """

    def wrap(original: Callable[..., Any]) -> Callable[..., Any]:
        def load(stream: Any, Loader: Any) -> Any:  # noqa: N803 (PyYAML's signature)
            caller = called_from_nerfstudio()
            if caller is not None and Loader in UNSAFE_YAML_LOADERS:
                text = stream if isinstance(stream, str) else stream.read()
                if isinstance(text, bytes):
                    text = text.decode()
                return load_config_yaml(text, _config_name_from_caller(caller))
            return original(stream, Loader)

        return load

    replace_once(yaml, "load", wrap)


__all__ = [
    "ConfigAllowList",
    "ConfigLoader",
    "allow_list_from_roots",
    "install_safe_yaml_for_nerfstudio",
    "load_config_file",
    "load_config_yaml",
    "load_run_config",
    "registered_allow_list",
]
