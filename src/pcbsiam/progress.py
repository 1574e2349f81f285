"""Whether progress output is wanted: the ``-q/--quiet`` switch of the commands, read by every progress bar
(the command line's and the library's, e.g. training's)."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tqdm import tqdm

_QUIET = False


def set_quiet(value: bool) -> bool:
    """Make progress reporters silent (``value``) or not; returns the previous setting."""
    global _QUIET
    previous, _QUIET = _QUIET, bool(value)
    return previous


def quiet() -> bool:
    """Whether the command runs with ``-q/--quiet``: no progress output, warnings and errors only."""
    return _QUIET


def bar(total: int, desc: str, unit: str = "item", leave: bool = False) -> tqdm:
    """A tqdm progress bar on stderr, silent with ``-q`` (:func:`quiet`) and when stderr is not a terminal
    (a log file or a pipe); cleared when done unless ``leave``."""
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, disable=True if _QUIET else None, leave=leave)
