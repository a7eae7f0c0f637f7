"""Silence the known third-party warnings that ``ns-train`` prints for our methods (never our own).

Each filter matches one message *and* the third-party module it is attributed to, so the same message raised by our
code still shows. Installed by the package ``__init__`` (standard library only: nerfstudio imports our dataparser
entry point while its own modules load, which is the earliest moment a plugin runs) and by ``offline.install``.
``torch.jit.script``'s deprecation is printed by nerfstudio before any plugin is imported and cannot be filtered here.
Set ``NIM_WARNINGS=all`` to keep every warning.
"""

from __future__ import annotations

import os
import warnings
from typing import Tuple, Type

KNOWN_THIRD_PARTY_WARNINGS: Tuple[Tuple[Type[Warning], str, str], ...] = (
    # (category, message regex, regex of the module the warning is attributed to)
    (FutureWarning, r"`torch\.jit\.script` is deprecated", r"torch\.jit"),
    (FutureWarning, r"`torch\.cuda\.amp\.custom_(fwd|bwd)\(args\.\.\.\)` is deprecated", r"nerfstudio\."),
    (FutureWarning, r"`torch\.cuda\.amp\.GradScaler\(args\.\.\.\)` is deprecated", r"nerfstudio\."),
    (FutureWarning, r"`torch\.cuda\.amp\.autocast\(args\.\.\.\)` is deprecated", r"nerfstudio\."),
    (UserWarning, r"Using a non-tuple sequence for multidimensional indexing is deprecated", r"nerfstudio\."),
    (UserWarning, r"Converting a tensor with requires_grad=True to a scalar", r"nerfstudio\."),
    (UserWarning, r"This DataLoader will create \d+ worker processes in total", r"torch\.utils\.data"),
)
"""Warnings of nerfstudio 1.1.5 / torch 2.14 that a user of ns-train cannot act on."""


def filter_third_party_warnings() -> None:
    """Add an ignore filter per :data:`KNOWN_THIRD_PARTY_WARNINGS` entry (idempotent; no-op with NIM_WARNINGS=all)."""
    if os.environ.get("NIM_WARNINGS", "").lower() == "all":
        return
    for category, message, module in KNOWN_THIRD_PARTY_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category, module=module)
