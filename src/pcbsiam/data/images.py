"""Decoding board images into greyscale arrays, with errors that name the file."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from PIL import Image

from pcbsiam.errors import DataError

#: Refuse images above this many pixels (decompression bombs); a 640x640 board has 0.4 M.
MAX_PIXELS = 64_000_000


def to_gray(img: Image.Image) -> np.ndarray:
    """Convert a PIL image of any mode to a greyscale array.

    Returns:
        (H, W) uint8.
    """
    if img.mode != "L":
        img = img.convert("L")
    return np.asarray(img, dtype=np.uint8).copy()


def load_gray(path: str | Path) -> np.ndarray:
    """Read an image file (greyscale or RGB) as greyscale.

    Args:
        path: image file.

    Returns:
        (H, W) uint8.

    Raises:
        DataError: the file is missing, truncated, not an image, or too large.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "file not found")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                if img.width * img.height > MAX_PIXELS:
                    raise DataError(path, f"image of {img.width}x{img.height} px exceeds {MAX_PIXELS} pixels")
                img.load()
                return to_gray(img)
    except DataError:
        raise
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombWarning, Image.DecompressionBombError) as exc:
        raise DataError(path, f"cannot be decoded as an image ({exc}); is it truncated or not an image?") from exc
