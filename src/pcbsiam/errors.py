"""Exceptions whose messages are meant for users."""

from __future__ import annotations

from pathlib import Path


class PcbsiamError(Exception):
    """Base class of every error pcbsiam reports to a user."""


class DataError(PcbsiamError, ValueError):
    """A data file is missing, unreadable or inconsistent.

    Args:
        path: the offending file (or folder).
        problem: one sentence saying what is wrong and, where possible, what to do.
    """

    def __init__(self, path: str | Path, problem: str) -> None:
        self.path = Path(path)
        self.problem = problem
        super().__init__(f"{path}: {problem}")


class ConfigError(PcbsiamError, ValueError):
    """A configuration value or command-line option is invalid."""


class RegistrationError(PcbsiamError, ValueError):
    """A tested image cannot be registered onto its template (size mismatch, no reliable match)."""
