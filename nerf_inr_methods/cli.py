"""What every console script of the package does with bad input: one clear line on stderr, exit status 2.

:func:`exit_on_bad_input` wraps a command (:func:`run_command`: a tyro command class); the ``check_*`` helpers
refuse bad flags and output locations up front (before any long work), with a message naming the flag and the file.
"""

from __future__ import annotations

import dataclasses
import math
import os
import sys
import tempfile
import types
import typing
from pathlib import Path
from typing import Any, Callable, Literal


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def describe_os_error(error: OSError) -> str:
    """'<what went wrong>: <file>' for an OSError raised by the system (permission, read-only disk, full disk...)."""
    what = error.strerror or type(error).__name__
    files = [f for f in (error.filename, error.filename2) if f is not None]
    if not files:
        return _one_line(str(error))
    return f"{what}: {' -> '.join(str(f) for f in files)}"


def exit_on_bad_input(program: str, run: Callable[[], Any]) -> None:
    """Call ``run()``; bad input ends the process with status 2 and one line ``"<program>: error: <message>"`` on
    stderr, without a traceback:

    - ``ValueError`` / ``FileNotFoundError`` (a bad flag value, a missing or refused file: our messages name the
      flag or file);
    - any other ``OSError`` raised by the system (permission denied, read-only or full disk, a folder where a file
      was expected): its reason and file name;
    - ``MemoryError``: what ran out, and to lower the sizes.
    """
    try:
        run()
    except (FileNotFoundError, ValueError) as error:
        message = _one_line(str(error))
        if isinstance(error, FileNotFoundError) and error.filename is not None and error.strerror:
            message = describe_os_error(error)
        print(f"{program}: error: {message}", file=sys.stderr)
        raise SystemExit(2) from None
    except OSError as error:
        print(f"{program}: error: {describe_os_error(error)}", file=sys.stderr)
        raise SystemExit(2) from None
    except MemoryError as error:
        detail = f" ({_one_line(str(error))})" if str(error) else ""
        print(f"{program}: error: out of memory{detail}; use smaller sizes (resolution, batch)", file=sys.stderr)
        raise SystemExit(2) from None


def run_command(program: str, command_type: type[Any], description: str | None) -> None:
    """Console-script body of a tyro command class with a ``main()`` method: parse the flags into it, then run its
    ``main`` under :func:`exit_on_bad_input`."""
    import tyro

    tyro.extras.set_accent_color("bright_yellow")
    command = tyro.cli(command_type, description=description)
    exit_on_bad_input(program, command.main)


def check_positive(value: Any, flag: str, minimum: float = 1, integer: bool = True) -> None:
    """Refuse a size/count flag below ``minimum`` (or not an integer / not finite), naming the flag."""
    if integer:
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise ValueError(f"{flag} must be an integer >= {minimum:g}, got {value!r}")
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < minimum:
        raise ValueError(f"{flag} must be a finite number >= {minimum:g}, got {value!r}")


def check_device(device: str, flag: str) -> None:
    """Refuse a torch device string this machine cannot use (``cuda:7`` with one GPU or none, ``mps`` off macOS, a
    misspelt name), naming the flag. CUDA and MPS are asked without creating a context (a CUDA context in the process
    that launches per-GPU workers would hold memory on GPU 0); other device types get a one-element tensor."""
    import torch

    try:
        parsed = torch.device(device)
    except RuntimeError:
        raise ValueError(f"{flag} {device}: not a torch device (e.g. cpu, cuda, cuda:1, mps)") from None
    try:
        if parsed.type == "meta":
            raise RuntimeError("meta tensors hold no values")
        if parsed.type == "cuda":
            count = torch.cuda.device_count() if torch.cuda.is_available() else 0
            if count == 0 or (parsed.index or 0) >= count:
                raise RuntimeError(f"this machine has {count} CUDA device{'s' * (count != 1)}")
        elif parsed.type == "mps":
            if not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
                raise RuntimeError("MPS is not available here")
        elif parsed.type != "cpu":
            torch.empty(1, device=parsed)
    except Exception as error:  # RuntimeError (no driver), AssertionError (torch built without it)...
        reason = _one_line(str(error)).split(". ")[0][:160] or type(error).__name__
        raise ValueError(f"{flag} {device}: torch cannot use this device here ({reason}); use {flag} cpu") from None


def allowed_values(annotation: Any) -> tuple[Any, ...] | None:
    """The values a ``Literal`` annotation allows (with None for ``Literal[...] | None``); None for other types."""
    if typing.get_origin(annotation) is Literal:
        return typing.get_args(annotation)
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        members = typing.get_args(annotation)
        literals = [m for m in members if typing.get_origin(m) is Literal]
        if literals and all(m in literals or m is type(None) for m in members):
            optional = (None,) if type(None) in members else ()
            return tuple(value for literal in literals for value in typing.get_args(literal)) + optional
    return None


def check_choices(options: Any, prefix: str = "--") -> None:
    """Refuse a value outside its ``Literal`` type in the dataclass ``options`` or in its nested option dataclasses,
    naming the flag (``prefix`` + the field name, dashed). tyro already refuses these on the command line; this is the
    one check for values that arrive otherwise (Python callers, stored configs)."""
    hints = typing.get_type_hints(type(options))
    for field in dataclasses.fields(options):
        value, flag = getattr(options, field.name), prefix + field.name.replace("_", "-")
        if dataclasses.is_dataclass(value):
            check_choices(value, flag + ".")
            continue
        choices = allowed_values(hints[field.name])
        if choices is not None and value not in choices:
            raise ValueError(f"{flag} must be one of {', '.join(map(str, choices))}, got {value!r}")


def check_output_dir(path: str | os.PathLike, flag: str, label: str | None = None) -> Path:
    """Refuse an output folder that cannot be created or written to, before any long work.

    The nearest existing folder on the way to ``path`` must be a folder in which a file can really be created
    (a temporary file is created and removed: this also catches read-only disks and root's bypassed permissions).
    Nothing is created at ``path`` itself.

    Args:
        label: how messages name the output (default ``"<flag> <path>"``).

    Raises:
        ValueError: naming ``flag``, the path and the reason.
    """
    path = Path(path)
    label = label or f"{flag} {path}"
    if path.exists() and not path.is_dir():
        raise ValueError(f"{flag} {path} is a file, expected a folder")
    probe = path.absolute()
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if not probe.is_dir():
        raise ValueError(f"{label}: {probe} is a file, so the folder cannot be created")
    try:
        fd, tmp = tempfile.mkstemp(dir=probe, prefix=".nim-write-test-")
    except OSError as error:
        raise ValueError(f"{label}: cannot write in {probe} ({error.strerror or error})") from None
    os.close(fd)
    os.unlink(tmp)
    return path


def check_output_file(path: str | os.PathLike, flag: str, suffixes: tuple[str, ...] | None = None) -> Path:
    """Refuse an output file that is a folder, has an unsupported suffix, or whose folder is not writable.

    Raises:
        ValueError: naming ``flag`` and the path.
    """
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{flag} {path} is a folder, expected a file name")
    if suffixes is not None and path.suffix.lower() not in suffixes:
        raise ValueError(f"{flag} {path}: expected a suffix in {suffixes}")
    if path.exists() and not os.access(path, os.W_OK):
        raise ValueError(f"{flag} {path}: the existing file is not writable")
    check_output_dir(path.parent, flag, label=f"{flag} {path}")
    return path
