"""Config fields declared once and mirrored under other names (e.g. the core's sampler options as nerfstudio flags).

tyro takes a field's ``--help`` from the docstring under it in the class's source; a mirrored field carries that
text in its annotation instead (``tyro.conf.arg(help=...)``), so the declaration and its documentation stay in one
place.

Example::

    flags = dataclasses.make_dataclass("Flags", mirrored_fields(IntSamplerConfig, ("r0",), prefix="int_"))
    flags().int_r0  # 0.2, documented as IntSamplerConfig.r0
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import textwrap
import typing
from typing import Annotated, Any, Dict, List, Mapping, Sequence, Tuple

import tyro


def attribute_docstrings(cls: type) -> Dict[str, str]:
    """Field name -> the docstring written under it in the source of ``cls`` or of its bases (the class's own
    wins), as tyro reads them."""
    docs: Dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if klass is object or not dataclasses.is_dataclass(klass):
            continue
        try:
            body = ast.parse(textwrap.dedent(inspect.getsource(klass))).body[0].body  # type: ignore[attr-defined]
        except (OSError, TypeError):  # no source (made at run time)
            continue
        for node, following in zip(body, body[1:], strict=False):
            if (
                isinstance(node, ast.AnnAssign)
                and isinstance(node.target, ast.Name)
                and isinstance(following, ast.Expr)
                and isinstance(following.value, ast.Constant)
                and isinstance(following.value.value, str)
            ):
                docs[node.target.id] = inspect.cleandoc(following.value.value)
    return docs


def mirrored_fields(
    cls: type, names: Sequence[str], prefix: str, defaults: Mapping[str, Any] | None = None
) -> List[Tuple[str, Any, Any]]:
    """``dataclasses.make_dataclass`` field specs ``(prefix + name, type, field)`` of the dataclass fields ``names``
    of ``cls``: their types and defaults (or ``defaults[name]``), and their docstrings as tyro help.

    Args:
        cls: dataclass that declares the fields.
        names: its fields to mirror, in this order.
        prefix: put before each name (e.g. ``"int_"``: ``r0`` becomes ``int_r0``, flag ``--...int-r0``).
        defaults: other defaults for some of ``names`` (keyed by the unprefixed name).
    """
    hints = typing.get_type_hints(cls)
    declared = {f.name: f for f in dataclasses.fields(cls)}
    docs = attribute_docstrings(cls)
    specs = []
    for name in names:
        default = (defaults or {}).get(name, declared[name].default)
        if default is dataclasses.MISSING:
            raise ValueError(f"{cls.__name__}.{name} has no plain default to mirror")
        annotation = Annotated[hints[name], tyro.conf.arg(help=docs.get(name, ""))]
        specs.append((prefix + name, annotation, dataclasses.field(default=default)))
    return specs
