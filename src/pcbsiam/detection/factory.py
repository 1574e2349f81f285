"""Detectors by name: ``make_detector("classical")`` or ``make_detector("learned", model=...)``.

A method is a name in :data:`_BUILDERS`; nothing else tests the name. Importing this module is cheap
(no numpy, scipy or torch): each builder imports its detector when it is called, so the command-line
parser can list :data:`DETECTORS` without loading them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Protocol

from pcbsiam.errors import ConfigError

if TYPE_CHECKING:
    import numpy as np

    from pcbsiam.detection.records import Detections

__all__ = ["DETECTORS", "Detector", "make_detector"]


class Detector(Protocol):
    """What every detector offers: typed boxes for one tested board and its template."""

    def detect(self, tested: np.ndarray, template: np.ndarray) -> Detections:
        """Boxes of the (H, W) uint8 ``tested`` board compared with its (H, W) uint8 ``template``."""
        ...


def _classical(
    model: str | Sequence[str] | None, device: str, views: int, fine_band: int, views_below: float | None
) -> Detector:
    from pcbsiam.detection.classical import ClassicalDetector

    if views != 1 or views_below is not None:
        raise ConfigError("test-time views are a learned detector's setting; the classical one takes none")
    if fine_band:
        raise ConfigError(
            "a finer band's candidates are a learned detector's setting (its verifier drops the edges' drift they "
            "hold); the classical detector takes none"
        )
    return ClassicalDetector()


def _learned(
    model: str | Sequence[str] | None, device: str, views: int, fine_band: int, views_below: float | None
) -> Detector:
    if not model:
        raise ConfigError("the learned detector needs a trained model: give --model PATH (a detector checkpoint)")
    try:
        from pcbsiam.detection.learned import load_detector
    except ModuleNotFoundError as exc:
        if exc.name != "pcbsiam.detection.learned":
            raise
        raise ConfigError(
            "the learned detector is not part of this installation; use the classical method instead"
        ) from None
    try:
        return load_detector(model, device, views=views, fine_band=fine_band, views_below=views_below)
    except ValueError as exc:  # the detector's sentence about its settings
        raise ConfigError(str(exc)) from None


_BUILDERS: dict[str, Callable[[str | Sequence[str] | None, str, int, int, float | None], Detector]] = {
    "classical": _classical,
    "learned": _learned,
}

#: The detection methods :func:`make_detector` knows.
DETECTORS: tuple[str, ...] = tuple(_BUILDERS)


def make_detector(
    method: str,
    model: str | Sequence[str] | None = None,
    device: str = "cpu",
    views: int = 1,
    fine_band: int = 0,
    views_below: float | None = None,
) -> Detector:
    """The detector of ``method``, ready to call ``detect(tested, template)``.

    Args:
        method: one of :data:`DETECTORS`.
        model: the trained model a learned detector loads, or several whose verifiers it averages (unused by the
            classical one).
        device: where a learned detector runs (``cpu``, ``cuda``, ...).
        views: test-time views a learned detector averages (1, 2, 4 or 8; the classical one takes 1).
        fine_band: a learned detector also verifies the candidates of a band this many px wide, at its
            stricter ``fine_min_confidence`` (0: none; the classical one takes 0).
        views_below: a learned detector gives the other views only to the windows whose first view is less sure
            than this (None: every window every view; the classical one takes None).

    Raises:
        ConfigError: an unknown method, a learned one without ``model``, or views or a finer band the method
            cannot take.
    """
    builder = _BUILDERS.get(method)
    if builder is None:
        raise ConfigError(f"unknown detection method {method!r}; choose one of {', '.join(DETECTORS)}")
    return builder(model, device, views, fine_band, views_below)
