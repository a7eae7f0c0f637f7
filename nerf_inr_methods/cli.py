"""What every console script of the package does with bad input: one clear line on stderr, exit status 2."""

from __future__ import annotations

import sys
from typing import Any, Callable


def exit_on_bad_input(program: str, run: Callable[[], Any]) -> None:
    """Call ``run()``; a FileNotFoundError or ValueError (a missing file, a bad flag value) is printed as
    ``"<program>: error: <message>"`` on stderr and ends the process with status 2, without a traceback."""
    try:
        run()
    except (FileNotFoundError, ValueError) as error:
        print(f"{program}: error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
