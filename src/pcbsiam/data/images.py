"""Decoding board images into greyscale arrays, with errors that name the file."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from PIL import Image

from pcbsiam.errors import DataError

#: Refuse images above this many pixels (decompression bombs); a 640x640 board has 0.4 M.
MAX_PIXELS = 64_000_000


def _from_16_bits(values: np.ndarray) -> np.ndarray:
    """0..65535 grey levels to 0..255, linearly and rounded (v * 257 maps back to v exactly)."""
    return ((values.astype(np.uint32) + 128) // 257).astype(np.uint8)


def to_gray(img: Image.Image) -> np.ndarray:
    """Convert a PIL image of any mode and bit depth to an 8-bit greyscale array.

    16-bit images (PNG, TIFF: Pillow's ``I;16*`` modes, and ``I`` images with values in 0..65535) are
    scaled from their full 16-bit range, not clipped at 255; float images (``F``) must hold values in
    [0, 1]. Other modes (RGB, palette, 1-bit, ...) go through Pillow's luminance conversion.

    Returns:
        (H, W) uint8.

    Raises:
        ValueError: a 32-bit integer image with values outside 0..65535, or a float image outside [0, 1].
    """
    if img.mode.startswith("I;16"):
        return _from_16_bits(np.asarray(img))
    if img.mode == "I":
        values = np.asarray(img)
        if values.size and (values.min() < 0 or values.max() > 65535):
            raise ValueError(
                f"32-bit integer image with grey levels {values.min()}..{values.max()}; save it with 8 or 16 bits"
            )
        return _from_16_bits(values)
    if img.mode == "F":
        values = np.asarray(img, dtype=np.float64)
        if values.size and not (np.isfinite(values).all() and values.min() >= 0.0 and values.max() <= 1.0):
            raise ValueError("floating-point image with grey levels outside [0, 1]; save it with 8 or 16 bits")
        return np.rint(values * 255.0).astype(np.uint8)
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
