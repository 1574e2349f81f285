"""Whether progress output is wanted: the ``-q/--quiet`` switch of the commands, read by every progress bar
(the command line's and the library's, e.g. training's)."""

from __future__ import annotations

_QUIET = False


def set_quiet(value: bool) -> bool:
    """Make progress reporters silent (``value``) or not; returns the previous setting."""
    global _QUIET
    previous, _QUIET = _QUIET, bool(value)
    return previous


def quiet() -> bool:
    """Whether the command runs with ``-q/--quiet``: no progress output, warnings and errors only."""
    return _QUIET
